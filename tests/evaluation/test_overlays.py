"""Overlays mark what the lesion matching decided: missed lesions and false-positive components, by component id."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from matplotlib.image import imread
from scipy import ndimage

from seg.evaluation.metrics import lesion_metrics
from seg.evaluation.overlays import draw_overlay, marks


def _case() -> tuple[np.ndarray, np.ndarray]:
    """Three GT lesions and two predicted components: lesion 1 predicted one voxel wider on every side (found under
    msseg: 218 of its 343 voxels outside the truth, 64 % < 70 %), lesion 2 missed, lesion 3 (2 voxels) too small to
    count with min_lesion_size 5, and a false positive far from every lesion."""
    label = np.zeros((30, 30, 12), dtype=bool)
    pred = np.zeros_like(label)
    label[4:9, 4:9, 4:9] = True  # lesion 1: 125 voxels
    pred[3:10, 3:10, 3:10] = True  # its prediction: 343 voxels, 64 % outside the truth (< msseg's 70 %)
    label[20:24, 4:8, 4:8] = True  # lesion 2: missed
    label[4, 24:26, 6] = True  # lesion 3: 2 voxels
    pred[22:26, 22:26, 2:4] = True  # a false positive
    return pred, label


def test_component_ids_are_the_matching_decisions_by_hand() -> None:
    pred, label = _case()
    out = lesion_metrics(pred, label, matching="msseg", min_lesion_size=5)
    gt_cc, _ = ndimage.label(label, structure=np.ones((3, 3, 3)))
    pred_cc, _ = ndimage.label(pred, structure=np.ones((3, 3, 3)))
    assert (out["tp"], out["fn"], out["fp"], out["n_gt_lesions_ignored"]) == (1, 1, 1, 1)
    assert out["missed_components"] == [int(gt_cc[21, 5, 5])]  # lesion 2, not the ignored lesion 3
    assert out["false_positive_components"] == [int(pred_cc[23, 23, 3])]  # not the found lesion's wide prediction
    assert int(gt_cc[4, 24, 6]) not in out["missed_components"]


def test_marks_skip_a_found_lesions_prediction_beyond_the_truth() -> None:
    pred, label = _case()
    out = lesion_metrics(pred, label, matching="msseg", min_lesion_size=5)
    pred_cc, _ = ndimage.label(pred, structure=np.ones((3, 3, 3)))
    plane = pred_cc[:, :, 3]  # holds the found lesion's prediction (outside its truth there) and the false positive
    assert set(np.unique(plane)) == {0, 1, 2}
    centres = marks(plane, set(out["false_positive_components"]))
    assert centres == [(23.5, 23.5)]  # one cross, on the false positive only


def test_draw_overlay_writes_a_png_for_3d_and_2d(tmp_path: Path) -> None:
    pred, label = _case()
    image = tmp_path / "img.nii.gz"
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])  # LPS storage: the display flips it to radiological
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random(label.shape).astype(np.float32), affine), image)
    case = {"case": "c", "lesion_f1": 0.5, "dice": 0.3, "matching": "msseg",
            **lesion_metrics(pred, label, min_lesion_size=5)}
    png = draw_overlay(tmp_path / "c.png", [image], label, pred, affine, case)
    assert imread(str(png)).shape[1] > imread(str(png)).shape[0]  # three slices side by side
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((30, 30), dtype=np.float32), np.eye(4)), flat)
    case2d = {"case": "f", **lesion_metrics(pred[:, :, 5], label[:, :, 5], connectivity=4)}
    assert draw_overlay(tmp_path / "f.png", [flat], label[:, :, 5], pred[:, :, 5], np.eye(4), case2d,
                        connectivity=4).is_file()

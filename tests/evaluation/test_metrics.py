"""Voxel and lesion-wise metrics on hand-built arrays, with MONAI's DiceMetric as an independent reference."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric

from seg.evaluation.metrics import (
    aggregate_lesion_metrics,
    dice,
    dice_per_class,
    hd95,
    lesion_metrics,
    size_bin_names,
    surface_dice,
)


def _two_lesions_one_found_one_fp_2d() -> tuple[np.ndarray, np.ndarray]:
    label = np.zeros((12, 12), dtype=np.uint8)  # (H, W)
    label[1:3, 1:3] = 1  # lesion A, 4 px: detected
    label[8:10, 8:10] = 1  # lesion B, 4 px: missed
    pred = np.zeros_like(label)
    pred[1:3, 2:4] = 1  # overlaps A (2 of 4 px)
    pred[6, 1] = 1  # false positive, far from both
    return pred, label


def test_one_detected_one_missed_one_false_positive_gives_f1_half():
    pred, label = _two_lesions_one_found_one_fp_2d()
    m = lesion_metrics(pred, label, matching="overlap")
    assert (m["tp"], m["fn"], m["fp"]) == (1, 1, 1)
    assert (m["n_gt_lesions"], m["n_pred_lesions"]) == (2, 2)
    assert m["lesion_f1"] == pytest.approx(0.5)  # 2*1 / (2*1 + 1 + 1)
    assert m["lesion_sensitivity"] == pytest.approx(0.5)
    assert m["lesion_precision"] == pytest.approx(0.5)


def test_same_counts_in_3d():
    label = np.zeros((8, 8, 8), dtype=bool)  # (D, H, W)
    label[1:3, 1:3, 1:3] = True
    label[5:7, 5:7, 5:7] = True
    pred = np.zeros_like(label)
    pred[1:3, 1:3, 2:4] = True
    pred[6, 1, 6] = True
    m = lesion_metrics(torch.from_numpy(pred), torch.from_numpy(label), matching="overlap")
    assert (m["tp"], m["fn"], m["fp"], m["lesion_f1"]) == (1, 1, 1, 0.5)


def test_diagonal_voxels_are_one_lesion_with_26_and_two_with_6_connectivity():
    label = np.zeros((4, 4, 4), dtype=bool)
    label[1, 1, 1] = label[2, 2, 2] = True  # touch only at a corner
    pred = np.zeros_like(label)
    assert lesion_metrics(pred, label, matching="overlap")["n_gt_lesions"] == 1  # default: full (26) connectivity
    assert lesion_metrics(pred, label, connectivity=26, matching="overlap")["n_gt_lesions"] == 1
    assert lesion_metrics(pred, label, connectivity=18, matching="overlap")["n_gt_lesions"] == 2
    assert lesion_metrics(pred, label, connectivity=6, matching="overlap")["n_gt_lesions"] == 2
    assert lesion_metrics(pred[1], label[1] | label[2], connectivity=4,
                          matching="overlap")["n_gt_lesions"] == 2  # 2D: (1,1),(2,2)
    assert lesion_metrics(pred[1], label[1] | label[2], connectivity=8, matching="overlap")["n_gt_lesions"] == 1


def test_invalid_connectivity_names_the_choices():
    with pytest.raises(ValueError, match=r"connectivity 6 is not valid in 2D; expected one of \[4, 8\]"):
        lesion_metrics(np.zeros((3, 3)), np.zeros((3, 3)), connectivity=6, matching="overlap")


def test_dilation_turns_a_near_miss_into_a_detection():
    label = np.zeros((10, 10), dtype=bool)
    label[4:6, 2:4] = True
    pred = np.zeros_like(label)
    pred[4:6, 5:7] = True  # one column gap between lesion and prediction
    plain = lesion_metrics(pred, label, matching="overlap")
    assert (plain["tp"], plain["fn"], plain["fp"]) == (0, 1, 1)
    # the dilated lesion reaches the gap only
    assert lesion_metrics(pred, label, dilation=1, matching="overlap")["tp"] == 0
    dilated = lesion_metrics(pred, label, dilation=2, matching="overlap")
    assert (dilated["tp"], dilated["fn"], dilated["fp"]) == (1, 0, 0)
    assert dilated["lesions"][0]["dice"] == 0.0  # detected, but no voxel overlap with the undilated lesion


def test_empty_label_and_empty_prediction_is_perfect():
    m = lesion_metrics(np.zeros((5, 5, 5)), np.zeros((5, 5, 5)), matching="overlap")
    assert (m["tp"], m["fp"], m["fn"]) == (0, 0, 0)
    assert m["lesion_f1"] == m["lesion_sensitivity"] == m["lesion_precision"] == 1.0
    assert math.isnan(m["lesion_dice_mean"])
    assert dice(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0
    assert hd95(np.zeros((3, 3)), np.zeros((3, 3))) == 0.0
    assert surface_dice(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0


def test_empty_label_with_prediction_counts_every_component_as_false_positive():
    pred = np.zeros((9, 9), dtype=bool)
    pred[0, 0] = pred[4, 4] = True
    pred[8, 0:3] = True
    m = lesion_metrics(pred, np.zeros_like(pred), matching="overlap")
    assert (m["tp"], m["fn"], m["fp"], m["fp_per_volume"]) == (0, 0, 3, 3.0)
    assert (m["lesion_f1"], m["lesion_precision"], m["lesion_sensitivity"]) == (0.0, 0.0, 1.0)
    assert math.isnan(hd95(pred, np.zeros_like(pred)))
    assert surface_dice(pred, np.zeros_like(pred)) == 0.0


def test_sensitivity_by_size_bins_in_voxels_and_mm3():
    label = np.zeros((20, 20, 20), dtype=bool)
    label[0, 0, 0:5] = True  # 5 voxels: bin 0-10, detected
    label[5:8, 5:8, 5:7] = True  # 18 voxels: bin 10-100, missed
    label[12:17, 12:17, 12:17] = True  # 125 voxels: bin 100-inf, detected
    pred = np.zeros_like(label)
    pred[0, 0, 0] = True
    pred[14, 14, 14] = True
    m = lesion_metrics(pred, label, size_bins=(10, 100), matching="overlap")
    assert size_bin_names((10, 100)) == ["0-10", "10-100", "100-inf"]
    assert {k: (v["tp"], v["fn"]) for k, v in m["size_bins"].items()} == {
        "0-10": (1, 0), "10-100": (0, 1), "100-inf": (1, 0)}
    # With 2 mm isotropic voxels (8 mm³ each) the sizes are 40, 144, 1000 mm³.
    mm = lesion_metrics(pred, label, spacing=(2.0, 2.0, 2.0), size_bins=(50, 500), size_unit="mm3", matching="overlap")
    assert [lesion["size_mm3"] for lesion in mm["lesions"]] == [40.0, 144.0, 1000.0]
    assert {k: (v["tp"], v["fn"]) for k, v in mm["size_bins"].items()} == {
        "0-50": (1, 0), "50-500": (0, 1), "500-inf": (1, 0)}
    with pytest.raises(ValueError, match="size_unit must be 'voxels' or 'mm3'"):
        lesion_metrics(pred, label, size_unit="ml", matching="overlap")


def test_per_lesion_dice_is_hand_computed_against_union_of_overlapping_components():
    label = np.zeros((10, 10), dtype=bool)
    label[2:6, 2:4] = True  # 8 px lesion
    pred = np.zeros_like(label)
    pred[2:4, 3:6] = True  # component 1: 6 px, overlaps 2 px
    pred[5:7, 1:3] = True  # component 2: 4 px, overlaps 1 px (row 5, col 2); separate from component 1
    m = lesion_metrics(pred, label, matching="overlap")
    assert m["n_pred_lesions"] == 2 and m["fp"] == 0
    assert m["lesions"][0]["dice"] == pytest.approx(2 * 3 / (8 + 6 + 4))


def test_aggregation_pools_counts_and_averages_fp_per_volume():
    pred, label = _two_lesions_one_found_one_fp_2d()
    case_a = lesion_metrics(pred, label, matching="overlap")  # tp 1, fn 1, fp 1
    case_b = lesion_metrics(label, label, matching="overlap")  # tp 2, fn 0, fp 0
    agg = aggregate_lesion_metrics([case_a, case_b])
    assert (agg["tp"], agg["fn"], agg["fp"]) == (3, 1, 1)
    assert agg["lesion_f1"] == pytest.approx(6 / 8)
    assert agg["lesion_sensitivity"] == pytest.approx(3 / 4)
    assert agg["fp_per_volume"] == pytest.approx(0.5)
    assert agg["lesion_f1_case_mean"] == pytest.approx((0.5 + 1.0) / 2)
    assert agg["small_lesion_sensitivity"] == pytest.approx(3 / 4)  # every lesion has 4 px < 10
    with pytest.raises(ValueError, match="at least one case"):
        aggregate_lesion_metrics([])


def test_dice_matches_monai_dice_metric():
    rng = np.random.default_rng(0)
    pred = rng.random((6, 7, 8)) > 0.6
    label = rng.random((6, 7, 8)) > 0.5
    reference = DiceMetric(include_background=True)(torch.from_numpy(pred[None, None]).float(),
                                                    torch.from_numpy(label[None, None]).float())
    assert dice(pred, label) == pytest.approx(float(reference[0, 0]), rel=1e-6)


def test_dice_per_class_matches_monai_dice_metric():
    rng = np.random.default_rng(1)
    pred = rng.integers(0, 3, (9, 9, 4))
    label = rng.integers(0, 3, (9, 9, 4))
    one_hot = [torch.from_numpy(np.stack([x == c for x in (a,) for c in range(3)])[None]).float()
               for a in (pred, label)]  # (1, 3, *spatial)
    reference = DiceMetric(include_background=True)(one_hot[0], one_hot[1])[0].numpy()
    np.testing.assert_allclose(dice_per_class(pred, label, num_classes=3), reference, rtol=1e-6)
    # A class absent from both maps scores 1.0.
    assert dice_per_class(pred, label, num_classes=4)[3] == 1.0


def test_hd95_uses_spacing_in_mm():
    label = np.zeros((6, 6, 8), dtype=bool)
    label[2, 2, 1] = True
    pred = np.zeros_like(label)
    pred[2, 2, 4] = True  # 3 voxels away along the last axis
    assert hd95(pred, label) == pytest.approx(3.0)
    assert hd95(pred, label, spacing=(1.0, 1.0, 2.0)) == pytest.approx(6.0)


def test_surface_dice_tolerance_in_mm():
    label = np.zeros((10, 10), dtype=bool)
    label[2:6, 2:6] = True
    pred = np.zeros_like(label)
    pred[2:6, 3:7] = True  # shifted by one pixel
    assert surface_dice(pred, pred) == 1.0
    assert surface_dice(pred, label, tolerance=1.0) == pytest.approx(1.0)  # every boundary point within 1 px
    assert surface_dice(pred, label, tolerance=1.0, spacing=(1.0, 2.0)) < 1.0  # the shift is now 2 mm


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match=r"prediction has shape \(3, 3\) but the label has \(3, 4\)"):
        lesion_metrics(np.zeros((3, 3)), np.zeros((3, 4)), matching="overlap")


def test_hd95_and_surface_dice_equal_monai_on_the_full_volume():
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    rng = np.random.default_rng(2)
    label = np.zeros((30, 30, 20), dtype=bool)
    label[8:16, 10:20, 5:12] = True
    pred = np.roll(label, 2, axis=1) | (rng.random(label.shape) > 0.995)  # shifted, plus speckle
    p, g = torch.from_numpy(pred[None, None]), torch.from_numpy(label[None, None])  # (B=1, C=1, *spatial)
    spacing = [1.0, 0.8, 2.5]
    with warnings.catch_warnings():  # MONAI's internal deprecation warning
        warnings.simplefilter("ignore", FutureWarning)
        reference_hd = float(compute_hausdorff_distance(p, g, include_background=True, percentile=95,
                                                        spacing=spacing)[0, 0])
        reference_nsd = float(compute_surface_dice(p, g, [1.5], include_background=True, spacing=spacing)[0, 0])
    assert hd95(pred, label, spacing=spacing) == pytest.approx(reference_hd, rel=1e-6)
    assert surface_dice(pred, label, tolerance=1.5, spacing=spacing) == pytest.approx(reference_nsd, rel=1e-6)

"""``min_lesion_size`` of the lesion-wise metrics (BraTS-2023 style), against hand counts on a tiny 3D volume."""

from __future__ import annotations

import math

import numpy as np
import pytest

from seg.evaluation.evaluate import evaluate_case
from seg.evaluation.metrics import aggregate_lesion_metrics, lesion_metrics


def _large_lesion_speckles_and_small_predictions() -> tuple[np.ndarray, np.ndarray]:
    """One 27-voxel lesion, GT speckles of 1, 2, 3 voxels, one missed 5-voxel lesion; 1- and 2-voxel predictions.

    Every component is at least one voxel away from every other, so 26-connectivity keeps them apart.
    """
    label = np.zeros((10, 12, 12), dtype=bool)  # (D, H, W)
    label[2:5, 2:5, 2:5] = True  # L: 27 voxels, detected by P2 only
    label[8, 1, 1] = True  # S1: 1 voxel, predicted exactly by P1
    label[8, 10, 9:11] = True  # S2: 2 voxels, missed
    label[0, 10, 5:8] = True  # S3: 3 voxels, missed
    label[0, 0, 7:12] = True  # M5: 5 voxels, missed
    pred = np.zeros_like(label)
    pred[8, 1, 1] = True  # P1: 1 voxel on S1
    pred[3, 3, 3:5] = True  # P2: 2 voxels inside L
    pred[9, 6, 6] = True  # P3: 1 voxel, far from every GT lesion
    return pred, label


def _counts(m: dict) -> tuple[int, ...]:
    return (m["n_gt_lesions"], m["n_gt_lesions_ignored"], m["n_pred_lesions"], m["n_pred_lesions_ignored"],
            m["tp"], m["fn"], m["fp"])


def test_off_counts_every_component():
    pred, label = _large_lesion_speckles_and_small_predictions()
    m = lesion_metrics(pred, label, matching="overlap", size_bins=(10, 100))  # min_lesion_size=0
    # GT: L and S1 found (TP 2); S2, S3, M5 missed (FN 3). Pred: P3 overlaps nothing (FP 1).
    assert _counts(m) == (5, 0, 3, 0, 2, 3, 1)
    assert m["lesion_sensitivity"] == pytest.approx(2 / 5)
    assert m["lesion_precision"] == pytest.approx(2 / 3)
    assert m["lesion_f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 3))
    assert {k: (v["tp"], v["fn"]) for k, v in m["size_bins"].items()} == {
        "0-10": (1, 3), "10-100": (1, 0), "100-inf": (0, 0)}  # S1 found; S2, S3, M5 missed; L found
    # every component has >= 1 voxel: the same
    one = lesion_metrics(pred, label, min_lesion_size=1, matching="overlap")
    assert _counts(one) == _counts(m) and one["lesions"] == m["lesions"]


def test_lesions_under_the_threshold_are_neither_tp_nor_fn_and_their_predictions_not_fp():
    pred, label = _large_lesion_speckles_and_small_predictions()
    m = lesion_metrics(pred, label, min_lesion_size=5, matching="overlap", size_bins=(10, 100))
    # Counted: L (27, found by the 2-voxel P2) and M5 (exactly 5 voxels counts; missed). Ignored: S1, S2, S3.
    # P1 overlaps only the ignored S1: neither TP nor FP. P3 is a FP whatever its size (as in BraTS).
    assert _counts(m) == (2, 3, 3, 1, 1, 1, 1)
    assert (m["lesion_sensitivity"], m["lesion_precision"], m["lesion_f1"]) == (0.5, 0.5, 0.5)
    assert [lesion["size_voxels"] for lesion in m["lesions"]] == [5, 27]  # raster order: M5 (D=0) first
    assert m["lesion_dice_mean"] == pytest.approx((2 * 2 / (27 + 2) + 0.0) / 2)  # L: 2 of 27 voxels; M5: 0
    assert {k: (v["tp"], v["fn"]) for k, v in m["size_bins"].items()} == {
        "0-10": (0, 1), "10-100": (1, 0), "100-inf": (0, 0)}

    m6 = lesion_metrics(pred, label, min_lesion_size=6, matching="overlap")  # now M5 is ignored too
    assert _counts(m6) == (1, 4, 3, 1, 1, 0, 1)
    assert (m6["lesion_sensitivity"], m6["lesion_precision"]) == (1.0, 0.5)
    assert m6["lesion_f1"] == pytest.approx(2 / (2 + 1))


def test_voxel_metrics_do_not_change():
    pred, label = _large_lesion_speckles_and_small_predictions()
    off = evaluate_case(pred.astype(np.int64), label.astype(np.int64), matching="overlap")
    on = evaluate_case(pred.astype(np.int64), label.astype(np.int64), min_lesion_size=5, matching="overlap")
    for key in ("dice", "dice_foreground", "dice_per_class", "hd95", "surface_dice"):
        assert on[key] == off[key]
    assert off["dice_foreground"] == pytest.approx(2 * 3 / (38 + 4))  # overlap P1 + P2 = 3; GT 38, pred 4 voxels
    assert (on["tp"], on["fn"], on["fp"]) == (1, 1, 1)


def test_a_dilated_ignored_lesion_still_absorbs_a_nearby_prediction():
    label = np.zeros((6, 8), dtype=bool)  # (H, W)
    label[1, 1] = True  # 1-pixel GT speckle
    pred = np.zeros_like(label)
    pred[1, 3] = True  # one column gap
    assert _counts(lesion_metrics(pred, label, min_lesion_size=2, matching="overlap")) == (0, 1, 1, 0, 0, 0, 1)
    # Dilated by 2 the ignored speckle reaches the prediction: no FP (BraTS tests overlap with every GT lesion).
    m = lesion_metrics(pred, label, min_lesion_size=2, dilation=2, matching="overlap")
    assert _counts(m) == (0, 1, 1, 1, 0, 0, 0)


def test_a_case_whose_lesions_are_all_ignored_is_a_case_without_lesions():
    _, label = _large_lesion_speckles_and_small_predictions()
    label[2:5, 2:5, 2:5] = False  # only the 1-5 voxel lesions remain
    empty = lesion_metrics(np.zeros_like(label), label, min_lesion_size=6, matching="overlap")
    assert _counts(empty) == (0, 4, 0, 0, 0, 0, 0)
    assert empty["lesion_f1"] == empty["lesion_sensitivity"] == empty["lesion_precision"] == 1.0
    assert math.isnan(empty["lesion_dice_mean"]) and empty["lesions"] == []
    far = np.zeros_like(label)
    far[9, 6, 6] = True
    with_fp = lesion_metrics(far, label, min_lesion_size=6, matching="overlap")
    assert (with_fp["fp"], with_fp["lesion_sensitivity"], with_fp["lesion_precision"], with_fp["lesion_f1"]) == (
        1, 1.0, 0.0, 0.0)
    agg = aggregate_lesion_metrics([empty, with_fp])
    assert (agg["tp"], agg["fn"], agg["fp"], agg["n_gt_lesions_ignored"]) == (0, 0, 1, 8)
    assert math.isnan(agg["lesion_dice"])


def test_negative_min_lesion_size_is_an_error():
    with pytest.raises(ValueError, match="min_lesion_size must be >= 0 voxels"):
        lesion_metrics(np.zeros((3, 3)), np.zeros((3, 3)), min_lesion_size=-1, matching="overlap")

"""Scores over matched lesions: lesion-wise Dice (BraTS-2023), F1 from GT- and prediction-side counts, pooling over
cases, ``min_lesion_size`` under every rule, and option errors; hand-computed on tiny 3D volumes ``(D, H, W)``."""

from __future__ import annotations

import numpy as np
import pytest

from seg.evaluation.metrics import aggregate_lesion_metrics, detection_scores, lesion_metrics

RULES = ("msseg", "iou", "overlap")


def _two_lesions_and_a_false_positive() -> tuple[np.ndarray, np.ndarray]:
    label = np.zeros((12, 12, 12), dtype=bool)
    label[1:4, 1:4, 1:4] = True  # A: 27 voxels
    label[8:10, 8:10, 8:10] = True  # B: 8 voxels
    pred = np.zeros_like(label)
    pred[1:4, 1:4, 1:3] = True  # 18 voxels inside A: Dice 2*18 / (27 + 18) = 0.8
    pred[8:10, 8:10, 8:10] = True  # B exactly: Dice 1
    pred[10, 1, 10] = True  # FP, far from both
    return pred, label


@pytest.mark.parametrize("rule", RULES)
def test_lesion_wise_dice_is_the_sum_of_tp_dice_over_tp_fn_fp(rule: str):
    pred, label = _two_lesions_and_a_false_positive()
    m = lesion_metrics(pred, label, matching=rule)
    # Every rule agrees here: A covered 2/3 (IoU 2/3), B exact, the speck far away.
    assert (m["tp"], m["fn"], m["fp"], m["tp_pred"]) == (2, 0, 1, 2)
    assert [lesion["dice"] for lesion in m["lesions"]] == pytest.approx([0.8, 1.0])
    assert m["lesion_wise_dice"] == pytest.approx((0.8 + 1.0) / (2 + 0 + 1))
    assert m["lesion_f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 0))
    pred[8:10, 8:10, 8:10] = False  # B missed: a FN with Dice 0
    missed = lesion_metrics(pred, label, matching=rule)
    assert (missed["tp"], missed["fn"], missed["fp"]) == (1, 1, 1)
    assert missed["lesion_wise_dice"] == pytest.approx(0.8 / (1 + 1 + 1))


def test_aggregation_pools_lesion_wise_dice_and_prediction_side_counts():
    pred, label = _two_lesions_and_a_false_positive()
    found = lesion_metrics(pred, label)  # sum of TP Dice 1.8 over tp + fn + fp = 3
    empty = lesion_metrics(np.zeros_like(label), np.zeros_like(label))  # 0 / 0: perfect on its own
    missed = lesion_metrics(np.zeros_like(label), label)  # 0 / 2
    assert empty["lesion_wise_dice"] == 1.0 and missed["lesion_wise_dice"] == 0.0
    agg = aggregate_lesion_metrics([found, empty, missed])
    assert agg["matching"] == "msseg"
    assert (agg["tp"], agg["fn"], agg["fp"], agg["tp_pred"]) == (2, 2, 1, 2)
    assert agg["lesion_wise_dice"] == pytest.approx(1.8 / (2 + 2 + 1))
    assert (agg["lesion_sensitivity"], agg["lesion_precision"]) == pytest.approx((2 / 4, 2 / 3))
    with pytest.raises(ValueError, match="different rules"):
        aggregate_lesion_metrics([found, lesion_metrics(pred, label, matching="overlap")])


def test_detection_scores_from_gt_and_prediction_side_counts():
    # overlap/BraTS: precision and F1 from the GT-side tp, as before the matching rules.
    assert detection_scores(3, 1, 1) == {"lesion_f1": 6 / 8, "lesion_sensitivity": 3 / 4, "lesion_precision": 3 / 4}
    assert detection_scores(3, 1, 1, tp_pred=3) == detection_scores(3, 1, 1)
    # One component merging two GT lesions and one FP: S = 2/2, P = 1/2, F1 = 2 * 0.5 / 1.5.
    scores = detection_scores(2, 1, 0, tp_pred=1)
    assert (scores["lesion_sensitivity"], scores["lesion_precision"]) == (1.0, 0.5)
    assert scores["lesion_f1"] == pytest.approx(2 / 3)
    assert detection_scores(0, 0, 0, tp_pred=0) == {"lesion_f1": 1.0, "lesion_sensitivity": 1.0,
                                                    "lesion_precision": 1.0}
    assert detection_scores(0, 2, 0, tp_pred=0)["lesion_f1"] == 0.0  # no GT, predictions: S 1, P 0


@pytest.mark.parametrize("rule", RULES)
def test_predictions_on_ignored_lesions_only_are_neither_tp_nor_fp_under_every_rule(rule: str):
    label = np.zeros((12, 12, 12), dtype=bool)
    label[1:4, 1:4, 1:4] = True  # 27 voxels: counted
    label[9, 9, 9] = True  # 1 voxel: ignored with min_lesion_size 5
    pred = label.copy()  # one component on each
    pred[5, 10, 1] = True  # and a FP
    m = lesion_metrics(pred, label, matching=rule, min_lesion_size=5)
    assert (m["n_gt_lesions"], m["n_gt_lesions_ignored"], m["n_pred_lesions"], m["n_pred_lesions_ignored"]) == (
        1, 1, 3, 1)
    assert (m["tp"], m["fn"], m["fp"], m["tp_pred"]) == (1, 0, 1, 1)
    assert m["lesion_precision"] == 0.5


def test_the_default_size_bins_are_30_and_300_voxels():
    label = np.zeros((20, 20, 20), dtype=bool)
    label[1:4, 1:4, 1:4] = True  # 27 voxels: < 30
    label[10:14, 10:14, 10:12] = True  # 32 voxels: 30-300
    m = lesion_metrics(label, label)
    assert {k: (v["tp"], v["fn"]) for k, v in m["size_bins"].items()} == {
        "0-30": (1, 0), "30-300": (1, 0), "300-inf": (0, 0)}


def test_invalid_options_are_value_errors_with_a_hint():
    empty = np.zeros((4, 4, 4))
    with pytest.raises(ValueError, match=r"unknown matching 'mseg'.*did you mean 'msseg'"):
        lesion_metrics(empty, empty, matching="mseg")
    with pytest.raises(ValueError, match=r"msseg_alpha must be a fraction in \[0, 1\], got 1.5"):
        lesion_metrics(empty, empty, msseg_alpha=1.5)
    with pytest.raises(ValueError, match="iou_threshold must be a fraction"):
        lesion_metrics(empty, empty, matching="iou", iou_threshold=float("nan"))
    with pytest.raises(ValueError, match="dilation must be >= 0"):
        lesion_metrics(empty, empty, matching="overlap", dilation=-1)

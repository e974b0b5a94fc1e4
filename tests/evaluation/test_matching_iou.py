"""One-to-one IoU matching (``matching="iou"``): hand-made cases, and tp/fp/fn equal to panoptica's
``NaiveThresholdMatching`` (the reference implementation of this rule) on random multi-lesion 3D volumes."""

from __future__ import annotations

import numpy as np
import pytest

from seg.evaluation.metrics import lesion_metrics
from tests.evaluation._lesion_fixtures import random_lesion_case


def test_a_match_needs_iou_at_least_the_threshold():
    label = np.zeros((8, 8, 8), dtype=bool)  # (D, H, W)
    label[2, 2, 2:6] = True  # 4 voxels
    pred = np.zeros_like(label)
    pred[2, 2, 2:4] = True  # IoU 2 / 4 = 0.5: matched at threshold 0.5 (>=)
    m = lesion_metrics(pred, label, matching="iou")
    assert (m["tp"], m["fn"], m["fp"], m["tp_pred"]) == (1, 0, 0, 1)
    assert m["lesions"][0]["dice"] == pytest.approx(2 * 2 / (4 + 2))
    pred[2, 2, 1] = True  # IoU 2 / 5 = 0.4
    assert lesion_metrics(pred, label, matching="iou")["tp"] == 0
    assert lesion_metrics(pred, label, matching="iou", iou_threshold=0.4)["tp"] == 1


def test_each_lesion_and_each_component_is_matched_at_most_once_best_iou_first():
    label = np.zeros((10, 10, 10), dtype=bool)
    label[1:3, 1:3, 1:7] = True  # 24 voxels
    pred = np.zeros_like(label)
    pred[1:3, 1:3, 1:4] = True  # 12 voxels inside: IoU 0.5
    pred[1:3, 1:3, 5:7] = True  # 8 voxels inside: IoU 1/3
    m = lesion_metrics(pred, label, matching="iou", iou_threshold=0.1)
    assert (m["tp"], m["fn"], m["fp"], m["tp_pred"]) == (1, 0, 1, 1)
    assert m["lesions"][0]["dice"] == pytest.approx(2 * 12 / (24 + 12))  # against the better component only
    assert m["lesion_f1"] == pytest.approx(2 * 1 / (2 * 1 + 1 + 0))  # iou: tp_pred = tp, F1 = 2TP/(2TP+FP+FN)


def test_counts_equal_panoptica_naive_threshold_matching_on_random_volumes():
    panoptica = pytest.importorskip("panoptica")
    from panoptica import (
        ConnectedComponentsInstanceApproximator,
        InputType,
        NaiveThresholdMatching,
        Panoptica_Evaluator,
    )
    from panoptica.metrics import Metric

    panoptica.disable_citation_reminder()
    rng = np.random.default_rng(3)
    cases = [random_lesion_case(rng) for _ in range(30)]
    totals = {}
    for threshold in (0.5, 0.1):
        evaluator = Panoptica_Evaluator(
            expected_input=InputType.SEMANTIC, instance_approximator=ConnectedComponentsInstanceApproximator(),
            instance_matcher=NaiveThresholdMatching(matching_metric=Metric.IOU, matching_threshold=threshold),
            instance_metrics=[Metric.DSC, Metric.IOU], global_metrics=[Metric.DSC])
        total = np.zeros(3, dtype=int)
        for pred, label in cases:  # panoptica: cc3d, 26-connectivity in 3D, IoU >= threshold; ours: the same
            reference = evaluator.evaluate(pred.astype(np.uint8), label.astype(np.uint8))["ungrouped"]
            m = lesion_metrics(pred, label, matching="iou", iou_threshold=threshold)
            assert (m["tp"], m["fp"], m["fn"]) == (reference.tp, reference.fp, reference.fn)
            total += (m["tp"], m["fp"], m["fn"])
        totals[threshold] = total
    assert (totals[0.5] > 10).all() and totals[0.1][0] > totals[0.5][0]  # both thresholds match and miss lesions

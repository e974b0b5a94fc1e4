"""The MSSEG-2016 lesion detection rule (``matching="msseg"``) on hand-made 3D volumes ``(D, H, W)``, and against a
line-by-line transcription of Anima's ``getTruePositiveLesions``/``falsePositiveRatioTester`` on random volumes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from seg.evaluation.metrics import lesion_metrics
from tests.evaluation._lesion_fixtures import random_lesion_case


def _counts(m: dict) -> tuple[int, int, int, int]:
    return m["tp"], m["fn"], m["fp"], m["tp_pred"]


def _four_lesions_in_a_head() -> tuple[np.ndarray, np.ndarray]:
    """A 28³ "head" (21 952 voxels) holding four 27-voxel GT lesions; the prediction is the whole head."""
    label = np.zeros((32, 32, 32), dtype=bool)
    for corner in (4, 10, 16, 22):
        label[corner:corner + 3, corner:corner + 3, 6:9] = True
    head = np.zeros_like(label)
    head[2:30, 2:30, 2:30] = True
    return head, label


def test_a_blob_over_the_head_scores_zero_under_msseg_and_iou_but_perfect_under_overlap():
    blob, label = _four_lesions_in_a_head()
    overlap = lesion_metrics(blob, label, matching="overlap")
    msseg = lesion_metrics(blob, label)  # the default rule
    iou = lesion_metrics(blob, label, matching="iou")
    # overlap: the blob touches every lesion, so every lesion is found and the blob is no FP.
    assert _counts(overlap) == (4, 0, 0, 1) and overlap["lesion_f1"] == 1.0
    # msseg: the blob lies (21952 - 108) / 21952 = 99.5 % outside the GT (> beta 0.7): no lesion is detected by it,
    # and it is covered 108 / 21952 = 0.5 % by GT (< alpha 0.1): a FP.
    assert msseg["matching"] == "msseg"
    assert _counts(msseg) == (0, 4, 1, 0)
    assert (msseg["lesion_sensitivity"], msseg["lesion_precision"], msseg["lesion_f1"]) == (0.0, 0.0, 0.0)
    # iou: each lesion's IoU with the blob is 27 / 21952 < 0.5.
    assert _counts(iou) == (0, 4, 1, 0) and iou["lesion_f1"] == 0.0
    # Lesion-wise Dice sees through the blob even under overlap: 4 * (2*27 / (27 + 21952)) / 4.
    assert overlap["lesion_wise_dice"] == pytest.approx(2 * 27 / (27 + 21952))
    # The exact prediction is perfect under every rule.
    for rule in ("msseg", "iou", "overlap"):
        exact = lesion_metrics(label, label, matching=rule)
        assert _counts(exact) == (4, 0, 0, 4) and exact["lesion_f1"] == exact["lesion_wise_dice"] == 1.0


def test_a_lesion_split_in_two_inside_it_is_detected_and_both_halves_are_tp():
    label = np.zeros((12, 12, 14), dtype=bool)
    label[5:8, 5:8, 2:8] = True  # 54 voxels
    pred = np.zeros_like(label)
    pred[5:8, 5:8, 2:4] = True  # 18 voxels, inside
    pred[5:8, 5:8, 6:8] = True  # 18 voxels, inside; two planes of gap keep the halves apart
    m = lesion_metrics(pred, label)
    # Lesion: covered 36/54 > 0.1, both halves 0 % outside. Each half: covered 18/18, and the lesion lies
    # 18/54 = 33 % outside the prediction (<= beta 0.7): TP.
    assert _counts(m) == (1, 0, 0, 2) and m["n_pred_lesions"] == 2 and m["lesion_f1"] == 1.0
    assert m["lesions"][0]["dice"] == pytest.approx(2 * 36 / (54 + 36))
    # One-to-one IoU matching punishes the split: each half has IoU 18/54 < 0.5; at 0.1 one half matches.
    assert _counts(lesion_metrics(pred, label, matching="iou")) == (0, 1, 2, 0)
    assert _counts(lesion_metrics(pred, label, matching="iou", iou_threshold=0.1)) == (1, 0, 1, 1)


def test_one_component_merging_two_lesions_detects_both_unless_it_is_a_huge_blob():
    label = np.zeros((20, 20, 20), dtype=bool)
    label[5:8, 5:8, 5:8] = True  # A, 27 voxels
    label[5:8, 5:8, 10:13] = True  # B, 27 voxels, two planes away
    bridge = np.zeros_like(label)
    bridge[5:8, 5:8, 5:13] = True  # 72 voxels: A, B and the 18-voxel gap between them (25 % outside)
    m = lesion_metrics(bridge, label)
    assert _counts(m) == (2, 0, 0, 1) and m["lesion_f1"] == 1.0  # no one-to-one matching
    assert [lesion["dice"] for lesion in m["lesions"]] == pytest.approx([2 * 27 / (27 + 72)] * 2)
    blob = np.ones_like(label)  # 8000 voxels, 99.3 % outside: detects neither, covered 0.7 %: a FP
    assert _counts(lesion_metrics(blob, label)) == (0, 2, 1, 0)


def test_empty_label_and_empty_prediction_is_perfect():
    m = lesion_metrics(np.zeros((6, 6, 6)), np.zeros((6, 6, 6)))
    assert _counts(m) == (0, 0, 0, 0)
    assert m["lesion_f1"] == m["lesion_sensitivity"] == m["lesion_precision"] == m["lesion_wise_dice"] == 1.0
    fp_only = lesion_metrics(np.pad(np.ones((1, 1, 1)), 2), np.zeros((5, 5, 5)))
    assert _counts(fp_only) == (0, 0, 1, 0)
    assert (fp_only["lesion_sensitivity"], fp_only["lesion_precision"], fp_only["lesion_f1"]) == (1.0, 0.0, 0.0)


@pytest.mark.parametrize(("covered", "detected", "component_tp"), [
    (5, False, False),  # 5 % of the lesion: not > alpha 0.1
    (15, True, False),  # 15 %: detected; but 85 % of the lesion lies outside the component (> beta): no TP
    (40, True, True),  # 40 %: detected, and the lesion is 60 % outside (<= beta): the component is a TP
])
def test_cover_must_exceed_alpha_to_detect_and_the_lesion_must_be_covered_for_the_component_to_count(
        covered: int, detected: bool, component_tp: bool):
    label = np.zeros((12, 12, 12), dtype=bool)
    label[1:11, 1:11, 5] = True  # 100 voxels, one plane
    pred = np.zeros_like(label)
    pred[1:11, 1:11, 5].flat[:covered] = True  # the first `covered` voxels in raster order: one component
    m = lesion_metrics(pred, label)
    assert (m["lesions"][0]["detected"], m["tp_pred"] == 1, m["fp"] == int(not component_tp)) == (
        detected, component_tp, True)


def test_thresholds_are_strict_as_in_anima():
    label = np.zeros((12, 12, 12), dtype=bool)
    label[1:11, 1:11, 5] = True  # 100 voxels
    exactly_alpha = np.zeros_like(label)
    exactly_alpha[1:11, 1:11, 5].flat[:10] = True  # 10 / 100 = alpha: not > alpha
    assert lesion_metrics(exactly_alpha, label)["tp"] == 0
    exactly_alpha[1:11, 1:11, 5].flat[10] = True  # 11 / 100 > alpha
    assert lesion_metrics(exactly_alpha, label)["tp"] == 1

    line = np.zeros((14, 8, 8), dtype=bool)  # (D, H, W)
    line[0:4, 5, 5] = True  # a 4-voxel GT lesion along D
    pred = np.zeros_like(line)
    pred[1:11, 5, 5] = True  # 10 voxels: 3 in the lesion, 7 / 10 = beta outside: not > beta, detected
    assert _counts(lesion_metrics(pred, line)) == (1, 0, 0, 1)
    pred[11, 5, 5] = True  # 11 voxels: 8 / 11 > beta outside
    assert lesion_metrics(pred, line)["tp"] == 0
    assert lesion_metrics(pred, line, msseg_beta=0.75)["tp"] == 1


def test_gamma_decides_whether_a_blob_behind_a_good_component_is_checked():
    label = np.zeros((30, 30, 30), dtype=bool)
    label[0:10, 5, 5] = True  # 10-voxel lesion along D
    pred = np.zeros_like(label)
    pred[0:7, 5, 5] = True  # good: 7 voxels, all inside
    pred[8:20, 0:12, 0:12] = True  # blob: covers D = 8, 9 of the lesion, 1726 of its 1728 voxels outside
    m = lesion_metrics(pred, label)
    # Overlap 7 + 2: the good component alone carries 7/9 >= gamma 0.65, so the blob is never checked.
    assert m["tp"] == 1 and m["lesions"][0]["dice"] == pytest.approx(2 * 7 / (10 + 7))  # Dice without the blob
    assert m["fp"] == 1  # the blob itself is covered 2/1728 < alpha
    pred[:] = False
    pred[0:5, 5, 5] = True  # good: 5 of the 9 overlapping voxels, 5/9 < gamma: the walk reaches the blob
    pred[6:20, 0:12, 0:12] = True
    assert lesion_metrics(pred, label)["tp"] == 0
    assert lesion_metrics(pred, label, msseg_gamma=0.5)["tp"] == 1


def _anima_true_positives(table: np.ndarray, alpha: float, beta: float, gamma: float) -> int:
    """Anima's ``getTruePositiveLesions`` with ``falsePositiveRatioTester``, transcribed on a dense table
    ``(n_ref + 1, n_test + 1)`` (row/column 0 = background). The walk is bounded by the columns (Anima bounds it by
    the number of rows, a slip that this module's rule does not copy)."""
    n_ref, n_test = table.shape
    row_tp = table[:, 1:].sum(1)
    col_sum = table.sum(0)
    detected = 0
    for i in range(1, n_ref):
        if row_tp[i] / (row_tp[i] + table[i, 0]) > alpha:
            columns = sorted(((j, table[i, j]) for j in range(1, n_test)), key=lambda p: -p[1])  # stable: ties by label
            walked, k, leave = 0.0, 0, False
            while walked < gamma and k < len(columns) and not leave:
                leave = table[0, columns[k][0]] / col_sum[columns[k][0]] > beta
                if not leave:
                    walked += columns[k][1] / row_tp[i]
                k += 1
            detected += not leave
    return detected


def test_counts_equal_a_transcription_of_anima_on_random_volumes():
    rng = np.random.default_rng(7)
    structure = np.ones((3, 3, 3), dtype=bool)  # 26-connectivity, the default
    totals = np.zeros(4, dtype=int)
    for _ in range(30):
        pred, label = random_lesion_case(rng)
        gt_cc, n_gt = ndimage.label(label, structure)
        pred_cc, n_pred = ndimage.label(pred, structure)
        table = np.bincount(gt_cc.ravel() * (n_pred + 1) + pred_cc.ravel(),
                            minlength=(n_gt + 1) * (n_pred + 1)).reshape(n_gt + 1, n_pred + 1)
        m = lesion_metrics(pred, label)
        assert m["tp"] == _anima_true_positives(table, 0.1, 0.7, 0.65)
        assert m["tp_pred"] == _anima_true_positives(table.T, 0.1, 0.7, 0.65)
        assert (m["n_gt_lesions"], m["n_pred_lesions"]) == (n_gt, n_pred)
        # Anima: PPV = TP_pred / n_pred, sensitivity = TP_gt / n_gt, F1 their harmonic mean.
        ppv, sens = m["tp_pred"] / n_pred, m["tp"] / n_gt
        assert m["lesion_f1"] == pytest.approx(2 * ppv * sens / (ppv + sens) if ppv + sens else 0.0)
        totals += (m["tp"], m["fn"], m["tp_pred"], m["fp"])
    assert (totals > 20).all()  # the volumes exercise every count, not only misses

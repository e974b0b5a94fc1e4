"""Lesion matching rules: which ground-truth (GT) lesions a prediction detects, and which predicted components are
true positives (TP). Pure functions on labelled connected components; :func:`seg.evaluation.metrics.lesion_metrics`
turns their answers into counts and scores.

Inputs: ``gt_cc`` and ``pred_cc``, integer maps ``(*spatial)`` of connected components (0 = background, 1..n, as
``scipy.ndimage.label`` returns them), and ``counted``, bool ``(n_gt,)``: which GT lesions count (the others are under
``min_lesion_size`` and *ignored*). Every rule returns a :class:`LesionMatch`: per GT lesion detected or not and its
Dice against the prediction that detects it (0 when missed), per predicted component TP or not, and *ignored* (not a
TP, overlapping ignored GT lesions and no counted one: neither TP nor FP, whatever the rule).

``overlap`` (:func:`match_overlap`) — BraTS-2023 lesion-wise metrics (``get_LesionWiseScores`` in
rachitsaluja/BraTS-2023-Metrics) and WMH-2017 (Kuijf et al., 2019, IEEE TMI 38:2556). A GT lesion is detected when
any predicted voxel lies in it after dilating it by ``dilation`` voxels; a predicted component is a TP when it
overlaps a dilated counted GT lesion. Dice: against the union of the components overlapping the dilated lesion.
This rule can be gamed: one component covering the whole brain detects every lesion and, touching them, is no FP.

``msseg`` (:func:`match_msseg`) — MSSEG-2016 (Commowick et al., 2018, Sci. Rep. 8:13650), as its reference
implementation computes it (Anima ``animaSegPerfAnalyzer``, Inria-Empenn/Anima-Public: ``getTruePositiveLesions`` and
``falsePositiveRatioTester`` in animaSegPerfCAnalyzer.cxx; defaults alpha 0.10, beta 0.70, gamma 0.65 from
animaSegPerfApp.cxx). ``T[i][j]`` = voxels of GT lesion i in predicted component j (row/column 0 = background).
GT lesion i is detected iff
    (a) ``sum_{j>0} T[i][j] / |i| > alpha`` (strict), and
    (b) walking the components k that overlap i in decreasing ``T[i][k]`` until their accumulated share
        ``T[i][k] / sum_{j>0} T[i][j]`` reaches gamma (>=), no visited k has ``T[0][k] / |k| > beta``: the share of
        k in GT background (voxels in *other* GT lesions are not outside).
A predicted component is a TP iff the same test holds on the transposed table (covered > alpha by GT lesions, and
walking the GT lesions it overlaps until gamma of its overlap, none has more than beta of its voxels outside the
prediction). No one-to-one matching: a component merging two GT lesions can detect both. Dice: against the union of
the components that overlap the lesion with an outside share <= beta (0 when missed). Stated differences from Anima:
no size filter and full connectivity by default (Anima drops components <= 3 mm³ from both masks and uses
6-connectivity; use ``connectivity=6`` and ``min_lesion_size``, which filters GT only); the walk goes on until gamma
(Anima also stops it after as many steps as the tested lesion's own image has labels, background included, a loop
bound of its code); ties in overlap are walked in label order (Anima's ``std::sort`` leaves them unordered); cases without GT lesions or predictions
follow the vacuous rules of :mod:`seg.evaluation.metrics` (Anima divides by zero). Ignored GT lesions are background
in ``T``, as Anima's size filter makes its dropped components.

``iou`` (:func:`match_iou`) — one-to-one matching as panoptica's ``NaiveThresholdMatching`` (BrainLesion/panoptica):
the overlapping (GT lesion, component) pairs, sorted by IoU descending (ties by component label, then GT label, as
panoptica's stable sort leaves them), are taken greedily; a pair matches iff neither member is matched yet and
``IoU >= threshold``. Default 0.5 (above it matching is one-to-one by construction); 0.1 is common for tiny lesions.
Dice: against the matched component. Ignored GT lesions take no part in the matching.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from seg.errors import check_option

__all__ = ["RULES", "LesionMatch", "OverlapTable", "check_matching_options", "connectivity_structure", "match_iou",
           "match_lesions", "match_msseg", "match_overlap", "overlap_table"]

RULES = ("msseg", "iou", "overlap")

_NEIGHBOURS_TO_RANK = {2: {4: 1, 8: 2}, 3: {6: 1, 18: 2, 26: 3}}


def connectivity_structure(ndim: int, connectivity: int | None) -> np.ndarray:
    """Structuring element for ``connectivity`` given as a neighbour count (4/8 in 2D, 6/18/26 in 3D).

    ``None`` means full connectivity (8 in 2D, 26 in 3D).
    """
    choices = _NEIGHBOURS_TO_RANK[ndim]
    if connectivity is None:
        rank = ndim
    elif connectivity in choices:
        rank = choices[connectivity]
    else:
        raise ValueError(f"connectivity {connectivity!r} is not valid in {ndim}D; expected one of "
                         f"{sorted(choices)} (neighbour count) or None for full connectivity")
    return ndimage.generate_binary_structure(ndim, rank)


@dataclass(frozen=True)
class LesionMatch:
    """What a rule decided. ``detected``: bool ``(n_gt,)`` (False for ignored lesions); ``dice``: float64 ``(n_gt,)``
    (0 for missed, NaN for ignored lesions); ``pred_tp`` and ``pred_ignored``: bool ``(n_pred,)``."""

    detected: np.ndarray
    dice: np.ndarray
    pred_tp: np.ndarray
    pred_ignored: np.ndarray


@dataclass(frozen=True)
class OverlapTable:
    """The overlap table ``T`` without its background row and column, stored sparsely.

    ``gt_sizes`` int64 ``(n_gt,)`` and ``pred_sizes`` int64 ``(n_pred,)``: voxels of each component (label l at index
    l - 1); ``gt``, ``pred``, ``voxels``: int64 ``(n_pairs,)``, every overlapping pair (0-based indices) and its
    shared voxels, in increasing (pred, gt) order.
    """

    gt_sizes: np.ndarray
    pred_sizes: np.ndarray
    gt: np.ndarray
    pred: np.ndarray
    voxels: np.ndarray


def overlap_table(gt_cc: np.ndarray, pred_cc: np.ndarray) -> OverlapTable:
    """:class:`OverlapTable` of two component maps ``(*spatial)`` of the same shape (0 = background)."""
    n_gt, n_pred = int(gt_cc.max(initial=0)), int(pred_cc.max(initial=0))
    both = (gt_cc > 0) & (pred_cc > 0)
    codes = pred_cc[both].astype(np.int64) * (n_gt + 1) + gt_cc[both]  # one code per (pred, gt) pair
    codes, voxels = np.unique(codes, return_counts=True)
    return OverlapTable(gt_sizes=np.bincount(gt_cc.ravel(), minlength=n_gt + 1)[1:].astype(np.int64),
                        pred_sizes=np.bincount(pred_cc.ravel(), minlength=n_pred + 1)[1:].astype(np.int64),
                        gt=codes % (n_gt + 1) - 1, pred=codes // (n_gt + 1) - 1, voxels=voxels.astype(np.int64))


def _ignored_predictions(table: OverlapTable, counted: np.ndarray, pred_tp: np.ndarray) -> np.ndarray:
    """Components that are not TP and overlap ignored GT lesions only: bool ``(n_pred,)``."""
    n_pred = table.pred_sizes.size
    on_counted = np.zeros(n_pred, dtype=bool)
    on_counted[table.pred[counted[table.gt]]] = True
    on_ignored = np.zeros(n_pred, dtype=bool)
    on_ignored[table.pred[~counted[table.gt]]] = True
    return on_ignored & ~on_counted & ~pred_tp


def _counted_pairs(table: OverlapTable, counted: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``gt``, ``pred``, ``voxels`` of the pairs whose GT lesion counts (ignored lesions are background)."""
    keep = counted[table.gt]
    return table.gt[keep], table.pred[keep], table.voxels[keep]


def match_overlap(gt_cc: np.ndarray, pred_cc: np.ndarray, counted: np.ndarray, *, structure: np.ndarray,
                  dilation: int = 0) -> LesionMatch:
    """The ``overlap`` rule (module docstring) on component maps ``(*spatial)``.

    Args:
        gt_cc, pred_cc: component maps, same shape; ``counted``: bool ``(n_gt,)``.
        structure: structuring element of the dilation (the connectivity's, ``(3,) * ndim``).
        dilation: voxels by which each GT lesion is dilated before testing overlap; 0 = plain overlap.
    """
    n_gt, n_pred = counted.size, int(pred_cc.max(initial=0))
    pred_sizes = np.bincount(pred_cc.ravel(), minlength=n_pred + 1)
    detected, dice = np.zeros(n_gt, dtype=bool), np.full(n_gt, np.nan)
    matched = np.zeros(n_pred + 1, dtype=bool)  # overlaps a counted dilated GT lesion
    on_ignored = np.zeros(n_pred + 1, dtype=bool)  # overlaps an ignored dilated GT lesion
    for index, box in enumerate(ndimage.find_objects(gt_cc, max_label=n_gt), start=1):
        # Work inside the lesion's bounding box grown by `dilation`: cost scales with lesion, not volume.
        box = tuple(slice(max(s.start - dilation, 0), s.stop + dilation) for s in box)
        lesion = gt_cc[box] == index
        region = ndimage.binary_dilation(lesion, structure, iterations=dilation) if dilation else lesion
        hits = np.unique(pred_cc[box][region])
        hits = hits[hits > 0]
        if not counted[index - 1]:
            on_ignored[hits] = True
            continue
        matched[hits] = True
        # The matched components may extend beyond the box: their full sizes come from pred_sizes.
        overlap = int(np.isin(pred_cc[box][lesion], hits).sum()) if hits.size else 0
        detected[index - 1] = bool(hits.size)
        dice[index - 1] = 2.0 * overlap / (int(lesion.sum()) + int(pred_sizes[hits].sum()))
    return LesionMatch(detected=detected, dice=dice, pred_tp=matched[1:], pred_ignored=(on_ignored & ~matched)[1:])


def _msseg_detected(rows: np.ndarray, cols: np.ndarray, voxels: np.ndarray, row_sizes: np.ndarray,
                    col_sizes: np.ndarray, alpha: float, beta: float, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """One direction of the MSSEG test (Anima's ``getTruePositiveLesions``): which rows are detected.

    ``rows``, ``cols``, ``voxels``: int64 ``(n_pairs,)`` overlapping pairs; ``row_sizes`` ``(n_rows,)``, ``col_sizes``
    ``(n_cols,)``. Returns bool ``(n_rows,)`` and the outside share of each column, float64 ``(n_cols,)``.
    """
    n_rows, n_cols = row_sizes.size, col_sizes.size
    row_covered = np.bincount(rows, weights=voxels, minlength=n_rows)  # sum_{j>0} T[i][j]
    col_covered = np.bincount(cols, weights=voxels, minlength=n_cols)
    outside = (col_sizes - col_covered) / np.maximum(col_sizes, 1)  # T[0][k] / |k|
    detected = np.zeros(n_rows, dtype=bool)
    order = np.lexsort((cols, -voxels, rows))  # by row, then overlap descending, then column label
    starts = np.searchsorted(rows[order], np.arange(n_rows + 1))
    for row in np.flatnonzero(row_covered / np.maximum(row_sizes, 1) > alpha):  # (a), strict as in Anima
        walked, passed = 0.0, True
        for pair in order[starts[row]:starts[row + 1]]:  # (b): components in decreasing overlap
            if walked >= gamma:
                break
            if outside[cols[pair]] > beta:
                passed = False
                break
            walked += voxels[pair] / row_covered[row]
        detected[row] = passed
    return detected, outside


def match_msseg(table: OverlapTable, counted: np.ndarray, *, alpha: float = 0.10, beta: float = 0.70,
                gamma: float = 0.65) -> LesionMatch:
    """The ``msseg`` rule (module docstring): ``alpha`` min overlap ratio, ``beta`` max outside ratio, ``gamma``
    share of the overlap that must be walked; ``counted``: bool ``(n_gt,)``."""
    gt, pred, voxels = _counted_pairs(table, counted)
    gt_sizes = np.where(counted, table.gt_sizes, 0)  # ignored lesions are background: never tested
    detected, pred_outside = _msseg_detected(gt, pred, voxels, gt_sizes, table.pred_sizes, alpha, beta, gamma)
    pred_tp, _ = _msseg_detected(pred, gt, voxels, table.pred_sizes, gt_sizes, alpha, beta, gamma)
    dice = np.where(counted, 0.0, np.nan)
    for lesion in np.flatnonzero(detected):
        mine = (gt == lesion) & (pred_outside[pred] <= beta)  # the components that detect it
        dice[lesion] = 2.0 * voxels[mine].sum() / (table.gt_sizes[lesion] + table.pred_sizes[pred[mine]].sum())
    return LesionMatch(detected=detected, dice=dice, pred_tp=pred_tp,
                       pred_ignored=_ignored_predictions(table, counted, pred_tp))


def match_iou(table: OverlapTable, counted: np.ndarray, *, threshold: float = 0.5) -> LesionMatch:
    """The ``iou`` rule (module docstring): greedy one-to-one matching at ``IoU >= threshold``; ``counted``: bool
    ``(n_gt,)``."""
    gt, pred, voxels = _counted_pairs(table, counted)
    union = (table.gt_sizes[gt] + table.pred_sizes[pred] - voxels).astype(np.float64)
    iou = voxels / np.maximum(union, 1.0)
    detected, pred_tp = np.zeros(counted.size, dtype=bool), np.zeros(table.pred_sizes.size, dtype=bool)
    dice = np.where(counted, 0.0, np.nan)
    for pair in np.argsort(-iou, kind="stable"):  # pairs are in (pred, gt) order: panoptica's ties
        if iou[pair] < threshold:
            break
        if detected[gt[pair]] or pred_tp[pred[pair]]:
            continue
        detected[gt[pair]] = pred_tp[pred[pair]] = True
        dice[gt[pair]] = 2.0 * voxels[pair] / (table.gt_sizes[gt[pair]] + table.pred_sizes[pred[pair]])
    return LesionMatch(detected=detected, dice=dice, pred_tp=pred_tp,
                       pred_ignored=_ignored_predictions(table, counted, pred_tp))


def check_matching_options(matching: str, *, iou_threshold: float = 0.5, alpha: float = 0.10, beta: float = 0.70,
                           gamma: float = 0.65, dilation: int = 0) -> None:
    """Raise ``ValueError`` unless ``matching`` is one of :data:`RULES`, the thresholds are fractions in [0, 1] and
    ``dilation`` >= 0."""
    check_option("matching", matching, RULES)
    for name, value in (("iou_threshold", iou_threshold), ("msseg_alpha", alpha), ("msseg_beta", beta),
                        ("msseg_gamma", gamma)):
        if not 0.0 <= value <= 1.0:  # NaN fails too
            raise ValueError(f"{name} must be a fraction in [0, 1], got {value!r}")
    if dilation < 0:
        raise ValueError(f"dilation must be >= 0 voxels, got {dilation}")


def match_lesions(gt_cc: np.ndarray, pred_cc: np.ndarray, counted: np.ndarray, *, matching: str = "msseg",
                  structure: np.ndarray, dilation: int = 0, iou_threshold: float = 0.5, alpha: float = 0.10,
                  beta: float = 0.70, gamma: float = 0.65) -> LesionMatch:
    """The rule named ``matching`` on component maps ``(*spatial)``; ``dilation`` is used by ``overlap`` only."""
    check_matching_options(matching, iou_threshold=iou_threshold, alpha=alpha, beta=beta, gamma=gamma,
                           dilation=dilation)
    if matching == "overlap":
        return match_overlap(gt_cc, pred_cc, counted, structure=structure, dilation=dilation)
    table = overlap_table(gt_cc, pred_cc)
    if matching == "msseg":
        return match_msseg(table, counted, alpha=alpha, beta=beta, gamma=gamma)
    return match_iou(table, counted, threshold=iou_threshold)

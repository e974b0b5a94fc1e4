"""Voxel metrics (Dice, HD95, surface Dice) and lesion-wise metrics from connected components.

Definitions (the ones a reader needs to compare numbers with other papers):

Voxel metrics, on binary masks ``(*spatial)``:
    - Dice = 2|P∩G| / (|P| + |G|); both empty -> 1.0 (nothing to find, nothing predicted).
    - HD95 (MONAI, 95th percentile of the symmetric surface distances, in mm with ``spacing``):
      both empty -> 0.0; exactly one empty -> NaN (undefined; NaN-aware means skip it, and the
      evaluation summary reports how many cases were skipped).
    - Surface Dice at ``tolerance`` mm (MONAI, Nikolov et al. 2021): both empty -> 1.0, one empty -> 0.0.

Lesion-wise metrics (:func:`lesion_metrics`): lesions are connected components, full connectivity by default (26
neighbours in 3D, 8 in 2D). A matching rule (``matching``; algorithms and sources in :mod:`seg.evaluation.matching`)
decides which ground-truth (GT) lesions are detected and which predicted components are true positives (TP):
    - ``msseg`` (default): MSSEG-2016 (Commowick et al., 2018, Sci. Rep. 8:13650; Anima ``animaSegPerfAnalyzer``).
      A lesion is detected when predicted components cover more than alpha (0.10) of it and none of those making up
      gamma (0.65) of that cover lies more than beta (0.70) outside the GT; the same test with GT and prediction
      swapped decides each component. A blob covering the whole brain detects nothing and is a FP.
    - ``iou``: one-to-one at IoU >= ``iou_threshold`` (0.5), greedy by IoU (panoptica's ``NaiveThresholdMatching``).
    - ``overlap``: any overlap after dilating each GT lesion by ``dilation`` voxels (BraTS-2023, WMH-2017); a blob
      over the brain finds every lesion and is no FP. ``dilation`` applies to this rule only (the others ignore it).
      Unlike BraTS-2023, GT lesions that touch only after dilation are *not* merged.
Counts: ``tp`` and ``fn`` count counted GT lesions (detected, missed); ``tp_pred`` counts the predicted components
that are TP, ``fp`` those that are neither TP nor ignored (below). Scores: sensitivity S = tp / (tp + fn).
``msseg`` and ``iou``: precision P = tp_pred / (tp_pred + fp), F1 = 2PS / (P + S) (0 when P + S = 0); for ``iou``
tp_pred = tp, so F1 = 2tp / (2tp + fp + fn). ``overlap`` keeps the BraTS convention, tp counting GT lesions on both
sides: P = tp / (tp + fp), F1 = 2tp / (2tp + fp + fn). Empty cases: a ratio whose denominator is 0 is 1.0
(vacuously perfect: no GT and no prediction gives F1 = S = P = 1; no GT with predictions gives S 1, P 0, F1 0, and
every predicted component is a FP).
Per-lesion Dice: Dice of one GT lesion (undilated) against the prediction that detects it (``overlap``: the union of
the components overlapping its dilated region; ``msseg``: the union of the components overlapping it with at most
beta of their voxels outside the GT; ``iou``: the matched component), 0 for a missed lesion. ``lesion_wise_dice``:
BraTS-2023's lesion-wise Dice (``get_LesionWiseScores``/``get_LesionWiseResults``), the sum of per-lesion Dice over
TP GT lesions / (tp + fn + fp); 1.0 when tp + fn + fp = 0.

Minimum lesion size (``min_lesion_size`` voxels, 0 = off), as the BraTS-2023 lesion-wise metrics do it
(rachitsaluja/BraTS-2023-Metrics, by the author of brats_val_2023; GLI/SSA/PED/MEN threshold 50, MET 2): a GT lesion
smaller than ``min_lesion_size`` is *ignored*, neither TP nor FN, absent from the counts, sensitivities, size bins,
per-lesion Dice and ``lesions``. Under every rule a predicted component that is not a TP and overlaps ignored
lesions only (dilated, for ``overlap``) is ignored too: neither TP nor FP (``n_pred_lesions_ignored``); ``msseg``
and ``iou`` match against counted lesions only (ignored ones are background). Predicted components are not filtered
by size (nor are they in BraTS). Differences from BraTS: the size is the voxel count of the unmerged GT component
(BraTS: mm³ of the lesion merged by dilation, = voxels on its 1 mm grid), and a lesion of exactly
``min_lesion_size`` voxels counts (BraTS drops volume <= T, i.e. ``min_lesion_size`` T+1). A case whose GT lesions
are all ignored is a case without GT lesions (ratios above). Voxel metrics ignore it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance, compute_surface_dice
from scipy import ndimage

from seg.evaluation.calibration import CalibrationAccumulator, expected_calibration_error  # noqa: F401 (re-export)
from seg.evaluation.matching import check_matching_options, connectivity_structure, match_lesions


def _as_bool(mask: np.ndarray | torch.Tensor) -> np.ndarray:
    array = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    return array.astype(bool, copy=False) if array.dtype == bool else array > 0


def _check_pair(pred: np.ndarray, label: np.ndarray) -> None:
    if pred.shape != label.shape:
        raise ValueError(f"prediction has shape {pred.shape} but the label has {label.shape}; "
                         "they must be on the same voxel grid")
    if pred.ndim not in (2, 3):
        raise ValueError(f"expected 2D or 3D masks (*spatial), got {pred.ndim} dimensions {pred.shape}; "
                         "drop batch/channel axes first")


def _crop_to_union(p: np.ndarray, g: np.ndarray, margin: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Crop both masks to the bounding box of their union grown by ``margin`` voxels.

    Surface distances only involve voxels inside that box, and the margin keeps MONAI's edge detection from
    seeing an artificial border, so HD95 and surface Dice are unchanged while MONAI's full-volume distance
    transforms (seconds on a 240x240x155 volume) shrink to the lesion region.
    """
    box = ndimage.find_objects((p | g).astype(np.uint8))[0]
    box = tuple(slice(max(s.start - margin, 0), min(s.stop + margin, n)) for s, n in zip(box, p.shape, strict=True))
    return p[box], g[box]


def dice(pred: np.ndarray | torch.Tensor, label: np.ndarray | torch.Tensor) -> float:
    """Dice of two binary masks ``(*spatial)`` (any dtype; non-zero = foreground). Both empty -> 1.0."""
    p, g = _as_bool(pred), _as_bool(label)
    if p.shape != g.shape:
        raise ValueError(f"prediction has shape {p.shape} but the label has {g.shape}")
    denominator = int(p.sum()) + int(g.sum())
    return 1.0 if denominator == 0 else 2.0 * int(np.logical_and(p, g).sum()) / denominator


def dice_per_class(pred: np.ndarray | torch.Tensor, label: np.ndarray | torch.Tensor, *,
                   num_classes: int | None = None) -> np.ndarray:
    """Dice of each class of two integer label maps ``(*spatial)``.

    Returns:
        float64 ``(num_classes,)``, index 0 = background; a class absent from both maps scores 1.0.
        ``num_classes`` defaults to ``max(label, pred) + 1``.
    """
    p = np.asarray(pred.cpu() if isinstance(pred, torch.Tensor) else pred).astype(np.int64)
    g = np.asarray(label.cpu() if isinstance(label, torch.Tensor) else label).astype(np.int64)
    if p.shape != g.shape:
        raise ValueError(f"prediction has shape {p.shape} but the label has {g.shape}")
    k = int(max(p.max(initial=0), g.max(initial=0))) + 1 if num_classes is None else num_classes
    # One pass with bincount instead of K boolean masks: the confusion matrix gives every class at once.
    confusion = np.bincount(g.ravel() * k + p.ravel(), minlength=k * k)[: k * k].reshape(k, k)
    intersection = np.diag(confusion).astype(np.float64)
    sizes = confusion.sum(0) + confusion.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sizes == 0, 1.0, 2.0 * intersection / np.maximum(sizes, 1))


def hd95(pred: np.ndarray | torch.Tensor, label: np.ndarray | torch.Tensor, *,
         spacing: Sequence[float] | None = None) -> float:
    """95th-percentile Hausdorff distance (mm with ``spacing``) of binary masks ``(*spatial)``, via MONAI.

    Both empty -> 0.0, one empty -> NaN (see the module docstring).
    """
    p, g = _as_bool(pred), _as_bool(label)
    _check_pair(p, g)
    if not p.any() and not g.any():
        return 0.0
    if not p.any() or not g.any():
        return float("nan")
    p, g = _crop_to_union(p, g)
    with warnings.catch_warnings():  # MONAI 1.5+ warns about its own internal use of a deprecated argument
        warnings.simplefilter("ignore", FutureWarning)
        value = compute_hausdorff_distance(torch.from_numpy(p[None, None]), torch.from_numpy(g[None, None]),
                                           include_background=True, percentile=95,
                                           spacing=None if spacing is None else list(spacing))
    return float(value[0, 0])


def surface_dice(pred: np.ndarray | torch.Tensor, label: np.ndarray | torch.Tensor, *,
                 tolerance: float = 1.0, spacing: Sequence[float] | None = None) -> float:
    """Normalised surface Dice at ``tolerance`` (mm with ``spacing``) of binary masks ``(*spatial)``, via MONAI."""
    p, g = _as_bool(pred), _as_bool(label)
    _check_pair(p, g)
    if not p.any() and not g.any():
        return 1.0
    if not p.any() or not g.any():
        return 0.0
    p, g = _crop_to_union(p, g)
    with warnings.catch_warnings():  # as in hd95
        warnings.simplefilter("ignore", FutureWarning)
        value = compute_surface_dice(torch.from_numpy(p[None, None]), torch.from_numpy(g[None, None]),
                                     class_thresholds=[tolerance], include_background=True,
                                     spacing=None if spacing is None else list(spacing))
    return float(value[0, 0])


def size_bin_names(size_bins: Sequence[float]) -> list[str]:
    """Names of the size bins ``[0, b0), [b0, b1), ..., [bn, inf)``: ``["0-30", "30-300", "300-inf"]``."""
    edges = [0.0, *size_bins, float("inf")]
    return [f"{lo:g}-{hi:g}" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]


def _ratio(numerator: float, denominator: float) -> float:
    return 1.0 if denominator == 0 else numerator / denominator


def detection_scores(tp: float, fp: float, fn: float, tp_pred: float | None = None) -> dict[str, float]:
    """Lesion F1, sensitivity and precision from counts (formulas in the module docstring).

    ``tp_pred`` None (or equal to ``tp``): the ``overlap``/BraTS formulas, F1 = 2tp / (2tp + fp + fn); otherwise
    precision = tp_pred / (tp_pred + fp) and F1 their harmonic mean. A zero denominator gives 1.0 (vacuously perfect).
    """
    sensitivity = _ratio(tp, tp + fn)
    if tp_pred is None or tp_pred == tp:
        return {"lesion_f1": _ratio(2 * tp, 2 * tp + fp + fn), "lesion_sensitivity": sensitivity,
                "lesion_precision": _ratio(tp, tp + fp)}
    precision = _ratio(tp_pred, tp_pred + fp)
    f1 = 0.0 if precision + sensitivity == 0 else 2 * precision * sensitivity / (precision + sensitivity)
    return {"lesion_f1": f1, "lesion_sensitivity": sensitivity, "lesion_precision": precision}


def check_lesion_options(*, matching: str = "msseg", iou_threshold: float = 0.5, msseg_alpha: float = 0.1,
                         msseg_beta: float = 0.7, msseg_gamma: float = 0.65, dilation: int = 0,
                         size_bins: Sequence[float] = (30, 300), size_unit: str = "voxels",
                         min_lesion_size: int = 0) -> None:
    """Raise ``ValueError`` for an invalid option of :func:`lesion_metrics` (so callers can check before any I/O)."""
    check_matching_options(matching, iou_threshold=iou_threshold, alpha=msseg_alpha, beta=msseg_beta,
                           gamma=msseg_gamma, dilation=dilation)
    if size_unit not in ("voxels", "mm3"):
        raise ValueError(f"size_unit must be 'voxels' or 'mm3', got {size_unit!r}")
    if min_lesion_size < 0:
        raise ValueError(f"min_lesion_size must be >= 0 voxels (0 = off), got {min_lesion_size}")
    if list(size_bins) != sorted(size_bins) or any(b <= 0 for b in size_bins):
        raise ValueError(f"size_bins must be positive and increasing, got {tuple(size_bins)}")


def _size_bins(lesions: list[dict[str, Any]], size_bins: Sequence[float], size_unit: str) -> dict[str, dict]:
    sizes = np.array([lesion["size_voxels" if size_unit == "voxels" else "size_mm3"] for lesion in lesions])
    which = np.digitize(sizes, size_bins) if lesions else np.zeros(0, dtype=int)
    detected = np.array([lesion["detected"] for lesion in lesions], dtype=bool)
    bins: dict[str, dict[str, float]] = {}
    for b, name in enumerate(size_bin_names(size_bins)):
        tp_b, fn_b = int(detected[which == b].sum()), int((~detected[which == b]).sum())
        bins[name] = {"tp": tp_b, "fn": fn_b, "sensitivity": tp_b / (tp_b + fn_b) if tp_b + fn_b else float("nan")}
    return bins


def lesion_metrics(pred: np.ndarray | torch.Tensor, label: np.ndarray | torch.Tensor, *, matching: str = "msseg",
                   iou_threshold: float = 0.5, msseg_alpha: float = 0.1, msseg_beta: float = 0.7,
                   msseg_gamma: float = 0.65, spacing: Sequence[float] | None = None, dilation: int = 0,
                   connectivity: int | None = None, size_bins: Sequence[float] = (30, 300),
                   size_unit: str = "voxels", min_lesion_size: int = 0) -> dict[str, Any]:
    """Lesion-wise detection metrics of one case (definitions in the module docstring).

    Args:
        pred, label: binary prediction and ground truth ``(*spatial)``, 2D or 3D, any dtype (non-zero = lesion).
        matching: ``"msseg"``, ``"iou"`` or ``"overlap"`` (:mod:`seg.evaluation.matching`).
        iou_threshold: IoU a pair needs under ``iou`` (>=); 0.1 is common for tiny lesions.
        msseg_alpha, msseg_beta, msseg_gamma: the MSSEG-2016 thresholds (min cover > alpha, max outside share beta,
            share gamma of the cover that is checked).
        spacing: voxel size in mm per spatial axis (for lesion volumes in mm³); default 1.
        dilation: under ``overlap``, dilate each GT lesion by this many voxels (with the connectivity's structure)
            before testing overlap; 0 = plain overlap. The other rules ignore it.
        connectivity: neighbour count (4/8 in 2D, 6/18/26 in 3D); None = full.
        size_bins, size_unit: increasing bin edges for sensitivity by lesion size, in ``"voxels"`` or ``"mm3"``.
        min_lesion_size: GT lesions with fewer voxels are ignored (module docstring); 0 = every lesion counts.

    Returns:
        dict with ``matching`` (the rule), counts ``n_gt_lesions`` (counted GT lesions, = tp + fn),
        ``n_gt_lesions_ignored`` (GT lesions under ``min_lesion_size``), ``n_pred_lesions`` (every predicted component,
        = tp_pred + ``n_pred_lesions_ignored`` + fp), ``tp``, ``fp``, ``fn``, ``tp_pred``; scores ``lesion_f1``,
        ``lesion_sensitivity``, ``lesion_precision``, ``lesion_wise_dice``; ``fp_per_volume`` (= fp for one case);
        ``lesion_dice_mean`` (mean per-lesion Dice, NaN without counted GT lesions); ``size_bins`` {bin name:
        {"tp", "fn", "sensitivity"}} (sensitivity NaN for an empty bin); ``lesions``: one dict per counted GT
        lesion {"size_voxels", "size_mm3", "detected", "dice"}; ``missed_components``, ``false_positive_components``:
        their 1-based ids in ``scipy.ndimage.label``'s order under ``connectivity`` (what overlays mark).
    """
    check_lesion_options(matching=matching, iou_threshold=iou_threshold, msseg_alpha=msseg_alpha,
                         msseg_beta=msseg_beta, msseg_gamma=msseg_gamma, dilation=dilation, size_bins=size_bins,
                         size_unit=size_unit, min_lesion_size=min_lesion_size)
    p, g = _as_bool(pred), _as_bool(label)
    _check_pair(p, g)
    voxel_mm3 = 1.0 if spacing is None else float(np.prod(spacing))
    structure = connectivity_structure(g.ndim, connectivity)
    gt_cc, n_gt = ndimage.label(g, structure=structure)
    pred_cc, n_pred = ndimage.label(p, structure=structure)
    gt_sizes = np.bincount(gt_cc.ravel(), minlength=n_gt + 1)[1:]
    counted = gt_sizes >= min_lesion_size
    match = match_lesions(gt_cc, pred_cc, counted, matching=matching, structure=structure,
                          dilation=dilation, iou_threshold=iou_threshold, alpha=msseg_alpha, beta=msseg_beta,
                          gamma=msseg_gamma)
    lesions = [{"size_voxels": int(gt_sizes[i]), "size_mm3": int(gt_sizes[i]) * voxel_mm3,
                "detected": bool(match.detected[i]), "dice": float(match.dice[i])} for i in np.flatnonzero(counted)]
    tp, tp_pred, ignored = int(match.detected.sum()), int(match.pred_tp.sum()), int(match.pred_ignored.sum())
    fn, fp = len(lesions) - tp, n_pred - tp_pred - ignored
    dice_tp = sum(lesion["dice"] for lesion in lesions if lesion["detected"])
    return {"matching": matching, "n_gt_lesions": len(lesions), "n_gt_lesions_ignored": n_gt - len(lesions),
            "n_pred_lesions": n_pred, "n_pred_lesions_ignored": ignored, "tp": tp, "fp": fp, "fn": fn,
            "tp_pred": tp_pred, **detection_scores(tp, fp, fn, None if matching == "overlap" else tp_pred),
            "lesion_wise_dice": _ratio(dice_tp, tp + fn + fp), "fp_per_volume": float(fp),
            "lesion_dice_mean": float(np.mean([x["dice"] for x in lesions])) if lesions else float("nan"),
            "size_bins": _size_bins(lesions, size_bins, size_unit), "lesions": lesions,
            "missed_components": [int(i) + 1 for i in np.flatnonzero(counted & ~match.detected)],
            "false_positive_components": [int(i) + 1 for i in np.flatnonzero(~match.pred_tp & ~match.pred_ignored)]}


def aggregate_lesion_metrics(cases: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Dataset-level lesion metrics from per-case :func:`lesion_metrics` dicts (all of one matching rule).

    Pooled (counts summed over cases, then one ratio): ``lesion_f1``, ``lesion_sensitivity``, ``lesion_precision``
    (from tp, fp, fn, tp_pred as :func:`detection_scores`), ``lesion_wise_dice`` (BraTS: per-lesion Dice of every TP
    GT lesion of every case / pooled tp + fn + fp), sensitivity per size bin, ``small_lesion_sensitivity`` (first
    bin). Averaged: ``fp_per_volume`` (FP total / number of cases), ``lesion_dice`` (mean over all counted GT lesions
    of all cases, NaN without any), ``lesion_f1_case_mean`` (mean of per-case F1, each case weighted equally).
    Summed: ``n_gt_lesions_ignored`` (GT lesions under ``min_lesion_size``). ``matching``: the rule.
    """
    if not cases:
        raise ValueError("aggregate_lesion_metrics needs at least one case, got none")
    rules = sorted({c.get("matching", "overlap") for c in cases})  # dicts without the key predate the rules
    if len(rules) > 1:
        raise ValueError(f"the cases were matched by different rules {rules}; aggregate cases of one rule")
    tp, fp, fn = (sum(c[k] for c in cases) for k in ("tp", "fp", "fn"))
    tp_pred = sum(c.get("tp_pred", c["tp"]) for c in cases)
    names = list(cases[0]["size_bins"])
    bins = {}
    for name in names:
        tp_b = sum(c["size_bins"][name]["tp"] for c in cases)
        fn_b = sum(c["size_bins"][name]["fn"] for c in cases)
        bins[name] = {"tp": tp_b, "fn": fn_b, "sensitivity": tp_b / (tp_b + fn_b) if tp_b + fn_b else float("nan")}
    lesion_dices = [lesion["dice"] for c in cases for lesion in c["lesions"]]
    dice_tp = sum(x["dice"] for c in cases for x in c["lesions"] if x["detected"])  # FN lesions have Dice 0
    return {"matching": rules[0], "tp": tp, "fp": fp, "fn": fn, "tp_pred": tp_pred, "n_cases": len(cases),
            **detection_scores(tp, fp, fn, None if rules[0] == "overlap" else tp_pred),
            "lesion_wise_dice": _ratio(dice_tp, tp + fn + fp),
            "n_gt_lesions_ignored": sum(c["n_gt_lesions_ignored"] for c in cases), "fp_per_volume": fp / len(cases),
            "lesion_dice": float(np.mean(lesion_dices)) if lesion_dices else float("nan"),
            "lesion_f1_case_mean": float(np.mean([c["lesion_f1"] for c in cases])),
            "sensitivity_by_size": bins, "small_lesion_sensitivity": bins[names[0]]["sensitivity"]}

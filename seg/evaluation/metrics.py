"""Voxel metrics (Dice, HD95, surface Dice) and lesion-wise metrics from connected components.

Definitions (the ones a reader needs to compare numbers with other papers):

Voxel metrics, on binary masks ``(*spatial)``:
    - Dice = 2|P∩G| / (|P| + |G|); both empty -> 1.0 (nothing to find, nothing predicted).
    - HD95 (MONAI, 95th percentile of the symmetric surface distances, in mm with ``spacing``):
      both empty -> 0.0; exactly one empty -> NaN (undefined; NaN-aware means skip it, and the
      evaluation summary reports how many cases were skipped).
    - Surface Dice at ``tolerance`` mm (MONAI, Nikolov et al. 2021): both empty -> 1.0, one empty -> 0.0.

Lesion-wise metrics (:func:`lesion_metrics`): lesions are connected components, full connectivity by
default (26 neighbours in 3D, 8 in 2D). A ground-truth (GT) lesion is *detected* (TP) when a predicted
component overlaps it after dilating that lesion by ``dilation`` voxels (as the BraTS-2023 lesion-wise
metrics do); otherwise it is a FN. A predicted component that overlaps no dilated GT lesion is a FP.
TP and FN count GT lesions, FP counts predicted components (the BraTS convention), so
F1 = 2TP / (2TP + FP + FN), sensitivity = TP / (TP + FN), precision = TP / (TP + FP).
Empty cases: a ratio whose denominator is 0 is 1.0 (vacuously perfect: no GT and no prediction gives
F1 = sensitivity = precision = 1; no GT with predictions gives sensitivity 1, precision 0, F1 0, and every
predicted component is a FP). Unlike BraTS-2023, GT lesions that touch only after dilation are *not*
merged: the lesion count does not depend on ``dilation``.
Per-lesion Dice: Dice of one GT lesion (undilated) against the union of the predicted components that
overlap its dilated region (0 for a missed lesion).

Minimum lesion size (``min_lesion_size`` voxels, 0 = off), as the BraTS-2023 lesion-wise metrics do it
(``get_LesionWiseScores``/``get_LesionWiseResults`` in rachitsaluja/BraTS-2023-Metrics, by the author
of brats_val_2023; GLI/SSA/PED/MEN threshold 50, MET 2): a GT lesion smaller than ``min_lesion_size`` is *ignored*,
neither TP nor FN, absent from the counts, sensitivities, size bins, per-lesion Dice and ``lesions``. A predicted
component overlapping an ignored lesion (dilated as above) is not a FP; it detects nothing unless it also overlaps a
counted lesion. Predicted components are not filtered by size (nor are they in BraTS): one of any size that overlaps no
dilated GT lesion is a FP, and a small one can detect a counted lesion. Differences from BraTS: the size is the
voxel count of the unmerged GT component (BraTS: mm³ of the lesion merged by dilation, = voxels on its 1 mm grid),
and a lesion of exactly ``min_lesion_size`` voxels counts (BraTS drops volume <= T, i.e. ``min_lesion_size`` T+1).
A case whose GT lesions are all ignored is a case without GT lesions (ratios above). Voxel metrics ignore it.
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

_NEIGHBOURS_TO_RANK = {2: {4: 1, 8: 2}, 3: {6: 1, 18: 2, 26: 3}}


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


def size_bin_names(size_bins: Sequence[float]) -> list[str]:
    """Names of the size bins ``[0, b0), [b0, b1), ..., [bn, inf)``: ``["0-10", "10-100", "100-inf"]``."""
    edges = [0.0, *size_bins, float("inf")]
    return [f"{lo:g}-{hi:g}" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]


def _ratio(numerator: float, denominator: float) -> float:
    return 1.0 if denominator == 0 else numerator / denominator


def detection_scores(tp: float, fp: float, fn: float) -> dict[str, float]:
    """F1, sensitivity and precision from lesion counts; a zero denominator gives 1.0 (vacuously perfect)."""
    return {"lesion_f1": _ratio(2 * tp, 2 * tp + fp + fn), "lesion_sensitivity": _ratio(tp, tp + fn),
            "lesion_precision": _ratio(tp, tp + fp)}


def lesion_metrics(pred: np.ndarray | torch.Tensor, label: np.ndarray | torch.Tensor, *,
                   spacing: Sequence[float] | None = None, dilation: int = 0, connectivity: int | None = None,
                   size_bins: Sequence[float] = (10, 100), size_unit: str = "voxels",
                   min_lesion_size: int = 0) -> dict[str, Any]:
    """Lesion-wise detection metrics of one case (definitions in the module docstring).

    Args:
        pred: binary prediction ``(*spatial)``, 2D or 3D, any dtype (non-zero = lesion).
        label: binary ground truth, same shape.
        spacing: voxel size in mm per spatial axis (for lesion volumes in mm³); default 1.
        dilation: dilate each GT lesion by this many voxels (with the connectivity's structure) before
            testing overlap. 0 = plain overlap.
        connectivity: neighbour count (4/8 in 2D, 6/18/26 in 3D); None = full.
        size_bins: increasing bin edges for sensitivity by lesion size, in ``size_unit``.
        size_unit: ``"voxels"`` or ``"mm3"``.
        min_lesion_size: GT lesions with fewer voxels are ignored (module docstring); 0 = every lesion counts.

    Returns:
        dict with counts ``n_gt_lesions`` (counted GT lesions, = tp + fn), ``n_gt_lesions_ignored`` (GT lesions
        under ``min_lesion_size``), ``n_pred_lesions`` (every predicted component, = components overlapping a
        counted lesion + ``n_pred_lesions_ignored`` (overlapping ignored lesions only) + fp), ``tp``, ``fp``,
        ``fn``; scores ``lesion_f1``,
        ``lesion_sensitivity``, ``lesion_precision``; ``fp_per_volume`` (= fp for one case);
        ``lesion_dice_mean`` (mean per-lesion Dice, NaN without counted GT lesions); ``size_bins`` {bin name:
        {"tp", "fn", "sensitivity"}} (sensitivity NaN for an empty bin); ``lesions``: one dict per counted GT
        lesion {"size_voxels", "size_mm3", "detected", "dice"}.
    """
    if size_unit not in ("voxels", "mm3"):
        raise ValueError(f"size_unit must be 'voxels' or 'mm3', got {size_unit!r}")
    if dilation < 0:
        raise ValueError(f"dilation must be >= 0 voxels, got {dilation}")
    if min_lesion_size < 0:
        raise ValueError(f"min_lesion_size must be >= 0 voxels (0 = off), got {min_lesion_size}")
    if list(size_bins) != sorted(size_bins) or any(b <= 0 for b in size_bins):
        raise ValueError(f"size_bins must be positive and increasing, got {tuple(size_bins)}")
    p, g = _as_bool(pred), _as_bool(label)
    _check_pair(p, g)
    voxel_mm3 = 1.0 if spacing is None else float(np.prod(spacing))
    structure = connectivity_structure(g.ndim, connectivity)
    gt_cc, n_gt = ndimage.label(g, structure=structure)
    pred_cc, n_pred = ndimage.label(p, structure=structure)
    pred_sizes = np.bincount(pred_cc.ravel(), minlength=n_pred + 1)

    lesions: list[dict[str, Any]] = []
    matched_pred = np.zeros(n_pred + 1, dtype=bool)  # overlaps a counted GT lesion
    on_ignored = np.zeros(n_pred + 1, dtype=bool)  # overlaps a GT lesion under min_lesion_size
    for index, box in enumerate(ndimage.find_objects(gt_cc), start=1):
        # Work inside the lesion's bounding box grown by `dilation`: cost scales with lesion, not volume.
        box = tuple(slice(max(s.start - dilation, 0), s.stop + dilation) for s in box)
        lesion = gt_cc[box] == index
        region = ndimage.binary_dilation(lesion, structure, iterations=dilation) if dilation else lesion
        hits = np.unique(pred_cc[box][region])
        hits = hits[hits > 0]
        size = int(lesion.sum())
        if size < min_lesion_size:
            on_ignored[hits] = True
            continue
        matched_pred[hits] = True
        # The matched components may extend beyond the box: their full sizes come from pred_sizes.
        overlap = int(np.isin(pred_cc[box][lesion], hits).sum()) if hits.size else 0
        lesion_dice = 2.0 * overlap / (size + int(pred_sizes[hits].sum()))
        lesions.append({"size_voxels": size, "size_mm3": size * voxel_mm3, "detected": bool(hits.size),
                        "dice": lesion_dice})

    tp = sum(lesion["detected"] for lesion in lesions)
    fn = len(lesions) - tp
    fp = int(n_pred - (matched_pred | on_ignored)[1:].sum())
    names = size_bin_names(size_bins)
    sizes = np.array([lesion["size_voxels" if size_unit == "voxels" else "size_mm3"] for lesion in lesions])
    which = np.digitize(sizes, size_bins) if lesions else np.zeros(0, dtype=int)
    detected = np.array([lesion["detected"] for lesion in lesions], dtype=bool)
    bins: dict[str, dict[str, float]] = {}
    for b, name in enumerate(names):
        tp_b, fn_b = int(detected[which == b].sum()), int((~detected[which == b]).sum())
        bins[name] = {"tp": tp_b, "fn": fn_b,
                      "sensitivity": tp_b / (tp_b + fn_b) if tp_b + fn_b else float("nan")}
    return {"n_gt_lesions": len(lesions), "n_gt_lesions_ignored": n_gt - len(lesions), "n_pred_lesions": n_pred,
            "n_pred_lesions_ignored": int((on_ignored & ~matched_pred)[1:].sum()), "tp": tp, "fp": fp, "fn": fn,
            **detection_scores(tp, fp, fn), "fp_per_volume": float(fp),
            "lesion_dice_mean": float(np.mean([x["dice"] for x in lesions])) if lesions else float("nan"),
            "size_bins": bins, "lesions": lesions}


def aggregate_lesion_metrics(cases: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Dataset-level lesion metrics from per-case :func:`lesion_metrics` dicts.

    Pooled (lesion counts summed over cases, then one ratio): ``lesion_f1``, ``lesion_sensitivity``,
    ``lesion_precision``, sensitivity per size bin, ``small_lesion_sensitivity`` (first bin).
    Averaged: ``fp_per_volume`` (FP total / number of cases), ``lesion_dice`` (mean over all counted GT lesions of
    all cases, NaN without any), ``lesion_f1_case_mean`` (mean of per-case F1, each case weighted equally).
    Summed: ``n_gt_lesions_ignored`` (GT lesions under ``min_lesion_size``).
    """
    if not cases:
        raise ValueError("aggregate_lesion_metrics needs at least one case, got none")
    tp, fp, fn = (sum(c[k] for c in cases) for k in ("tp", "fp", "fn"))
    names = list(cases[0]["size_bins"])
    bins = {}
    for name in names:
        tp_b = sum(c["size_bins"][name]["tp"] for c in cases)
        fn_b = sum(c["size_bins"][name]["fn"] for c in cases)
        bins[name] = {"tp": tp_b, "fn": fn_b, "sensitivity": tp_b / (tp_b + fn_b) if tp_b + fn_b else float("nan")}
    lesion_dices = [lesion["dice"] for c in cases for lesion in c["lesions"]]
    return {"tp": tp, "fp": fp, "fn": fn, "n_cases": len(cases), **detection_scores(tp, fp, fn),
            "n_gt_lesions_ignored": sum(c["n_gt_lesions_ignored"] for c in cases),
            "fp_per_volume": fp / len(cases),
            "lesion_dice": float(np.mean(lesion_dices)) if lesion_dices else float("nan"),
            "lesion_f1_case_mean": float(np.mean([c["lesion_f1"] for c in cases])),
            "sensitivity_by_size": bins, "small_lesion_sensitivity": bins[names[0]]["sensitivity"]}

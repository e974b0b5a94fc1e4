"""``seg-evaluate``: compare a folder of predicted label maps with a folder of ground-truth labels.

Files are matched by name (``labels/case_001.nii.gz`` <-> ``pred/case_001.nii.gz``); every label needs a
prediction, and predictions without a label are not evaluated but listed (a warning line and
``summary["unmatched_predictions"]``). Prediction and label must share shape and affine.

Per case: Dice per class and of the lesion foreground, HD95 and surface Dice of the lesion foreground, lesion-wise
detection metrics by the rule ``--matching`` (``msseg``, MSSEG-2016, by default; ``iou``; ``overlap``, BraTS-2023;
definitions in :mod:`seg.evaluation.metrics` and :mod:`seg.evaluation.matching`), and with ``--probabilities`` the
ECE (:mod:`seg.evaluation.calibration`).
The *lesion foreground* is every non-zero label by default, or the labels given with ``--classes`` (e.g.
``--classes 4`` for BraTS enhancing tumour): lesion-wise metrics, HD95 and surface Dice use it. With
``--min-lesion-size N`` GT lesions under N voxels are ignored by the lesion-wise metrics (BraTS-2023 style; the rule
is in :mod:`seg.evaluation.metrics`); voxel metrics are unaffected.

Outputs (with ``--output DIR``, each written atomically): ``per_case.csv``, ``per_lesion.csv`` (one row per counted
GT lesion: size, detected, Dice), ``summary.json``, ``summary.md`` and, with probabilities, ``reliability.png``.
Summary: ``dice`` is the mean over cases of the mean over foreground classes of the per-class Dice (a class absent
from both maps scores 1); ``dice_foreground`` the mean lesion-foreground Dice; ``hd95`` the mean over cases where it
is defined (``hd95_undefined_cases`` counts the others); lesion F1/sensitivity/precision, ``lesion_wise_dice`` and
sensitivity by size are pooled over cases; ``fp_per_volume`` is FP total / cases; ``ece`` pools every voxel of every
case. ``settings`` records the options, the matching rule and its thresholds among them.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from seg.evaluation.calibration import CalibrationAccumulator
from seg.evaluation.files import (
    check_same_grid,
    foreground_probability,
    load_labels,
    nifti_files,
    probability_file,
)
from seg.evaluation.metrics import (
    aggregate_lesion_metrics,
    check_lesion_options,
    dice,
    dice_per_class,
    hd95,
    lesion_metrics,
    surface_dice,
)
from seg.evaluation.outputs import CASE_COLUMNS, REGION_COLUMNS, json_ready, summary_markdown, write_outputs  # noqa: F401
from seg.evaluation.overlays import draw_overlay
from seg.io import case_name
from seg.types import PathLike


def evaluate_case(pred: np.ndarray, label: np.ndarray, *, spacing: Sequence[float] | None = None,
                  classes: Sequence[int] | None = None, matching: str = "msseg", iou_threshold: float = 0.5,
                  msseg_alpha: float = 0.1, msseg_beta: float = 0.7, msseg_gamma: float = 0.65, dilation: int = 0,
                  connectivity: int | None = None, size_bins: Sequence[float] = (30, 300), size_unit: str = "voxels",
                  tolerance: float = 1.0, min_lesion_size: int = 0,
                  regions: Mapping[str, Sequence[int]] | None = None) -> dict[str, Any]:
    """All metrics of one case from integer label maps ``(*spatial)`` (see the module docstring; the lesion options
    are those of :func:`seg.evaluation.metrics.lesion_metrics`). With ``regions`` ({name: labels}, e.g. BraTS
    ``{"WT": [1, 2, 3, 4], "TC": [1, 3, 4], "ET": [4]}``) each region's binary masks are also evaluated
    (``out["regions"][name]``, columns ``<name>_dice``, ``<name>_lesion_f1`` ...) and ``dice`` is their mean."""
    per_class = dice_per_class(pred, label)
    pred_fg = pred > 0 if classes is None else np.isin(pred, classes)
    label_fg = label > 0 if classes is None else np.isin(label, classes)
    out: dict[str, Any] = {"dice_per_class": per_class.tolist(),
                           "dice": float(per_class[1:].mean()) if per_class.size > 1 else 1.0,
                           "dice_foreground": dice(pred_fg, label_fg),
                           "hd95": hd95(pred_fg, label_fg, spacing=spacing),
                           "surface_dice": surface_dice(pred_fg, label_fg, tolerance=tolerance, spacing=spacing)}
    out.update(lesion_metrics(pred_fg, label_fg, matching=matching, iou_threshold=iou_threshold,
                              msseg_alpha=msseg_alpha, msseg_beta=msseg_beta, msseg_gamma=msseg_gamma, spacing=spacing,
                              dilation=dilation, connectivity=connectivity, size_bins=size_bins, size_unit=size_unit,
                              min_lesion_size=min_lesion_size))
    if regions:
        out["regions"] = {}
        for name, labels in regions.items():
            p, g = np.isin(pred, list(labels)), np.isin(label, list(labels))
            region = lesion_metrics(p, g, matching=matching, iou_threshold=iou_threshold, msseg_alpha=msseg_alpha,
                                    msseg_beta=msseg_beta, msseg_gamma=msseg_gamma, spacing=spacing, dilation=dilation,
                                    connectivity=connectivity, size_bins=size_bins, size_unit=size_unit,
                                    min_lesion_size=min_lesion_size)
            region["dice"] = dice(p, g)
            out["regions"][name] = region
            out.update({f"{name}_{k}": region[k] for k in REGION_COLUMNS})
        out["dice"] = float(np.mean([r["dice"] for r in out["regions"].values()]))
    return out


def evaluate_folders(pred_dir: PathLike, label_dir: PathLike, output_dir: PathLike | None = None, *,
                     probabilities_dir: PathLike | None = None, matching: str = "msseg", iou_threshold: float = 0.5,
                     msseg_alpha: float = 0.1, msseg_beta: float = 0.7, msseg_gamma: float = 0.65, dilation: int = 0,
                     size_bins: Sequence[float] = (30, 300), size_unit: str = "voxels",
                     classes: Sequence[int] | None = None, connectivity: int | None = None,
                     tolerance: float = 1.0, min_lesion_size: int = 0, n_bins: int = 15,
                     regions: Mapping[str, Sequence[int]] | None = None,
                     overlays: Mapping[str, Sequence[PathLike]] | None = None, progress: bool = True) -> dict[str, Any]:
    """Evaluate every label in ``label_dir`` against the same-named file in ``pred_dir``; returns the summary.

    The lesion options are those of :func:`seg.evaluation.metrics.lesion_metrics`; ``regions`` as in
    :func:`evaluate_case`; ``overlays`` ({case: image files}) also writes ``OUTPUT/overlays/<case>.png``
    (:mod:`seg.evaluation.overlays`). Predictions without a label get a
    warning line (stderr) and are listed in ``summary["unmatched_predictions"]``; a ``dilation`` that the matching
    rule ignores (every rule but ``overlap``) gets a warning line too.

    Raises:
        FileNotFoundError: a folder, a prediction or a probability map is missing (the message names it).
        ValueError: shape/affine mismatch (names both files), non-integral labels, or an invalid lesion option.
    """
    lesion_options = {"matching": matching, "iou_threshold": iou_threshold, "msseg_alpha": msseg_alpha,
                      "msseg_beta": msseg_beta, "msseg_gamma": msseg_gamma, "dilation": dilation,
                      "min_lesion_size": min_lesion_size, "size_bins": list(size_bins), "size_unit": size_unit}
    check_lesion_options(**lesion_options)  # before reading any file
    if dilation and matching != "overlap":
        print(f"warning: dilation {dilation} is ignored: only the 'overlap' matching rule dilates GT lesions",
              file=sys.stderr)
    pred_dir, label_dir = Path(pred_dir), Path(label_dir)
    labels = nifti_files(label_dir)
    if not labels:
        raise FileNotFoundError(f"no .nii/.nii.gz label files in '{label_dir}'")
    unmatched = sorted({p.name for p in nifti_files(pred_dir)} - {p.name for p in labels})  # pred_dir must exist
    if unmatched:
        shown = ", ".join(unmatched[:10]) + (f" (and {len(unmatched) - 10} more)" if len(unmatched) > 10 else "")
        print(f"warning: {len(unmatched)} prediction(s) in '{pred_dir}' have no label in '{label_dir}' and are not "
              f"evaluated: {shown}", file=sys.stderr)
    missing = [p for p in labels if not (pred_dir / p.name).is_file()]
    if missing:
        raise FileNotFoundError(f"no prediction for label '{missing[0]}': expected '{pred_dir / missing[0].name}'"
                                + (f" ({len(missing) - 1} more labels lack one)" if len(missing) > 1 else ""))
    accumulator = CalibrationAccumulator(n_bins) if probabilities_dir is not None else None
    cases: list[dict[str, Any]] = []
    for label_path in tqdm(labels, desc="evaluate", unit="case", disable=not progress):
        pred_path = pred_dir / label_path.name
        label, label_affine, spacing = load_labels(label_path)
        pred, pred_affine, _ = load_labels(pred_path)
        check_same_grid(pred_path, pred.shape, pred_affine, label_path, label.shape, label_affine)
        case = {"case": case_name(label_path),
                **evaluate_case(pred, label, spacing=spacing, classes=classes, connectivity=connectivity,
                                tolerance=tolerance, regions=regions, **lesion_options)}
        if overlays is not None and output_dir is not None and case["case"] in overlays:
            pred_fg = pred > 0 if classes is None else np.isin(pred, classes)
            label_fg = label > 0 if classes is None else np.isin(label, classes)
            draw_overlay(Path(output_dir) / "overlays" / f"{case['case']}.png", overlays[case["case"]], label_fg,
                         pred_fg, label_affine, case, connectivity=connectivity)
        if accumulator is not None:
            prob_path = probability_file(Path(probabilities_dir), label_path)
            prob, prob_affine = foreground_probability(prob_path, label.shape, classes)
            check_same_grid(prob_path, prob.shape, prob_affine, label_path, label.shape, label_affine)
            label_fg = label > 0 if classes is None else np.isin(label, classes)
            case_accumulator = CalibrationAccumulator(n_bins)
            case_accumulator.update(prob, label_fg)
            case["ece"] = case_accumulator.compute().ece
            accumulator.update(prob, label_fg)
        cases.append(case)
    summary = summarise(cases, settings={**lesion_options, "classes": None if classes is None else list(classes),
                                         "connectivity": connectivity, "surface_dice_tolerance_mm": tolerance,
                                         "regions": None if regions is None else {k: list(v) for k, v in regions.items()}})
    summary["unmatched_predictions"] = unmatched
    calibration = accumulator.compute() if accumulator is not None else None
    if calibration is not None:
        summary["ece"] = calibration.ece
        summary["calibration"] = calibration.to_dict()
    if output_dir is not None:
        write_outputs(Path(output_dir), cases, summary, calibration)
    return summary


def summarise(cases: Sequence[dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    """Dataset summary from per-case dicts (pooled vs averaged: see the module docstring)."""
    num_classes = max(len(c["dice_per_class"]) for c in cases)
    # A class beyond a case's highest label is absent from both of its maps: Dice 1 by definition.
    per_class = np.array([c["dice_per_class"] + [1.0] * (num_classes - len(c["dice_per_class"])) for c in cases])
    hd = np.array([c["hd95"] for c in cases], dtype=np.float64)
    summary: dict[str, Any] = {
        "n_cases": len(cases),
        "dice": float(np.mean(per_class[:, 1:].mean(1))) if num_classes > 1 else 1.0,
        **{f"dice_class{k}": float(per_class[:, k].mean()) for k in range(1, num_classes)},
        "dice_foreground": float(np.mean([c["dice_foreground"] for c in cases])),
        "hd95": float(np.nanmean(hd)) if np.isfinite(hd).any() else math.nan,
        "hd95_undefined_cases": int(np.isnan(hd).sum()),
        "surface_dice": float(np.mean([c["surface_dice"] for c in cases])),
    }
    summary.update(aggregate_lesion_metrics(cases))
    if "regions" in cases[0]:
        summary["regions"] = {name: {**aggregate_lesion_metrics([c["regions"][name] for c in cases]),
                                     "dice": float(np.mean([c["regions"][name]["dice"] for c in cases]))}
                              for name in cases[0]["regions"]}
    summary["settings"] = settings
    return summary


def parse_regions(items: Sequence[str] | None) -> dict[str, list[int]] | None:
    """``["WT=1,2,3,4", "ET=4"]`` -> ``{"WT": [1, 2, 3, 4], "ET": [4]}`` (None stays None)."""
    if items is None:
        return None
    regions = {}
    for item in items:
        name, _, labels = item.partition("=")
        try:
            regions[name] = [int(v) for v in labels.split(",")]
        except ValueError:
            raise ValueError(f"--regions takes NAME=L1,L2,... with integer labels, got {item!r}") from None
        if not name or not regions[name] or min(regions[name]) < 1:
            raise ValueError(f"--regions takes NAME=L1,L2,... with labels >= 1, got {item!r}")
    return regions


def images_by_case(folder: Path) -> dict[str, list[Path]]:
    """{case: image files} of a folder (``CASE.nii.gz``, or ``CASE_0000.nii.gz`` ... grouped)."""
    groups: dict[str, list[Path]] = {}
    for path in nifti_files(Path(folder)):
        groups.setdefault(case_name(path, channel_suffix=True), []).append(path)
    return groups


def main(argv: list[str] | None = None) -> int:
    """``seg-evaluate --pred DIR --label DIR [--output DIR] [--probabilities DIR] [...]``."""
    parser = argparse.ArgumentParser(prog="seg-evaluate", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--pred", required=True, help="folder of predicted label maps")
    parser.add_argument("--label", required=True, help="folder of ground-truth label maps (same file names)")
    parser.add_argument("--output", default=None, help="folder for CSV/JSON/Markdown (default: print only)")
    parser.add_argument("--probabilities", default=None,
                        help="folder of probability maps (<case>_prob.nii.gz or same names) for ECE")
    parser.add_argument("--classes", type=int, nargs="+", default=None,
                        help="labels forming the lesion foreground (default: every non-zero label)")
    parser.add_argument("--matching", choices=("msseg", "iou", "overlap"), default="msseg",
                        help="lesion matching rule: MSSEG-2016 detection, one-to-one IoU, or any overlap (BraTS-2023)")
    parser.add_argument("--iou-threshold", type=float, default=0.5, help="IoU a match needs (--matching iou)")
    parser.add_argument("--msseg-alpha", type=float, default=0.1, help="min share of a lesion covered (msseg)")
    parser.add_argument("--msseg-beta", type=float, default=0.7, help="max share of a component outside (msseg)")
    parser.add_argument("--msseg-gamma", type=float, default=0.65, help="share of the cover checked (msseg)")
    parser.add_argument("--dilation", type=int, default=0,
                        help="GT dilation (voxels) before testing overlap (--matching overlap only)")
    parser.add_argument("--min-lesion-size", type=int, default=0,
                        help="ignore GT lesions under this many voxels in lesion-wise metrics (BraTS-2023 GLI: 51)")
    parser.add_argument("--connectivity", type=int, default=None, help="4/8 (2D), 6/18/26 (3D); default full")
    parser.add_argument("--size-bins", type=float, nargs="+", default=[30, 300], help="lesion size bin edges")
    parser.add_argument("--size-unit", choices=("voxels", "mm3"), default="voxels")
    parser.add_argument("--tolerance", type=float, default=1.0, help="surface Dice tolerance in mm")
    parser.add_argument("--ece-bins", type=int, default=15)
    parser.add_argument("--regions", nargs="+", default=None, metavar="NAME=L1,L2",
                        help="also evaluate label regions, e.g. WT=1,2,3,4 TC=1,3,4 ET=4 (BraTS)")
    parser.add_argument("--overlays", type=Path, default=None, metavar="IMAGES_DIR",
                        help="write OUTPUT/overlays/<case>.png from the images in this folder (CASE.nii.gz or "
                             "CASE_0000.nii.gz)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    summary = evaluate_folders(args.pred, args.label, args.output, probabilities_dir=args.probabilities,
                               matching=args.matching, iou_threshold=args.iou_threshold, msseg_alpha=args.msseg_alpha,
                               msseg_beta=args.msseg_beta, msseg_gamma=args.msseg_gamma, dilation=args.dilation,
                               size_bins=args.size_bins, size_unit=args.size_unit, classes=args.classes,
                               connectivity=args.connectivity, tolerance=args.tolerance,
                               min_lesion_size=args.min_lesion_size, n_bins=args.ece_bins,
                               regions=parse_regions(args.regions), overlays=None if args.overlays is None else
                               images_by_case(args.overlays), progress=not args.no_progress)
    print(summary_markdown(summary))
    if args.output:
        print(f"wrote {Path(args.output) / 'summary.json'}")
    return 0

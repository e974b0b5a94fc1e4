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
import csv
import io
import json
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
from seg.evaluation.plots import plot_reliability
from seg.io import case_name, write_text
from seg.types import PathLike

CASE_COLUMNS = ("dice", "dice_foreground", "hd95", "surface_dice", "n_gt_lesions", "n_pred_lesions", "tp", "fp",
                "fn", "tp_pred", "lesion_f1", "lesion_sensitivity", "lesion_precision", "lesion_wise_dice",
                "lesion_dice_mean", "n_gt_lesions_ignored", "n_pred_lesions_ignored")


def evaluate_case(pred: np.ndarray, label: np.ndarray, *, spacing: Sequence[float] | None = None,
                  classes: Sequence[int] | None = None, matching: str = "msseg", iou_threshold: float = 0.5,
                  msseg_alpha: float = 0.1, msseg_beta: float = 0.7, msseg_gamma: float = 0.65, dilation: int = 0,
                  connectivity: int | None = None, size_bins: Sequence[float] = (30, 300), size_unit: str = "voxels",
                  tolerance: float = 1.0, min_lesion_size: int = 0) -> dict[str, Any]:
    """All metrics of one case from integer label maps ``(*spatial)`` (see the module docstring; the lesion options
    are those of :func:`seg.evaluation.metrics.lesion_metrics`)."""
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
    return out


def evaluate_folders(pred_dir: PathLike, label_dir: PathLike, output_dir: PathLike | None = None, *,
                     probabilities_dir: PathLike | None = None, matching: str = "msseg", iou_threshold: float = 0.5,
                     msseg_alpha: float = 0.1, msseg_beta: float = 0.7, msseg_gamma: float = 0.65, dilation: int = 0,
                     size_bins: Sequence[float] = (30, 300), size_unit: str = "voxels",
                     classes: Sequence[int] | None = None, connectivity: int | None = None,
                     tolerance: float = 1.0, min_lesion_size: int = 0, n_bins: int = 15,
                     progress: bool = True) -> dict[str, Any]:
    """Evaluate every label in ``label_dir`` against the same-named file in ``pred_dir``; returns the summary.

    The lesion options are those of :func:`seg.evaluation.metrics.lesion_metrics`. Predictions without a label get a
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
                                tolerance=tolerance, **lesion_options)}
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
                                         "connectivity": connectivity, "surface_dice_tolerance_mm": tolerance})
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
    summary["settings"] = settings
    return summary


def json_ready(value: Any) -> Any:
    """Nested results -> JSON types: numpy scalars and arrays to Python, NaN to null, keys to strings."""
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_ready(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _fmt(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else (
        f"{value:.4f}" if isinstance(value, float) else str(value))


def _rule_text(settings: dict[str, Any]) -> str:
    """Which matching rule produced the lesion numbers, with its thresholds."""
    rule = settings.get("matching", "overlap")
    if rule == "msseg":
        return (f"`msseg` (MSSEG-2016 detection rule: alpha {settings['msseg_alpha']:g}, "
                f"beta {settings['msseg_beta']:g}, gamma {settings['msseg_gamma']:g})")
    if rule == "iou":
        return f"`iou` (one-to-one matching at IoU >= {settings['iou_threshold']:g}, as panoptica)"
    return f"`overlap` (any overlap, GT dilated by {settings.get('dilation', 0)} voxel(s); BraTS-2023)"


def summary_markdown(summary: dict[str, Any]) -> str:
    """A short Markdown report of :func:`evaluate_folders`' summary."""
    keys = ["n_cases", "dice", "dice_foreground", "hd95", "surface_dice", "lesion_f1", "lesion_wise_dice",
            "lesion_sensitivity", "lesion_precision", "fp_per_volume", "small_lesion_sensitivity", "lesion_dice", "ece"]
    keys += [k for k in summary if k.startswith("dice_class")]
    lines = ["# Evaluation summary", "", f"Lesion-wise numbers by the matching rule {_rule_text(summary['settings'])}: "
             f"lesion F1 {_fmt(summary['lesion_f1'])}, lesion-wise Dice {_fmt(summary.get('lesion_wise_dice'))}, "
             f"voxel Dice (lesion foreground) {_fmt(summary['dice_foreground'])}.", "",
             "| metric | value |", "| --- | --- |"]
    lines += [f"| {k} | {_fmt(summary[k])} |" for k in keys if k in summary]
    ignored, unmatched = summary.get("n_gt_lesions_ignored", 0), summary.get("unmatched_predictions", [])
    lines += ["", f"Lesions: TP {summary['tp']} (GT lesions detected), TP_pred {summary.get('tp_pred', summary['tp'])} "
              f"(predicted components), FP {summary['fp']}, FN {summary['fn']} (pooled over cases)"
              + (f"; {ignored} GT lesion(s) under min_lesion_size ignored." if ignored else "."), "",
              f"| lesion size ({summary['settings']['size_unit']}) | TP | FN | sensitivity |",
              "| --- | --- | --- | --- |"]
    lines += [f"| {name} | {b['tp']} | {b['fn']} | {_fmt(b['sensitivity'])} |"
              for name, b in summary["sensitivity_by_size"].items()]
    lines += ["", f"Settings: {json.dumps(json_ready(summary['settings']))}. HD95 undefined (one mask empty) in "
              f"{summary['hd95_undefined_cases']} case(s), excluded from its mean.", ""]
    if unmatched:
        lines += [f"Not evaluated, no label: {', '.join(unmatched)}.", ""]
    return "\n".join(lines)


def write_outputs(output_dir: Path, cases: Sequence[dict[str, Any]], summary: dict[str, Any],
                  calibration=None) -> None:
    """Write per_case.csv, per_lesion.csv, summary.json, summary.md (and reliability.png) into ``output_dir``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    num_classes = max(len(c["dice_per_class"]) for c in cases)
    extra = ["ece"] if "ece" in cases[0] else []
    header = ["case", *CASE_COLUMNS, *(f"dice_class{k}" for k in range(1, num_classes)), *extra]
    rows = [[c["case"], *(c[k] for k in CASE_COLUMNS),
             *(c["dice_per_class"][k] if k < len(c["dice_per_class"]) else 1.0 for k in range(1, num_classes)),
             *(c[k] for k in extra)] for c in cases]
    write_text(output_dir / "per_case.csv", _csv_text(header, rows))
    lesion_rows = [[c["case"], i, lesion["size_voxels"], lesion["size_mm3"], int(lesion["detected"]), lesion["dice"]]
                   for c in cases for i, lesion in enumerate(c["lesions"], start=1)]
    write_text(output_dir / "per_lesion.csv",
                _csv_text(["case", "lesion", "size_voxels", "size_mm3", "detected", "dice"], lesion_rows))
    write_text(output_dir / "summary.json", json.dumps(json_ready(summary), indent=2) + "\n")
    write_text(output_dir / "summary.md", summary_markdown(summary))
    if calibration is not None:
        plot_reliability(output_dir / "reliability.png", calibration)


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
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    summary = evaluate_folders(args.pred, args.label, args.output, probabilities_dir=args.probabilities,
                               matching=args.matching, iou_threshold=args.iou_threshold, msseg_alpha=args.msseg_alpha,
                               msseg_beta=args.msseg_beta, msseg_gamma=args.msseg_gamma, dilation=args.dilation,
                               size_bins=args.size_bins, size_unit=args.size_unit, classes=args.classes,
                               connectivity=args.connectivity, tolerance=args.tolerance,
                               min_lesion_size=args.min_lesion_size, n_bins=args.ece_bins, progress=not args.no_progress)
    print(summary_markdown(summary))
    if args.output:
        print(f"wrote {Path(args.output) / 'summary.json'}")
    return 0

"""The files ``seg-evaluate`` writes: ``per_case.csv``, ``per_lesion.csv``, ``summary.json``, ``summary.md`` and, with
probabilities, ``reliability.png`` (each written atomically); and ``json_ready``, the JSON form of nested results."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seg.evaluation.plots import plot_reliability
from seg.io import write_text

CASE_COLUMNS = ("dice", "dice_foreground", "hd95", "surface_dice", "n_gt_lesions", "n_pred_lesions", "tp", "fp",
                "fn", "tp_pred", "lesion_f1", "lesion_sensitivity", "lesion_precision", "lesion_wise_dice",
                "lesion_dice_mean", "n_gt_lesions_ignored", "n_pred_lesions_ignored")
REGION_COLUMNS = ("dice", "lesion_f1", "lesion_wise_dice", "lesion_sensitivity", "tp", "fp", "fn")  # <region>_<column>


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
    regions = [f"{name}_{k}" for name in cases[0].get("regions", {}) for k in REGION_COLUMNS]
    header = ["case", *CASE_COLUMNS, *(f"dice_class{k}" for k in range(1, num_classes)), *regions, *extra]
    rows = [[c["case"], *(c[k] for k in CASE_COLUMNS),
             *(c["dice_per_class"][k] if k < len(c["dice_per_class"]) else 1.0 for k in range(1, num_classes)),
             *(c[k] for k in regions), *(c[k] for k in extra)] for c in cases]
    write_text(output_dir / "per_case.csv", _csv_text(header, rows))
    lesion_rows = [[c["case"], i, lesion["size_voxels"], lesion["size_mm3"], int(lesion["detected"]), lesion["dice"]]
                   for c in cases for i, lesion in enumerate(c["lesions"], start=1)]
    write_text(output_dir / "per_lesion.csv",
                _csv_text(["case", "lesion", "size_voxels", "size_mm3", "detected", "dice"], lesion_rows))
    write_text(output_dir / "summary.json", json.dumps(json_ready(summary), indent=2) + "\n")
    write_text(output_dir / "summary.md", summary_markdown(summary))
    if calibration is not None:
        plot_reliability(output_dir / "reliability.png", calibration)

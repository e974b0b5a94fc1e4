"""``seg-evaluate``: compare a folder of predicted label maps with a folder of ground-truth labels.

Files are matched by name (``labels/case_001.nii.gz`` <-> ``pred/case_001.nii.gz``); every label needs a
prediction (extra predictions are ignored). Prediction and label must share shape and affine.

Per case: Dice per class and of the lesion foreground, HD95 and surface Dice of the lesion foreground, lesion-wise
detection metrics (definitions in :mod:`seg.metrics`), and with ``--probabilities`` the ECE (:mod:`seg.calibration`).
The *lesion foreground* is every non-zero label by default, or the labels given with ``--classes`` (e.g.
``--classes 4`` for BraTS enhancing tumour): lesion-wise metrics, HD95 and surface Dice use it.

Outputs (with ``--output DIR``, each written atomically): ``per_case.csv``, ``per_lesion.csv`` (one row per GT
lesion: size, detected, Dice), ``summary.json``, ``summary.md`` and, with probabilities, ``reliability.png``.
Summary: ``dice`` is the mean over cases of the mean over foreground classes of the per-class Dice (a class absent
from both maps scores 1); ``dice_foreground`` the mean lesion-foreground Dice; ``hd95`` the mean over cases where it
is defined (``hd95_undefined_cases`` counts the others); lesion F1/sensitivity/precision and sensitivity by size
are pooled over cases; ``fp_per_volume`` is FP total / cases; ``ece`` pools every voxel of every case.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from tqdm import tqdm

from seg._types import PathLike
from seg.calibration import CalibrationAccumulator
from seg.io import write_text
from seg.metrics import aggregate_lesion_metrics, dice, dice_per_class, hd95, lesion_metrics, surface_dice

NIFTI_SUFFIXES = (".nii.gz", ".nii")
CASE_COLUMNS = ("dice", "dice_foreground", "hd95", "surface_dice", "n_gt_lesions", "n_pred_lesions", "tp", "fp",
                "fn", "lesion_f1", "lesion_sensitivity", "lesion_precision", "lesion_dice_mean")


def _case_name(path: Path) -> str:
    return next(path.name[: -len(s)] for s in NIFTI_SUFFIXES if path.name.endswith(s))


def _nifti_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"folder '{folder}' does not exist")
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.name.endswith(NIFTI_SUFFIXES))


def _load(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    image = nib.load(str(path))
    array = np.asanyarray(image.dataobj)
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]  # (X, Y, Z, 1) -> (X, Y, Z)
    return array, image.affine, tuple(float(z) for z in image.header.get_zooms()[:3])


def _load_labels(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    array, affine, zooms = _load(path)
    if array.ndim not in (2, 3):
        raise ValueError(f"label map '{path}' has shape {array.shape}; expected a 2D or 3D label map")
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise ValueError(f"label map '{path}' has non-integral values; expected integer labels "
                             "(threshold or argmax probabilities first)")
    return array.astype(np.int64), affine, zooms[: array.ndim]


def _check_same_grid(a: Path, a_shape, a_affine, b: Path, b_shape, b_affine) -> None:
    if tuple(a_shape) != tuple(b_shape):
        raise ValueError(f"'{a}' has shape {tuple(a_shape)} but '{b}' has {tuple(b_shape)}; "
                         "they must be on the same voxel grid (resample the prediction to the label's grid)")
    if not np.allclose(a_affine, b_affine, atol=1e-3):
        raise ValueError(f"'{a}' and '{b}' have different affines:\n{np.round(a_affine, 4)}\nvs\n"
                         f"{np.round(b_affine, 4)}\n(write predictions with the label's header, e.g. seg.io.write_like)")


def _foreground_probability(path: Path, label_shape: tuple[int, ...],
                            classes: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Foreground probability ``(*spatial)`` and affine: a map of the label's shape is used as is; a
    ``(*spatial, K)`` map (one channel per class) gives 1 - p(background), or with ``classes`` the sum of
    those classes' channels (the probability of the lesion foreground that is evaluated)."""
    array, affine, _ = _load(path)
    array = array.astype(np.float64)
    if array.shape == label_shape:
        return array, affine
    if array.shape[:-1] == label_shape and array.shape[-1] >= 2:
        if classes is None:
            return 1.0 - array[..., 0], affine
        if max(classes) >= array.shape[-1]:
            raise ValueError(f"probability map '{path}' has {array.shape[-1]} class channels; "
                             f"cannot evaluate classes {list(classes)}")
        return array[..., list(classes)].sum(-1), affine
    raise ValueError(f"probability map '{path}' has shape {array.shape}; expected {label_shape} (foreground "
                     f"probability) or {(*label_shape, 'K')} (one channel per class, background first)")


def _probability_file(folder: Path, label_path: Path) -> Path:
    name = _case_name(label_path)
    candidates = [folder / f"{name}_prob{s}" for s in NIFTI_SUFFIXES] + [folder / label_path.name]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise FileNotFoundError(f"no probability map for label '{label_path}': expected '{candidates[0]}' or "
                                f"'{candidates[-1]}'")
    return found


def evaluate_case(pred: np.ndarray, label: np.ndarray, *, spacing: Sequence[float] | None = None,
                  classes: Sequence[int] | None = None, dilation: int = 0, connectivity: int | None = None,
                  size_bins: Sequence[float] = (10, 100), size_unit: str = "voxels",
                  tolerance: float = 1.0) -> dict[str, Any]:
    """All metrics of one case from integer label maps ``(*spatial)`` (see the module docstring)."""
    per_class = dice_per_class(pred, label)
    pred_fg = pred > 0 if classes is None else np.isin(pred, classes)
    label_fg = label > 0 if classes is None else np.isin(label, classes)
    out: dict[str, Any] = {"dice_per_class": per_class.tolist(),
                           "dice": float(per_class[1:].mean()) if per_class.size > 1 else 1.0,
                           "dice_foreground": dice(pred_fg, label_fg),
                           "hd95": hd95(pred_fg, label_fg, spacing=spacing),
                           "surface_dice": surface_dice(pred_fg, label_fg, tolerance=tolerance, spacing=spacing)}
    out.update(lesion_metrics(pred_fg, label_fg, spacing=spacing, dilation=dilation, connectivity=connectivity,
                              size_bins=size_bins, size_unit=size_unit))
    return out


def evaluate_folders(pred_dir: PathLike, label_dir: PathLike, output_dir: PathLike | None = None, *,
                     probabilities_dir: PathLike | None = None, dilation: int = 0,
                     size_bins: Sequence[float] = (10, 100), size_unit: str = "voxels",
                     classes: Sequence[int] | None = None, connectivity: int | None = None,
                     tolerance: float = 1.0, n_bins: int = 15, progress: bool = True) -> dict[str, Any]:
    """Evaluate every label in ``label_dir`` against the same-named file in ``pred_dir``; returns the summary.

    Raises:
        FileNotFoundError: a folder, a prediction or a probability map is missing (the message names it).
        ValueError: shape/affine mismatch (names both files) or non-integral labels.
    """
    pred_dir, label_dir = Path(pred_dir), Path(label_dir)
    labels = _nifti_files(label_dir)
    if not labels:
        raise FileNotFoundError(f"no .nii/.nii.gz label files in '{label_dir}'")
    _nifti_files(pred_dir)  # the folder must exist
    missing = [p for p in labels if not (pred_dir / p.name).is_file()]
    if missing:
        raise FileNotFoundError(f"no prediction for label '{missing[0]}': expected '{pred_dir / missing[0].name}'"
                                + (f" ({len(missing) - 1} more labels lack one)" if len(missing) > 1 else ""))
    accumulator = CalibrationAccumulator(n_bins) if probabilities_dir is not None else None
    cases: list[dict[str, Any]] = []
    for label_path in tqdm(labels, desc="evaluate", unit="case", disable=not progress):
        pred_path = pred_dir / label_path.name
        label, label_affine, spacing = _load_labels(label_path)
        pred, pred_affine, _ = _load_labels(pred_path)
        _check_same_grid(pred_path, pred.shape, pred_affine, label_path, label.shape, label_affine)
        case = {"case": _case_name(label_path),
                **evaluate_case(pred, label, spacing=spacing, classes=classes, dilation=dilation,
                                connectivity=connectivity, size_bins=size_bins, size_unit=size_unit,
                                tolerance=tolerance)}
        if accumulator is not None:
            prob_path = _probability_file(Path(probabilities_dir), label_path)
            prob, prob_affine = _foreground_probability(prob_path, label.shape, classes)
            _check_same_grid(prob_path, prob.shape, prob_affine, label_path, label.shape, label_affine)
            label_fg = label > 0 if classes is None else np.isin(label, classes)
            case_accumulator = CalibrationAccumulator(n_bins)
            case_accumulator.update(prob, label_fg)
            case["ece"] = case_accumulator.compute().ece
            accumulator.update(prob, label_fg)
        cases.append(case)
    summary = summarise(cases, settings={"dilation": dilation, "size_bins": list(size_bins),
                                         "size_unit": size_unit, "classes": None if classes is None else list(classes),
                                         "connectivity": connectivity, "surface_dice_tolerance_mm": tolerance})
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


def summary_markdown(summary: dict[str, Any]) -> str:
    """A short Markdown report of :func:`evaluate_folders`' summary."""
    keys = ["n_cases", "dice", "dice_foreground", "hd95", "surface_dice", "lesion_f1", "lesion_sensitivity",
            "lesion_precision", "fp_per_volume", "small_lesion_sensitivity", "lesion_dice", "ece"]
    keys += [k for k in summary if k.startswith("dice_class")]
    lines = ["# Evaluation summary", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {k} | {_fmt(summary[k])} |" for k in keys if k in summary]
    lines += ["", f"Lesions: TP {summary['tp']}, FP {summary['fp']}, FN {summary['fn']} (pooled over cases).", "",
              f"| lesion size ({summary['settings']['size_unit']}) | TP | FN | sensitivity |", "| --- | --- | --- | --- |"]
    lines += [f"| {name} | {b['tp']} | {b['fn']} | {_fmt(b['sensitivity'])} |"
              for name, b in summary["sensitivity_by_size"].items()]
    lines += ["", f"Settings: {json.dumps(json_ready(summary['settings']))}. HD95 undefined (one mask empty) in "
              f"{summary['hd95_undefined_cases']} case(s), excluded from its mean.", ""]
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
        from seg.plots import plot_reliability

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
    parser.add_argument("--dilation", type=int, default=0, help="GT dilation (voxels) before testing overlap")
    parser.add_argument("--connectivity", type=int, default=None, help="4/8 (2D), 6/18/26 (3D); default full")
    parser.add_argument("--size-bins", type=float, nargs="+", default=[10, 100], help="lesion size bin edges")
    parser.add_argument("--size-unit", choices=("voxels", "mm3"), default="voxels")
    parser.add_argument("--tolerance", type=float, default=1.0, help="surface Dice tolerance in mm")
    parser.add_argument("--ece-bins", type=int, default=15)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    summary = evaluate_folders(args.pred, args.label, args.output, probabilities_dir=args.probabilities,
                               dilation=args.dilation, size_bins=args.size_bins, size_unit=args.size_unit,
                               classes=args.classes, connectivity=args.connectivity, tolerance=args.tolerance,
                               n_bins=args.ece_bins, progress=not args.no_progress)
    print(summary_markdown(summary))
    if args.output:
        print(f"wrote {Path(args.output) / 'summary.json'}")
    return 0

"""The comparison report: per-variant tables with bootstrap intervals, paired tests against a baseline, figures.

Input: the run folders written by :mod:`seg.comparison.runner` (layout: :mod:`seg.comparison.runs`), ``OUT/runs/<variant>/seed<k>/`` each holding
``evaluation/per_case.csv``, ``evaluation/per_lesion.csv``, ``evaluation/summary.json`` (from
:func:`seg.evaluation.evaluate.evaluate_folders`) and the training log ``metrics.csv``.

How the numbers are made (also written into the report):

- **Per-case value of a variant** = mean over its finished seeds of that case's metric (NaN-aware: HD95 is
  undefined when a mask is empty; a case with no defined value in any seed is left out of that metric).
- **Table**: mean over test cases of those values, with a 95 % percentile-bootstrap interval over *cases*
  (:func:`seg.comparison.stats.bootstrap_ci`). Cases are the unit we generalise over; seed noise is averaged inside each
  case value, and the spread of the dataset-level mean across seeds is reported separately (``seed_sd``).
- **Paired comparison** of each variant with the baseline: per-case differences (variant - baseline), their
  mean with a bootstrap interval, and a two-sided Wilcoxon signed-rank test (:func:`seg.comparison.stats.paired_wilcoxon`);
  p-values are also given Holm-adjusted over the variants compared, per metric.
- **Sensitivity by lesion size**: each ground-truth lesion's detection rate over seeds, averaged over the lesions
  of a size bin; interval by bootstrap over lesions (it ignores that lesions of one case are correlated).
- **Reliability**: bin counts of every seed pooled, so the ECE is the voxel-pooled ECE over seeds and cases.
- Per-case lesion F1, sensitivity and precision follow :mod:`seg.evaluation.metrics`: a ratio with a zero denominator is 1
  (a lesion-free case without false positives scores 1), so their case means differ from the pooled numbers
  (lesion counts summed over the cases of a run, as ``seg-evaluate`` reports them), which are shown too.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seg.comparison.runs import is_finished, run_dir
from seg.comparison.stats import bootstrap_ci, paired_wilcoxon
from seg.evaluation.metrics import detection_scores, size_bin_names

# metric column of per_case.csv -> (label in the report, which direction is better)
METRICS: dict[str, tuple[str, str]] = {
    "dice": ("Dice", "higher"),
    "dice_foreground": ("Dice (lesion foreground)", "higher"),
    "hd95": ("HD95 (mm)", "lower"),
    "surface_dice": ("surface Dice", "higher"),
    "lesion_f1": ("lesion F1", "higher"),
    "lesion_sensitivity": ("lesion sensitivity", "higher"),
    "lesion_precision": ("lesion precision", "higher"),
    "fp": ("FP lesions / volume", "lower"),
    "ece": ("ECE", "lower"),
}
POOLED_KEYS = ("dice", "lesion_f1", "lesion_sensitivity", "lesion_precision", "fp_per_volume",
               "small_lesion_sensitivity", "ece")


def _float(text: str) -> float:
    return math.nan if text in ("", "nan", "None", None) else float(text)


def read_per_case(path: Path) -> dict[str, dict[str, float]]:
    """``per_case.csv`` as {case: {metric: value}} for the metrics in :data:`METRICS` that the file has."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"'{path}' has no cases")
    regional = region_metrics(rows[0])  # <region>_dice ... of a region-wise evaluation
    return {row["case"]: {k: _float(row[k]) for k in (*METRICS, *regional) if k in row} for row in rows}


REGION_METRIC = re.compile(r"^(?P<region>[A-Za-z0-9]+)_(?P<metric>dice|lesion_f1|lesion_wise_dice)$")


def region_metrics(keys: Iterable[str]) -> list[str]:
    """The per-region columns (``WT_dice``, ``ET_lesion_f1`` ...) among ``keys``; ``surface_dice`` is not a region's."""
    return [k for k in keys if REGION_METRIC.match(k) and k not in METRICS]


def seed_mean_per_case(tables: Sequence[Mapping[str, Mapping[str, float]]], where: str
                       ) -> tuple[list[str], dict[str, np.ndarray]]:
    """Cases (sorted) and {metric: ``(n_cases,)`` float64 mean over seeds} from one table per finished seed."""
    cases = sorted(tables[0])
    for table in tables[1:]:
        if sorted(table) != cases:
            raise ValueError(f"the seeds of {where} evaluated different test cases ({sorted(table)[:3]}... vs "
                             f"{cases[:3]}...); every run must predict the same test set")
    metrics = [k for k in tables[0][cases[0]] if all(k in t[cases[0]] for t in tables)]
    values = {}
    for metric in metrics:
        stacked = np.array([[t[c][metric] for c in cases] for t in tables], dtype=np.float64)  # (seeds, cases)
        with np.errstate(invalid="ignore"):
            counts = np.isfinite(stacked).sum(0)
            values[metric] = np.where(counts > 0, np.nansum(stacked, 0) / np.maximum(counts, 1), np.nan)
    return cases, values


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1)."""
    p = np.asarray(pvalues, dtype=np.float64)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (p.size - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


def _interval(values: np.ndarray) -> dict[str, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"mean": math.nan, "low": math.nan, "high": math.nan, "n": 0}
    mean, low, high = bootstrap_ci(finite)
    return {"mean": mean, "low": low, "high": high, "n": int(finite.size)}


def compare_variants(per_case: Mapping[str, Mapping[str, np.ndarray]], baseline: str
                     ) -> tuple[dict[str, dict[str, dict]], dict[str, dict[str, dict]]]:
    """Table and paired comparisons from {variant: {metric: per-case values ``(n_cases,)``}} (same case order).

    Returns ``(table, paired)``: table[variant][metric] = {mean, low, high, n}; paired[variant][metric] =
    {mean_difference, low, high, statistic, pvalue, pvalue_holm, n} for every variant but the baseline.
    """
    table = {v: {m: _interval(np.asarray(x)) for m, x in metrics.items()} for v, metrics in per_case.items()}
    paired: dict[str, dict[str, dict]] = {}
    if baseline not in per_case:
        return table, paired
    for variant, metrics in per_case.items():
        if variant == baseline:
            continue
        paired[variant] = {}
        for metric, values in metrics.items():
            if metric not in per_case[baseline]:
                continue
            reference = np.asarray(per_case[baseline][metric])
            difference = _interval(np.asarray(values) - reference)
            test = paired_wilcoxon(values, reference)
            paired[variant][metric] = {"mean_difference": difference["mean"], "low": difference["low"],
                                       "high": difference["high"], "statistic": test.statistic,
                                       "pvalue": test.pvalue, "n": test.n}
    for metric in METRICS:
        variants = [v for v in paired if metric in paired[v]]
        for variant, adjusted in zip(variants, holm([paired[v][metric]["pvalue"] for v in variants]), strict=True):
            paired[variant][metric]["pvalue_holm"] = adjusted
    return table, paired


def sensitivity_by_size(lesion_tables: Sequence[Sequence[dict[str, str]]], size_bins: Sequence[float],
                        size_unit: str) -> dict[str, dict[str, float]]:
    """{bin name: {sensitivity, low, high, n_lesions}} from one ``per_lesion.csv`` row list per seed."""
    column = "size_voxels" if size_unit == "voxels" else "size_mm3"
    rates: dict[tuple[str, str], list[float]] = {}
    sizes: dict[tuple[str, str], float] = {}
    for rows in lesion_tables:
        for row in rows:
            key = (row["case"], row["lesion"])
            rates.setdefault(key, []).append(float(row["detected"]))
            sizes[key] = float(row[column])
    keys = sorted(rates)
    rate = np.array([np.mean(rates[k]) for k in keys])  # detection rate over seeds, one per GT lesion
    which = np.digitize([sizes[k] for k in keys], size_bins) if keys else np.zeros(0, dtype=int)
    out = {}
    for index, name in enumerate(size_bin_names(size_bins)):
        interval = _interval(rate[which == index])
        out[name] = {"sensitivity": interval["mean"], "low": interval["low"], "high": interval["high"],
                     "n_lesions": interval["n"]}
    return out


def pool_calibration(calibrations: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Pool reliability bins over seeds (counts summed, means count-weighted) and recompute the ECE."""
    if not calibrations:
        return None
    edges = np.asarray(calibrations[0]["bin_edges"], dtype=np.float64)
    count = np.zeros(edges.size - 1)
    confidence_sum, frequency_sum = np.zeros_like(count), np.zeros_like(count)
    for cal in calibrations:
        if not np.allclose(cal["bin_edges"], edges):
            raise ValueError("runs were evaluated with different reliability bins; re-evaluate with one --ece-bins")
        n = np.asarray(cal["bin_count"], dtype=np.float64)
        conf = np.array([math.nan if v is None else v for v in cal["bin_confidence"]], dtype=np.float64)
        freq = np.array([math.nan if v is None else v for v in cal["bin_frequency"]], dtype=np.float64)
        count += n
        confidence_sum += np.where(n > 0, n * np.nan_to_num(conf), 0.0)
        frequency_sum += np.where(n > 0, n * np.nan_to_num(freq), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.where(count > 0, confidence_sum / count, np.nan)
        frequency = np.where(count > 0, frequency_sum / count, np.nan)
    keep = count > 0
    ece = float(np.sum(count[keep] / count.sum() * np.abs(confidence[keep] - frequency[keep]))) if keep.any() else 0.0
    return {"ece": ece, "bin_edges": edges.tolist(), "bin_count": count.tolist(),
            "bin_confidence": confidence.tolist(), "bin_frequency": frequency.tolist()}


def _fold_folders(output: Path, variant: str, seed: int, folds: int | None) -> list[Path]:
    return [run_dir(output, variant, seed)] if folds is None else [run_dir(output, variant, seed, k) for k in range(folds)]


def merge_summaries(summaries: Sequence[Mapping[str, Any]], calibration: Mapping[str, Any] | None) -> dict[str, Any]:
    """One run's pooled numbers from its folds' ``summary.json``: lesion counts summed over the folds, scores from the
    sums (as ``seg-evaluate`` pools over cases), Dice as the mean over all cases."""
    if len(summaries) == 1:
        return dict(summaries[0])
    n = sum(s["n_cases"] for s in summaries)
    tp, fp, fn = (sum(s[k] for s in summaries) for k in ("tp", "fp", "fn"))
    tp_pred = sum(s.get("tp_pred", s["tp"]) for s in summaries)
    matching = summaries[0].get("settings", {}).get("matching", "overlap")
    merged: dict[str, Any] = {"n_cases": n, "tp": tp, "fp": fp, "fn": fn,
                              "dice": sum(s["dice"] * s["n_cases"] for s in summaries) / n, "fp_per_volume": fp / n,
                              **detection_scores(tp, fp, fn, tp_pred=None if matching == "overlap" else tp_pred)}
    first = list(summaries[0]["sensitivity_by_size"])[0]
    tp_b = sum(s["sensitivity_by_size"][first]["tp"] for s in summaries)
    fn_b = sum(s["sensitivity_by_size"][first]["fn"] for s in summaries)
    merged["small_lesion_sensitivity"] = tp_b / (tp_b + fn_b) if tp_b + fn_b else math.nan
    if calibration is not None:
        merged["ece"] = calibration["ece"]
    merged["settings"] = summaries[0].get("settings", {})
    return merged


def _read_seed(output: Path, variant: str, seed: int, folds: int | None) -> dict[str, Any]:
    """Everything of one (variant, seed): its folds' tables merged; status done only when every fold is."""
    folders = _fold_folders(output, variant, seed, folds)
    done = [f for f in folders if is_finished(f)]
    status = "done" if len(done) == len(folders) else (
        "failed" if any((f / "failed.json").is_file() for f in folders) else "missing")
    record: dict[str, Any] = {"status": status, "folder": str(folders[0] if folds is None else folders[0].parent)}
    if status != "done":
        return record
    table: dict[str, dict[str, float]] = {}
    lesions, summaries, cals, timings = [], [], [], []
    for folder in folders:
        evaluation = folder / "evaluation"
        summaries.append(json.loads((evaluation / "summary.json").read_text()))
        table.update(read_per_case(evaluation / "per_case.csv"))  # each case is tested in exactly one fold
        with open(evaluation / "per_lesion.csv", newline="") as handle:
            lesions += list(csv.DictReader(handle))
        if summaries[-1].get("calibration"):
            cals.append(summaries[-1]["calibration"])
        if (folder / "timing.json").is_file():
            timings.append(json.loads((folder / "timing.json").read_text()))
    calibration = pool_calibration(cals)
    record.update(table=table, lesions=lesions, calibration=calibration,
                  summary=merge_summaries(summaries, calibration))
    if timings:
        record["timing"] = {key: sum(t.get(key) or 0 for t in timings) for key in timings[0]
                            if isinstance(timings[0].get(key), int | float)}
    return record


def collect(output: Path, variants: Sequence[str], seeds: Sequence[int], baseline: str,
            folds: int | None = None) -> dict[str, Any]:
    """Read every finished run under ``output`` (every fold of it under cross-validation) and compute all report
    numbers (JSON-ready but for NaN)."""
    runs: dict[str, dict[str, Any]] = {}
    per_case: dict[str, dict[str, np.ndarray]] = {}
    cases: list[str] | None = None
    sensitivity, calibration, pooled = {}, {}, {}
    size_settings: tuple[list[float], str] | None = None
    matching: str | None = None
    for variant in variants:
        tables, lesion_tables, cals, summaries, runs[variant] = [], [], [], [], {}
        for seed in seeds:
            record = _read_seed(Path(output), variant, seed, folds)
            runs[variant][str(seed)] = {k: record[k] for k in ("status", "folder", "timing") if k in record}
            if record["status"] != "done":
                continue
            summaries.append(record["summary"])
            tables.append(record["table"])
            lesion_tables.append(record["lesions"])
            if record["calibration"]:
                cals.append(record["calibration"])
            settings = record["summary"].get("settings", {})
            matching = matching or settings.get("matching", "overlap")
            size_settings = size_settings or (settings.get("size_bins", [10, 100]), settings.get("size_unit", "voxels"))
        if not tables:
            continue
        variant_cases, per_case[variant] = seed_mean_per_case(tables, f"variant {variant!r}")
        if cases is not None and variant_cases != cases:
            raise ValueError(f"variant {variant!r} was evaluated on other test cases than the first variant")
        cases = variant_cases
        sensitivity[variant] = sensitivity_by_size(lesion_tables, *size_settings)
        calibration[variant] = pool_calibration(cals)
        pooled[variant] = {}
        for key in POOLED_KEYS:
            values = [s[key] for s in summaries if s.get(key) is not None]
            if values:
                pooled[variant][key] = {"seed_values": values, "mean": float(np.mean(values)),
                                        "seed_sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}
    table, paired = compare_variants(per_case, baseline)
    first = next(iter(sensitivity.values()), {})
    return {"baseline": baseline, "variants": list(variants), "seeds": list(seeds), "folds": folds,
            "cases": cases or [], "n_lesions": int(sum(b["n_lesions"] for b in first.values())) if first else 0,
            "matching": matching,
            "runs": runs, "per_case": {v: {m: x.tolist() for m, x in d.items()} for v, d in per_case.items()},
            "table": table, "paired": paired, "pooled": pooled, "sensitivity_by_size": sensitivity,
            "size_unit": size_settings[1] if size_settings else "voxels", "calibration": calibration,
            "method": __doc__.split("How the numbers are made (also written into the report):")[1].strip()}

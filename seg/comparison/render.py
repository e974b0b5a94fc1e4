"""Rendering of the comparison report's numbers (:func:`seg.comparison.report.collect`): Markdown text, PNG figures,
and :func:`write_report`, which collects and writes them.

Figures reuse :mod:`seg.evaluation.plots` (``bar_with_ci``, ``plot_sensitivity_by_size``, ``plot_reliability``,
``save_figure``); only the multi-panel metric bars and the per-variant training curves are drawn here.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.ticker import MaxNLocator

from seg.comparison.report import METRICS, POOLED_KEYS, collect, region_metrics
from seg.evaluation.outputs import json_ready
from seg.evaluation.overlays import montage
from seg.evaluation.plots import (
    bar_with_ci,
    new_figure,
    plot_reliability,
    plot_sensitivity_by_size,
    save_figure,
)
from seg.io import write_text
from seg.training.curves import read_metrics_csv

MAIN_METRICS = ("dice", "lesion_f1", "lesion_sensitivity", "lesion_precision", "fp", "hd95", "ece")


def _num(value: float | None, metric: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    digits = 4 if metric == "ece" else 2 if metric == "hd95" else 3
    return f"{value:.{digits}f}"


def _p(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else (f"{value:.2g}" if value < 0.001 else f"{value:.3f}")


def report_markdown(report: Mapping[str, Any], *, title: str = "Loss comparison") -> str:
    """The Markdown report of :func:`collect`'s numbers (figures are referenced, not embedded)."""
    table, paired, baseline = report["table"], report["paired"], report["baseline"]
    shown = [v for v in report["variants"] if v in table]
    metrics = [m for m in MAIN_METRICS if any(m in table[v] for v in shown)]
    arrow = {"higher": "↑", "lower": "↓"}
    n_done = sum(r["status"] == "done" for v in report["runs"].values() for r in v.values())
    n_all = sum(len(v) for v in report["runs"].values())
    lines = [f"# {title}", "",
             f"{len(shown)} variant(s) × seeds {report['seeds']}"
             + (f" × {report['folds']} folds (every labelled case tested once; splits in `splits.json`)"
                if report.get("folds") else "")
             + f"; {n_done}/{n_all} runs finished; every number rests on {len(report['cases'])} test cases and "
             f"{report.get('n_lesions', 0)} ground-truth lesions; lesions matched by the `{report.get('matching')}` "
             f"rule; baseline for paired tests: `{baseline}`.", *_too_few(len(report["cases"])), "",
             "## Test-set metrics", "",
             "Mean over test cases of each case's seed-mean value, [95 % bootstrap interval over cases]. "
             "(`report.json` also has Dice of the lesion foreground and surface Dice.)", "",
             "| variant | " + " | ".join(f"{METRICS[m][0]} {arrow[METRICS[m][1]]}" for m in metrics) + " |",
             "| --- |" + " --- |" * len(metrics)]
    for v in shown:
        cells = [f"{_num(c['mean'], m)} [{_num(c['low'], m)}, {_num(c['high'], m)}]" if (c := table[v].get(m))
                 else "n/a" for m in metrics]
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    if paired:
        lines += ["", f"## Paired comparison with `{baseline}`", "",
                  "Per-case difference (variant − baseline): mean [95 % bootstrap interval]; below it the two-sided "
                  "Wilcoxon signed-rank p-value and, in brackets, p Holm-adjusted over the variants compared"
                  + (f" (with {len(report['cases'])} cases and no ties, the smallest possible p is "
                     f"{2 / 2 ** len(report['cases']):.2g})." if report["cases"] else "."), "",
                  "| variant | " + " | ".join(f"Δ {METRICS[m][0]} {arrow[METRICS[m][1]]}" for m in metrics) + " |",
                  "| --- |" + " --- |" * len(metrics)]
        for v in (v for v in shown if v in paired):
            cells = [f"{c['mean_difference']:+.{4 if m == 'ece' else 2 if m == 'hd95' else 3}f} "
                     f"[{_num(c['low'], m)}, {_num(c['high'], m)}]<br>p {_p(c['pvalue'])} ({_p(c['pvalue_holm'])})"
                     if (c := paired[v].get(m)) else "n/a" for m in metrics]
            lines.append(f"| {v} | " + " | ".join(cells) + " |")
    regional = region_metrics(table[shown[0]] if shown else {})
    if regional:
        lines += ["", "## Per region", "", "Mean over test cases of each case's seed-mean value, [95 % bootstrap interval].",
                  "", "| variant | " + " | ".join(m.replace("_", " ") for m in regional) + " |",
                  "| --- |" + " --- |" * len(regional)]
        for v in shown:
            lines.append(f"| {v} | " + " | ".join(f"{_num(c['mean'])} [{_num(c['low'])}, {_num(c['high'])}]"
                                                  if (c := table[v].get(m)) else "n/a" for m in regional) + " |")
    pooled_keys = [k for k in POOLED_KEYS if any(k in report["pooled"].get(v, {}) for v in shown)]
    lines += ["", "## Pooled test-set metrics per run", "",
              "Lesion counts pooled over the test cases of one run (as `seg-evaluate` reports them); "
              "mean ± sd over seeds.", "",
              "| variant | " + " | ".join(pooled_keys) + " |", "| --- |" + " --- |" * len(pooled_keys)]
    for v in shown:
        cells = [f"{_num(p['mean'], k)} ± {_num(p['seed_sd'], k)}" if (p := report["pooled"][v].get(k)) else "n/a"
                 for k in pooled_keys]
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    bins = list(next(iter(report["sensitivity_by_size"].values()), {}))
    if bins:
        counts = [report["sensitivity_by_size"][shown[0]][b]["n_lesions"] for b in bins]
        lines += ["", f"## Lesion sensitivity by size ({report['size_unit']})", "",
                  "| variant | " + " | ".join(f"{b} (n = {n})" for b, n in zip(bins, counts, strict=True)) + " |",
                  "| --- |" + " --- |" * len(bins)]
        for v in shown:
            s = report["sensitivity_by_size"][v]
            lines.append(f"| {v} | " + " | ".join(f"{_num(s[b]['sensitivity'])} [{_num(s[b]['low'])}, "
                                                  f"{_num(s[b]['high'])}]" if s[b]["n_lesions"] else "no lesions"
                                                  for b in bins) + " |")
    montages = [f"![{v}](figures/overlays_{v}.png)" for v in shown if f"overlays_{v}" in report.get("figures", {})]
    if montages:
        lines += ["", "## Look at the masks", "", "Each variant's worst, median and best test case by lesion F1 (its first "
                  "seed): image in grey, ground truth green, prediction red, missed lesions ringed yellow, false "
                  "positives crossed magenta; radiological convention.", "", *montages]
    lines += ["", "## Figures", "", "![metrics](figures/metrics_bars.png)",
              "![sensitivity by size](figures/sensitivity_by_size.png)", "![reliability](figures/reliability.png)",
              "![training curves](figures/training_curves.png)", "", "## Runs", "",
              "| variant | seed | status | training (min) | epochs | total (min) |", "| --- | --- | --- | --- | --- | --- |"]
    for v, seeds in report["runs"].items():
        for seed, run in seeds.items():
            t = run.get("timing", {})
            lines.append(f"| {v} | {seed} | {run['status']} | {_minutes(t.get('train_seconds'))} | "
                         f"{t.get('epochs', 'n/a')} | {_minutes(t.get('total_seconds'))} |")
    lines += ["", "## How the numbers are made", "", _markdown(report["method"]), "",
              "Every number can be recomputed from `runs/<variant>/seed<k>/evaluation/per_case.csv` (per-case metrics), "
              "`per_lesion.csv`, `summary.json`, and the predictions in `runs/<variant>/seed<k>/predictions/`; "
              "`report.json` holds all numbers of this report including the seed-mean per-case values.", ""]
    return "\n".join(lines)


def _too_few(n: int) -> list[str]:
    """A warning when ``n`` paired cases cannot reach p < 0.05 in a two-sided Wilcoxon test (smallest p = 2 / 2^n)."""
    if n and 2 / 2**n >= 0.05:
        return ["", f"**With {n} test cases no paired difference can be significant**: the smallest possible two-sided "
                f"Wilcoxon p is {2 / 2**n:.2g} (at least 6 cases are needed to reach p < 0.05). Read the tables as what "
                "these runs did, not as a ranking."]
    return []


def _markdown(text: str) -> str:
    """reStructuredText roles and literals of a docstring as Markdown code spans."""
    return re.sub(r":\w+:`([^`]+)`", r"`\1`", text).replace("``", "`")


def _minutes(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds / 60:.1f}"



# --------------------------------------------------------------------------------------------- figures
def _colors(variants: list[str]) -> dict[str, Any]:
    cmap = colormaps["tab10"]
    return {v: cmap(i % 10) for i, v in enumerate(variants)}


def plot_metric_bars(report: Mapping[str, Any], out_png: Path) -> Path:
    """One panel per main metric: a bar per variant (mean) with its bootstrap interval."""
    variants = [v for v in report["variants"] if v in report["table"]]
    metrics = [m for m in MAIN_METRICS if any(m in report["table"][v] for v in variants)]
    columns = min(4, len(metrics))
    rows = math.ceil(len(metrics) / columns)
    fig = new_figure(0.5 + max(2.6, 0.55 * len(variants)) * columns, 3.4 * rows)
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    colors = _colors(variants)
    for ax, metric in zip(axes, metrics, strict=False):
        cells = [report["table"][v].get(metric, {}) for v in variants]
        bar_with_ci(ax, variants, [c.get("mean", math.nan) for c in cells], [c.get("low", math.nan) for c in cells],
                    [c.get("high", math.nan) for c in cells], color=[colors[v] for v in variants])
        label, better = METRICS[metric]
        ax.set_title(f"{label}\n({better} is better)", fontsize=9)
        ax.tick_params(axis="x", labelrotation=60, labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    fig.suptitle("Test-set metrics: mean over cases, 95 % bootstrap interval")
    return save_figure(fig, out_png)


def _read_curves(metrics_csv: Path, names: tuple[str, ...]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{metric: (epochs, values)} of the rows of a CSVLogger ``metrics.csv`` that logged it."""
    columns = read_metrics_csv(metrics_csv)
    out = {}
    for name in names:
        if name in columns:
            keep = np.isfinite(columns[name]) & np.isfinite(columns["epoch"])
            if keep.any():
                out[name] = (columns["epoch"][keep] + 1, columns[name][keep])  # Lightning counts epochs from 0
    return out


def plot_variant_training_curves(report: Mapping[str, Any], out_png: Path,
                                 names: tuple[str, ...] = ("val/dice", "val/lesion_f1", "train/loss_epoch")) -> Path:
    """Validation metrics (and the training loss) against epoch: one line per run, one colour per variant."""
    colors = _colors(list(report["runs"]))
    fig = new_figure(6.5, 2.8 * len(names))
    axes = np.atleast_1d(fig.subplots(len(names), 1, sharex=True))
    for variant, seeds in report["runs"].items():
        labelled = False
        for run in seeds.values():
            metrics_csv = Path(run["folder"]) / "metrics.csv"
            if run["status"] != "done" or not metrics_csv.is_file():
                continue
            curves = _read_curves(metrics_csv, names)
            for ax, name in zip(axes, names, strict=True):
                if name in curves:
                    ax.plot(*curves[name], color=colors[variant], alpha=0.8, linewidth=1.2, marker=".",
                            label=None if labelled else variant)
            labelled = labelled or bool(curves)
    for ax, name in zip(axes, names, strict=True):
        ax.set(title=name + (" (scales differ between losses)" if "loss" in name else ""), ylabel=name.split("/")[-1])
        if "loss" in name:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    axes[-1].set_xlabel("epoch")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    return save_figure(fig, out_png)


def write_figures(output: Path, report: Mapping[str, Any]) -> dict[str, Path]:
    """Write ``figures/metrics_bars.png``, ``sensitivity_by_size.png``, ``reliability.png``,
    ``training_curves.png`` (each only when there is something to draw); returns {name: path}."""
    folder = Path(output) / "figures"
    variants = [v for v in report["variants"] if v in report["table"]]
    if not variants:
        return {}
    written = {"metrics_bars": plot_metric_bars(report, folder / "metrics_bars.png")}
    sensitivity = report["sensitivity_by_size"]
    bins = [b for b in sensitivity[variants[0]] if sensitivity[variants[0]][b]["n_lesions"] > 0]  # drop empty bins
    written["sensitivity_by_size"] = plot_sensitivity_by_size(
        folder / "sensitivity_by_size.png", bins, {v: [sensitivity[v][b]["sensitivity"] for b in bins] for v in variants},
        lows={v: [sensitivity[v][b]["low"] for b in bins] for v in variants},
        highs={v: [sensitivity[v][b]["high"] for b in bins] for v in variants},
        counts=[sensitivity[variants[0]][b]["n_lesions"] for b in bins], unit=report["size_unit"])
    calibrations = {v: report["calibration"][v] for v in variants if report["calibration"].get(v)}
    if calibrations:
        written["reliability"] = plot_reliability(folder / "reliability.png", calibrations,
                                                  title="Reliability, pooled over seeds and test cases")
    written["training_curves"] = plot_variant_training_curves(report, folder / "training_curves.png")
    for variant in variants:
        panels = _overlay_panels(report, variant)
        if panels:
            written[f"overlays_{variant}"] = montage(folder / f"overlays_{variant}.png", panels)
    return written


def _overlay_panels(report: Mapping[str, Any], variant: str) -> list[tuple[str, Path]]:
    """The worst, median and best test case of ``variant`` by its seed-mean lesion F1 (overlays of its first seed)."""
    values = report["per_case"].get(variant, {}).get("lesion_f1")
    seeds = [s for s, r in report["runs"][variant].items() if r["status"] == "done"]
    if not values or not seeds:
        return []
    order = np.argsort(np.nan_to_num(np.asarray(values, dtype=np.float64), nan=-1.0), kind="stable")
    picks = {"worst": order[0], "median": order[len(order) // 2], "best": order[-1]}
    folder = Path(report["runs"][variant][seeds[0]]["folder"])
    panels = []
    for title, index in picks.items():
        case = report["cases"][index]
        found = sorted(folder.glob(f"**/evaluation/overlays/{case}.png"))
        if found:
            panels.append((f"{variant}, {title}: {case} (lesion F1 {values[index]:.2f}, seed {seeds[0]})", found[0]))
    return panels


def write_report(output: Path, variants: Sequence[str], seeds: Sequence[int], baseline: str, *,
                 title: str = "Loss comparison", folds: int | None = None) -> dict[str, Any]:
    """Collect the finished runs under ``output``; write ``report.md``, ``report.json`` and ``figures/*.png``.

    Returns the report dict (the content of ``report.json``, with NaN where JSON has null).
    """
    output = Path(output)
    report = collect(output, variants, seeds, baseline, folds)
    report["figures"] = {k: str(p.relative_to(output)) for k, p in write_figures(output, report).items()}
    write_text(output / "report.json", json.dumps(json_ready(report), indent=2) + "\n")
    write_text(output / "report.md", report_markdown(report, title=title))
    return report


"""The training log of a run: reading ``RUN/metrics.csv`` (Lightning's CSVLogger) and drawing its curves.

The one reader of ``metrics.csv``: the run's ``training_curves.png``, the comparison report's per-variant curves and
its epoch counts all go through :func:`read_metrics_csv`.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from seg.evaluation.plots import new_figure, save_figure
from seg.types import PathLike


def read_metrics_csv(metrics_csv: PathLike) -> dict[str, np.ndarray]:
    """Lightning's CSVLogger ``metrics.csv`` as {column: float64 values}, NaN where a row did not log the column."""
    with open(metrics_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"'{metrics_csv}' has no rows: nothing was logged")
    columns: dict[str, np.ndarray] = {}
    for name in rows[0]:
        columns[name] = np.array([float(r[name]) if r[name] not in ("", None) else math.nan for r in rows])
    return columns


def plot_training_curves(metrics_csv: PathLike, out_png: PathLike) -> Path:
    """Curves from Lightning's CSVLogger ``metrics.csv`` (columns ``step``, ``epoch`` and one per logged metric,
    empty where a row did not log it), against ``step``.

    Panels: columns containing "loss"; other ``train/`` columns (loss terms); metrics whose values lie in [0, 1]
    (Dice, F1, ...); any remaining metric (e.g. FP per volume). Learning-rate columns are skipped.
    """
    columns = read_metrics_csv(metrics_csv)
    x_name = "step" if "step" in columns else "epoch"
    if x_name not in columns:
        raise ValueError(f"'{metrics_csv}' has neither a 'step' nor an 'epoch' column; is it a CSVLogger file?")
    panels: dict[str, list[str]] = {"losses": [], "loss terms": [], "metrics in [0, 1]": [], "other metrics": []}
    for name, values in columns.items():
        finite = values[np.isfinite(values)]
        if name in ("step", "epoch") or name.startswith("lr") or finite.size == 0:
            continue
        if "loss" in name:
            panels["losses"].append(name)
        elif name.startswith("train"):
            panels["loss terms"].append(name)
        elif finite.min() >= 0 and finite.max() <= 1:
            panels["metrics in [0, 1]"].append(name)
        else:
            panels["other metrics"].append(name)
    panels = {title: names for title, names in panels.items() if names}
    if not panels:
        raise ValueError(f"'{metrics_csv}' has no metric column with a value to plot")
    fig = new_figure(6.0, 2.6 * len(panels))
    axes = np.atleast_1d(fig.subplots(len(panels), 1, sharex=True))
    for ax, (title, names) in zip(axes, panels.items(), strict=True):
        for name in names:
            keep = np.isfinite(columns[name]) & np.isfinite(columns[x_name])
            ax.plot(columns[x_name][keep], columns[name][keep], marker="." if keep.sum() < 50 else None, label=name)
        ax.set(title=title)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel(x_name)
    return save_figure(fig, out_png)

"""Figures: the focal-loss curves of Lin et al. (2017, Fig. 1), reliability diagrams, sensitivity by lesion size,
a bar-with-CI helper, and the figure helpers every figure of ``seg`` uses (:func:`new_figure`, :func:`save_figure`).

Figures are built with matplotlib's object-oriented API (``Figure`` + the Agg canvas), never ``pyplot``, so
importing this module changes no global backend and works headless. PNGs are written atomically.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from seg.evaluation.calibration import CalibrationResult
from seg.files import atomic_path
from seg.types import PathLike

FOCAL_GAMMAS = (0.0, 0.5, 1.0, 2.0, 5.0)


def save_figure(fig: Figure, out_png: PathLike, *, dpi: int = 120) -> Path:
    """Write ``fig`` as PNG to a temporary file beside ``out_png``, then rename it into place."""
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return Path(out_png)


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` x ``height`` inches with the Agg canvas attached: no pyplot, no global backend."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # attach the Agg canvas: no pyplot, no global backend
    return fig


# ------------------------------------------------------------------------------------------ focal loss
def focal_loss_curves(p: np.ndarray, gammas: Sequence[float] = FOCAL_GAMMAS) -> dict[float, np.ndarray]:
    """FL(p_t) = -(1 - p_t)^γ log(p_t) (Lin et al., 2017, no α) for each γ; ``p`` in (0, 1], any shape."""
    p = np.asarray(p, dtype=np.float64)
    if np.any(p <= 0) or np.any(p > 1):
        raise ValueError("p must lie in (0, 1]: the loss is infinite at p = 0")
    return {float(g): -((1.0 - p) ** g) * np.log(p) for g in gammas}


def plot_focal_curves(out_png: PathLike, gammas: Sequence[float] = FOCAL_GAMMAS) -> Path:
    """Loss against the probability of the ground-truth class for each γ, as in Lin et al. (2017), Figure 1."""
    p = np.linspace(1e-3, 1.0, 500)
    fig = new_figure(6.0, 4.5)
    ax = fig.add_subplot()
    for gamma, loss in focal_loss_curves(p, gammas).items():
        ax.plot(p, loss, linewidth=2, label=f"γ = {gamma:g}")
    ax.set(xlim=(0, 1), ylim=(0, 5), xlabel="probability of ground truth class", ylabel="loss",
           title=r"Focal loss  $\mathrm{FL}(p_t) = -(1 - p_t)^\gamma \log(p_t)$")
    ax.annotate("well-classified\nexamples", xy=(0.8, 0.3), xytext=(0.62, 1.6), ha="center",
                arrowprops={"arrowstyle": "->"})
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    return save_figure(fig, out_png)


def plot_focal_main(argv: list[str] | None = None) -> int:
    """``seg-plot-focal --output PNG [--gammas 0 0.5 1 2 5]``."""
    parser = argparse.ArgumentParser(prog="seg-plot-focal", description=plot_focal_curves.__doc__)
    parser.add_argument("--output", default="focal_loss.png", help="PNG to write (default: %(default)s)")
    parser.add_argument("--gammas", type=float, nargs="+", default=list(FOCAL_GAMMAS))
    args = parser.parse_args(argv)
    print(f"wrote {plot_focal_curves(args.output, args.gammas)}")
    return 0


# ---------------------------------------------------------------------------------------- generic helpers
def bar_with_ci(ax: Axes, names: Sequence[str], means: Sequence[float], lows: Sequence[float],
                highs: Sequence[float], *, color: str | Sequence[str] | None = None):
    """Bars of ``means`` with asymmetric error bars to ``[lows, highs]`` (e.g. bootstrap CIs); returns the bars."""
    means_a, lows_a, highs_a = (np.asarray(x, dtype=np.float64) for x in (means, lows, highs))
    if not len(names) == means_a.size == lows_a.size == highs_a.size:
        raise ValueError(f"names, means, lows, highs must have one value per bar, got lengths "
                         f"{len(names)}, {means_a.size}, {lows_a.size}, {highs_a.size}")
    errors = np.stack([means_a - lows_a, highs_a - means_a])  # (2, N): below, above
    bars = ax.bar(list(names), means_a, yerr=np.nan_to_num(errors), capsize=4, color=color)
    for bar, mean in zip(bars, means_a, strict=True):
        ax.annotate(f"{mean:.3f}", (bar.get_x() + bar.get_width() / 2, 0), xytext=(0, 3),
                    textcoords="offset points", ha="center", fontsize=8)
    return bars


def plot_sensitivity_by_size(out_png: PathLike, bin_names: Sequence[str], series: Mapping[str, Sequence[float]],
                             *, lows: Mapping[str, Sequence[float]] | None = None,
                             highs: Mapping[str, Sequence[float]] | None = None,
                             counts: Sequence[int] | None = None, unit: str = "voxels") -> Path:
    """Grouped bars: lesion sensitivity per size bin (x) for each method in ``series`` {method: one value per bin}.

    ``lows``/``highs`` (same keys) add CI error bars; ``counts`` (GT lesions per bin) label the x ticks.
    NaN (no lesion in a bin) is drawn as a missing bar.
    """
    fig = new_figure(1.6 + 1.4 * len(bin_names), 4.0)
    ax = fig.add_subplot()
    x = np.arange(len(bin_names))
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        values_a = np.asarray(values, dtype=np.float64)
        if values_a.size != len(bin_names):
            raise ValueError(f"series {name!r} has {values_a.size} values but there are {len(bin_names)} bins")
        yerr = None
        if lows is not None and highs is not None:
            yerr = np.nan_to_num(np.stack([values_a - np.asarray(lows[name]), np.asarray(highs[name]) - values_a]))
        ax.bar(x + (i - (len(series) - 1) / 2) * width, np.nan_to_num(values_a), width, yerr=yerr, capsize=3,
               label=name)
    ticks = list(bin_names) if counts is None else [f"{b}\n(n = {c})" for b, c in zip(bin_names, counts, strict=True)]
    ax.set_xticks(x, ticks)
    ax.set(ylim=(0, 1.05), ylabel="lesion sensitivity", xlabel=f"lesion size ({unit})",
           title="Detection by lesion size")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, out_png)


def _as_calibration(value: CalibrationResult | Mapping) -> dict[str, np.ndarray | float]:
    if isinstance(value, CalibrationResult):
        value = value.to_dict()
    return {k: np.asarray(v, dtype=np.float64) if isinstance(v, list) else float(v) for k, v in value.items()
            if k in ("ece", "bin_edges", "bin_count", "bin_confidence", "bin_frequency")}


def plot_reliability(out_png: PathLike,
                     calibrations: CalibrationResult | Mapping[str, CalibrationResult | Mapping],
                     *, title: str = "Reliability of foreground probabilities") -> Path:
    """Reliability diagram (observed foreground frequency vs mean predicted probability per bin) and, below,
    the voxel count per bin (log scale). ``calibrations``: one result, or {method name: result} to overlay.
    Results may also be the JSON form from ``CalibrationResult.to_dict()``.
    """
    if isinstance(calibrations, CalibrationResult) or (isinstance(calibrations, Mapping) and "ece" in calibrations):
        calibrations = {"model": calibrations}
    fig = new_figure(5.0, 6.0)
    top, bottom = fig.subplots(2, 1, height_ratios=(3, 1), sharex=True)
    top.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect calibration")
    for i, (name, result) in enumerate(calibrations.items()):
        data = _as_calibration(result)
        keep = data["bin_count"] > 0
        top.plot(data["bin_confidence"][keep], data["bin_frequency"][keep], marker="o",
                 label=f"{name} (ECE = {data['ece']:.4f})")
        width = np.diff(data["bin_edges"]) / len(calibrations)  # side by side within each bin
        left = data["bin_edges"][:-1] + i * width
        bottom.bar(left[keep], data["bin_count"][keep], width[keep], align="edge", alpha=0.7, label=name)
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="observed foreground frequency", title=title)
    top.legend(loc="upper left", fontsize=8)
    top.grid(alpha=0.3)
    bottom.set(yscale="log", xlabel="predicted foreground probability", ylabel="voxels")
    return save_figure(fig, out_png)

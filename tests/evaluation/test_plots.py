"""Figures: the focal-curve data against the formula, and every plot writes a readable PNG atomically."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread

from seg.evaluation.calibration import CalibrationAccumulator
from seg.evaluation.plots import (
    bar_with_ci,
    focal_loss_curves,
    plot_focal_curves,
    plot_focal_main,
    plot_reliability,
    plot_sensitivity_by_size,
)


def _is_png(path) -> bool:
    image = imread(path)
    return image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_focal_curves_down_weight_easy_examples_100x_at_p_09_for_gamma_2():
    curves = focal_loss_curves(np.array([0.9, 0.5]), gammas=(0, 2))
    assert curves[0.0][0] == pytest.approx(-np.log(0.9))  # γ = 0 is cross-entropy
    assert curves[0.0][0] / curves[2.0][0] == pytest.approx(100.0)  # (1 - 0.9)^2 = 0.01
    assert curves[0.0][1] / curves[2.0][1] == pytest.approx(4.0)  # (1 - 0.5)^2 = 0.25
    with pytest.raises(ValueError, match=r"p must lie in \(0, 1\]"):
        focal_loss_curves(np.array([0.0]))


def test_plot_focal_writes_png_and_leaves_no_temporary(tmp_path):
    out = plot_focal_curves(tmp_path / "sub" / "focal.png")
    assert _is_png(out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["focal.png"]
    assert plot_focal_main(["--output", str(tmp_path / "cli.png"), "--gammas", "0", "2"]) == 0
    assert _is_png(tmp_path / "cli.png")


def test_bar_with_ci_error_bars_span_the_interval():
    ax = Figure().add_subplot()
    bars = bar_with_ci(ax, ["focal", "dice"], [0.5, 0.7], [0.4, 0.65], [0.55, 0.9])
    assert [b.get_height() for b in bars] == [0.5, 0.7]
    with pytest.raises(ValueError, match="one value per bar"):
        bar_with_ci(ax, ["a"], [0.5, 0.7], [0.4], [0.6])


def test_sensitivity_by_size_and_reliability_write_png(tmp_path):
    out = plot_sensitivity_by_size(tmp_path / "size.png", ["0-10", "10-100", "100-inf"],
                                   {"focal": [0.4, 0.8, 1.0], "dice": [0.2, float("nan"), 1.0]},
                                   lows={"focal": [0.3, 0.7, 1.0], "dice": [0.1, float("nan"), 1.0]},
                                   highs={"focal": [0.5, 0.9, 1.0], "dice": [0.3, float("nan"), 1.0]},
                                   counts=[10, 0, 3])
    assert _is_png(out)
    acc = CalibrationAccumulator(10)
    rng = np.random.default_rng(0)
    prob = rng.random(1000)
    acc.update(prob, rng.random(1000) < prob)
    result = acc.compute()
    assert _is_png(plot_reliability(tmp_path / "rel.png", result))
    assert _is_png(plot_reliability(tmp_path / "rel2.png", {"focal": result, "dice": result.to_dict()}))

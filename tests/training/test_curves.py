"""The run's training log: metrics.csv read with its gaps, and the training-curve figure."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread

from seg.training.curves import plot_training_curves, read_metrics_csv


def _is_png(path) -> bool:
    image = imread(path)
    return image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_training_curves_from_lightning_csv_with_gaps(tmp_path):
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text(
        "epoch,step,train/loss_step,train/focal_step,val/dice,val/fp_per_volume,lr-Adam\n"
        "0,0,1.2,0.8,,,0.01\n"
        "0,1,1.0,0.7,,,0.01\n"
        "0,1,,,0.35,4.0,\n"
        "1,3,0.8,0.5,,,0.01\n"
        "1,3,,,0.55,2.0,\n")
    columns = read_metrics_csv(csv_path)
    np.testing.assert_array_equal(columns["step"], [0, 1, 1, 3, 3])
    np.testing.assert_array_equal(columns["val/dice"][[2, 4]], [0.35, 0.55])
    assert np.isnan(columns["val/dice"][[0, 1, 3]]).all()  # rows that did not log it
    assert _is_png(plot_training_curves(csv_path, tmp_path / "curves.png"))
    empty = tmp_path / "empty.csv"
    empty.write_text("epoch,step\n")
    with pytest.raises(ValueError, match="has no rows"):
        plot_training_curves(empty, tmp_path / "x.png")

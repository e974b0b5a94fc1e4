"""Inference: sliding-window prediction of whole volumes, postprocessing, the checkpoint spec, file -> file prediction.

``seg.inference.predict_volume`` and ``predict_labels`` (the public names since the first release) are re-exported
from :mod:`seg.inference.sliding_window`.
"""

from __future__ import annotations

from seg.inference.sliding_window import foreground_box, predict_labels, predict_volume

__all__ = ["foreground_box", "predict_labels", "predict_volume"]

"""Training: the LightningModule, validation tallies, the run directory and its log, and ``train(argv)``."""

from __future__ import annotations

from seg.training.api import train
from seg.training.module import SegModule

__all__ = ["SegModule", "train"]

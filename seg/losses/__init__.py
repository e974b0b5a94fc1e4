"""Losses for sparse-lesion segmentation: focal, Dice and focal+Dice, each a pure function plus a module.

One definition of α everywhere (see :func:`seg.losses.focal_loss`); logits ``(B, C, *spatial)``, targets
as integer labels ``(B, 1, *spatial)`` / ``(B, *spatial)`` or one-/multi-hot ``(B, C, *spatial)``.
"""

from __future__ import annotations

from seg.losses.focal import FocalLoss, focal_loss

__all__ = ["FocalLoss", "focal_loss"]

"""Losses for sparse-lesion segmentation: focal, Dice and focal+Dice, each a pure function plus a module.

One definition of α everywhere (see :func:`seg.losses.focal_loss`); logits ``(B, C, *spatial)``, targets
as integer labels ``(B, 1, *spatial)`` / ``(B, *spatial)`` or one-/multi-hot ``(B, C, *spatial)``.
"""

from __future__ import annotations

from seg.losses.compound import FocalDiceLoss
from seg.losses.dice import DiceLoss, dice_loss
from seg.losses.focal import FocalLoss, focal_loss

__all__ = ["DiceLoss", "FocalDiceLoss", "FocalLoss", "dice_loss", "focal_loss"]

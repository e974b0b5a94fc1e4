"""Losses for sparse-lesion segmentation: focal, Dice and focal+Dice, each a pure function plus a module.

One definition of α everywhere (see :func:`seg.losses.focal_loss`); logits ``(B, C, *spatial)``, targets
as integer labels ``(B, 1, *spatial)`` / ``(B, *spatial)`` or one-/multi-hot ``(B, C, *spatial)``.
"""

from __future__ import annotations

from seg.losses.alpha import alpha_from_frequencies, resolve_alpha
from seg.losses.compound import FocalDiceLoss
from seg.losses.dice import DiceLoss, dice_loss
from seg.losses.factory import LOSSES, build_loss
from seg.losses.focal import FocalLoss, focal_loss
from seg.losses.frequencies import class_frequencies

__all__ = ["LOSSES", "DiceLoss", "FocalDiceLoss", "FocalLoss", "alpha_from_frequencies", "build_loss",
           "class_frequencies", "dice_loss", "focal_loss", "resolve_alpha"]

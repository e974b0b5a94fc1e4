"""Loss by name, as configs and the comparison runner ask for it.

Every loss returned here has ``terms(logits, target) -> {"total", ...}`` so training logs each term
separately. ``ce`` is focal loss with γ = 0 (exactly cross-entropy, α-weighted when α is given) and
``dice_ce`` is focal+Dice with γ = 0, so all five variants share one implementation of targets,
α, ``ignore_index`` and background handling. The compounds are the fused :class:`FocalDiceLoss` (one pass over
the logits), with the focal/CE term over every voxel and the Dice term over the foreground classes unless
``include_background``: nnU-Net's ``DC_and_CE_loss`` arrangement.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from seg.errors import check_option
from seg.losses.compound import FocalDiceLoss
from seg.losses.dice import DiceLoss
from seg.losses.focal import FocalLoss

LOSSES = ("focal", "dice", "focal_dice", "ce", "dice_ce")


class NamedTerms(nn.Module):
    """Wrap a single-term loss so it reports ``{"total": value, name: value}``."""

    def __init__(self, name: str, loss: nn.Module) -> None:
        super().__init__()
        self.name = name
        self.loss = loss

    def terms(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        value = self.loss(logits, target)
        return {"total": value, self.name: value}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(logits, target)


def build_loss(
    name: str,
    *,
    gamma: float = 2.0,
    alpha: float | Sequence[float] | None = None,
    activation: str = "softmax",
    include_background: bool = False,
    lambda_focal: float = 1.0,
    lambda_dice: float = 1.0,
    batch_dice: bool = False,
    focal_normalization: str = "voxels",
) -> nn.Module:
    """Build a loss by name (one of ``LOSSES``).

    ``include_background`` applies to the Dice term (MONAI and nnU-Net exclude background from Dice);
    the focal/CE term always covers every voxel, so α decides how background and lesion voxels are weighted.
    ``batch_dice`` computes the Dice term over the whole batch as one volume (nnU-Net's ``batch_dice``):
    a patch without lesion then no longer scores 0 or 1 on its own. ``focal_normalization`` (``"voxels"`` or
    ``"foreground"``) is the focal/CE term's divisor (:func:`seg.losses.focal_loss`).
    """
    key = check_option("loss", name.lower(), LOSSES)
    if key in ("focal", "ce"):
        g = gamma if key == "focal" else 0.0
        return NamedTerms(key, FocalLoss(gamma=g, alpha=alpha, activation=activation,
                                         normalization=focal_normalization))
    if key == "dice":
        return NamedTerms("dice", DiceLoss(activation=activation, include_background=include_background,
                                           batch=batch_dice))
    g = gamma if key == "focal_dice" else 0.0
    return FocalDiceLoss(gamma=g, alpha=alpha, activation=activation, lambda_focal=lambda_focal,
                         lambda_dice=lambda_dice, include_background=True, dice_include_background=include_background,
                         batch=batch_dice, focal_normalization=focal_normalization)

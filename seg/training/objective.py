"""What training optimises: the named loss, nnU-Net's deep supervision, and the optional blob term.

``Objective.terms(output, label, instances)`` returns every term by name (``{"total", "focal", "dice", "blob",
...}``) so the module logs each one; a non-finite total stops training with the step and the offending term.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from seg.losses.blob import blob_loss
from seg.losses.factory import build_loss
from seg.networks import deep_supervision_outputs, downsample_labels


class Objective(nn.Module):
    """``build_loss(name, ...)`` on the full-resolution output (plus nnU-Net-weighted deep supervision heads)
    ``+ blob_weight · blob_loss`` (:mod:`seg.losses.blob`, full resolution only).

    Args:
        loss: a name of :data:`seg.losses.factory.LOSSES`; gamma, alpha, activation, include_background, lambda_focal,
            lambda_dice, batch_dice, focal_normalization: its options (:func:`seg.losses.factory.build_loss`).
        blob_weight: weight of the blob term (0: off). The per-lesion criterion follows ``loss``: its focal and
            Dice parts with their lambdas (``dice`` has no focal part, ``focal``/``ce`` no Dice part).
        deep_supervision: the network returns DynUNet's stacked heads in training.
    """

    def __init__(self, loss: str, *, gamma: float, alpha: Sequence[float] | None, include_background: bool,
                 activation: str = "softmax",
                 lambda_focal: float, lambda_dice: float, batch_dice: bool, focal_normalization: str = "voxels",
                 blob_weight: float = 0.0, deep_supervision: bool = False) -> None:
        super().__init__()
        if not (math.isfinite(blob_weight) and blob_weight >= 0):
            raise ValueError(f"blob_weight must be a finite number >= 0, got {blob_weight}")
        self.criterion = build_loss(loss, gamma=gamma, alpha=alpha, activation=activation,
                                    include_background=include_background, lambda_focal=lambda_focal,
                                    lambda_dice=lambda_dice, batch_dice=batch_dice,
                                    focal_normalization=focal_normalization)
        key = loss.lower()
        self.blob_options = {"gamma": gamma if key in ("focal", "focal_dice") else 0.0, "alpha": alpha,
                             "lambda_focal": 0.0 if key == "dice" else lambda_focal,
                             "lambda_dice": 0.0 if key in ("focal", "ce") else lambda_dice,
                             "focal_normalization": focal_normalization}
        self.blob_weight, self.deep_supervision = float(blob_weight), deep_supervision

    def terms(self, network: nn.Module, output: torch.Tensor, label: torch.Tensor,
              instances: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Every term of one batch: ``output`` the network's ``(B, K, *spatial)`` (or stacked heads), ``label``
        ``(B, 1, *spatial)``, ``instances`` the lesion ids of the label (needed when ``blob_weight > 0``)."""
        outputs = deep_supervision_outputs(network, output) if self.deep_supervision else [output]
        terms = self.criterion.terms(outputs[0], label)
        if len(outputs) > 1:  # nnU-Net weights 1, 1/2, 1/4, ... normalised; coarsest head dropped
            weights = [0.5**i for i in range(len(outputs))]
            weights[-1] = 0.0
            total = weights[0] * terms["total"]
            for w, out in zip(weights[1:], outputs[1:], strict=True):
                if w > 0:
                    total = total + w * self.criterion.terms(out, downsample_labels(label, out.shape[2:]))["total"]
            terms = {**terms, "total": total / sum(weights)}
        if self.blob_weight > 0:
            if instances is None:
                raise ValueError("blob_weight > 0 needs the lesion-instance maps of the patches "
                                 "(data.instance_maps: true; seg-train links it from model.blob_weight)")
            blob = blob_loss(outputs[0], label, instances, **self.blob_options)
            terms = {**terms, "blob": blob, "total": terms["total"] + self.blob_weight * blob}
        return terms


def check_finite(terms: dict[str, torch.Tensor], step: int) -> None:
    """Stop training with a message naming the step and the loss term that went non-finite."""
    total = terms["total"]
    if bool(torch.isfinite(total)):
        return
    bad = [f"{k}={v.item()}" for k, v in terms.items() if k != "total" and not math.isfinite(v.item())]
    raise FloatingPointError(
        f"non-finite loss at global step {step}: total={total.item()}"
        + (f" (non-finite term: {', '.join(bad)})" if bad else "")
        + "; lower the learning rate or check the inputs for NaN/inf voxels"
    )

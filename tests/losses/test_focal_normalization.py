"""Focal loss normalised by the foreground (RetinaNet: the sum over all anchors divided by the number assigned to
ground truth), against the summed loss divided by that count by hand — plain and fused with Dice."""

from __future__ import annotations

import pytest
import torch

from seg.losses import FocalDiceLoss, dice_loss, focal_loss


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_foreground_normalisation_is_the_sum_over_the_foreground_count(activation) -> None:
    torch.manual_seed(2)
    logits = torch.randn(2, 3, 5, 6, 7, dtype=torch.float64, requires_grad=True)
    if activation == "softmax":
        target = torch.randint(0, 3, (2, 1, 5, 6, 7)) * (torch.rand(2, 1, 5, 6, 7) < 0.1)
        count = float((target > 0).sum())  # voxels of a class >= 1
    else:
        target = (torch.rand(2, 3, 5, 6, 7) < 0.1).double()
        count = float(target.sum())  # positive entries
    alpha = [0.2, 0.3, 0.5] if activation == "softmax" else 0.25
    value = focal_loss(logits, target, gamma=2.0, alpha=alpha, activation=activation, normalization="foreground")
    by_hand = focal_loss(logits, target, gamma=2.0, alpha=alpha, activation=activation, reduction="sum") / count
    (grad,) = torch.autograd.grad(value, logits)
    (grad_by_hand,) = torch.autograd.grad(by_hand, logits)
    torch.testing.assert_close(value, by_hand)
    torch.testing.assert_close(grad, grad_by_hand)


def test_foreground_normalisation_floors_an_empty_foreground_at_one() -> None:
    logits = torch.randn(1, 2, 4, 4, 4, dtype=torch.float64)
    empty = torch.zeros(1, 1, 4, 4, 4, dtype=torch.long)
    torch.testing.assert_close(focal_loss(logits, empty, normalization="foreground"),
                               focal_loss(logits, empty, reduction="sum"))
    with pytest.raises(ValueError, match="unknown normalization 'forground'.*did you mean 'foreground'"):
        focal_loss(logits, empty, normalization="forground")


def test_fused_focal_dice_uses_the_same_foreground_normalisation() -> None:
    torch.manual_seed(3)
    logits = torch.randn(2, 2, 6, 5, 4, dtype=torch.float64, requires_grad=True)
    labels = (torch.rand(2, 1, 6, 5, 4) < 0.1).long()
    fused = FocalDiceLoss(alpha=[0.1, 0.9], dice_include_background=False, focal_normalization="foreground")
    value = fused.terms(logits, labels)["total"]
    by_hand = (focal_loss(logits, labels, alpha=[0.1, 0.9], reduction="sum") / float(labels.sum())
               + dice_loss(logits, labels, include_background=False))
    torch.testing.assert_close(value, by_hand)
    torch.testing.assert_close(torch.autograd.grad(value, logits)[0], torch.autograd.grad(by_hand, logits)[0])

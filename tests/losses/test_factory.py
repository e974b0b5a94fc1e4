"""Losses by name: each variant equals its definition, term by term."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seg.losses import FocalDiceLoss, dice_loss, focal_loss
from seg.losses.factory import build_loss


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    logits = torch.randn(2, 2, 6, 5, 4, dtype=torch.float64)  # (B, C, D, H, W)
    labels = (torch.rand(2, 1, 6, 5, 4) > 0.9).long()  # (B, 1, D, H, W), sparse foreground
    return logits, labels


def test_ce_is_cross_entropy(batch) -> None:
    logits, labels = batch
    terms = build_loss("ce").terms(logits, labels)
    torch.testing.assert_close(terms["total"], F.cross_entropy(logits, labels[:, 0]))


def test_focal_dice_keeps_background_voxels_in_the_focal_term(batch) -> None:
    logits, labels = batch
    terms = build_loss("focal_dice", gamma=2.0, alpha=[0.25, 0.75], lambda_dice=0.5).terms(logits, labels)
    focal = focal_loss(logits, labels, gamma=2.0, alpha=[0.25, 0.75])  # every voxel
    dice = dice_loss(logits, labels, include_background=False)
    torch.testing.assert_close(terms["focal"], focal)
    torch.testing.assert_close(terms["dice"], dice)
    torch.testing.assert_close(terms["total"], focal + 0.5 * dice)


@pytest.mark.parametrize("labels_count", [2, 4])  # two classes take the fused binary path, four the general one
def test_training_compounds_are_the_fused_loss_with_the_separate_losses_gradient(labels_count) -> None:
    torch.manual_seed(3)
    logits = torch.randn(2, labels_count, 6, 5, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, labels_count, (2, 1, 6, 5, 4))
    alpha = torch.full((labels_count,), 1.0 / labels_count).tolist()
    loss = build_loss("focal_dice", gamma=2.0, alpha=alpha, batch_dice=True)
    assert isinstance(loss, FocalDiceLoss)  # what training runs is the fused, benchmarked loss
    fused = loss.terms(logits, labels)["total"]
    (grad_fused,) = torch.autograd.grad(fused, logits)
    separate = (focal_loss(logits, labels, gamma=2.0, alpha=alpha)  # focal over every voxel
                + dice_loss(logits, labels, include_background=False, batch=True))  # Dice on the foreground
    (grad_separate,) = torch.autograd.grad(separate, logits)
    torch.testing.assert_close(fused, separate)
    torch.testing.assert_close(grad_fused, grad_separate)


def test_dice_ce_is_cross_entropy_plus_foreground_dice(batch) -> None:
    logits, labels = batch
    terms = build_loss("dice_ce").terms(logits, labels)
    expected = F.cross_entropy(logits, labels[:, 0]) + dice_loss(logits, labels, include_background=False)
    torch.testing.assert_close(terms["total"], expected)


def test_unknown_loss_suggests_a_name() -> None:
    with pytest.raises(ValueError, match="did you mean 'dice_ce'"):
        build_loss("dice_cee")


@pytest.mark.parametrize("name", ["dice", "focal_dice", "dice_ce"])
def test_batch_dice_is_one_dice_over_the_whole_batch(batch, name) -> None:
    _, labels = batch
    labels = labels.clone()
    labels[1] = 0  # a patch without lesion: per-sample Dice scores it alone, batch Dice does not
    logits = torch.cat([3 * (labels == 0).double(), 3 * (labels == 1).double()], dim=1)  # good predictions ...
    logits[1, 1, 0, 0, :2] = 4.0  # ... but two false-positive voxels in the empty patch
    per_sample = build_loss(name).terms(logits, labels)["dice"]
    batched = build_loss(name, batch_dice=True).terms(logits, labels)["dice"]
    # nnU-Net's batch Dice by hand: sums over the batch and every voxel, foreground channel only
    p = torch.softmax(logits, dim=1)[:, 1]
    t = (labels[:, 0] == 1).double()
    by_hand = 1 - (2 * (p * t).sum() + 1e-5) / (p.sum() + t.sum() + 1e-5)
    torch.testing.assert_close(batched, by_hand)
    assert abs(per_sample.item() - batched.item()) > 0.05

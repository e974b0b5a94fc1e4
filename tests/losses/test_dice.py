"""Dice loss against MONAI's DiceLoss and nnU-Net's SoftDiceLoss formula (written out here)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss as MonaiDiceLoss

from seg.losses import DiceLoss, FocalDiceLoss, dice_loss


def nnunet_soft_dice(x: torch.Tensor, y: torch.Tensor, batch_dice: bool, do_bg: bool, smooth: float) -> torch.Tensor:
    """nnU-Net v2 SoftDiceLoss (softmax, label target), returned as 1 + their −dc."""
    p = torch.softmax(x, 1)
    t = F.one_hot(y, x.shape[1]).movedim(-1, 1).to(p.dtype)  # (B, *spatial, C) -> (B, C, *spatial)
    axes = [0, *range(2, x.ndim)] if batch_dice else list(range(2, x.ndim))
    tp, fp, fn = (p * t).sum(axes), (p * (1 - t)).sum(axes), ((1 - p) * t).sum(axes)
    dc = (2 * tp + smooth) / torch.clip(2 * tp + fp + fn + smooth, 1e-8)
    dc = dc[1:] if batch_dice and not do_bg else (dc[:, 1:] if not do_bg else dc)
    return 1 - dc.mean()


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("include_background", [False, True])
def test_batch_dice_matches_nnunet(batch, include_background):
    x = torch.randn(3, 3, 4, 5, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (3, 4, 5, 6))
    y[0] = 0  # an image without foreground
    ours = dice_loss(x, y, batch=batch, include_background=include_background, smooth=1.0)
    torch.testing.assert_close(ours, nnunet_soft_dice(x, y, batch, include_background, 1.0))


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
@pytest.mark.parametrize("channels", [2, 3])
@pytest.mark.parametrize("batch", [False, True])
def test_matches_monai_in_value_and_gradient(activation, channels, batch):
    x = torch.randn(2, channels, 5, 6, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, channels, (2, 1, 5, 6))
    ours = dice_loss(x, y, activation=activation, batch=batch)
    monai = MonaiDiceLoss(include_background=False, to_onehot_y=True, batch=batch,
                          softmax=activation == "softmax", sigmoid=activation == "sigmoid")(x, y)
    torch.testing.assert_close(ours, monai)
    torch.testing.assert_close(torch.autograd.grad(ours, x)[0], torch.autograd.grad(monai, x)[0])


def test_empty_truth_and_empty_prediction_give_zero():
    y = torch.zeros(2, 4, 4, 4, dtype=torch.long)
    x = torch.stack([torch.full((2, 4, 4, 4), 30.0), torch.full((2, 4, 4, 4), -30.0)], dim=1)
    assert dice_loss(x, y).item() == pytest.approx(0.0, abs=1e-6)


def test_ignored_voxels_leave_every_sum():
    x = torch.randn(2, 2, 4, 4, requires_grad=True)
    y = torch.randint(0, 2, (2, 4, 4))
    y[:, 0] = 9
    loss = dice_loss(x, y, ignore_index=9, include_background=True)
    assert torch.autograd.grad(loss, x)[0][:, :, 0].abs().max().item() == 0.0
    torch.testing.assert_close(loss, dice_loss(x[:, :, 1:], y[:, 1:], include_background=True))


def test_none_reduction_shapes():
    x, y = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    assert dice_loss(x, y, reduction="none").shape == (2, 2)
    assert dice_loss(x, y, reduction="none", batch=True).shape == (2,)
    assert dice_loss(x, y, reduction="none", include_background=True).shape == (2, 3)


@pytest.mark.parametrize("kwargs", [dict(), dict(batch=True, ignore_index=2, reduction="none"),
                                    dict(activation="sigmoid", include_background=True)])
def test_gradcheck_float64(kwargs):
    x = torch.randn(2, 3, 3, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 3, (2, 3, 4))
    assert torch.autograd.gradcheck(lambda t: dice_loss(t, y, **kwargs), (x,))


@pytest.mark.parametrize("include_background", [False, True])
def test_include_background_is_the_same_in_dice_loss_and_focal_dice(include_background):
    x, y = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    terms = FocalDiceLoss(include_background=include_background).terms(x, y)
    torch.testing.assert_close(terms["dice"], DiceLoss(include_background=include_background)(x, y))

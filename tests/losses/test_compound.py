"""FocalDiceLoss equals its two terms computed separately, in value and gradient, for both activations."""

from __future__ import annotations

import pytest
import torch

from seg.losses import FocalDiceLoss, dice_loss, focal_loss


@pytest.mark.parametrize("channels,activation", [(2, "softmax"), (3, "softmax"), (3, "sigmoid")])
@pytest.mark.parametrize("include_background", [True, False])
def test_terms_and_total_equal_separate_losses(channels, activation, include_background):
    x = torch.randn(2, channels, 4, 5, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, channels, (2, 1, 4, 5))
    y[0, 0, 0, 0] = 9
    alpha = [0.2, 0.3, 0.5][:channels] if channels == 3 else 0.3
    options = dict(activation=activation, include_background=include_background, ignore_index=9)
    loss = FocalDiceLoss(gamma=1.5, alpha=alpha, lambda_focal=2.0, lambda_dice=0.5, **options)
    terms = loss.terms(x, y)
    focal = focal_loss(x, y, gamma=1.5, alpha=alpha, **options)
    dice = dice_loss(x, y, **options)
    torch.testing.assert_close(terms["focal"], focal)
    torch.testing.assert_close(terms["dice"], dice)
    torch.testing.assert_close(loss(x, y), 2.0 * focal + 0.5 * dice)
    torch.testing.assert_close(torch.autograd.grad(terms["total"], x)[0],
                               torch.autograd.grad(2.0 * focal + 0.5 * dice, x)[0])


def test_softmax_focal_term_is_softmax_not_sigmoid():
    # MONAI's DiceFocalLoss(softmax=True) uses a sigmoid focal term (MONAI #8242); ours follows `activation`
    x, y = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    focal = FocalDiceLoss(activation="softmax").terms(x, y)["focal"]
    torch.testing.assert_close(focal, focal_loss(x, y, activation="softmax"))
    assert not torch.allclose(focal, focal_loss(x, y, activation="sigmoid"))


def test_gradcheck_float64():
    x = torch.randn(2, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 2, (2, 3, 4))
    loss = FocalDiceLoss(gamma=0.5, alpha=0.25, batch=True)
    assert torch.autograd.gradcheck(lambda t: loss(t, y), (x,))


def test_forward_assigns_nothing_to_the_module():
    loss = FocalDiceLoss(alpha=[0.3, 0.7])
    before = dict(vars(loss))
    loss(torch.randn(2, 2, 4, 4), torch.randint(0, 2, (2, 4, 4)))
    assert dict(vars(loss)).keys() == before.keys() and loss.alpha.tolist() == [0.3, 0.7]


def test_real_brats_labels_stored_as_float(brats_case):
    nibabel = pytest.importorskip("nibabel")
    labels = torch.from_numpy(nibabel.load(brats_case / "OTMultiClass.nii.gz").get_fdata(dtype="float32"))
    labels = labels[100:132, 100:132, 70:86][None, None]  # (1, 1, D, H, W) float32, values 0-4
    x = torch.randn(1, 5, *labels.shape[2:], requires_grad=True)
    terms = FocalDiceLoss(alpha=[0.1, 0.3, 0.2, 0.2, 0.2]).terms(x, labels)
    terms["total"].backward()
    torch.testing.assert_close(terms["focal"], focal_loss(x, labels.long(), alpha=[0.1, 0.3, 0.2, 0.2, 0.2]))
    assert torch.isfinite(x.grad).all()

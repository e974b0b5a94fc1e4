"""Bad input raises ValueError with a message that names what was wrong (checked in seg/losses/_targets.py)."""

from __future__ import annotations

import pytest
import torch

from seg.losses import DiceLoss, FocalDiceLoss, FocalLoss, dice_loss, focal_loss

X = torch.randn(2, 3, 4, 4)  # (B, C, H, W)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3, 4, 4\).*\(2, 1, 4, 5\)"):
        focal_loss(X, torch.zeros(2, 1, 4, 5, dtype=torch.long))


@pytest.mark.parametrize("value", [3, -1])
def test_label_out_of_range_names_the_value(value):
    y = torch.zeros(2, 4, 4, dtype=torch.long)
    y[1, 2, 2] = value
    with pytest.raises(ValueError, match=rf"label value {value}\b.*3 channels"):
        focal_loss(X, y)
    with pytest.raises(ValueError, match=rf"label value {value}\b"):
        dice_loss(X, y)


def test_ignore_index_is_allowed_outside_the_range():
    y = torch.zeros(2, 4, 4, dtype=torch.long)
    y[0, 0, 0] = 255
    assert torch.isfinite(focal_loss(X, y, ignore_index=255))
    y[0, 0, 1] = 7
    with pytest.raises(ValueError, match="label value 7"):
        focal_loss(X, y, ignore_index=255)


def test_non_integral_float_labels_raise():
    y = torch.zeros(2, 1, 4, 4)
    y[0, 0, 1, 1] = 1.5
    with pytest.raises(ValueError, match="non-integral value 1.5"):
        focal_loss(X, y)


def test_soft_multi_hot_target_raises_for_sigmoid():
    t = torch.zeros(2, 3, 4, 4)
    t[0, 1, 0, 0] = 0.7
    with pytest.raises(ValueError, match="value 0.7"):
        focal_loss(X, t, activation="sigmoid")


# values next to 0 and 1 (the screen t − t² must not round them to zero), NaN, out of range
@pytest.mark.parametrize("value", [float(torch.finfo(torch.float32).eps) / 2, 1 - float(torch.finfo(torch.float32).eps) / 2,
                                   1 + float(torch.finfo(torch.float32).eps), 1e-45, -1.0, 2.0, 3e38, float("nan")])
def test_any_multi_hot_value_other_than_0_and_1_raises(value):
    t = (torch.rand(2, 3, 64, 64) < 0.3).float()
    t[1, 2, 63, 5] = value
    with pytest.raises(ValueError, match="one-/multi-hot target has value"):
        focal_loss(X.new_zeros(2, 3, 64, 64), t, activation="sigmoid")


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int64])
@pytest.mark.parametrize("value", [2, 16, -1])
def test_integer_multi_hot_value_other_than_0_and_1_raises(dtype, value):
    if value < 0 and dtype == torch.uint8:
        pytest.skip("uint8 has no negative values")
    t = torch.zeros(2, 3, 4, 4, dtype=dtype)
    t[0, 2, 1, 1] = 1
    t[1, 0, 3, 3] = value
    with pytest.raises(ValueError, match=f"value {value}"):
        focal_loss(X, t, activation="sigmoid")
    t[1, 0, 3, 3] = 1
    assert torch.isfinite(focal_loss(X, t, activation="sigmoid"))


def test_softmax_with_a_not_one_hot_target_raises():
    t = torch.zeros(2, 3, 4, 4)  # no class at all
    with pytest.raises(ValueError, match="not one-hot"):
        focal_loss(X, t)


def test_one_hot_target_for_softmax_equals_labels():
    y = torch.randint(0, 3, (2, 4, 4))
    one_hot = torch.nn.functional.one_hot(y, 3).permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)
    torch.testing.assert_close(focal_loss(X, one_hot), focal_loss(X, y))


@pytest.mark.parametrize("alpha", [[0.5, 0.5], [0.1, 0.2, 0.3, 0.4]])
def test_alpha_of_wrong_length_names_c(alpha):
    y = torch.zeros(2, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="C=3"):
        focal_loss(X, y, alpha=alpha)


def test_scalar_alpha_with_softmax_and_more_than_two_classes_is_ambiguous():
    with pytest.raises(ValueError, match="ambiguous.*C=3"):
        focal_loss(X, torch.zeros(2, 4, 4, dtype=torch.long), alpha=0.25)


def test_sigmoid_alpha_above_one_raises():
    with pytest.raises(ValueError, match=r"α must be in \[0, 1\]"):
        focal_loss(X, torch.zeros(2, 4, 4, dtype=torch.long), alpha=1.5, activation="sigmoid")


@pytest.mark.parametrize("make", [
    lambda: focal_loss(X, torch.zeros(2, 4, 4, dtype=torch.long), reduction="avg"),
    lambda: FocalLoss(reduction="avg"),
    lambda: DiceLoss(reduction="avg"),
])
def test_unknown_reduction_raises(make):
    with pytest.raises(ValueError, match="unknown reduction 'avg'"):
        make()


@pytest.mark.parametrize("make", [
    lambda: focal_loss(X, torch.zeros(2, 4, 4, dtype=torch.long), activation="softmx"),
    lambda: FocalLoss(activation="softmx"),
    lambda: DiceLoss(activation="softmx"),
    lambda: FocalDiceLoss(activation="softmx"),
])
def test_unknown_activation_raises_with_suggestion(make):
    with pytest.raises(ValueError, match="unknown activation 'softmx'.*did you mean 'softmax'"):
        make()


def test_softmax_on_one_channel_raises():
    with pytest.raises(ValueError, match="at least 2 channels"):
        focal_loss(torch.randn(2, 1, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long))


def test_negative_gamma_raises():
    with pytest.raises(ValueError, match="gamma must be"):
        focal_loss(X, torch.zeros(2, 4, 4, dtype=torch.long), gamma=-1.0)

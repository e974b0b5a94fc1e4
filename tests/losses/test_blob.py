"""Blob loss: one lesion is the plain loss, every lesion weighs the same (by hand), gradients by gradcheck."""

from __future__ import annotations

import pytest
import torch

from seg.losses import dice_loss, focal_loss
from seg.losses.blob import blob_loss


def _volume() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 6, 6, 6, dtype=torch.float64)  # (B, C, D, H, W)
    labels = torch.zeros(2, 1, 6, 6, 6, dtype=torch.long)
    labels[0, 0, 1:3, 1:3, 1:3] = 1  # one 8-voxel lesion per image
    labels[1, 0, 3:5, 2:4, 2:5] = 1
    return logits, labels, labels.clone()


def test_one_lesion_per_image_equals_the_plain_focal_plus_dice() -> None:
    logits, labels, instances = _volume()
    blob = blob_loss(logits, labels, instances, gamma=2.0, alpha=[0.2, 0.8])
    plain = focal_loss(logits, labels, gamma=2.0, alpha=[0.2, 0.8]) + dice_loss(logits, labels, include_background=False)
    torch.testing.assert_close(blob, plain)


def test_a_large_and_a_small_lesion_weigh_the_same_by_hand() -> None:
    torch.manual_seed(1)
    logits = torch.randn(1, 2, 8, 8, 8, dtype=torch.float64)
    labels = torch.zeros(1, 1, 8, 8, 8, dtype=torch.long)
    instances = torch.zeros_like(labels)
    labels[0, 0, :4, :4, :4], instances[0, 0, :4, :4, :4] = 1, 1  # 64 voxels
    labels[0, 0, 6, 6, 6], instances[0, 0, 6, 6, 6] = 1, 2  # 1 voxel
    value = blob_loss(logits, labels, instances, gamma=0.0, lambda_dice=0.0)  # CE per lesion, no Dice
    ce = torch.nn.functional.cross_entropy(logits, labels[:, 0], reduction="none")[0]  # (D, H, W)
    background = labels[0, 0] == 0
    per_lesion = [ce[background | (instances[0, 0] == k)].mean() for k in (1, 2)]  # the other lesion masked out
    torch.testing.assert_close(value, (per_lesion[0] + per_lesion[1]) / 2)
    # the global CE weighs the 64-voxel lesion 64 times the 1-voxel one; here each counts 1/2
    assert not torch.isclose(value, ce.mean())


def test_foreground_normalisation_divides_each_lesion_by_its_size() -> None:
    logits, labels, instances = _volume()
    value = blob_loss(logits[:1], labels[:1], instances[:1], gamma=2.0, lambda_dice=0.0,
                      focal_normalization="foreground")
    expected = focal_loss(logits[:1], labels[:1], gamma=2.0, reduction="sum") / 8  # one 8-voxel lesion
    torch.testing.assert_close(value, expected)


def test_no_lesion_in_the_batch_gives_zero_and_a_gradient_path() -> None:
    logits = torch.randn(1, 2, 4, 4, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.zeros(1, 1, 4, 4, 4, dtype=torch.long)
    value = blob_loss(logits, labels, labels)
    assert float(value) == 0.0
    value.backward()
    assert torch.count_nonzero(logits.grad) == 0


def test_gradcheck() -> None:
    logits, labels, instances = _volume()
    instances[0, 0, 2, 2, 2] = 5  # two lesion ids in one connected blob: still two instances
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: blob_loss(x, labels, instances, gamma=2.0, alpha=[0.3, 0.7]),
                                    (logits,))


def test_instances_must_match_the_lesion_voxels() -> None:
    logits, labels, instances = _volume()
    instances[0, 0, 0, 0, 0] = 3  # an id on a background voxel
    with pytest.raises(ValueError, match="instances must be >= 1 exactly on lesion voxels"):
        blob_loss(logits, labels, instances)

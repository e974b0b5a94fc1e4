"""What training optimises: deep supervision weighted as nnU-Net does (by hand), and the blob term added on top."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seg.losses.blob import blob_loss
from seg.networks import NetworkConfig, build_network, downsample_labels
from seg.training.objective import Objective, check_finite


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    image = torch.randn(2, 1, 16, 16, 16)
    label = torch.zeros(2, 1, 16, 16, 16)
    label[0, 0, 2:6, 2:6, 2:6] = 1  # two lesions in image 0, one in image 1
    label[0, 0, 10:12, 10:12, 10:12] = 1
    label[1, 0, 5:9, 6:9, 4:8] = 1
    instances = label.clone()
    instances[0, 0, 10:12, 10:12, 10:12] = 2
    return image, label, instances


def _objective(**kwargs) -> Objective:
    options = dict(gamma=2.0, alpha=None, include_background=False, lambda_focal=1.0, lambda_dice=1.0,
                   batch_dice=False)
    return Objective(**{**options, **kwargs})


def test_deep_supervision_weights_the_heads_as_nnunet_by_hand() -> None:
    network = build_network(NetworkConfig(channels=[4, 8, 16, 32], deep_supervision=True)).train()
    image, label, _ = _batch()
    output = network(image)  # (B, 1 + heads, K, *spatial)
    terms = _objective(loss="ce", deep_supervision=True).terms(network, output, label)
    heads = [output[:, 0]] + list(network.heads)  # full resolution, then 8^3, 4^3 (finest first)
    weights = [1.0, 0.5, 0.0]  # 1/2^i, the coarsest dropped
    losses = [F.cross_entropy(h, downsample_labels(label, h.shape[2:])[:, 0].long()) for h in heads]
    expected = sum(w * x for w, x in zip(weights, losses, strict=True)) / sum(weights)
    torch.testing.assert_close(terms["total"], expected)
    torch.testing.assert_close(terms["ce"], losses[0])  # the logged term is the full-resolution one


def test_blob_term_is_added_with_its_weight() -> None:
    network = build_network(NetworkConfig(channels=[4, 8, 16])).eval()
    image, label, instances = _batch()
    output = network(image)
    plain = _objective(loss="focal_dice").terms(network, output, label)
    with_blob = _objective(loss="focal_dice", blob_weight=0.5).terms(network, output, label, instances)
    blob = blob_loss(output, label, instances, gamma=2.0, lambda_focal=1.0, lambda_dice=1.0)
    torch.testing.assert_close(with_blob["blob"], blob)
    torch.testing.assert_close(with_blob["total"], plain["total"] + 0.5 * blob)
    with pytest.raises(ValueError, match="needs the lesion-instance maps.*instance_maps"):
        _objective(loss="focal_dice", blob_weight=0.5).terms(network, output, label)


def test_non_finite_loss_names_the_step_and_the_term() -> None:
    terms = {"total": torch.tensor(float("nan")), "focal": torch.tensor(float("inf")), "dice": torch.tensor(0.3)}
    with pytest.raises(FloatingPointError, match=r"global step 7: total=nan \(non-finite term: focal=inf\)"):
        check_finite(terms, 7)

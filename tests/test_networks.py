"""Network factory and deep-supervision targets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seg.networks import NetworkConfig, build_network, deep_supervision_outputs, downsample_labels


@pytest.mark.parametrize("name", ["dynunet", "unet"])
@pytest.mark.parametrize("dims", [2, 3])
def test_networks_map_input_to_class_logits(name: str, dims: int) -> None:
    config = NetworkConfig(name=name, spatial_dims=dims, in_channels=2, out_channels=3, channels=[4, 8, 16])
    network = build_network(config).eval()
    x = torch.randn(1, 2, *([16] * dims))  # (B, C, *spatial)
    assert network(x).shape == (1, 3, *([16] * dims))


def test_unknown_network_raises() -> None:
    with pytest.raises(ValueError, match="unknown network 'vnet'"):
        build_network(NetworkConfig(name="vnet"))


def test_single_voxel_lesion_survives_maxpool_but_not_nearest() -> None:
    labels = torch.zeros(1, 1, 8, 8, 8, dtype=torch.long)
    labels[0, 0, 3, 5, 1] = 1  # one lesion voxel at odd coordinates
    pooled = downsample_labels(labels, (2, 2, 2))
    nearest = F.interpolate(labels.float(), size=(2, 2, 2), mode="nearest")
    assert pooled.sum() == 1 and pooled[0, 0, 0, 1, 0] == 1  # block (3//4, 5//4, 1//4)
    assert nearest.sum() == 0  # what nnU-Net issue #1226 describes


def test_deep_supervision_heads_are_low_resolution() -> None:
    config = NetworkConfig(spatial_dims=3, in_channels=1, out_channels=2, channels=[4, 8, 16, 32],
                           deep_supervision=True)
    network = build_network(config).train()
    outputs = deep_supervision_outputs(network, network(torch.randn(1, 1, 16, 16, 16)))
    assert [tuple(o.shape[2:]) for o in outputs] == [(16, 16, 16), (8, 8, 8), (4, 4, 4)]

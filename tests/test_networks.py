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


@pytest.mark.parametrize("dims", [2, 3])
def test_channels_last_changes_only_the_weights_layout(dims: int) -> None:
    """Same parameters, same outputs and gradients; only the convolution weights' strides change."""
    import copy

    from seg.networks import channels_last

    torch.manual_seed(0)
    plain = build_network(NetworkConfig(spatial_dims=dims, in_channels=2, out_channels=3, channels=[4, 8, 16]))
    last = channels_last(copy.deepcopy(plain), dims)
    layout = torch.channels_last_3d if dims == 3 else torch.channels_last
    weights = [p for p in last.parameters() if p.dim() == dims + 2]
    assert weights and all(p.is_contiguous(memory_format=layout) for p in weights)
    assert sum(not p.is_contiguous() for p in weights) > len(weights) // 2  # 1x1 heads are both layouts at once
    for a, b in zip(plain.state_dict().values(), last.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    x = torch.randn(2, 2, *([16] * dims))
    out_plain, out_last = plain(x), last(x)
    torch.testing.assert_close(out_last, out_plain, rtol=1e-4, atol=1e-5)
    out_plain.square().mean().backward(), out_last.square().mean().backward()
    for a, b in zip(plain.parameters(), last.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-3, atol=1e-6)


def test_cpu_layout_is_channels_last_in_3d_only() -> None:
    from seg.networks import cpu_layout

    config3, config2 = (NetworkConfig(spatial_dims=d, channels=[4, 8, 16]) for d in (3, 2))
    convs3 = [p for p in cpu_layout(build_network(config3), 3).parameters() if p.dim() == 5]
    convs2 = [p for p in cpu_layout(build_network(config2), 2).parameters() if p.dim() == 4]
    assert all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in convs3)
    assert not all(p.is_contiguous() for p in convs3)
    assert all(p.is_contiguous() for p in convs2)

"""2D/3D U-Net factory over MONAI's networks.

``build_network(NetworkConfig(...))`` builds one of MONAI's ``UNet``, ``BasicUNet`` or ``DynUNet`` (the
nnU-Net-style network). Nothing here re-implements a network: the factory only turns a small, serialisable
config (stored in every checkpoint, so inference can rebuild the network without the training code's
config files) into MONAI's constructor arguments.

Deep supervision (``DynUNet`` only): MONAI's DynUNet upsamples its supervision heads to full resolution by
nearest-neighbour interpolation. nnU-Net instead compares each low-resolution head with a *downsampled*
target, and down-sampling a label map by nearest neighbour erases lesions smaller than the stride
(nnU-Net issue #1226). We therefore read the raw low-resolution heads (``DynUNet.heads``) and downsample the
target by max-pooling (:func:`downsample_labels`), so a one-voxel lesion survives at every scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from monai.networks.nets import BasicUNet, DynUNet, UNet
from torch import nn

from seg.errors import check_option

NETWORKS = ("dynunet", "unet", "basicunet")


@dataclass
class NetworkConfig:
    """Everything needed to rebuild a network; plain types only (it is stored in checkpoints).

    Args:
        name: one of ``NETWORKS``.
        spatial_dims: 2 or 3.
        in_channels: image channels (modalities).
        out_channels: classes including background (softmax) or foreground channels (sigmoid).
        channels: features per level, e.g. ``[16, 32, 64, 128]``; its length sets the depth.
        deep_supervision: DynUNet only; number of extra low-resolution heads is ``len(channels) - 2``.
        dropout: dropout probability (``None``: none).
        kernel_sizes, strides: DynUNet only, one entry per level, each an int or one per axis (nnU-Net's
            anisotropic topology, e.g. ``[[1, 3, 3], [3, 3, 3], ...]`` and ``[[1, 1, 1], [1, 2, 2], ...]``; planned by
            :mod:`seg.planning.topology`); ``None``: 3 everywhere, stride 1 then 2 (isotropic).
    """

    name: str = "dynunet"
    spatial_dims: int = 3
    in_channels: int = 1
    out_channels: int = 2
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    deep_supervision: bool = False
    dropout: float | None = None
    kernel_sizes: list | None = None
    strides: list | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def build_network(config: NetworkConfig) -> nn.Module:
    """Build the MONAI network a :class:`NetworkConfig` describes.

    Returns a module mapping ``(B, in_channels, *spatial)`` to logits ``(B, out_channels, *spatial)``
    (in training mode with deep supervision, DynUNet returns ``(B, 1 + heads, out_channels, *spatial)``;
    use :func:`deep_supervision_outputs`).
    """
    name = check_option("network", config.name.lower(), NETWORKS)
    if config.spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {config.spatial_dims}")
    if len(config.channels) < 3:
        raise ValueError(f"channels needs at least three levels, got {config.channels}")
    if config.deep_supervision and name != "dynunet":
        raise ValueError(f"deep_supervision is supported for 'dynunet' only, not {config.name!r}")
    dims, cin, cout, chans = config.spatial_dims, config.in_channels, config.out_channels, list(config.channels)
    if name == "unet":
        return UNet(
            spatial_dims=dims, in_channels=cin, out_channels=cout, channels=chans,
            strides=[2] * (len(chans) - 1), num_res_units=2, norm="instance", dropout=config.dropout or 0.0,
        )
    if name == "basicunet":
        if len(chans) != 6:
            raise ValueError(f"basicunet takes exactly 6 channel numbers, got {len(chans)}: {chans}")
        return BasicUNet(spatial_dims=dims, in_channels=cin, out_channels=cout, features=tuple(chans),
                         dropout=config.dropout or 0.0)
    # nnU-Net style: 3x3(x3) kernels, stride 1 then 2 per level (or the planned per-axis ones), instance norm,
    # leaky ReLU.
    strides = config.strides or [1] + [2] * (len(chans) - 1)
    kernels = config.kernel_sizes or [3] * len(chans)
    if len(strides) != len(chans) or len(kernels) != len(chans):
        raise ValueError(f"kernel_sizes and strides need one entry per level ({len(chans)} channels {chans}), got "
                         f"{len(kernels)} and {len(strides)}")
    return DynUNet(
        spatial_dims=dims, in_channels=cin, out_channels=cout,
        kernel_size=kernels, strides=strides, upsample_kernel_size=strides[1:],
        filters=chans, dropout=config.dropout,
        deep_supervision=config.deep_supervision, deep_supr_num=max(1, len(chans) - 2),
    )


def channels_last(network: nn.Module, spatial_dims: int) -> nn.Module:
    """Store the convolution weights channels-last (NHWC in 2D, NDHWC in 3D), in place; returns ``network``.

    oneDNN, which runs PyTorch's CPU convolutions, then picks channels-last kernels (the activations follow
    the weights' layout) and skips the layout reorders around each convolution. Weights with a 1x1(x1)
    kernel are left as they are: both layouts describe them, but ``Module.to(memory_format=...)`` gives them
    strides that DDP's gradient buckets do not match ("Grad strides do not match bucket view strides").
    """
    layout = torch.channels_last_3d if spatial_dims == 3 else torch.channels_last
    for param in network.parameters():
        if param.dim() == spatial_dims + 2 and any(k > 1 for k in param.shape[2:]):
            param.data = param.data.contiguous(memory_format=layout)
    return network


def cpu_layout(network: nn.Module, spatial_dims: int) -> nn.Module:
    """The faster weight layout for CPU training and inference, in place; returns ``network``.

    3D: channels-last (NDHWC). 2D: left contiguous. Measured side by side with ``benchmarks/memory_format.py``
    (2 threads, three runs): channels-last made the demo's 3D training step 0.75-0.77x and its inference
    0.85-0.90x the time of contiguous weights, but the BraTS 2D network's 1.12-1.21x and 1.07-1.14x. GPUs keep
    PyTorch's default (not measured here): callers apply this only when the device is the CPU.
    """
    return channels_last(network, spatial_dims) if spatial_dims == 3 else network


def size_divisor(config: NetworkConfig) -> int | list[int]:
    """Patch and ROI sizes must be divisible by this (2 ** number of downsamplings; per axis with planned strides)."""
    if config.name.lower() == "basicunet":
        return 16
    if config.strides:
        per_axis = [[s] * config.spatial_dims if isinstance(s, int) else list(s) for s in config.strides]
        return [math.prod(level[a] for level in per_axis) for a in range(config.spatial_dims)]
    return 2 ** (len(config.channels) - 1)


def deep_supervision_outputs(network: nn.Module, output: torch.Tensor) -> list[torch.Tensor]:
    """Full-resolution logits followed by the raw low-resolution DynUNet heads (finest first).

    Args:
        network: the DynUNet that produced ``output`` (its ``heads`` hold the raw head outputs).
        output: ``(B, 1 + heads, K, *spatial)`` as DynUNet returns in training mode, or ``(B, K, *spatial)``.
    """
    if output.dim() == network.spatial_dims + 2:  # no deep supervision in this forward
        return [output]
    return [output[:, 0]] + [h for h in network.heads]


def downsample_labels(labels: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Max-pool an integer label map to ``size`` so that lesions smaller than the stride survive.

    Args:
        labels: ``(B, 1, *spatial)`` integer (or integral float) labels.
        size: target spatial size; each dimension must divide the input's.
    Returns:
        ``(B, 1, *size)`` labels of the same dtype; in each block the highest label wins, so a single
        lesion voxel keeps its block labelled (nearest-neighbour sampling would drop it).
    """
    spatial = labels.shape[2:]
    if len(size) != len(spatial) or any(s % t for s, t in zip(spatial, size, strict=True)):
        raise ValueError(f"cannot max-pool labels of spatial size {tuple(spatial)} to {tuple(size)}")
    kernel = [s // t for s, t in zip(spatial, size, strict=True)]
    pool = F.max_pool3d if len(spatial) == 3 else F.max_pool2d
    return pool(labels.float(), kernel_size=kernel, stride=kernel).to(labels.dtype)


class SliceWise(nn.Module):
    """Run a 2D network on 3D volumes slice by slice along the last axis (2D training on 3D volumes).

    Sliding windows of ``(*roi_2d, 1)`` over a ``(B, C, H, W, D)`` volume reach the 2D network as
    ``(n, C, H, W)``; the logits come back as ``(n, K, H, W, 1)``.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != 1:
            raise ValueError(f"SliceWise expects windows one slice thick, got shape {tuple(x.shape)}")
        return self.network(x[..., 0])[..., None]  # (n, C, H, W, 1) -> (n, K, H, W) -> (n, K, H, W, 1)


def window_network(network: nn.Module, spatial_dims: int, image: torch.Tensor,
                   roi_size: Sequence[int]) -> tuple[nn.Module, list[int]]:
    """The network and ROI to slide over ``image (B, C, *spatial)``: slice-wise for a 2D net on 3D images."""
    if spatial_dims == 2 and image.dim() == 5:
        return SliceWise(network), [*list(roi_size)[:2], 1]
    return network, list(roi_size)

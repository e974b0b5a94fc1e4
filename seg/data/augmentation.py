"""Modest, CPU-cheap augmentation of training patches (the per-step part of :func:`seg.data.transforms.train_transforms`).

Flips along every axis, 90° turns in-plane (square patches only), a small in-plane rotation and scaling (nearest
neighbour for the label and instance maps), and intensity scale/shift, noise and gamma on the image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from monai.transforms import (
    MapTransform,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
)


def augmentation(spatial_dims: int, patch_size: Sequence[int], keys: Sequence[str]) -> list[MapTransform]:
    """Modest, CPU-cheap augmentation of patches: flips, in-plane 90° turns, small affine, intensity.

    ``keys``: the image first, then maps moved with it by nearest neighbour (label, instance map)."""
    keys = list(keys)
    steps: list[MapTransform] = [RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in range(spatial_dims)]
    if patch_size[0] == patch_size[1]:  # a 90° turn of a non-square patch would change its shape
        steps.append(RandRotate90d(keys, prob=0.5, max_k=3, spatial_axes=(0, 1)))
    in_plane = math.pi / 12
    steps += [
        RandAffined(keys, prob=0.2, mode=("bilinear", *["nearest"] * (len(keys) - 1)), padding_mode="zeros",
                    rotate_range=(in_plane,) if spatial_dims == 2 else (0.0, 0.0, in_plane),
                    scale_range=(0.1,) * spatial_dims),
        RandScaleIntensityd("image", factors=0.1, prob=0.5),
        RandShiftIntensityd("image", offsets=0.1, prob=0.5),
        RandGaussianNoised("image", prob=0.15, std=0.1),
        RandAdjustContrastd("image", prob=0.15, gamma=(0.7, 1.5)),
    ]
    return steps

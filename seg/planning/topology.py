"""Network topology and patch size from the voxel spacing, by nnU-Net's rules (re-implemented, nnU-Net 2.8.1:
``experiment_planning/experiment_planners/network_topology.py::get_pool_and_conv_props`` and the patch-size loop of
``default_experiment_planner.py``).

Pooling: at each stage an axis is halved only while its feature map keeps at least 2 × 4 voxels and its current
spacing is less than twice the finest current spacing, so a 0.5 × 0.5 × 5 mm volume is pooled in-plane until its
in-plane spacing catches up with 5 mm ("no pooling along an axis until its spacing catches up"). Kernels: 3 along an
axis once its spacing is within twice the finest, 1 before (a 2D-like kernel on thick slices); the bottleneck is 3
everywhere. The patch is padded up to a multiple of each axis' total stride.

Patch size: the initial patch is isotropic in millimetres (∝ 1 / spacing in voxels) with ``voxel_budget`` voxels,
clipped to the median image shape, then the axis with the largest patch / median-shape ratio is cut by one stride
step at a time until the padded patch fits the budget (nnU-Net cuts until its VRAM estimate fits).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

MIN_FEATURE_MAP = 4


@dataclass(frozen=True)
class Topology:
    """Per-stage pooling (``strides``, the first is 1s) and ``kernel_sizes``, and the padded ``patch_size``."""

    strides: list[list[int]]
    kernel_sizes: list[list[int]]
    patch_size: list[int]
    divisor: list[int]

    @property
    def levels(self) -> int:
        return len(self.strides)


def pool_and_conv(spacing: Sequence[float], patch_size: Sequence[int], min_feature_map: int = MIN_FEATURE_MAP,
                  max_pool: int = 999_999) -> Topology:
    """nnU-Net's ``get_pool_and_conv_props`` (see the module docstring); spacing and patch per axis."""
    dim = len(spacing)
    current_spacing, current_size = [float(s) for s in spacing], [int(n) for n in patch_size]
    strides, kernels = [[1] * dim], []
    pools, kernel = [0] * dim, [1] * dim
    while True:
        valid = [i for i in range(dim) if current_size[i] >= 2 * min_feature_map]
        if not valid:
            break
        finest = min(current_spacing[i] for i in valid)
        valid = [i for i in valid if current_spacing[i] / finest < 2 and pools[i] < max_pool]
        if not valid or (len(valid) == 1 and current_size[valid[0]] < 3 * min_feature_map):
            break
        for d in range(dim):
            if kernel[d] != 3 and current_spacing[d] / min(current_spacing) < 2:
                kernel[d] = 3
        pool = [2 if d in valid else 1 for d in range(dim)]
        for d in valid:
            pools[d] += 1
            current_spacing[d] *= 2
            current_size[d] = math.ceil(current_size[d] / 2)
        strides.append(pool)
        kernels.append(list(kernel))
    kernels.append([3] * dim)  # the bottleneck
    divisor = [2 ** p for p in pools]
    padded = [math.ceil(n / k) * k for n, k in zip(patch_size, divisor, strict=True)]
    return Topology(strides=strides, kernel_sizes=kernels, patch_size=padded, divisor=divisor)


def plan_patch(spacing: Sequence[float], median_shape: Sequence[float], voxel_budget: int) -> Topology:
    """The patch (and its topology) for images of ``median_shape`` voxels at ``spacing`` mm within ``voxel_budget``."""
    inverse = [1.0 / s for s in spacing]
    scale = (voxel_budget / math.prod(inverse)) ** (1.0 / len(spacing))
    patch = [max(1, min(round(i * scale), int(m))) for i, m in zip(inverse, median_shape, strict=True)]
    topology = pool_and_conv(spacing, patch)
    while math.prod(topology.patch_size) > voxel_budget * 1.15:
        ratios = [p / m for p, m in zip(topology.patch_size, median_shape, strict=True)]
        reducible = [a for a in range(len(patch)) if topology.patch_size[a] - topology.divisor[a] >= MIN_FEATURE_MAP]
        if not reducible:
            break
        axis = max(reducible, key=lambda a: (ratios[a], topology.patch_size[a]))
        patch[axis] = topology.patch_size[axis] - topology.divisor[axis]
        topology = pool_and_conv(spacing, patch)
    return topology

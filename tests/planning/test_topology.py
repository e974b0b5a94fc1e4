"""nnU-Net's pooling/kernel rule and patch sizing, against hand computations of nnU-Net 2.8.1's algorithm and its own
``get_pool_and_conv_props``."""

from __future__ import annotations

import math

import numpy as np
import pytest

from seg.planning.topology import plan_patch, pool_and_conv


def test_isotropic_64_cube_pools_four_times_with_3_kernels() -> None:
    t = pool_and_conv([1.0, 1.0, 1.0], [64, 64, 64])
    # 64 -> 32 -> 16 -> 8 -> 4: four poolings (an axis pools while its map keeps >= 2 x 4 voxels)
    assert t.strides == [[1, 1, 1]] + [[2, 2, 2]] * 4
    assert t.kernel_sizes == [[3, 3, 3]] * 5 and t.divisor == [16, 16, 16] and t.patch_size == [64, 64, 64]


def test_thick_slices_are_not_pooled_until_the_in_plane_spacing_catches_up() -> None:
    # 0.5 x 0.5 x 5 mm: in-plane pooled three times (spacing 0.5 -> 4 mm) before z joins at 4 vs 5 mm (< 2x);
    # z kernels stay 1 until then; the last stage pools in-plane only (z has 6 < 8 voxels left)
    t = pool_and_conv([0.5, 0.5, 5.0], [128, 128, 12])
    assert t.strides == [[1, 1, 1], [2, 2, 1], [2, 2, 1], [2, 2, 1], [2, 2, 2], [2, 2, 1]]
    assert t.kernel_sizes == [[3, 3, 1], [3, 3, 1], [3, 3, 1], [3, 3, 3], [3, 3, 3], [3, 3, 3]]
    assert t.divisor == [32, 32, 2] and t.patch_size == [128, 128, 12]


def test_the_patch_is_padded_to_the_total_stride() -> None:
    assert pool_and_conv([1.0, 1.0], [100, 70]).patch_size == [112, 80]  # strides 16 per axis: 100 -> 112, 70 -> 80


def test_patch_is_isotropic_in_mm_within_the_budget_and_the_image() -> None:
    t = plan_patch([1.0, 1.0, 2.0], [64, 64, 48], 2**17)
    assert t.patch_size == [64, 64, 32]  # 64 x 64 x 64 mm, 2^17 voxels
    t = plan_patch([0.47, 0.47, 8.0], [512, 512, 16], 2**17)
    assert math.prod(t.patch_size) <= 2**17 * 1.15 and t.patch_size[2] <= 16
    assert t.strides[1] == [2, 2, 1]  # thick slices: in-plane pooling first
    small = plan_patch([1.0, 1.0, 1.0], [20, 24, 16], 2**17)  # an image smaller than the budget: clipped to it
    assert all(p <= n + d for p, n, d in zip(small.patch_size, [20, 24, 16], small.divisor, strict=True))


def test_topology_equals_nnunet_get_pool_and_conv_props() -> None:
    """The re-implementation against nnU-Net's own function (``make test`` installs nnunetv2 without its deps: the
    module imports only numpy) over spacings from isotropic to 16x anisotropic, 2D and 3D, odd and even patches."""
    topology = pytest.importorskip("nnunetv2.experiment_planning.experiment_planners.network_topology")
    rng = np.random.default_rng(0)
    cases = [([1.0, 1.0, 1.0], [64, 64, 64]), ([1.0, 1.0, 2.0], [128, 128, 64]), ([0.5, 0.5, 5.0], [128, 128, 12]), ([1.0, 1.0], [100, 70]),
             ([0.47, 0.47, 8.0], [400, 400, 16]), ([3.0, 0.8, 0.8], [20, 160, 160]), ([2.0, 2.0, 2.0], [5, 7, 9])]
    for _ in range(200):
        dim = int(rng.integers(2, 4))
        spacing = [float(s) for s in np.round(rng.uniform(0.3, 1.0, dim) * rng.choice([1, 1, 2, 5, 16], dim), 3)]
        cases.append((spacing, [int(n) for n in rng.integers(3, 300, dim)]))
        exact = [float(s) for s in rng.choice([0.5, 1.0, 2.0, 3.0, 4.0, 8.0], dim)]  # ratios of exactly 2 and 4
        cases.append((exact, [int(n) for n in rng.integers(3, 300, dim)]))
    for spacing, patch in cases:
        pools, strides, kernels, padded, divisor = topology.get_pool_and_conv_props(spacing, patch, 4, 999_999)
        ours = pool_and_conv(spacing, patch)
        where = f"spacing {spacing}, patch {patch}"
        assert ours.strides == [list(s) for s in strides], where
        assert ours.kernel_sizes == [list(k) for k in kernels], where
        assert ours.patch_size == [int(p) for p in padded], where
        assert ours.divisor == [int(d) for d in divisor] == [2**p for p in pools], where

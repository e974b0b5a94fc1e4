"""Cases of :mod:`seg.data.synthetic`: planning lesions over the dataset and rendering a case.

Planning happens once for the whole dataset (lesion counts, shapes and sizes, by the size model of
:mod:`seg.data.synthetic.sizes`); rendering draws each component of a case from its own random stream and
places the lesions (:mod:`seg.data.synthetic.lesions`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from seg.data.synthetic.lesions import block_neighbourhood, place_lesions, render_lesion
from seg.data.synthetic.manifest import SyntheticSettings
from seg.data.synthetic.phantoms import (
    DISTRACTOR_SIGN,
    LESION_SIGN,
    TEXTURE_STD,
    TISSUE_LEVELS,
    TISSUE_QUANTILES,
    Blob,
    bias_field,
    head_mask,
    random_blob,
    render_rim_blob,
    render_vessel,
    smooth_noise,
    tissue,
)
from seg.data.synthetic.sizes import lognormal_volumes, radius_for_volume, skewed_radii


@dataclass(frozen=True)
class CasePlan:
    """What one case should contain; lesions are placed (and contrasts drawn) at render time."""

    radii_mm: tuple[float, ...]  # blob radius of each lesion
    volumes: tuple[float, ...]  # label voxels of each lesion (the blob of that radius holds about as many)
    blobs: tuple[Blob, ...]
    distractors: int
    contrast: tuple[float, float]  # (lo, hi), in units of TEXTURE_STD
    min_voxels: float  # no lesion shrinks below this to fit (the realistic model's lower bound, else 1)


def render_case(
    plan: CasePlan,
    shape: Sequence[int],
    spacing: Sequence[float],
    channels: int,
    seed: np.random.SeedSequence,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """One phantom: head, tissue, texture, distractors, lesions, bias field and scanner gain.

    Each component draws from its own stream spawned from ``seed``, so e.g. switching distractors off
    leaves the head, tissue, bias and texture of a case unchanged.

    Returns:
        image float32 ``(C, *spatial)`` (exact zeros outside the head), label uint8 ``(*spatial)`` in {0, 1},
        and a dict with the placed lesions' radii (mm) and planned label voxels, and the number dropped.
    """
    spacing = np.asarray(spacing, dtype=float)
    head_rng, tissue_rng, distractor_rng, lesion_rng, bias_rng, texture_rng = (
        np.random.default_rng(s) for s in seed.spawn(6)
    )
    head = head_mask(shape, spacing, head_rng)
    head_distance = ndimage.distance_transform_edt(head, sampling=spacing)
    field = smooth_noise(shape, spacing, 3.0, tissue_rng)
    thresholds = tuple(float(t) for t in np.quantile(field[head], TISSUE_QUANTILES))

    distractor = np.zeros(tuple(shape))
    for _ in range(plan.distractors):
        if distractor_rng.random() < 2 / 3:
            soft = render_vessel(head_distance, spacing, distractor_rng)
        else:
            soft = render_rim_blob(head, head_distance, spacing, distractor_rng)
        distractor = np.maximum(distractor, distractor_rng.uniform(*plan.contrast) * soft)

    occupancy = np.zeros(tuple(shape))
    contrast = np.zeros(tuple(shape))
    label = np.zeros(tuple(shape), dtype=bool)
    free = head & (distractor < 0.05)
    wm_like = field > thresholds[1]
    placed, dropped = place_lesions(
        plan.radii_mm, plan.volumes, plan.blobs, free, wm_like, spacing, lesion_rng, plan.min_voxels
    )
    blocked = ~free  # labels stay in the free space and never touch each other (one component each)
    for lesion in placed:
        box, soft, lesion_label = render_lesion(lesion, spacing, ~blocked)
        occupancy[box] = np.maximum(occupancy[box], soft)
        contrast[box] = np.where(soft > 0, lesion_rng.uniform(*plan.contrast), contrast[box])
        label[box] |= lesion_label
        block_neighbourhood(blocked, box, lesion_label)

    bias = bias_field(shape, bias_rng)
    gain = bias_rng.uniform(600.0, 1400.0)  # arbitrary scanner units: per-case normalisation matters
    image = np.empty((channels, *shape), dtype=np.float32)
    for c in range(channels):
        texture = smooth_noise(shape, spacing, 0.6, texture_rng)
        lesion_level = TISSUE_LEVELS[c][2] + LESION_SIGN[c] * TEXTURE_STD * contrast
        mixed = (1 - occupancy) * tissue(field, thresholds, c) + occupancy * lesion_level
        signal = mixed + TEXTURE_STD * (DISTRACTOR_SIGN[c] * distractor + texture)
        image[c] = np.maximum(signal * bias * gain, 0.0) * head
    info = {
        "radii_mm": [lesion.radius_mm for lesion in placed],
        "target_voxels": [lesion.voxels for lesion in placed],
        "dropped": dropped,
    }
    return image, label.astype(np.uint8), info


def plan_cases(rng: np.random.Generator, settings: SyntheticSettings) -> tuple[list[CasePlan], float | None]:
    """Lesion counts, shapes and sizes of every case (training, then test), by ``settings.sizes``.

    Returns:
        One plan per case and the radius-skew exponent ``k`` (None for the realistic size model).
    """
    s, sizes = settings, settings.sizes
    n_cases = s.cases + s.test_cases
    empty: set[int] = set()
    for offset, n in ((0, s.cases), (s.cases, s.test_cases)):
        n_empty = int(math.floor(s.empty_fraction * n + 0.5))
        empty |= {offset + int(i) for i in rng.choice(n, size=n_empty, replace=False)}
    low, high = sizes.lesions_per_case
    counts = [0 if i in empty else int(rng.integers(low, high + 1)) for i in range(n_cases)]
    blobs = [tuple(random_blob(s.spatial_dims, rng) for _ in range(c)) for c in counts]
    quantiles = [rng.random(c) for c in counts]
    unit_voxels = np.array([b.unit_volume() for case in blobs for b in case]) / math.prod(s.spacing)
    u = np.concatenate(quantiles)
    if sizes.model == "realistic":
        volumes = lognormal_volumes(u, sizes.volume, sizes.volume_range)
        radii = radius_for_volume(volumes, unit_voxels, s.spatial_dims)
        skew = None
    else:
        context = (
            f"lesions_per_case={sizes.lesions_per_case}, lesion_radius={sizes.radius} mm and "
            f"empty_fraction={s.empty_fraction}"
        )
        radii, skew = skewed_radii(
            u,
            unit_voxels,
            s.spatial_dims,
            sizes.radius,
            sizes.foreground_fraction,
            dataset_voxels=math.prod(s.shape) * n_cases,
            context=context,
        )
        volumes = radii**s.spatial_dims * unit_voxels
    plans = []
    ends = np.cumsum([0, *counts])
    for case_blobs, start, end in zip(blobs, ends[:-1], ends[1:], strict=True):
        plans.append(
            CasePlan(
                tuple(float(r) for r in radii[start:end]),
                tuple(float(v) for v in volumes[start:end]),
                case_blobs,
                int(rng.integers(s.distractors[0], s.distractors[1] + 1)),
                (float(s.contrast[0]), float(s.contrast[1])),
                sizes.volume_range[0] if sizes.volume_range else 1.0,
            )
        )
    return plans, skew


def case_affine(
    shape: Sequence[int], spacing: Sequence[float], oblique_degrees: float, rng: np.random.Generator
) -> np.ndarray:
    """LPS voxel-to-world affine (first two axes flipped), rotated about axis 3, random origin. (4, 4) float64."""
    zooms = np.ones(3)
    zooms[: len(spacing)] = spacing
    angle = math.radians(rng.uniform(-oblique_degrees, oblique_degrees))
    rotation = np.array(
        [[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0], [0.0, 0.0, 1.0]]
    )
    linear = rotation @ np.diag([-1.0, -1.0, 1.0]) @ np.diag(zooms)
    centre = np.zeros(3)
    centre[: len(shape)] = (np.asarray(shape) - 1) / 2
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = rng.normal(0.0, 10.0, 3) - linear @ centre  # volume centre lands near the world origin
    return affine

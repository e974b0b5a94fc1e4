"""Cases of :mod:`seg.data.synthetic`: planning lesions over the dataset, placing them, rendering a case.

Planning happens once for the whole dataset so that the expected lesion-voxel fraction equals the request;
rendering draws each component of a case from its own random stream.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from seg.data.synthetic.phantoms import (
    DISTRACTOR_SIGN,
    EDGE_MM,
    LESION_SIGN,
    TEXTURE_STD,
    TISSUE_LEVELS,
    TISSUE_QUANTILES,
    Blob,
    bias_field,
    head_mask,
    random_blob,
    render_blob,
    render_rim_blob,
    render_vessel,
    smooth_noise,
    tissue,
)


@dataclass(frozen=True)
class CasePlan:
    """What one case should contain; lesions are placed (and contrasts drawn) at render time."""

    radii_mm: tuple[float, ...]
    blobs: tuple[Blob, ...]
    distractors: int
    contrast: tuple[float, float]  # (lo, hi), in units of TEXTURE_STD


def _place_lesions(
    plan: CasePlan, free: np.ndarray, preferred: np.ndarray, spacing: np.ndarray, rng: np.random.Generator
) -> tuple[list[tuple[Blob, np.ndarray, float]], int]:
    """Centres for the lesions, largest first, inside ``free`` and apart from each other.

    Centres lie in ``preferred`` (WM-like tissue, as for MS lesions) where it leaves room, else anywhere free.
    A lesion that does not fit is shrunk (x 0.8, up to 5 times) and dropped only if it still does not fit.

    Returns:
        ``[(blob, centre_vox (d,), radius_mm)]`` and the number of lesions dropped.
    """
    free_distance = ndimage.distance_transform_edt(free, sampling=spacing)
    gap = 2.0 * float(spacing.max())  # keeps lesions separate connected components
    placed: list[tuple[Blob, np.ndarray, float]] = []
    dropped = 0
    for radius, blob in sorted(zip(plan.radii_mm, plan.blobs, strict=True), key=lambda item: -item[0]):
        for _ in range(6):
            reach = radius * blob.max_rho()
            fits = free_distance > reach + EDGE_MM
            candidates = np.argwhere(fits & preferred) if (fits & preferred).any() else np.argwhere(fits)
            found = None
            for index in rng.permutation(len(candidates))[:30]:
                centre = candidates[index] + rng.uniform(-0.5, 0.5, free.ndim)
                if all(
                    np.linalg.norm((centre - c) * spacing) > reach + r * b.max_rho() + gap
                    for b, c, r in placed
                ):
                    found = centre
                    break
            if found is not None:
                placed.append((blob, found, radius))
                break
            radius *= 0.8
        else:
            dropped += 1
    return placed, dropped


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
        and a dict with the placed lesions' radii (mm) and the number dropped.
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

    occupancy = np.zeros(tuple(shape))  # lesions are apart, so their boxes' non-zero parts do not overlap
    contrast = np.zeros(tuple(shape))
    placed, dropped = _place_lesions(
        plan, head & (distractor < 0.05), field > thresholds[1], spacing, lesion_rng
    )
    for blob, centre, radius in placed:
        box, soft = render_blob(blob, centre, radius, spacing, shape)
        occupancy[box] = np.maximum(occupancy[box], soft)
        contrast[box] = np.where(soft > 0, lesion_rng.uniform(*plan.contrast), contrast[box])

    bias = bias_field(shape, bias_rng)
    gain = bias_rng.uniform(600.0, 1400.0)  # arbitrary scanner units: per-case normalisation matters
    image = np.empty((channels, *shape), dtype=np.float32)
    for c in range(channels):
        texture = smooth_noise(shape, spacing, 0.6, texture_rng)
        lesion_level = TISSUE_LEVELS[c][2] + LESION_SIGN[c] * TEXTURE_STD * contrast
        mixed = (1 - occupancy) * tissue(field, thresholds, c) + occupancy * lesion_level
        signal = mixed + TEXTURE_STD * (DISTRACTOR_SIGN[c] * distractor + texture)
        image[c] = np.maximum(signal * bias * gain, 0.0) * head
    label = (occupancy > 0.5) & head
    return image, label.astype(np.uint8), {"radii_mm": [r for _, _, r in placed], "dropped": dropped}


def plan_cases(
    rng,
    cases,
    test_cases,
    ndim,
    shape,
    spacing,
    foreground_fraction,
    lesions_per_case,
    lesion_radius,
    contrast,
    distractors,
    empty_fraction,
) -> tuple[list[CasePlan], float]:
    """Lesion counts, shapes and radii of every case, radii skewed so the expected fraction is the target."""
    empty = set()
    for offset, n in ((0, cases), (cases, test_cases)):
        n_empty = int(math.floor(empty_fraction * n + 0.5))
        empty |= {offset + int(i) for i in rng.choice(n, size=n_empty, replace=False)}
    counts = [
        0 if i in empty else int(rng.integers(lesions_per_case[0], lesions_per_case[1] + 1))
        for i in range(cases + test_cases)
    ]
    blobs = [tuple(random_blob(ndim, rng) for _ in range(c)) for c in counts]
    quantiles = [rng.random(c) for c in counts]
    unit_volume = np.array([b.unit_volume() for case in blobs for b in case]) / math.prod(spacing)  # voxels
    u = np.concatenate(quantiles) if quantiles else np.zeros(0)
    lo, hi = lesion_radius
    target = foreground_fraction * math.prod(shape) * len(counts)

    def expected_voxels(log_k: float) -> float:
        return float(np.sum((lo * (hi / lo) ** (u ** math.exp(log_k))) ** ndim * unit_volume))

    most, least = expected_voxels(-6.0), expected_voxels(6.0)
    if not least <= target <= most:
        raise ValueError(
            f"foreground_fraction={foreground_fraction} is out of reach: with lesions_per_case={lesions_per_case}, "
            f"lesion_radius={lesion_radius} mm and empty_fraction={empty_fraction} the expected fraction lies in "
            f"[{least / target * foreground_fraction:.2e}, {most / target * foreground_fraction:.2e}]; "
            f"change the radius or count range"
        )
    low_k, high_k = -6.0, 6.0
    for _ in range(60):  # expected_voxels decreases with k
        mid = (low_k + high_k) / 2
        low_k, high_k = (mid, high_k) if expected_voxels(mid) > target else (low_k, mid)
    k = math.exp((low_k + high_k) / 2)
    plans = []
    for case_blobs, q in zip(blobs, quantiles, strict=True):
        radii = tuple(float(r) for r in lo * (hi / lo) ** (q**k))
        plans.append(
            CasePlan(
                radii,
                case_blobs,
                int(rng.integers(distractors[0], distractors[1] + 1)),
                (float(contrast[0]), float(contrast[1])),
            )
        )
    return plans, k


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

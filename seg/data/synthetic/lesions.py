"""Lesions of :mod:`seg.data.synthetic`: where they go in a case and which voxels each one labels.

A lesion's label is grown, not thresholded: starting at the voxel deepest inside the blob, voxels are added
deepest first (full connectivity: 26 neighbours in 3D, 8 in 2D) until the lesion has its planned number of
voxels. So every lesion is exactly one connected component of (almost always exactly) its planned size, even
when it is only a few voxels, or thinner than a slice, where a soft edge thresholded at 0.5 occupancy would
shrink it or make it vanish. The image's soft edge is moved to the label's boundary (0.5 occupancy there).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from seg.data.synthetic.phantoms import EDGE_MM, Blob, blob_level


@dataclass(frozen=True)
class PlacedLesion:
    """A lesion placed in a case: its blob, centre (voxel coordinates, ``(d,)``), radius (mm) and label voxels."""

    blob: Blob
    centre: np.ndarray
    radius_mm: float
    voxels: int  # planned label size (after any shrinking to fit)


def place_lesions(
    radii_mm: Sequence[float],
    volumes: Sequence[float],
    blobs: Sequence[Blob],
    free: np.ndarray,
    preferred: np.ndarray,
    spacing: np.ndarray,
    rng: np.random.Generator,
    min_voxels: float = 1.0,
) -> tuple[list[PlacedLesion], int]:
    """Centres for the lesions, largest first, inside ``free`` and apart from each other.

    Centres lie in ``preferred`` (WM-like tissue, as for MS lesions) where it leaves room, else anywhere free.
    Every blob stays ``EDGE_MM`` inside ``free`` (away from distractors and the head's edge), and two blobs
    stay ``2 * max(spacing)`` apart (the rule of earlier versions; :func:`render_lesion` in addition never lets
    two labels touch). A lesion that does not fit is shrunk (voxels x 0.8^d, radius x 0.8, not below
    ``min_voxels``; up to 5 times) and dropped only if it still does not fit. Along an axis whose voxels are
    long compared with the lesion, the centre is kept near a voxel centre, so a lesion thinner than a slice
    lies in one slice rather than in two halves.

    Args:
        radii_mm, volumes, blobs: one per planned lesion: radius (mm), label voxels, shape.
        free, preferred: bool ``(*spatial)``.
        spacing: ``(d,)`` mm.
        min_voxels: smallest size shrinking may give (the size model's lower bound).

    Returns:
        The placed lesions and the number dropped.
    """
    ndim = free.ndim
    free_distance = ndimage.distance_transform_edt(free, sampling=spacing)
    gap = 2.0 * float(spacing.max())
    placed: list[PlacedLesion] = []
    placed_reach: list[float] = []  # radius * max_rho of each placed lesion, mm
    dropped = 0
    order = sorted(zip(radii_mm, volumes, blobs, strict=True), key=lambda item: -item[0])
    for radius, volume, blob in order:
        max_rho = blob.max_rho()
        for _ in range(6):
            reach = radius * max_rho
            fits = free_distance > reach + EDGE_MM
            candidates = np.argwhere(fits & preferred) if (fits & preferred).any() else np.argwhere(fits)
            jitter = 0.5 * np.minimum(1.0, reach / spacing)  # voxels, per axis
            found = None
            for index in rng.permutation(len(candidates))[:30]:
                centre = candidates[index] + rng.uniform(-1.0, 1.0, ndim) * jitter
                if all(
                    np.linalg.norm((centre - other.centre) * spacing) > reach + other_reach + gap
                    for other, other_reach in zip(placed, placed_reach, strict=True)
                ):
                    found = centre
                    break
            if found is not None:
                placed.append(PlacedLesion(blob, found, float(radius), max(1, round(volume))))
                placed_reach.append(reach)
                break
            shrunk = max(volume * 0.8**ndim, min(volume, min_voxels))
            radius *= (shrunk / volume) ** (1 / ndim)
            volume = shrunk
        else:
            dropped += 1
    return placed, dropped


def grow_region(depth: np.ndarray, candidates: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` voxels reached from the deepest candidate by adding the deepest neighbour first.

    Args:
        depth: float ``(*box)``, larger = more inside.
        candidates: bool ``(*box)``, the voxels the region may take.
        count: wanted size; fewer when the candidates connected to the start run out.

    Returns:
        bool ``(*box)``, one connected component with full connectivity (ties broken by voxel index).
    """
    ndim = depth.ndim
    open_ = np.pad(candidates, 1, constant_values=False)  # the border stops the growth: no wrap-around
    if count < 1 or not open_.any():
        return np.zeros(depth.shape, dtype=bool)
    strides = [int(np.prod(open_.shape[i + 1 :])) for i in range(ndim)]
    steps = [
        sum(o * s for o, s in zip(offset, strides, strict=True))
        for offset in itertools.product((-1, 0, 1), repeat=ndim)
        if any(offset)
    ]
    flat_depth = np.pad(depth, 1).ravel()
    start = int(np.argmax(np.where(open_.ravel(), flat_depth, -np.inf)))
    depths, available = flat_depth.tolist(), open_.ravel().tolist()
    available[start] = False
    frontier = [(-depths[start], start)]
    chosen: list[int] = []
    while frontier and len(chosen) < count:
        _, index = heapq.heappop(frontier)
        chosen.append(index)
        for step in steps:
            neighbour = index + step
            if available[neighbour]:
                available[neighbour] = False
                heapq.heappush(frontier, (-depths[neighbour], neighbour))
    region = np.zeros(open_.size, dtype=bool)
    region[chosen] = True
    return region.reshape(open_.shape)[(slice(1, -1),) * ndim]


def block_neighbourhood(blocked: np.ndarray, box: tuple[slice, ...], region: np.ndarray) -> None:
    """Mark ``region`` (bool ``(*box)``) and its full-connectivity neighbours in ``blocked`` (bool ``(*spatial)``), in place."""
    lo = [max(s.start - 1, 0) for s in box]
    hi = [min(s.stop + 1, n) for s, n in zip(box, blocked.shape, strict=True)]
    grown = np.zeros([b - a for a, b in zip(lo, hi, strict=True)], dtype=bool)
    grown[tuple(slice(s.start - a, s.stop - a) for s, a in zip(box, lo, strict=True))] = region
    grown = ndimage.binary_dilation(grown, structure=np.ones((3,) * region.ndim))
    blocked[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] |= grown


def render_lesion(
    lesion: PlacedLesion, spacing: np.ndarray, allowed: np.ndarray
) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray]:
    """A lesion's label (grown to ``lesion.voxels`` inside ``allowed``) and its soft occupancy for the image.

    Args:
        spacing: ``(d,)`` mm.
        allowed: bool ``(*spatial)``, where label voxels may lie: inside the free space, and not touching the
            labels of lesions rendered before (see :func:`block_neighbourhood`).

    Returns:
        The bounding-box slices into ``allowed.shape``, the float64 occupancy ``(*box)`` (>= 0.5 on the label,
        <= 0.5 off it, a linear ``EDGE_MM`` ramp across the label's boundary) and the bool label ``(*box)``.
    """
    box, depth = blob_level(
        lesion.blob, lesion.centre, lesion.radius_mm, spacing, allowed.shape, margin_mm=2 * EDGE_MM
    )
    label = grow_region(depth, allowed[box] & (depth > -EDGE_MM), lesion.voxels)
    if not label.any():
        return box, np.zeros(depth.shape), label
    threshold = float(depth[label].min())  # the label's boundary depth (about 0 for lesions of many voxels)
    occupancy = np.clip(0.5 + (depth - threshold) / EDGE_MM, 0.0, 1.0)
    return box, np.where(label, occupancy, np.minimum(occupancy, 0.5)), label

"""Building blocks of the synthetic brain-like phantoms used by :mod:`seg.data.synthetic`.

All geometry is in millimetres in the voxel-aligned frame: one voxel along array axis ``i`` is
``spacing[i]`` mm. The orientation (flips, oblique rotation, origin) only enters when the arrays are
written with an affine, so it cannot change what a lesion looks like. Arrays are ``(*spatial)``
with spatial ``(H, W)`` or ``(H, W, D)`` (NIfTI axis order, as written to disk).

Intensities are in "tissue units" (white-matter-like tissue ≈ 0.5-0.75) until the caller applies
the bias field and the arbitrary scanner gain.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.transform import resize

# (CSF-like, GM-like, WM-like) levels per channel: channel 0 is FLAIR-like (CSF dark, GM brighter than
# WM by 2 texture stds), channel 1 T1-like (WM brightest).
TISSUE_LEVELS = ((0.20, 0.56, 0.48), (0.20, 0.50, 0.75))
# Fraction of the head taken by the CSF-like and the GM-like class (the rest is WM-like).
TISSUE_QUANTILES = (0.20, 0.55)
# Lesions replace the tissue by WM level + sign * contrast * TEXTURE_STD: bright on channel 0, dark on
# channel 1. Distractors add to the tissue and are bright on both, so a second channel helps (as T1 helps
# tell FLAIR lesions from vessels).
LESION_SIGN = (1.0, -1.0)
DISTRACTOR_SIGN = (1.0, 1.0)
TEXTURE_STD = 0.04  # standard deviation of the fine texture; lesion contrast is given in these units
EDGE_MM = 1.0  # width of the soft (partial-volume) edge of lesions and distractors


def smooth_noise(
    shape: Sequence[int], spacing: np.ndarray, sigma_mm: float, rng: np.random.Generator
) -> np.ndarray:
    """White noise smoothed by a Gaussian of ``sigma_mm`` (per axis ``sigma_mm / spacing``), unit std.

    Returns:
        float64 ``(*shape)``.
    """
    field = ndimage.gaussian_filter(rng.standard_normal(tuple(shape)), sigma=sigma_mm / spacing, mode="wrap")
    return field / max(float(field.std()), 1e-12)


def coarse_noise(shape: Sequence[int], rng: np.random.Generator, cells: int = 5) -> np.ndarray:
    """Very smooth noise: a ``cells``-per-axis random grid upsampled cubically, unit std. float64 ``(*shape)``.

    The upsampling is ``skimage.transform.resize(grid, shape, order=3, mode="reflect")`` (a tensor-product
    cubic spline, output clipped to the grid's range), done one axis at a time with a ``(n, cells)`` matrix:
    the same values to 1e-14, tens of times faster on large volumes.
    """
    grid = rng.standard_normal((cells,) * len(shape))
    field = grid
    for axis, n in enumerate(shape):
        weights = resize(np.eye(cells), (n, cells), order=3, mode="reflect", clip=False)  # (n, cells)
        field = np.moveaxis(np.tensordot(weights, field, axes=([1], [axis])), 0, axis)
    field = np.clip(field, grid.min(), grid.max())
    return field / max(float(field.std()), 1e-12)


def coordinates_mm(shape: Sequence[int], spacing: np.ndarray) -> list[np.ndarray]:
    """Open grid of voxel-centre coordinates in mm, one broadcastable array per axis."""
    return [
        (np.arange(n) * s).reshape([-1 if a == i else 1 for a in range(len(shape))])
        for i, (n, s) in enumerate(zip(shape, spacing, strict=True))
    ]


def head_mask(shape: Sequence[int], spacing: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An ellipsoidal "head" with a wavy boundary, filling about a quarter of the box. bool ``(*shape)``."""
    extent = np.asarray(shape) * spacing
    semi_axes = extent * rng.uniform(0.36, 0.45, len(shape))
    centre = extent / 2 + rng.normal(0.0, 0.02, len(shape)) * extent
    coords = coordinates_mm(shape, spacing)
    radius = np.sqrt(sum(((c - m) / a) ** 2 for c, m, a in zip(coords, centre, semi_axes, strict=True)))
    return radius + 0.05 * coarse_noise(shape, rng, cells=4) < 1.0


def tissue(field: np.ndarray, thresholds: tuple[float, float], channel: int) -> np.ndarray:
    """Three tissue classes from a smooth field, with soft (partial-volume) transitions. float64 ``(*spatial)``.

    The classes are nested along the field (CSF-like < ``low`` < GM-like < ``high`` < WM-like), so GM-like
    tissue lies between the other two, as in a brain. ``thresholds``: field quantiles ``TISSUE_QUANTILES``
    over the head.
    """
    low, high = thresholds
    csf, gm, wm = TISSUE_LEVELS[channel]
    width = 0.08  # in units of the field's std: a transition about one voxel wide

    def step(threshold: float) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(field - threshold) / width))

    return csf + (gm - csf) * step(low) + (wm - gm) * step(high)


def bias_field(shape: Sequence[int], rng: np.random.Generator, strength: float = 0.12) -> np.ndarray:
    """Smooth multiplicative bias: ``exp`` of a random polynomial of degree 2 over ``[-1, 1]^d``. ``(*shape)``."""
    coords = coordinates_mm(shape, 2.0 / (np.asarray(shape) - 1.0))
    coords = [c - 1.0 for c in coords]  # each axis spans [-1, 1]
    log_bias = np.zeros(tuple(shape))
    for i, ci in enumerate(coords):
        log_bias = log_bias + rng.normal(0, strength) * ci + rng.normal(0, strength / 2) * ci**2
        for cj in coords[i + 1 :]:
            log_bias = log_bias + rng.normal(0, strength / 2) * ci * cj
    return np.exp(log_bias)


def _unit_directions(ndim: int, n: int = 1024) -> np.ndarray:
    """Quasi-uniform unit vectors (Fibonacci sphere in 3D, equal angles in 2D). ``(n, ndim)``."""
    if ndim == 2:
        angle = (np.arange(n) + 0.5) * 2 * math.pi / n
        return np.stack([np.cos(angle), np.sin(angle)], axis=-1)
    z = 1 - (2 * np.arange(n) + 1) / n
    phi = np.arange(n) * math.pi * (3 - math.sqrt(5))
    r = np.sqrt(1 - z**2)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=-1)


@dataclass(frozen=True)
class Blob:
    """An irregular, star-shaped blob of unit size: boundary at distance ``rho(u)`` along unit direction ``u``.

    ``rho(u) = (1 - p(u)) / |A u|``: an ellipsoid (``A`` = random rotation and axes of product 1, so the
    volume stays that of the unit ball) whose boundary is perturbed by a few random waves ``p`` on the
    sphere. Star-shaped means one connected lesion, whatever the perturbation.
    """

    shape_matrix: np.ndarray  # (d, d), A
    wave_vectors: np.ndarray  # (K, d)
    phases: np.ndarray  # (K,)
    amplitudes: np.ndarray  # (K,)

    def rho(self, u: np.ndarray) -> np.ndarray:
        """Boundary distance along unit directions ``u`` ``(..., d)`` -> ``(...)``."""
        waves = (np.cos(u @ self.wave_vectors.T + self.phases) * self.amplitudes).sum(-1)
        return (1.0 - waves) / np.linalg.norm(u @ self.shape_matrix.T, axis=-1)

    def unit_volume(self) -> float:
        """Volume (area in 2D) of the blob at radius 1: ``|S^{d-1}| * mean(rho^d) / d``."""
        d = self.shape_matrix.shape[0]
        sphere_area = 2 * math.pi ** (d / 2) / math.gamma(d / 2)
        return float(sphere_area * np.mean(self.rho(_unit_directions(d)) ** d) / d)

    def max_rho(self) -> float:
        return float(self.rho(_unit_directions(self.shape_matrix.shape[0])).max()) * 1.05


def random_blob(ndim: int, rng: np.random.Generator, irregularity: float = 0.25) -> Blob:
    """A blob with random axes (log-normal, ratio up to about 2), orientation and boundary waves."""
    axes = np.exp(rng.normal(0.0, 0.25, ndim))
    axes /= np.prod(axes) ** (1 / ndim)
    rotation, _ = np.linalg.qr(rng.standard_normal((ndim, ndim)))
    directions = rng.standard_normal((4, ndim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    amplitudes = rng.dirichlet(np.ones(4)) * rng.uniform(0.3, 1.0) * irregularity
    return Blob(
        shape_matrix=np.diag(1.0 / axes) @ rotation.T,
        wave_vectors=directions * rng.uniform(1.5, 3.5, (4, 1)),
        phases=rng.uniform(0.0, 2 * math.pi, 4),
        amplitudes=amplitudes,
    )


def blob_level(
    blob: Blob,
    centre: np.ndarray,
    radius_mm: float,
    spacing: np.ndarray,
    shape: Sequence[int],
    margin_mm: float = EDGE_MM,
) -> tuple[tuple[slice, ...], np.ndarray]:
    """Signed depth inside a blob, in mm: boundary distance minus distance from the centre, on its box.

    Args:
        centre: ``(d,)`` float, in voxel coordinates (sub-voxel positions allowed).
        margin_mm: how far beyond the blob's largest extent the box reaches.

    Returns:
        The bounding-box slices into ``shape`` and the float64 depth ``(*box)`` (> 0 inside the blob).
    """
    extent_vox = (radius_mm * blob.max_rho() + margin_mm) / spacing
    lo = np.maximum(np.floor(centre - extent_vox).astype(int), 0)
    hi = np.minimum(np.ceil(centre + extent_vox).astype(int) + 1, shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    offsets = np.stack(
        np.meshgrid(
            *[(np.arange(a, b) - c) * s for a, b, c, s in zip(lo, hi, centre, spacing, strict=True)],
            indexing="ij",
        ),
        axis=-1,
    )  # (*box, d), mm
    distance = np.linalg.norm(offsets, axis=-1)
    directions = offsets / np.maximum(distance, 1e-9)[..., None]
    return box, radius_mm * blob.rho(directions) - distance


def render_blob(
    blob: Blob, centre: np.ndarray, radius_mm: float, spacing: np.ndarray, shape: Sequence[int]
) -> tuple[tuple[slice, ...], np.ndarray]:
    """Soft occupancy of a blob (1 inside, 0 outside, a linear ``EDGE_MM`` ramp across the boundary).

    Args:
        centre: ``(d,)`` float, in voxel coordinates (sub-voxel positions allowed).

    Returns:
        The bounding-box slices into ``shape`` and the float64 occupancy inside them (0.5 on the boundary).
    """
    box, depth = blob_level(blob, centre, radius_mm, spacing, shape)
    return box, np.clip(0.5 + depth / EDGE_MM, 0.0, 1.0)


def render_vessel(head_distance: np.ndarray, spacing: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A thin tube along a smooth random walk inside the head (a vessel-like distractor). float64 ``(*spatial)``.

    Args:
        head_distance: float ``(*spatial)``, distance in mm to the outside of the head (0 outside).
    """
    shape = head_distance.shape
    inside = np.argwhere(head_distance > 4.0)
    if len(inside) == 0:
        return np.zeros(shape)
    position = (inside[rng.integers(len(inside))] + rng.uniform(-0.5, 0.5, len(shape))) * spacing  # mm
    direction = rng.standard_normal(len(shape))
    steps = int(rng.uniform(15.0, 45.0) / 0.4)
    path = np.zeros(shape, dtype=bool)
    for kick in rng.normal(0.0, 0.12, (steps, len(shape))):
        direction = direction / np.linalg.norm(direction) + kick
        position = position + 0.4 * direction / np.linalg.norm(direction)
        voxel = tuple(np.round(position / spacing).astype(int))
        if any(v < 0 or v >= n for v, n in zip(voxel, shape, strict=True)) or head_distance[voxel] < 1.0:
            break
        path[voxel] = True
    if not path.any():
        return np.zeros(shape)
    radius = rng.uniform(0.5, 1.0)
    # The tube is non-zero only within radius + EDGE_MM / 2 of the path: the distance is needed on its box.
    margin = np.ceil((radius + EDGE_MM) / spacing).astype(int) + 1
    points = np.argwhere(path)
    lo, hi = np.maximum(points.min(0) - margin, 0), np.minimum(points.max(0) + margin + 1, shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    soft = np.zeros(shape)
    distance = ndimage.distance_transform_edt(~path[box], sampling=spacing)
    soft[box] = np.clip(0.5 + (radius - distance) / EDGE_MM, 0.0, 1.0)
    return soft


def render_rim_blob(
    head: np.ndarray, head_distance: np.ndarray, spacing: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """A lesion-like blob sitting on the head boundary (an unlabelled distractor). float64 ``(*spatial)``."""
    rim = np.argwhere(head & (head_distance < 1.5))
    soft = np.zeros(head.shape)
    if len(rim) == 0:
        return soft
    centre = rim[rng.integers(len(rim))] + rng.uniform(-0.5, 0.5, head.ndim)
    box, occupancy = render_blob(
        random_blob(head.ndim, rng), centre, rng.uniform(2.0, 5.0), spacing, head.shape
    )
    soft[box] = occupancy
    return soft * head

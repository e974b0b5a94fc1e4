"""Lesion-size models of :mod:`seg.data.synthetic`: how big each planned lesion is.

Two models, chosen by ``lesion_sizes``:

- ``"realistic"`` (the default): each lesion's label volume ``V`` in voxels is drawn from a log-normal
  ``ln V ~ N(ln median, sigma^2)`` truncated to ``lesion_volume_range`` (default median 16 voxels,
  sigma 1.3, range 3-3000: after truncation P(V < 30) = 0.65, median 18.8 voxels, P(V > 300) = 1.3 %),
  as in public MS (1 mm) and white-matter-hyperintensity (0.47 x 0.47 x 8 mm) masks, where about two
  thirds of the connected lesions are under 30 voxels and a few reach hundreds to thousands. The blob's
  size in mm follows from ``V``, the voxel volume and the blob's unit volume, so a lesion is round in
  millimetres whatever the spacing (on 0.5 x 0.5 x 5 mm grids a small lesion is one slice thick).
- ``"radius"`` (the model of earlier versions): radii in mm span ``lesion_radius``; with a
  ``foreground_fraction`` they are skewed (``r = lo * (hi / lo) ** (u ** k)``, ``u`` uniform, ``k`` found by
  bisection) so the expected lesion-voxel fraction over the dataset is the request; without one ``k = 1``
  (log-uniform radii).

Both models draw the same uniform quantile ``u`` per lesion; only its transform differs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri

from seg.errors import check_option

LESION_SIZES = ("realistic", "radius")
DEFAULT_VOLUME = (16.0, 1.3)  # median voxels, sigma of ln V (before truncation)
DEFAULT_VOLUME_RANGE = (3.0, 3000.0)  # voxels
DEFAULT_RADIUS = {2: (1.0, 6.0), 3: (1.5, 8.0)}  # mm
DEFAULT_LESIONS_PER_CASE = {"realistic": (2, 15), "radius": (1, 6)}


@dataclass(frozen=True)
class LesionSizes:
    """A resolved lesion-size model; checked when built. See the module docstring.

    Attributes:
        model: ``"realistic"`` or ``"radius"``.
        lesions_per_case: inclusive range of lesions in a non-empty case.
        volume: realistic model: (median in voxels, sigma of ln V); None for ``"radius"``.
        volume_range: realistic model: truncation range in voxels; None for ``"radius"``.
        radius: radius model: range of radii in mm; None for ``"realistic"``.
        foreground_fraction: radius model: target lesion-voxel fraction over the dataset, or None (no skew).
    """

    model: str
    lesions_per_case: tuple[int, int]
    volume: tuple[float, float] | None = None
    volume_range: tuple[float, float] | None = None
    radius: tuple[float, float] | None = None
    foreground_fraction: float | None = None

    def __post_init__(self) -> None:
        check_option("lesion_sizes", self.model, LESION_SIZES)
        _check_range("lesions_per_case", self.lesions_per_case, 1)
        if self.model == "realistic":
            if self.volume is None or self.volume_range is None:
                raise ValueError("lesion_sizes='realistic' needs lesion_volume and lesion_volume_range")
            _check_range("lesion_volume_range", self.volume_range, 1.0)
            median, sigma = self.volume
            low, high = self.volume_range
            if sigma <= 0 or not low <= median <= high:
                raise ValueError(
                    f"lesion_volume must be (median voxels, sigma > 0) with the median inside "
                    f"lesion_volume_range={self.volume_range}, got {self.volume}"
                )
        else:
            if self.radius is None:
                raise ValueError("lesion_sizes='radius' needs lesion_radius")
            _check_range("lesion_radius", self.radius, 0.5)
            fraction = self.foreground_fraction
            if fraction is not None and not 0 < fraction < 0.5:
                raise ValueError(f"foreground_fraction must be in (0, 0.5) or None, got {fraction}")

    @classmethod
    def resolve(
        cls,
        model: str | None,
        spatial_dims: int,
        *,
        lesions_per_case: Sequence[int] | None = None,
        lesion_volume: Sequence[float] | None = None,
        lesion_volume_range: Sequence[float] | None = None,
        lesion_radius: Sequence[float] | None = None,
        foreground_fraction: float | None = None,
    ) -> LesionSizes:
        """The model from ``make_dataset``'s arguments, defaults filled in.

        ``model=None`` means ``"radius"`` when ``lesion_radius`` or ``foreground_fraction`` is given (so calls
        written for earlier versions keep their meaning), else ``"realistic"``. An option of the other model
        raises instead of being ignored.
        """
        if model is None:
            model = "radius" if lesion_radius is not None or foreground_fraction is not None else "realistic"
        check_option("lesion_sizes", model, LESION_SIZES)
        other = (
            {"lesion_radius": lesion_radius, "foreground_fraction": foreground_fraction}
            if model == "realistic"
            else {"lesion_volume": lesion_volume, "lesion_volume_range": lesion_volume_range}
        )
        given = [name for name, value in other.items() if value is not None]
        if given:
            raise ValueError(
                f"{', '.join(given)} cannot be used with lesion_sizes={model!r}; "
                f"use lesion_sizes={'radius' if model == 'realistic' else 'realistic'!r} or drop them"
            )
        low, high = _pair("lesions_per_case", lesions_per_case or DEFAULT_LESIONS_PER_CASE[model])
        counts = (int(low), int(high))
        if model == "realistic":
            return cls(
                model,
                counts,
                volume=_pair("lesion_volume", lesion_volume or DEFAULT_VOLUME),
                volume_range=_pair("lesion_volume_range", lesion_volume_range or DEFAULT_VOLUME_RANGE),
            )
        return cls(
            model,
            counts,
            radius=_pair("lesion_radius", lesion_radius or DEFAULT_RADIUS[spatial_dims]),
            foreground_fraction=foreground_fraction,
        )


def _pair(name: str, values: Sequence[float]) -> tuple[float, float]:
    if len(values) != 2:
        raise ValueError(f"{name} must be two values (lo, hi), got {tuple(values)}")
    return float(values[0]), float(values[1])


def _check_range(name: str, pair: Sequence[float], low: float) -> None:
    if len(pair) != 2 or not low <= pair[0] <= pair[1]:
        raise ValueError(f"{name} must be a range (lo, hi) with {low} <= lo <= hi, got {tuple(pair)}")


def lognormal_volumes(u: np.ndarray, volume: tuple[float, float], volume_range: tuple[float, float]) -> np.ndarray:
    """Truncated log-normal volumes (voxels) at uniform quantiles ``u`` ``(n,)`` in [0, 1) -> ``(n,)`` float64."""
    median, sigma = volume
    low, high = volume_range
    a, b = ndtr(math.log(low / median) / sigma), ndtr(math.log(high / median) / sigma)
    return np.clip(median * np.exp(sigma * ndtri(a + u * (b - a))), low, high)


def radius_for_volume(voxels: np.ndarray, unit_voxels: np.ndarray, ndim: int) -> np.ndarray:
    """Blob radius (mm) whose volume is ``voxels``; ``unit_voxels``: each blob's volume at radius 1 mm, in voxels."""
    return (np.asarray(voxels) / unit_voxels) ** (1.0 / ndim)


def skewed_radii(
    u: np.ndarray,
    unit_voxels: np.ndarray,
    ndim: int,
    radius: tuple[float, float],
    fraction: float | None,
    dataset_voxels: int,
    context: str,
) -> tuple[np.ndarray, float]:
    """Radii ``lo * (hi / lo) ** (u ** k)`` (mm, ``(n,)``), ``k`` such that they fill ``fraction`` of the dataset.

    Args:
        u: ``(n,)`` uniform quantiles, one per lesion of the whole dataset.
        unit_voxels: ``(n,)`` each blob's volume at radius 1 mm, in voxels.
        radius: (lo, hi) in mm.
        fraction: expected lesion-voxel fraction over the dataset, or None for ``k = 1`` (log-uniform radii).
        dataset_voxels: voxels of all cases together.
        context: the settings that bound the reachable fractions, for the error message.

    Returns:
        The radii and ``k``.
    """
    lo, hi = radius

    def expected_fraction(log_k: float) -> float:
        radii = lo * (hi / lo) ** (u ** math.exp(log_k))
        return float(np.sum(radii**ndim * unit_voxels)) / dataset_voxels

    if fraction is None:
        log_k = 0.0
    else:
        most, least = expected_fraction(-6.0), expected_fraction(6.0)
        if not least <= fraction <= most:
            raise ValueError(
                f"foreground_fraction={fraction} is out of reach: with {context} the expected fraction lies in "
                f"[{least:.2e}, {most:.2e}]; change the radius or count range"
            )
        low_k, high_k = -6.0, 6.0
        for _ in range(60):  # expected_fraction decreases with k
            mid = (low_k + high_k) / 2
            low_k, high_k = (mid, high_k) if expected_fraction(mid) > fraction else (low_k, mid)
        log_k = (low_k + high_k) / 2
    k = math.exp(log_k)
    return lo * (hi / lo) ** (u**k), k

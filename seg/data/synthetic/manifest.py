"""The ``dataset.json`` of :mod:`seg.data.synthetic`: checked settings, one record per written case, stats.

:class:`SyntheticSettings` holds ``make_dataset``'s arguments with their defaults filled in and checks them
when built; :func:`dataset_json` turns the :class:`WrittenCase` records of one run into the MSD
``dataset.json`` content, whose ``stats`` are measured on the labels as written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from seg.data.synthetic.sizes import LesionSizes


@dataclass(frozen=True)
class SyntheticSettings:
    """Arguments of :func:`seg.data.synthetic.make_dataset` with defaults filled in; checked when built."""

    cases: int
    test_cases: int
    spatial_dims: int
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    sizes: LesionSizes
    contrast: tuple[float, float]
    distractors: tuple[int, int]
    empty_fraction: float
    channels: int
    oblique_degrees: float
    seed: int

    def __post_init__(self) -> None:
        if self.cases < 0 or self.test_cases < 0 or self.cases + self.test_cases == 0:
            raise ValueError(
                f"cases and test_cases must be >= 0 and not both 0, got {self.cases} and {self.test_cases}"
            )
        dims = self.spatial_dims
        if len(self.shape) != dims or min(self.shape) < 8:
            raise ValueError(f"shape must have {dims} sizes >= 8 for spatial_dims={dims}, got {self.shape}")
        if len(self.spacing) != dims or min(self.spacing) <= 0:
            raise ValueError(f"spacing must have {dims} positive values (mm), got {self.spacing}")
        for name, pair, low in (
            ("contrast", self.contrast, 0.0),
            ("distractors", self.distractors, 0),
        ):
            if len(pair) != 2 or not low <= pair[0] <= pair[1]:
                raise ValueError(f"{name} must be a range (lo, hi) with {low} <= lo <= hi, got {pair}")
        if not 0 <= self.empty_fraction <= 1:
            raise ValueError(f"empty_fraction must be in [0, 1], got {self.empty_fraction}")
        if self.channels not in (1, 2):
            raise ValueError(
                f"channels must be 1 (FLAIR-like) or 2 (FLAIR-like + T1-like), got {self.channels}"
            )

    def case_names(self) -> list[str]:
        """``case_000`` ... for training, then test cases from the next free hundred (``case_100`` ...)."""
        test_start = max(100, 100 * math.ceil(self.cases / 100))
        return [f"case_{i:03d}" for i in range(self.cases)] + [
            f"case_{test_start + j:03d}" for j in range(self.test_cases)
        ]


@dataclass(frozen=True)
class WrittenCase:
    """One written case: its ``dataset.json`` entry (paths relative to the JSON) and what its label holds."""

    name: str
    training: bool
    image: str | list[str]  # one path, or one per channel when channels > 1
    label: str
    planned_lesion_free: bool  # planned without lesions (an empty_fraction case)
    foreground_voxels: int
    radii_mm: list[float]  # of the lesions placed, in placement order
    target_voxels: list[int]  # planned label voxels of the lesions placed, in placement order
    dropped: int  # lesions that did not fit
    component_voxels: list[int]  # sizes of the label's connected components (full connectivity)


def component_sizes(label: np.ndarray) -> list[int]:
    """Voxel counts of the connected components of ``label`` ``(*spatial)``, full connectivity (26 in 3D, 8 in 2D)."""
    components, n = ndimage.label(label, structure=np.ones((3,) * label.ndim))
    return np.bincount(components.ravel(), minlength=n + 1)[1:].tolist()


def size_distribution(sizes: list[int]) -> dict[str, Any]:
    """Count, quartiles ``[min, q1, median, q3, max]`` (voxels) and shares < 30 and > 300 voxels of ``sizes``."""
    values = np.asarray(sizes, dtype=float)
    if values.size == 0:
        return {
            "components": 0,
            "component_voxels_quartiles": [],
            "components_under_30": None,
            "components_over_300": None,
        }
    return {
        "components": int(values.size),
        "component_voxels_quartiles": [round(float(q), 2) for q in np.quantile(values, [0, 0.25, 0.5, 0.75, 1])],
        "components_under_30": round(float(np.mean(values < 30)), 4),
        "components_over_300": round(float(np.mean(values > 300)), 4),
    }


def dataset_json(
    settings: SyntheticSettings, written: list[WrittenCase], skew: float | None, seconds: float
) -> dict[str, Any]:
    """The MSD ``dataset.json`` content for ``written`` (training cases first, as written).

    Args:
        settings: the run's settings.
        written: every case, in writing order.
        skew: the radius-skew exponent ``k`` from planning (None for the realistic size model).
        seconds: the run's wall time so far.
    """
    s, sizes = settings, settings.sizes
    cases, test_cases = s.cases, s.test_cases
    foreground = [w.foreground_voxels for w in written]
    radii = [r for w in written for r in w.radii_mm]
    voxels = math.prod(s.shape)
    achieved = float(np.sum(foreground)) / (voxels * len(written)) if written else 0.0
    stats = {
        "lesion_sizes": sizes.model,
        "requested_foreground_fraction": sizes.foreground_fraction,
        "foreground_fraction": achieved,
        "foreground_fraction_training": float(np.sum(foreground[:cases])) / (voxels * max(cases, 1)),
        "foreground_fraction_test": float(np.sum(foreground[cases:])) / (voxels * max(test_cases, 1)),
        "lesion_free_training": [w.name for w in written[:cases] if w.planned_lesion_free],
        "lesion_free_test": [w.name for w in written[cases:] if w.planned_lesion_free],
        "lesions": len(radii),
        # each lesion is one 26-connected (8 in 2D) component
        "lesions_per_case": {w.name: len(w.radii_mm) for w in written},
        "lesions_dropped": sum(w.dropped for w in written),
        # measured on the labels as written: scipy.ndimage.label, full connectivity
        **size_distribution([n for w in written for n in w.component_voxels]),
        "lesion_target_voxels": {w.name: w.target_voxels for w in written},
        "lesion_radius_mm_quartiles": [
            round(float(q), 3) for q in np.quantile(radii, [0, 0.25, 0.5, 0.75, 1])
        ]
        if radii
        else [],
        "radius_skew_k": None if skew is None else round(skew, 4),
        "seconds": round(seconds, 2),
        "parameters": {
            "cases": cases,
            "test_cases": test_cases,
            "spatial_dims": s.spatial_dims,
            "shape": s.shape,
            "spacing": s.spacing,
            "lesion_sizes": sizes.model,
            "lesions_per_case": list(sizes.lesions_per_case),
            "lesion_volume": None if sizes.volume is None else list(sizes.volume),
            "lesion_volume_range": None if sizes.volume_range is None else list(sizes.volume_range),
            "lesion_radius": None if sizes.radius is None else list(sizes.radius),
            "foreground_fraction": sizes.foreground_fraction,
            "contrast": list(s.contrast),
            "distractors": list(s.distractors),
            "empty_fraction": s.empty_fraction,
            "channels": s.channels,
            "oblique_degrees": s.oblique_degrees,
            "seed": s.seed,
        },
    }
    requested = "" if sizes.foreground_fraction is None else f" (requested {sizes.foreground_fraction:.4%})"
    return {
        "name": "SyntheticLesions",
        "description": (
            f"Synthetic brain-like MR phantoms with sparse lesions and unlabelled distractors "
            f"(seg.data.synthetic, seed {s.seed}, {sizes.model} lesion sizes); lesion voxel fraction "
            f"{achieved:.4%}{requested}"
        ),
        "reference": "seg.data.synthetic",
        "licence": "CC0-1.0",
        "release": "1.0",
        "tensorImageSize": f"{s.spatial_dims}D",
        "modality": {"0": "MR"} if s.channels == 1 else {"0": "FLAIR", "1": "T1"},
        "labels": {"0": "background", "1": "lesion"},
        "numTraining": cases,
        "numTest": test_cases,
        "training": [{"image": w.image, "label": w.label} for w in written if w.training],
        "test": [w.image for w in written if not w.training],
        "stats": stats,
    }

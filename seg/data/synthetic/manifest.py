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


@dataclass(frozen=True)
class SyntheticSettings:
    """Arguments of :func:`seg.data.synthetic.make_dataset` with defaults filled in; checked when built."""

    cases: int
    test_cases: int
    spatial_dims: int
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    foreground_fraction: float
    lesions_per_case: tuple[int, int]
    lesion_radius: tuple[float, ...]
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
        if not 0 < self.foreground_fraction < 0.5:
            raise ValueError(f"foreground_fraction must be in (0, 0.5), got {self.foreground_fraction}")
        for name, pair, low in (
            ("lesions_per_case", self.lesions_per_case, 1),
            ("lesion_radius", self.lesion_radius, 0.5),
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
    dropped: int  # lesions that did not fit


def dataset_json(
    settings: SyntheticSettings, written: list[WrittenCase], skew: float, seconds: float
) -> dict[str, Any]:
    """The MSD ``dataset.json`` content for ``written`` (training cases first, as written).

    Args:
        settings: the run's settings.
        written: every case, in writing order.
        skew: the radius-skew exponent ``k`` from planning.
        seconds: the run's wall time so far.
    """
    s = settings
    cases, test_cases = s.cases, s.test_cases
    foreground = [w.foreground_voxels for w in written]
    radii = [r for w in written for r in w.radii_mm]
    voxels = math.prod(s.shape)
    achieved = float(np.sum(foreground)) / (voxels * len(written)) if written else 0.0
    stats = {
        "requested_foreground_fraction": s.foreground_fraction,
        "foreground_fraction": achieved,
        "foreground_fraction_training": float(np.sum(foreground[:cases])) / (voxels * max(cases, 1)),
        "foreground_fraction_test": float(np.sum(foreground[cases:])) / (voxels * max(test_cases, 1)),
        "lesion_free_training": [w.name for w in written[:cases] if w.planned_lesion_free],
        "lesion_free_test": [w.name for w in written[cases:] if w.planned_lesion_free],
        "lesions": len(radii),
        # each lesion is one 26-connected (8 in 2D) component
        "lesions_per_case": {w.name: len(w.radii_mm) for w in written},
        "lesions_dropped": sum(w.dropped for w in written),
        "lesion_radius_mm_quartiles": [
            round(float(q), 3) for q in np.quantile(radii, [0, 0.25, 0.5, 0.75, 1])
        ]
        if radii
        else [],
        "radius_skew_k": round(skew, 4),
        "seconds": round(seconds, 2),
        "parameters": {
            "cases": cases,
            "test_cases": test_cases,
            "spatial_dims": s.spatial_dims,
            "shape": s.shape,
            "spacing": s.spacing,
            "lesions_per_case": list(s.lesions_per_case),
            "lesion_radius": list(s.lesion_radius),
            "contrast": list(s.contrast),
            "distractors": list(s.distractors),
            "empty_fraction": s.empty_fraction,
            "channels": s.channels,
            "oblique_degrees": s.oblique_degrees,
            "seed": s.seed,
        },
    }
    return {
        "name": "SyntheticLesions",
        "description": (
            f"Synthetic brain-like MR phantoms with sparse lesions and unlabelled distractors "
            f"(seg.data.synthetic, seed {s.seed}); lesion voxel fraction {achieved:.4%} "
            f"(requested {s.foreground_fraction:.4%})"
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

"""The dataset fingerprint: what a planner needs to know about the data, gathered in the check's single pass.

Per the nnU-Net fingerprint (``DatasetFingerprintExtractor``) plus what lesion segmentation needs: voxel spacing and
shape in RAS order (median and spread), anisotropy (largest / smallest median spacing), intensity statistics inside
the foreground per modality (10,000 foreground voxels sampled per case and channel, seeded, as nnU-Net samples),
the foreground fraction, connected lesions per training case with their sizes in voxels and mm³, lesion-free cases,
and the class counts α is derived from. ``--check-data`` prints it; :mod:`seg.planning` plans from it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
from scipy import ndimage

from seg.data.layouts import DatasetSpec
from seg.io import Volume

SAMPLES_PER_CASE = 10_000
SMALL_LESION_VOXELS = 30


def ras_order(affine: np.ndarray, ndim: int) -> list[int]:
    """For each RAS axis, the stored axis that runs along it (the largest affine component; 2D: stored order)."""
    if ndim < 3:
        return list(range(ndim))
    return [int(np.argmax(np.abs(affine[r, :3]))) for r in range(3)]


def _spread(rows: list[list[float]]) -> dict[str, list[float]]:
    array = np.asarray(rows, dtype=np.float64)
    return {"median": np.median(array, 0).tolist(), "min": array.min(0).tolist(), "max": array.max(0).tolist(),
            "p10": np.percentile(array, 10, axis=0).tolist()}


class Fingerprint:
    """Running statistics over the cases of one check (nothing but counters and samples outlives a case)."""

    def __init__(self, spec: DatasetSpec, seed: int = 0) -> None:
        self.spec, self.rng = spec, np.random.default_rng(seed)
        channels = len(spec.channel_names)
        self.shapes: Counter[str] = Counter()
        self.spacings: Counter[str] = Counter()
        self.orientations: Counter[str] = Counter()
        self.lo, self.hi = np.full(channels, np.inf), np.full(channels, -np.inf)
        self.sums, self.voxels = np.zeros(channels), np.zeros(channels)
        self.label_values: set[int] = set()
        self.counts, self.present_voxels = np.zeros(spec.num_classes), np.zeros(spec.num_classes)
        self.ras_spacings: list[list[float]] = []
        self.ras_shapes: list[list[float]] = []
        self.foreground_samples: list[list[np.ndarray]] = [[] for _ in range(channels)]
        self.foreground_fractions: list[float] = []
        self.lesions: dict[str, dict[str, Any]] = {}

    def add_image(self, image: Volume) -> None:
        """Geometry and intensity range of one case's image ``(C, *spatial)`` (training and test cases)."""
        self.shapes[str(image.spatial_shape)] += 1
        self.spacings["(" + ", ".join(f"{s:.3g}" for s in image.spacing) + ")"] += 1
        self.orientations["".join(image.orientation)] += 1
        for c, channel in enumerate(image.array[: len(self.sums)]):
            finite = channel[np.isfinite(channel)]
            if finite.size:
                self.lo[c], self.hi[c] = min(self.lo[c], finite.min()), max(self.hi[c], finite.max())
                self.sums[c] += float(finite.sum(dtype=np.float64))
                self.voxels[c] += finite.size

    def add_label(self, name: str, label: Volume, image: Volume | None, training: bool) -> None:
        """Label values of any case; for a training case also class counts, foreground intensities and lesions."""
        values, counts = np.unique(label.array, return_counts=True)
        self.label_values.update(int(v) for v in values)
        if not training:
            return
        for v, n in zip(values, counts, strict=True):
            if 0 <= v < self.spec.num_classes:
                self.counts[v] += n
                self.present_voxels[v] += label.array.size
        order = ras_order(label.affine, len(label.spatial_shape))
        self.ras_spacings.append([label.spacing[i] for i in order])
        self.ras_shapes.append([label.spatial_shape[i] for i in order])
        foreground = label.array[0] > 0
        self.foreground_fractions.append(float(foreground.mean()))
        components, count = ndimage.label(foreground, structure=np.ones((3,) * foreground.ndim))
        sizes = np.bincount(components.ravel())[1:]
        voxel_mm3 = float(np.prod(label.spacing))
        self.lesions[name] = {"count": int(count), "sizes_voxels": sizes.tolist(),
                              "sizes_mm3": [round(float(s) * voxel_mm3, 3) for s in sizes]}
        if image is not None and image.spatial_shape == label.spatial_shape and foreground.any():
            where = np.flatnonzero(foreground)
            picked = self.rng.choice(where, size=min(SAMPLES_PER_CASE, where.size), replace=False)
            for c, channel in enumerate(image.array[: len(self.foreground_samples)]):
                self.foreground_samples[c].append(channel.ravel()[picked])

    def summary(self) -> dict[str, Any]:
        """The check's summary keys plus a ``"fingerprint"`` dict (see the module docstring)."""
        spec = self.spec
        out: dict[str, Any] = {
            "shapes": dict(self.shapes.most_common()), "spacings": dict(self.spacings.most_common()),
            "orientations": dict(self.orientations.most_common()),
            "intensity": [{"channel": name, "min": float(self.lo[c]), "max": float(self.hi[c]),
                           "mean": float(self.sums[c] / self.voxels[c])}
                          for c, name in enumerate(spec.channel_names) if self.voxels[c] > 0],
            "label_values": sorted(self.label_values), "class_names": list(spec.labels.values()),
            "class_counts": self.counts.tolist(), "present_voxels": self.present_voxels.tolist(),
        }
        if not self.ras_spacings:
            return out
        spacing = _spread(self.ras_spacings)
        sizes = np.asarray([s for case in self.lesions.values() for s in case["sizes_voxels"]], dtype=np.float64)
        sizes_mm3 = np.asarray([s for case in self.lesions.values() for s in case["sizes_mm3"]], dtype=np.float64)
        quartiles = [0, 25, 50, 75, 100]
        out["fingerprint"] = {
            "spacing_ras": spacing, "shape_ras": _spread(self.ras_shapes),
            "anisotropy": float(max(spacing["median"]) / min(spacing["median"])),
            "intensity_foreground": [self._intensity(c, name) for c, name in enumerate(spec.channel_names)
                                     if self.foreground_samples[c]],
            "foreground_fraction": {"median": float(np.median(self.foreground_fractions)),
                                    "min": float(np.min(self.foreground_fractions)),
                                    "max": float(np.max(self.foreground_fractions))},
            "lesions_per_case": {name: case["count"] for name, case in self.lesions.items()},
            "lesion_sizes": self.lesions,
            "lesion_size_voxels_quartiles": np.percentile(sizes, quartiles).tolist() if sizes.size else [],
            "lesion_size_mm3_quartiles": np.percentile(sizes_mm3, quartiles).tolist() if sizes.size else [],
            "share_under_30_voxels": float(np.mean(sizes < SMALL_LESION_VOXELS)) if sizes.size else None,
            "lesion_free_cases": sorted(n for n, case in self.lesions.items() if case["count"] == 0),
        }
        return out

    def _intensity(self, c: int, name: str) -> dict[str, Any]:
        values = np.concatenate(self.foreground_samples[c]).astype(np.float64)
        p = np.percentile(values, [0.5, 50, 99.5])
        return {"channel": name, "mean": float(values.mean()), "std": float(values.std()), "p00_5": float(p[0]),
                "p50": float(p[1]), "p99_5": float(p[2]), "samples": int(values.size)}


def format_fingerprint(summary: dict[str, Any]) -> list[str]:
    """Lines of ``--check-data``'s report for a summary's ``"fingerprint"`` (none without one)."""
    f = summary.get("fingerprint")
    if not f:
        return []
    fmt = ", ".join
    lines = [f"  spacing RAS (mm): median [{fmt(f'{v:.3g}' for v in f['spacing_ras']['median'])}], range "
             f"[{fmt(f'{v:.3g}' for v in f['spacing_ras']['min'])}] - [{fmt(f'{v:.3g}' for v in f['spacing_ras']['max'])}]"
             f"; anisotropy {f['anisotropy']:.2f}",
             f"  shape RAS: median [{fmt(f'{v:g}' for v in f['shape_ras']['median'])}]"]
    for channel in f["intensity_foreground"]:
        lines.append(f"  foreground intensity {channel['channel']}: mean {channel['mean']:.4g}, sd {channel['std']:.4g},"
                     f" 0.5-99.5 % [{channel['p00_5']:.4g}, {channel['p99_5']:.4g}]")
    counts = list(f["lesions_per_case"].values())
    quartiles = f["lesion_size_voxels_quartiles"]
    lines.append(f"  lesions: {sum(counts)} in {len(counts)} training case(s) (median {np.median(counts):g} per case)"
                 + (f"; size quartiles (voxels) [{fmt(f'{q:g}' for q in quartiles)}], "
                    f"{100 * f['share_under_30_voxels']:.0f} % under 30 voxels" if quartiles else "")
                 + f"; foreground {100 * f['foreground_fraction']['median']:.3g} % of a volume (median)")
    if f["lesion_free_cases"]:
        lines.append(f"  lesion-free training cases: {len(f['lesion_free_cases'])} ({fmt(f['lesion_free_cases'][:5])}"
                     + (", ..." if len(f["lesion_free_cases"]) > 5 else "") + ")")
    return lines

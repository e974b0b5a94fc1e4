"""Dataset validation before any training starts (nnU-Net's ``--verify_dataset_integrity``, run every time).

:func:`check_dataset` streams over every case (one case in memory at a time, one read per file) and collects
**every** problem, each naming its file, instead of stopping at the first: missing or unreadable files,
image/label shape or affine mismatches, modalities of different shapes or grids, 4D files where 3D is expected,
NaN/inf voxels, non-integral or undeclared label values, a wrong number of channels, duplicate case names, an
empty dataset. A case without foreground is a warning. In the same pass it gathers a summary (shapes, spacings,
orientations, intensity ranges, label values, class counts) and the α each method of :mod:`seg.losses.alpha` would
give. :func:`run_check` is the ``--check-data`` entry point; ``python -m seg.data.check PATH`` runs it too.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from seg.data.fingerprint import Fingerprint, format_fingerprint
from seg.data.layouts import Case, DatasetSpec, load_dataset
from seg.io import ImageReadError, Volume, not_a_file, read_image, read_label
from seg.losses.alpha import alpha_table
from seg.types import PathLike


@dataclass
class CheckReport:
    """Outcome of :func:`check_dataset`: ``ok`` when there is no error (warnings do not block training)."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def format(self) -> str:
        """A readable summary followed by every error and warning."""
        s = self.summary
        status = "OK" if self.ok else f"FAILED with {len(self.errors)} error(s)"
        lines = [f"dataset '{s.get('root', '?')}' ({s.get('layout', '?')}): {s.get('cases', 0)} training "
                 f"case(s), {s.get('test_cases', 0)} test case(s): {status}, {len(self.warnings)} warning(s)"]

        def counted(key: str) -> str:
            return ", ".join(f"{k} x{n}" for k, n in s.get(key, {}).items()) or "-"

        lines += [f"  shapes:        {counted('shapes')}", f"  spacings (mm): {counted('spacings')}",
                  f"  orientations:  {counted('orientations')}"]
        for channel in s.get("intensity", []):
            lines.append(f"  intensity {channel['channel']}: [{channel['min']:.4g}, {channel['max']:.4g}], "
                         f"mean {channel['mean']:.4g}")
        lines.append(f"  label values:  {s.get('label_values', [])}")
        counts, names = s.get("class_counts", []), s.get("class_names", [])
        total = max(sum(counts), 1)
        lines.append("  class counts:  " + ", ".join(f"{name} {int(n)} ({100 * n / total:.3g} %)"
                                                   for name, n in zip(names, counts, strict=False)))
        lines += format_fingerprint(s)
        for method, alpha in s.get("alpha", {}).items():
            lines.append(f"  alpha {method + ':':17s} [{', '.join(f'{a:.4f}' for a in alpha)}]")
        if "alpha_error" in s:
            lines.append(f"  alpha: not computed: {s['alpha_error']}")
        for title, items in (("errors", self.errors), ("warnings", self.warnings)):
            if items:
                lines.append(f"{title} ({len(items)}):")
                lines += [f"  - {item}" for item in items]
        return "\n".join(lines)


class _Collector:
    """Running summary over cases, so nothing but counters outlives a case."""

    def __init__(self, spec: DatasetSpec) -> None:
        self.spec = spec
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.channels = len(spec.channel_names)
        self.fingerprint = Fingerprint(spec)

    def rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.spec.root))
        except ValueError:
            return str(path)

    def error(self, message: str, *paths: Path) -> None:
        for path in paths:  # errors from seg.io name absolute paths; show them relative to the dataset
            message = message.replace(str(path), self.rel(path))
        self.errors.append(message)


def _read_checked(path: Path, read: Callable[[Path], Volume], what: str, case: Case, spatial_dims: int,
                  col: _Collector) -> Volume | None:
    """``read(path)``, or None once a missing or unreadable file or a wrong dimension is reported."""
    if not path.is_file():
        if path.exists() or path.is_symlink():  # a folder, a dangling link or a link loop: say which
            col.error(f"{not_a_file(path, what)} (case '{case.name}')", path)
        else:
            col.error(f"{what} '{col.rel(path)}' of case '{case.name}' is missing")
        return None
    try:
        vol = read(path)
    except (ImageReadError, ValueError, OSError) as err:
        col.error(str(err), path)
        return None
    shape = vol.spatial_shape
    while len(shape) > spatial_dims and shape[-1] == 1:  # a 2D slice stored as (H, W, 1)
        shape = shape[:-1]
    if len(shape) != spatial_dims:
        col.error(f"{what} '{col.rel(path)}' has {len(shape)} spatial dimensions {vol.spatial_shape} but "
                  f"{spatial_dims}D is expected (spatial_dims={spatial_dims})")
        return None
    return vol


def _affine_gap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)))


def _read_case_images(case: Case, spatial_dims: int, tol: float, col: _Collector) -> Volume | None:
    """Read every modality file of a case (one read each), check them, add intensity stats; first Volume back."""
    allow_4d = len(case.images) == 1 and col.channels > 1  # an MSD 4D file holds all modalities
    volumes: list[tuple[Path, Volume]] = []
    for path in case.images:
        vol = _read_checked(path, partial(read_image, allow_4d=allow_4d), "image", case, spatial_dims, col)
        if vol is None:
            continue
        bad = int(vol.array.size - np.isfinite(vol.array).sum())
        if bad:
            col.error(f"image '{col.rel(path)}' has {bad} NaN/inf voxels; replace them (e.g. with 0) first")
        if volumes:
            first_path, first = volumes[0]
            if vol.spatial_shape != first.spatial_shape:
                col.error(f"image '{col.rel(path)}' has shape {vol.spatial_shape} but '{col.rel(first_path)}' "
                          f"of the same case has {first.spatial_shape}; modalities must share one grid")
                continue
            if (gap := _affine_gap(vol.affine, first.affine)) > tol:
                col.error(f"image '{col.rel(path)}' affine differs from '{col.rel(first_path)}' by up to "
                          f"{gap:.4g} (tolerance {tol}); resample the modalities onto one grid")
        volumes.append((path, vol))
    if not volumes:
        return None
    if len(volumes) != len(case.images):  # a modality is already reported; the label still gets checked
        return volumes[0][1]
    found = sum(v.array.shape[0] for _, v in volumes)
    if found != col.channels:
        col.error(f"case '{case.name}' has {found} channel(s) in {[col.rel(p) for p in case.images]} but the "
                  f"dataset declares {col.channels} ({col.spec.channel_names})")
        return volumes[0][1]
    first = volumes[0][1]  # every channel of the case, in dataset order, on the first file's grid
    return Volume(np.concatenate([v.array for _, v in volumes]), first.affine, first.header, first.path)


def _check_label(case: Case, image: Volume | None, training: bool, spatial_dims: int, tol: float,
                 col: _Collector) -> None:
    path = case.label
    if path is None:
        if training:
            col.error(f"training case '{case.name}' has no label file")
        return
    label = _read_checked(path, read_label, "label", case, spatial_dims, col)
    if label is None:
        return
    if image is not None:
        if label.spatial_shape != image.spatial_shape:
            col.error(f"label '{col.rel(path)}' has shape {label.spatial_shape} but its image has "
                      f"{image.spatial_shape}")
        elif (gap := _affine_gap(label.affine, image.affine)) > tol:
            col.error(f"label '{col.rel(path)}' affine differs from its image '{col.rel(image.path)}' by up "
                      f"to {gap:.4g} (tolerance {tol}); orientation {''.join(label.orientation)} vs "
                      f"{''.join(image.orientation)}, spacing {_fmt(label.spacing)} vs {_fmt(image.spacing)}")
    values, counts = np.unique(label.array, return_counts=True)
    matches_image = image is not None and label.spatial_shape == image.spatial_shape
    col.fingerprint.add_label(case.name, label, image if matches_image else None, training)
    allowed = set(col.spec.labels) | ({col.spec.ignore_label} - {None})
    undeclared = [int(v) for v in values if int(v) not in allowed]
    if undeclared:
        col.error(f"label '{col.rel(path)}' has values {undeclared} not declared in labels "
                  f"{col.spec.labels}; declare them or fix the label file")
    foreground = sum(int(n) for v, n in zip(values, counts, strict=True)
                     if v != 0 and v in col.spec.labels)
    if foreground == 0:
        col.warnings.append(f"label '{col.rel(path)}' (case '{case.name}') has no foreground voxels")


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.3g}" for v in values) + ")"


def check_dataset(spec: DatasetSpec, *, spatial_dims: int = 3, affine_tolerance: float = 1e-3,
                  progress: bool = True, needs_foreground: bool = False) -> CheckReport:
    """Check every case of ``spec`` and summarise it; never raises for a problem in the data.

    Args:
        spec: from :func:`seg.data.layouts.load_dataset`.
        spatial_dims: 3 for volumes ``(D, H, W)``; 2 for slices ``(H, W)`` (``(H, W, 1)`` files accepted).
        affine_tolerance: largest allowed absolute difference between affine entries (mm) of files that
            must share a grid (modalities of a case, an image and its label).
        progress: show a tqdm bar over cases.
        needs_foreground: the training config needs lesion voxels (``alpha: auto``): training labels that are all
            empty are then an error, not only a warning per case.

    Returns:
        CheckReport with every error and warning, and a ``summary`` dict (see :meth:`CheckReport.format`).
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, found {spatial_dims}")
    col = _Collector(spec)
    if not spec.cases:
        col.errors.append(f"dataset '{spec.root}' has no training cases; add labelled cases to it")
    for name, n in Counter(c.name for c in spec.cases).items():
        if n > 1:
            col.errors.append(f"training case name '{name}' appears {n} times")
    work = [(case, True) for case in spec.cases] + [(case, False) for case in spec.test_cases]
    for case, training in tqdm(work, desc="checking dataset", unit="case", disable=not progress):
        image = _read_case_images(case, spatial_dims, affine_tolerance, col)
        if image is not None:
            col.fingerprint.add_image(image)
        _check_label(case, image, training, spatial_dims, affine_tolerance, col)
        del image  # one case in memory at a time
    if needs_foreground and spec.cases and col.fingerprint.counts[1:].sum() == 0:
        col.errors.append(f"every training label of '{spec.root}' is empty (no foreground voxel): alpha 'auto' cannot "
                          "derive class weights and nothing could be learned; check the label files or their values")
    return CheckReport(errors=col.errors, warnings=col.warnings, summary=_summary(spec, col))


def _summary(spec: DatasetSpec, col: _Collector) -> dict[str, Any]:
    summary: dict[str, Any] = {"root": str(spec.root), "layout": spec.layout, "cases": len(spec.cases),
                               "test_cases": len(spec.test_cases), **col.fingerprint.summary()}
    try:
        table = alpha_table(summary["class_counts"], present_voxels=summary["present_voxels"])
        summary["alpha"] = {method: np.asarray(a).tolist() for method, a in table.items()}
    except ValueError as err:  # e.g. a class absent from every label: the summary is still useful
        summary["alpha_error"] = str(err)
    return summary


def run_check(dataset: PathLike | DatasetSpec, spatial_dims: int = 3, *, quiet: bool = False,
              needs_foreground: bool = False) -> int:
    """Check a dataset and print the outcome; the ``--check-data`` entry point.

    Args:
        dataset: a path for :func:`seg.data.layouts.load_dataset`, or an already loaded :class:`DatasetSpec`.
        spatial_dims: 3 for volumes, 2 for slices.
        quiet: for the check run before every training: no progress bar, and when the dataset is fine only
            the report's first line; the full report is printed whenever there is an error.

    Returns:
        0 when the dataset is fit for training, 1 otherwise (also when it cannot be loaded).
    """
    if isinstance(dataset, DatasetSpec):
        spec = dataset
    else:
        try:
            spec = load_dataset(dataset)
        except (FileNotFoundError, ValueError) as err:
            print(f"dataset error: {err}")
            return 1
    report = check_dataset(spec, spatial_dims=spatial_dims, progress=not quiet, needs_foreground=needs_foreground)
    text = report.format()
    print(text.splitlines()[0] if quiet and report.ok else text)
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check a segmentation dataset before training.")
    parser.add_argument("path", help="dataset.json, or a dataset folder (MSD, nnU-Net v2 raw, images/+labels/)")
    parser.add_argument("--spatial-dims", type=int, choices=(2, 3), default=3)
    args = parser.parse_args(argv)
    return run_check(args.path, spatial_dims=args.spatial_dims)


if __name__ == "__main__":
    raise SystemExit(main())

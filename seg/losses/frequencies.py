"""Voxel counts per class over label maps or label files, streamed: the input of data-derived α (:mod:`seg.losses.alpha`).

Hand-written: MONAI has no class-frequency utility; counting is ``np.bincount`` on slabs read through
:func:`seg.io.iter_slabs`, so a volume is never fully materialised when it is large.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from seg.io import iter_slabs
from seg.types import PathLike

# Largest number of voxels read from one NIfTI at once (64 MB as float32); bigger volumes are read in slabs
# along the last axis, which is contiguous on disk for NIfTI's Fortran order.
_SLAB_VOXELS = 2**24

LabelItem = np.ndarray | torch.Tensor | PathLike


def _as_integer_labels(array: np.ndarray, where: str) -> np.ndarray:
    """Return ``array`` as int64, rejecting non-integral floats (e.g. resampled labels) with ``where`` named."""
    if array.dtype == np.bool_:
        return array.astype(np.int64)
    if np.issubdtype(array.dtype, np.floating):
        bad = ~np.isfinite(array) | (array != np.round(array))
        if bad.any():
            raise ValueError(
                f"{where}: labels must be integers, found non-integral value {float(array[bad].flat[0]):g} "
                f"({int(bad.sum())} voxels); resample labels with nearest-neighbour interpolation"
            )
    elif not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{where}: expected an integer or float label array, found dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def _count(array: np.ndarray, num_classes: int, ignore_index: int | None, where: str) -> np.ndarray:
    flat = _as_integer_labels(np.asarray(array), where).ravel()
    if ignore_index is not None:
        flat = flat[flat != ignore_index]
    if flat.size == 0:
        return np.zeros(num_classes, dtype=np.int64)
    lo, hi = int(flat.min()), int(flat.max())
    if lo < 0 or hi >= num_classes:
        value = lo if lo < 0 else hi
        raise ValueError(
            f"{where}: label value {value} is outside 0..{num_classes - 1} (num_classes={num_classes}); "
            "raise num_classes, or pass ignore_index for a void label"
        )
    return np.bincount(flat, minlength=num_classes)


def _count_nifti(path: Path, num_classes: int, ignore_index: int | None) -> tuple[np.ndarray, int]:
    """Count one NIfTI file slab by slab; returns (counts, number of counted voxels)."""
    counts = np.zeros(num_classes, dtype=np.int64)
    for slab in iter_slabs(path, _SLAB_VOXELS):
        counts += _count(slab, num_classes, ignore_index, f"label file '{path}'")
    return counts, int(counts.sum())


def class_frequencies(
    labels: Iterable[LabelItem],
    num_classes: int,
    *,
    ignore_index: int | None = None,
    progress: bool = False,
    return_presence: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Voxel count per class over a stream of label maps, one item in memory at a time.

    Args:
        labels: iterable of label maps: numpy arrays or torch tensors of any shape (e.g. ``(1, *spatial)``),
            integer dtype or float holding integers; or paths to NIfTI files (read with nibabel, in slabs).
        num_classes: number of classes C; values must lie in ``0..C-1``.
        ignore_index: label value not counted (e.g. 255 for void). Other out-of-range values raise.
        progress: show a tqdm bar over the items.
        return_presence: also return, per class, the number of counted voxels of the items in which the
            class occurs (the denominator of Eigen & Fergus' median-frequency balancing).

    Returns:
        float64 ``(C,)`` absolute counts; with ``return_presence`` a pair ``(counts, present_voxels)``.

    Raises:
        ValueError: non-integral or out-of-range label values, naming the file (or item index) and value.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, found {num_classes!r}")
    total = np.zeros(num_classes, dtype=np.int64)
    present = np.zeros(num_classes, dtype=np.int64)
    for i, item in enumerate(tqdm(labels, desc="class frequencies", disable=not progress)):
        if isinstance(item, str | os.PathLike):
            counts, voxels = _count_nifti(Path(item), num_classes, ignore_index)
        else:
            if isinstance(item, torch.Tensor):
                item = item.detach().cpu().numpy()
            counts = _count(np.asarray(item), num_classes, ignore_index, f"label item {i}")
            voxels = int(counts.sum())
        total += counts
        present += np.where(counts > 0, voxels, 0)
    if return_presence:
        return total.astype(np.float64), present.astype(np.float64)
    return total.astype(np.float64)

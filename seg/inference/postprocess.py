"""Labels from predicted probabilities: argmax or threshold, then removal of connected components that are too small
or never confident (hysteresis: a component is kept only if its peak foreground probability exceeds
``peak_threshold``, as ``skimage.filters.apply_hysteresis_threshold(p, threshold, peak_threshold)`` keeps them),
and optionally of every foreground component but the largest (nnU-Net's "remove all but the largest component",
for data with one lesion per case, e.g. a glioma; chosen on validation by :mod:`seg.training.tuning`).

:func:`seg.inference.sliding_window.predict_labels` does the same slab by slab; :func:`postprocess` works on the whole
``(B, K, *spatial)`` probabilities of :func:`seg.inference.sliding_window.predict_volume` (validation, ``seg-infer``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from scipy import ndimage

from seg.errors import check_option


def to_labels(probabilities: torch.Tensor, activation: str, threshold: float | None = None) -> torch.Tensor:
    """uint8 labels ``(B, *spatial)`` (softmax) or masks ``(B, K, *spatial)`` (sigmoid) of ``(B, K, *spatial)``.

    softmax: ``threshold=None`` takes the argmax; a number marks foreground where ``1 − p_0 > threshold`` and gives
    it the most probable foreground class (for two classes 0.5 is the argmax). sigmoid: each channel ``> threshold``
    (``None``: 0.5).
    """
    if activation == "softmax":
        if probabilities.shape[1] > 256:
            raise ValueError(f"uint8 labels hold at most 256 classes, got K={probabilities.shape[1]}")
        if threshold is None:
            return argmax(probabilities)  # (B, K, *spatial) -> (B, *spatial)
        foreground = (1 - probabilities[:, 0]) > threshold
        return torch.where(foreground, argmax(probabilities[:, 1:]) + 1, 0).to(torch.uint8)
    return (probabilities > (0.5 if threshold is None else threshold)).to(torch.uint8)


def argmax(probabilities: torch.Tensor) -> torch.Tensor:
    """``probabilities.argmax(1)`` as uint8 (the first of equal maxima wins), by a running maximum over the K channels:
    one element-wise pass per class where torch's argmax over the channel axis of a ``(B, K, *spatial)`` tensor
    strides across it, ~18x slower on a CPU for K = 2. Not for NaN (argmax would take it as the maximum)."""
    best = probabilities[:, 0]
    labels = torch.zeros(best.shape, dtype=torch.uint8, device=best.device)
    for k in range(1, probabilities.shape[1]):
        labels.masked_fill_(probabilities[:, k] > best, k)
        best = torch.maximum(best, probabilities[:, k])
    return labels


def min_voxels(min_size: int = 0, min_size_mm3: float | None = None, spacing: Sequence[float] | None = None) -> int:
    """The component-size cut in voxels: ``min_size`` voxels, or ``min_size_mm3`` mm³ on a grid of ``spacing`` mm
    (a component of n voxels is kept when n · voxel volume >= min_size_mm3), whichever is larger."""
    if min_size < 0 or (min_size_mm3 is not None and min_size_mm3 < 0):
        raise ValueError(f"min_size and min_size_mm3 must be >= 0, got {min_size} and {min_size_mm3}")
    if min_size_mm3 is None or min_size_mm3 == 0:
        return int(min_size)
    if spacing is None:
        raise ValueError("min_size_mm3 needs the voxel spacing (mm) of the grid the labels are on")
    return max(int(min_size), math.ceil(min_size_mm3 / math.prod(float(s) for s in spacing) - 1e-9))


def peaks(probabilities: torch.Tensor, activation: str, peak_threshold: float) -> torch.Tensor:
    """Where the prediction is confident: softmax ``1 − p_0 > peak_threshold`` ``(B, *spatial)``; sigmoid each channel
    ``> peak_threshold`` ``(B, K, *spatial)``. bool, the shape of :func:`to_labels`' output."""
    if activation == "softmax":
        return (1 - probabilities[:, 0]) > peak_threshold
    return probabilities > peak_threshold


def postprocess(probabilities: torch.Tensor, *, activation: str = "softmax", threshold: float | None = None,
                min_size: int = 0, peak_threshold: float | None = None, keep_largest: bool = False) -> torch.Tensor:
    """Labels from probabilities, optionally without small connected components.

    Args:
        probabilities: ``(B, K, *spatial)`` float, as returned by :func:`predict_volume`.
        activation: ``"softmax"`` or ``"sigmoid"``; threshold: see :func:`to_labels`.
        min_size: per class (softmax, classes >= 1) or channel (sigmoid), connected components of fewer
            voxels are set to 0 (background). Full connectivity (8 in 2D, 26 in 3D). 0 keeps everything.
            In mm³: ``min_size=min_voxels(0, mm3, spacing)``.
        peak_threshold: components (of the same connectivity, per class or channel) without a voxel whose
            foreground probability exceeds it are removed; None keeps them all.
        keep_largest: then only the largest connected component of the foreground survives (softmax: all classes
            >= 1 together, so a tumour keeps its sub-regions; sigmoid: per channel), as nnU-Net's
            ``remove_all_but_largest_component``.

    Returns:
        uint8 ``(B, *spatial)`` under softmax, ``(B, K, *spatial)`` under sigmoid.
    """
    check_option("activation", activation, ("softmax", "sigmoid"))
    if probabilities.ndim < 3:
        raise ValueError(f"probabilities must have shape (B, K, *spatial), got {tuple(probabilities.shape)}")
    peaked = None if peak_threshold is None else peaks(probabilities, activation, peak_threshold)
    return filter_components(to_labels(probabilities, activation, threshold), min_size=min_size, peaked=peaked,
                             channels=activation == "sigmoid", keep_largest=keep_largest)


def filter_components(labels: torch.Tensor, *, min_size: int = 0, peaked: torch.Tensor | None = None,
                      channels: bool, keep_largest: bool = False) -> torch.Tensor:
    """Zero the components of ``labels`` (uint8 ``(B, *spatial)`` labels or ``(B, K, *spatial)`` masks; per value or
    channel, full connectivity) that have fewer than ``min_size`` voxels or, with ``peaked`` (bool, the same shape),
    hold no ``True`` voxel of it (hysteresis). Each value's components are labelled once for both filters. Then, with
    ``keep_largest``, all but the largest component of what is left of each map's foreground (every value >= 1
    together; ties: the first in scan order).

    Written with scipy.ndimage.label + bincount rather than skimage's remove_small_objects, whose size
    keyword changed meaning in 0.26 (min_size "strictly smaller" -> max_size "smaller or equal").
    """
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0, got {min_size}")
    if min_size <= 1 and peaked is None and not keep_largest:
        return labels
    array = labels.cpu().numpy()
    maps = array.reshape(-1, *array.shape[2:]) if channels else array  # one binary or label map per entry
    seeds = None if peaked is None else peaked.cpu().numpy()
    seed_maps = None if seeds is None else (seeds.reshape(-1, *seeds.shape[2:]) if channels else seeds)
    structure = ndimage.generate_binary_structure(maps.ndim - 1, maps.ndim - 1)
    for i, volume in enumerate(maps):
        for value in np.unique(volume):
            if value == 0:
                continue
            components, n = ndimage.label(volume == value, structure=structure)
            drop = np.bincount(components.ravel(), minlength=n + 1) < min_size
            if seed_maps is not None:
                unpeaked = np.ones(n + 1, dtype=bool)
                unpeaked[np.unique(components[seed_maps[i] & (components > 0)])] = False
                drop |= unpeaked
            drop[0] = False
            volume[drop[components]] = 0
        if keep_largest:
            components, n = ndimage.label(volume > 0, structure=structure)
            if n > 1:
                sizes = np.bincount(components.ravel(), minlength=n + 1)
                sizes[0] = 0
                volume[(components > 0) & (components != sizes.argmax())] = 0
    return torch.from_numpy(array).to(labels.device)


def region_labels(regions: Mapping[str, Sequence[int]]) -> list[int]:
    """The label each region writes back (nnU-Net's ``regions_class_order``): the smallest label of the region that no
    later region holds. BraTS-2015 ``{WT: [1, 2, 3, 4], TC: [1, 3, 4], ET: [4]}`` gives ``[2, 1, 4]``."""
    names = list(regions)
    out = []
    for i, name in enumerate(names):
        later = {label for other in names[i + 1:] for label in regions[other]}
        own = sorted(set(regions[name]) - later)
        if not own:
            raise ValueError(f"region {name!r} {list(regions[name])} has no label outside the later regions, so it "
                             "cannot be written back as a label map; order the regions from the largest to the smallest")
        out.append(own[0])
    return out


def regions_to_labels(masks: torch.Tensor, values: Sequence[int]) -> torch.Tensor:
    """Region masks ``(B, R, *spatial)`` (0/1) -> a label map ``(B, *spatial)`` uint8: region r writes ``values[r]``,
    later regions overwriting earlier ones (nnU-Net's region-to-label rule)."""
    labels = torch.zeros((masks.shape[0], *masks.shape[2:]), dtype=torch.uint8, device=masks.device)
    for r, value in enumerate(values):
        labels[masks[:, r] > 0] = int(value)
    return labels

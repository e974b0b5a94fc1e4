"""Foreground/background voxel indices for lesion-centric patch sampling, small enough to cache.

MONAI's ``RandCropByPosNegLabeld`` draws patch centres from the flattened indices of foreground and
background voxels. Given none, it recomputes them from the label at every call; MONAI's own
``FgBgToIndicesd`` caches *all* of them, which costs 8 bytes per voxel (twice the float32 image: ~27 MB
for one cropped BraTS volume). Like nnU-Net v2, which keeps at most 10,000 sampled locations per class,
:class:`SampledLabelIndicesd` keeps a fixed-size random subset of each, drawn with a fixed seed so that
it is a deterministic property of the case and can live in the cached prefix of the pipeline.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.data import get_track_meta, set_track_meta
from monai.transforms import Compose, MapTransform

FG_SUFFIX = "_fg_indices"
BG_SUFFIX = "_bg_indices"


def sampled_label_indices(label: np.ndarray | torch.Tensor, max_indices: int | None,
                          seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Flattened spatial indices of foreground (any label > 0) and background voxels, each subsampled.

    Args:
        label: integer-valued label ``(1, *spatial)`` (any dtype; several channels are OR-ed).
        max_indices: keep at most this many indices of each kind (uniformly at random); None keeps all.
        seed: seed of the subsampling, so the result is a fixed function of the label.

    Returns:
        ``(foreground, background)`` int64 arrays of indices into ``np.ravel`` of the spatial shape, sorted.
    """
    array = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    foreground_mask = np.any(array > 0, axis=0).ravel()  # (C, *spatial) -> (N,)
    foreground = np.flatnonzero(foreground_mask)
    background = np.flatnonzero(~foreground_mask)
    if max_indices is None:
        return foreground, background
    rng = np.random.default_rng(seed)
    return _subsample(foreground, max_indices, rng), _subsample(background, max_indices, rng)


def _subsample(indices: np.ndarray, max_indices: int, rng: np.random.Generator) -> np.ndarray:
    if indices.size <= max_indices:
        return indices
    return np.sort(rng.choice(indices, size=max_indices, replace=False))


class SampledLabelIndicesd(MapTransform):
    """Store ``{key}_fg_indices`` and ``{key}_bg_indices`` for ``RandCropByPosNegLabeld``.

    Deterministic (not ``Randomizable``), so ``CacheDataset`` caches its output with the rest of the
    deterministic prefix. Apply it after every transform that changes the label's spatial shape.

    Args:
        keys: the label key (one).
        max_indices: indices kept per kind; None keeps all (as ``FgBgToIndicesd``).
    """

    def __init__(self, keys: str, max_indices: int | None = 10_000) -> None:
        super().__init__(keys)
        if max_indices is not None and max_indices < 1:
            raise ValueError(f"max_indices must be a positive number or None, got {max_indices}")
        self.max_indices = max_indices

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[f"{key}{FG_SUFFIX}"], d[f"{key}{BG_SUFFIX}"] = sampled_label_indices(d[key], self.max_indices)
        return d


class PlainCopyd(MapTransform):
    """Replace each key by a plain ``torch.Tensor`` copy (metadata dropped, storage not shared).

    Placed right after patch cropping (a crop is a view of the cached volume): patches then never share
    storage with the cache, so ``CacheDataset(copy_cache=False)`` can skip deep-copying whole cached
    volumes at every step.
    """

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            plain = value.as_tensor() if hasattr(value, "as_tensor") else torch.as_tensor(value)
            d[key] = plain.clone()
        return d


_GLOBALS_LOCK = threading.Lock()


class LeanCompose(Compose):
    """``Compose`` run with one torch intra-op thread and MetaTensor tracking off; both restored after.

    For the per-step part of the training pipeline (patch sampling and augmentation), whose outputs are
    plain tensors anyway. Measured on a busy 2-core machine (``benchmarks/data.py`` and its notes): the
    thread pool's synchronisation made these small operations ~5x slower, and MetaTensor bookkeeping
    doubled their cost. Both settings are process-global, so: DataLoader worker processes are unaffected
    by each other; a lock serialises concurrent callers in one process; and it must not run in a thread
    concurrent with training compute (thread-based loaders) — torch DataLoader processes are fine.
    """

    def __call__(self, input_, *args, **kwargs):
        with _GLOBALS_LOCK:
            threads, track = torch.get_num_threads(), get_track_meta()
            if threads != 1:
                torch.set_num_threads(1)
            set_track_meta(False)
            try:
                return super().__call__(input_, *args, **kwargs)
            finally:
                set_track_meta(track)
                if threads != 1:
                    torch.set_num_threads(threads)

"""Patch sampling: foreground/background voxel indices small enough to cache, and lesion-balanced sampling.

MONAI's ``RandCropByPosNegLabeld`` draws patch centres from the flattened indices of foreground and
background voxels. Given none, it recomputes them from the label at every call; MONAI's own
``FgBgToIndicesd`` caches *all* of them, which costs 8 bytes per voxel (twice the float32 image: ~27 MB
for one cropped BraTS volume). Like nnU-Net v2, which keeps at most 10,000 sampled locations per class,
:class:`SampledLabelIndicesd` keeps a fixed-size random subset of each, drawn with a fixed seed so that
it is a deterministic property of the case and can live in the cached prefix of the pipeline.

Lesion-balanced sampling (``sampling: lesions``): :class:`LesionComponentsd` labels the connected lesions once per
case (cached) and keeps up to 1,000 voxel indices of *each*; :class:`RandCropByLesiond` then centres a positive
patch on a lesion chosen first (uniformly, or with weight ∝ size^−β), so a 20-voxel lesion is sampled as often
as a 2,000-voxel one and none is lost to a global subsample.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.data import MetaTensor, get_track_meta, set_track_meta
from monai.transforms import Compose, MapTransform, RandCropByPosNegLabeld
from scipy import ndimage

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


LESION_SUFFIX = "_lesions"  # per-lesion voxel indices of a case (cached), read by RandCropByLesiond
SAMPLINGS = ("voxels", "lesions")


def lesion_components(label: np.ndarray | torch.Tensor, max_indices_per_lesion: int | None = 1000,
                      seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Connected lesions of a label (foreground = any label > 0, full connectivity) and their voxel indices.

    Args:
        label: integer-valued label ``(1, *spatial)`` (several channels are OR-ed).
        max_indices_per_lesion: keep at most this many (random, seeded) voxel indices of each lesion, so a
            large lesion costs no more memory than this and no lesion is dropped; None keeps all.

    Returns:
        ``instances`` int32 ``(1, *spatial)``: 0 background, k = lesion k (1..K); and ``{"indices"`` (int64,
        flattened spatial indices, lesion after lesion), ``"offsets"`` ``(K + 1,)`` (lesion k's indices are
        ``indices[offsets[k-1]:offsets[k]]``), ``"sizes"`` ``(K,)`` (full voxel counts)``}``.
    """
    array = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    foreground = np.any(array > 0, axis=0)  # (C, *spatial) -> (*spatial)
    structure = ndimage.generate_binary_structure(foreground.ndim, foreground.ndim)
    instances, count = ndimage.label(foreground, structure=structure)
    flat = instances.ravel()
    order = np.argsort(flat, kind="stable")  # voxel indices grouped by lesion id, background first
    sizes = np.bincount(flat, minlength=count + 1)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    rng = np.random.default_rng(seed)
    parts = [_subsample(order[starts[k]:starts[k + 1]], max_indices_per_lesion, rng)
             if max_indices_per_lesion is not None else order[starts[k]:starts[k + 1]] for k in range(1, count + 1)]
    indices = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum([p.size for p in parts], dtype=np.int64)])
    return instances[None].astype(np.int32), {"indices": indices, "offsets": offsets,
                                               "sizes": sizes[1:].astype(np.int64)}


class LesionComponentsd(MapTransform):
    """Store ``{key}_lesions`` (per-lesion voxel indices, for :class:`RandCropByLesiond`) and, if
    ``instance_key`` is given, the instance map (``(1, *spatial)`` float32 lesion ids, cropped and augmented with
    the patch for instance-aware losses). Deterministic, so it belongs to the cached prefix."""

    def __init__(self, keys: str, instance_key: str | None = None, max_indices_per_lesion: int | None = 1000) -> None:
        super().__init__(keys)
        self.instance_key, self.max_indices_per_lesion = instance_key, max_indices_per_lesion

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            instances, lesions = lesion_components(d[key], self.max_indices_per_lesion)
            d[f"{key}{LESION_SUFFIX}"] = lesions
            if self.instance_key is not None:
                reference = d[key]
                d[self.instance_key] = (MetaTensor(torch.from_numpy(instances).float(), meta=reference.meta)
                                        if isinstance(reference, MetaTensor) else torch.from_numpy(instances).float())
        return d


class RandCropByLesiond(RandCropByPosNegLabeld):
    """``RandCropByPosNegLabeld`` whose positive centres are drawn lesion by lesion, not voxel by voxel.

    MONAI draws a positive centre uniformly over lesion *voxels*, so a 2,000-voxel lesion is centred 100 times
    more often than a 20-voxel one. Here each positive sample first picks a connected lesion with weight
    ``size ** -size_power`` (0: every lesion equally often; 1: in inverse proportion to its size), then a voxel of
    it; negatives are background voxels as before. The lesions come from :class:`LesionComponentsd` under
    ``{label_key}_lesions``; the candidates are handed to MONAI's cropper as its foreground indices, so centre
    correction at the borders and the crops themselves are MONAI's.
    """

    def __init__(self, *args, size_power: float = 0.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not np.isfinite(size_power) or size_power < 0:
            raise ValueError(f"size_power must be a finite number >= 0, got {size_power}")
        self.size_power = float(size_power)

    def __call__(self, data: Mapping[Hashable, object], lazy: bool | None = None) -> list[dict[Hashable, object]]:
        d = dict(data)
        lesions = d.pop(f"{self.label_key}{LESION_SUFFIX}")
        sizes, offsets = lesions["sizes"], lesions["offsets"]
        if sizes.size:  # one candidate voxel per sample, each from a lesion drawn with the size weighting
            weights = sizes.astype(np.float64) ** -self.size_power
            picked = self.R.choice(sizes.size, size=self.cropper.num_samples, p=weights / weights.sum())
            d[self.fg_indices_key] = np.array([lesions["indices"][self.R.randint(offsets[k], offsets[k + 1])]
                                               for k in picked], dtype=np.int64)
        else:
            d[self.fg_indices_key] = np.zeros(0, dtype=np.int64)
        return super().__call__(d, lazy=lazy)


class WarnIfPaddedd(MapTransform):
    """Warn once per pipeline when a case is smaller than the patch along some axis, so it will be padded with
    zeros (a patch larger than the image ran at 20 s/step on a 3-case dataset: each step mostly pads).

    Deterministic: runs in the cached prefix, once per case, before training starts.
    """

    def __init__(self, keys: str, patch_size: list[int]) -> None:
        super().__init__(keys)
        self.patch_size, self.warned = list(patch_size), False

    def __call__(self, data: Mapping[Hashable, object]) -> Mapping[Hashable, object]:
        for key in self.key_iterator(data):
            shape = list(data[key].shape[1:])
            if not self.warned and any(s < p for s, p in zip(shape, self.patch_size, strict=False)):
                self.warned = True
                name = data.get("name", "a case")
                warnings.warn(f"patch size {self.patch_size} is larger than case '{name}' ({shape} voxels after "
                              "preprocessing): patches are padded with zeros; choose a patch that fits the images "
                              "(seg-plan sizes it from the data)", stacklevel=2)
        return data

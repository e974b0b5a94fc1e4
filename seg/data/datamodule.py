"""``SegDataModule``: a seeded train/validation split (or k folds), cached MONAI pipelines, class counts.

Every public value is a pure function of the dataset files and the constructor arguments: the split is
drawn from case names sorted alphabetically with ``numpy.random.default_rng(seed)``, the target spacing
is a median of header values, and class counts are exact integer voxel counts of the training labels.
So under multi-process (DDP) training every rank computes the same split, preprocessing and counts
without communicating; rank 0's ``prepare_data`` also writes the counts to
``<cache_dir>/class_frequencies.json`` (atomically, :mod:`seg.data.counts`), which other ranks and later runs read
when it matches the current training split. The split itself is :func:`seg.data.splits.split_cases`.

Caching: with ``cache=True`` both datasets are MONAI ``CacheDataset``s. The training set keeps, per case,
the deterministic prefix (loaded, reoriented, cropped, resampled, normalised, padded volume plus sampled
lesion/background indices) in memory; patches and augmentation are drawn fresh at every step, each patch
copied out of the cached volume (so the cache is shared, never deep-copied). The validation set keeps
whole preprocessed volumes. ``cache=False`` reruns everything per step (MONAI ``Dataset``).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from monai.data import CacheDataset, Dataset, list_data_collate
from monai.data.utils import worker_init_fn
from torch.utils.data import DataLoader, RandomSampler

from seg.data.counts import (
    COUNT_SOURCES,
    count_patches,
    count_volumes,
    counts_key,
    read_cached_counts,
    write_cached_counts,
)
from seg.data.layouts import Case, DatasetSpec, load_dataset
from seg.data.sampling import SAMPLINGS
from seg.data.splits import split_cases
from seg.data.transforms import Preprocessing, median_spacing, train_transforms, val_transforms
from seg.errors import check_option
from seg.io import image_shape

DEFAULT_PATCH = {2: [128, 128], 3: [64, 64, 64]}


class SegDataModule(pl.LightningDataModule):
    """Training patches and whole validation volumes from an MSD / nnU-Net / folders dataset.

    Args:
        dataset: path to a ``dataset.json`` or dataset folder (see :func:`seg.data.layouts.load_dataset`),
            or a ``DatasetSpec``.
        spatial_dims: 3 (3D patches) or 2 (2D patches: slices of 3D volumes, or native 2D images).
        patch_size: training patch ``(H, W)`` or ``(D, H, W)`` in voxels after resampling; None gives
            64³ (3D) or 128² (2D).
        batch_size: cases per training batch; a batch holds ``batch_size * samples_per_volume`` patches.
        samples_per_volume: patches drawn from each loaded case (``num_samples`` of RandCropByPosNegLabeld).
        pos_fraction: probability that a patch is centred on a lesion (foreground) voxel; nnU-Net uses 0.33.
        val_fraction: share of cases held out for validation (ignored when ``num_folds`` is set).
        num_folds: k of a k-fold split; ``fold`` picks the validation fold.
        fold: validation fold index, ``0..num_folds-1``.
        seed: seed of the split and of the transforms' random state.
        num_workers: DataLoader worker processes (and threads filling the cache).
        target_spacing: "median" (per-axis median over the dataset's headers, as nnU-Net), a spacing per
            axis in RAS order, or None (no resampling). For 2D slices of 3D volumes the through-plane axis is
            never resampled.
        normalization: "zscore" (inside the non-zero region, per channel), "ct" (window ``ct_window``) or
            "none".
        ct_window: ``[lo, hi]`` for ``normalization="ct"``, e.g. ``[-100, 200]``.
        cache: keep the deterministic part of each case in memory (``CacheDataset``).
        cache_dir: folder for ``class_frequencies.json`` (the run directory); None: no file.
        augment: flips, 90° turns, small affine, intensity scale/shift, noise, gamma.
        sampling: ``"voxels"`` (a positive patch is centred on a lesion voxel drawn uniformly: large lesions
            dominate) or ``"lesions"`` (a connected lesion is drawn first, with weight ``size **
            -lesion_size_power``, then a voxel of it; :class:`seg.data.sampling.RandCropByLesiond`).
        lesion_size_power: β of ``"lesions"``: 0 every lesion equally often, 1 in inverse proportion to size.
        instance_maps: also crop each patch's lesion-id map (``batch["instance"]``) for instance-aware losses
            (linked from ``model.blob_weight > 0`` by the command line).
        class_counts_from: ``"volumes"`` (whole training label files) or ``"patches"`` (``count_patches``
            training patches drawn through this pipeline, what the loss sees; :mod:`seg.data.counts`).
        count_patches: patches counted for ``class_counts_from="patches"``.
        regions: train on overlapping binary label regions instead of classes (sigmoid per region), e.g. BraTS
            ``{WT: [1, 2, 3, 4], TC: [1, 3, 4], ET: [4]}``; the label becomes one channel per region
            (:class:`seg.data.transforms.LabelToRegionsd`) and the network has one output per region.
        steps_per_epoch: an epoch is this many batches of cases drawn with replacement (nnU-Net: 250), whatever the
            number of cases, so ``max_epochs`` and validation cadence mean the same on 3 and on 300 cases; None: one
            pass over the training cases per epoch.
    """

    def __init__(
        self,
        dataset: str | DatasetSpec,
        spatial_dims: int = 3,
        patch_size: list[int] | None = None,
        batch_size: int = 2,
        samples_per_volume: int = 2,
        pos_fraction: float = 0.33,
        val_fraction: float = 0.2,
        num_folds: int | None = None,
        fold: int = 0,
        seed: int = 0,
        num_workers: int = 0,
        target_spacing: list[float] | str | None = "median",
        normalization: str = "zscore",
        ct_window: list[float] | None = None,
        cache: bool = True,
        cache_dir: str | None = None,
        augment: bool = True,
        sampling: str = "voxels",
        lesion_size_power: float = 0.0,
        instance_maps: bool = False,
        class_counts_from: str = "volumes",
        count_patches: int = 400,
        steps_per_epoch: int | None = None,
        regions: dict[str, list[int]] | None = None,
    ) -> None:
        super().__init__()
        check_option("sampling", sampling, SAMPLINGS)
        check_option("class_counts_from", class_counts_from, COUNT_SOURCES)
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if isinstance(target_spacing, str) and target_spacing != "median":
            raise ValueError(f"target_spacing must be 'median', a list of spacings or null, got {target_spacing!r}")
        if batch_size < 1 or num_workers < 0:
            raise ValueError(f"batch_size must be >= 1 and num_workers >= 0, got {batch_size} and {num_workers}")
        self.dataset = dataset
        self.spatial_dims = spatial_dims
        self.patch_size = list(patch_size) if patch_size is not None else DEFAULT_PATCH[spatial_dims]
        if len(self.patch_size) != spatial_dims:
            raise ValueError(f"patch_size {self.patch_size} has {len(self.patch_size)} values but spatial_dims "
                             f"is {spatial_dims}")
        if any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in self.patch_size):
            raise ValueError(f"patch_size must be positive whole numbers of voxels, got {self.patch_size}")
        self.batch_size = batch_size
        self.samples_per_volume = samples_per_volume
        self.pos_fraction = pos_fraction
        self.seed = seed
        self.num_workers = num_workers
        self.target_spacing = target_spacing
        self.normalization = normalization
        self.ct_window = ct_window
        self.cache = cache
        self.cache_dir = cache_dir
        self.augment = augment
        self.sampling, self.lesion_size_power, self.instance_maps = sampling, lesion_size_power, instance_maps
        self.class_counts_from, self.count_patches = class_counts_from, count_patches
        if steps_per_epoch is not None and steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1 or null, got {steps_per_epoch}")
        self.steps_per_epoch = steps_per_epoch
        if regions is not None and (not regions or any(not v or min(v) < 1 for v in regions.values())):
            raise ValueError(f"regions must map names to non-empty lists of labels >= 1, got {regions}")
        self.regions = None if regions is None else {str(k): [int(x) for x in v] for k, v in regions.items()}
        self._split_args = {"seed": seed, "val_fraction": val_fraction, "num_folds": num_folds, "fold": fold}
        self._spec: DatasetSpec | None = None
        self._counts: np.ndarray | None = None
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None

    # ------------------------------------------------------------------ dataset facts (no setup needed)
    @property
    def spec(self) -> DatasetSpec:
        if self._spec is None:
            self._spec = self.dataset if isinstance(self.dataset, DatasetSpec) else load_dataset(self.dataset)
            unlabelled = [c.name for c in self._spec.cases if c.label is None]
            if unlabelled:
                raise ValueError(f"training cases without a label file: {unlabelled[:5]}; "
                                 "every training case needs one")
            if len(self._spec.cases) < 2:
                raise ValueError(f"dataset '{self._spec.root}' has {len(self._spec.cases)} training case(s); "
                                 "a train/validation split needs at least 2")
        return self._spec

    @property
    def train_cases(self) -> list[Case]:
        return self._split[0]

    @property
    def val_cases(self) -> list[Case]:
        return self._split[1]

    @cached_property
    def _split(self) -> tuple[list[Case], list[Case]]:
        by_name = {c.name: c for c in self.spec.cases}
        train, val = split_cases(list(by_name), **self._split_args)
        return [by_name[n] for n in train], [by_name[n] for n in val]

    @property
    def num_classes(self) -> int:
        """Classes including background (the network's output channels for softmax)."""
        return self.spec.num_classes

    @property
    def out_channels(self) -> int:
        """The network's outputs: one per class (softmax), or one per region (sigmoid, with ``regions``)."""
        return len(self.regions) if self.regions else self.num_classes

    @property
    def in_channels(self) -> int:
        return len(self.spec.channel_names) or len(self.spec.cases[0].images)

    @property
    def label_names(self) -> dict[int, str]:
        return dict(self.spec.labels)

    @property
    def preprocessing(self) -> dict[str, Any]:
        """Plain dict for checkpoints; ``Preprocessing.from_dict`` + ``inference_transforms`` replay it."""
        return self.preprocessing_config.to_dict()

    @cached_property
    def preprocessing_config(self) -> Preprocessing:
        first_images = [c.images[0] for c in self.spec.cases]
        image_dims = min(len(image_shape(first_images[0])), 3)
        if self.spatial_dims == 3 and image_dims == 2:
            raise ValueError(f"'{first_images[0]}' is a 2D image; set spatial_dims: 2 to train on 2D images")
        spacing: list[float] | None
        if self.target_spacing == "median":
            spacing = list(median_spacing(first_images))
        else:
            spacing = None if self.target_spacing is None else [float(s) for s in self.target_spacing]
        if spacing is not None and self.spatial_dims == 2 and image_dims == 3:
            spacing = [*spacing[:2], -1.0]  # slices: keep the through-plane spacing (nnU-Net 2D does too)
        names = tuple(self.spec.channel_names) or tuple(f"channel_{i}" for i in range(self.in_channels))
        return Preprocessing(
            spatial_dims=self.spatial_dims, image_dims=image_dims,
            target_spacing=None if spacing is None else tuple(spacing), normalization=self.normalization,
            ct_window=None if self.ct_window is None else tuple(self.ct_window),
            orientation="RAS" if image_dims == 3 else None, crop_foreground=True, channel_names=names,
        )

    # ------------------------------------------------------------------ class counts (for α)
    def class_counts(self) -> np.ndarray:
        """Voxel count per class of the training split, float64 ``(num_classes,)``, by ``class_counts_from``
        (:mod:`seg.data.counts`); cached in ``<cache_dir>/class_frequencies.json``."""
        if self._counts is None:
            key = counts_key(self.num_classes, self.spec.ignore_label, [c.name for c in self.train_cases],
                             self.class_counts_from, self.count_patches)
            self._counts = read_cached_counts(self.cache_dir, key)
            if self._counts is None:
                if self.class_counts_from == "volumes":
                    self._counts = count_volumes([c.label for c in self.train_cases], self.num_classes,
                                                 self.spec.ignore_label)
                else:
                    self.setup("fit")
                    self._counts = count_patches(self.train_dataset, self.num_classes, self.count_patches,
                                                 seed=self.seed, ignore_index=self.spec.ignore_label)
                    self.train_dataset.transform.set_random_state(seed=self.seed)  # training draws as without
                write_cached_counts(self.cache_dir, key, self._counts)
        return self._counts.copy()

    # ------------------------------------------------------------------ Lightning hooks
    def prepare_data(self) -> None:
        """Rank 0 only: count classes once and write the JSON the other ranks may read."""
        self.class_counts()

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", None) and self.train_dataset is None:
            transform = train_transforms(self.preprocessing_config, self.patch_size,
                                         samples_per_volume=self.samples_per_volume,
                                         pos_fraction=self.pos_fraction, augment=self.augment,
                                         sampling=self.sampling, lesion_size_power=self.lesion_size_power,
                                         instances=self.instance_maps, regions=self.regions)
            transform.set_random_state(seed=self.seed)
            self.train_dataset = self._dataset(self.train_cases, transform)
        if stage in ("fit", "validate", None) and self.val_dataset is None:
            self.val_dataset = self._dataset(self.val_cases, val_transforms(self.preprocessing_config, self.regions))

    def _dataset(self, cases: list[Case], transform) -> Dataset:
        items = [{**c.as_dict(), "name": c.name, "index": i} for i, c in enumerate(cases)]  # index: the tally's row
        if not self.cache:
            return Dataset(items, transform=transform)
        # copy_cache=False: the training pipeline copies each patch out of the cached volume (PlainCopyd)
        # and validation transforms are all cached, so no step writes into cached tensors.
        return CacheDataset(items, transform=transform, cache_rate=1.0, num_workers=max(self.num_workers, 1),
                            copy_cache=False)

    def train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            self.setup("fit")
        sampler = None
        if self.steps_per_epoch is not None:  # a fixed number of steps per epoch, cases drawn with replacement
            generator = torch.Generator().manual_seed(self.seed)
            sampler = RandomSampler(self.train_dataset, replacement=True, generator=generator,
                                    num_samples=self.steps_per_epoch * self.batch_size)
        return DataLoader(self.train_dataset, batch_size=self.batch_size, shuffle=sampler is None, sampler=sampler,
                          num_workers=self.num_workers, collate_fn=list_data_collate,
                          worker_init_fn=worker_init_fn, persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader | list:
        """Whole preprocessed volumes, batch size 1: ``image`` ``(1, C, *spatial)`` and ``label``
        ``(1, 1, *spatial)`` MetaTensors (spatial is 3D even in 2D mode when the images are volumes)."""
        if self.val_dataset is None:
            self.setup("validate")
        if len(self.val_dataset) == 0:
            return []
        return DataLoader(self.val_dataset, batch_size=1, shuffle=False, num_workers=self.num_workers,
                          collate_fn=list_data_collate, persistent_workers=self.num_workers > 0)

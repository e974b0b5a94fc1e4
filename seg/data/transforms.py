"""MONAI pipelines: the deterministic preprocessing (replayed at inference) and the training pipeline.

Order of the deterministic part, as in nnU-Net v2 (crop, resample, normalise)::

    load (channels stacked) -> orient to RAS -> crop to the non-zero region -> resample to target spacing
    -> normalise (z-score inside the non-zero region, or a CT window)

Training adds: pad to the patch size -> sampled foreground/background indices (cached) ->
lesion-centric patches (``RandCropByPosNegLabeld``, share ``pos_fraction`` centred on a lesion voxel) ->
[2D from 3D volumes: patches ``(H, W, 1)``, last axis squeezed] -> cheap augmentation -> plain tensors.
Everything before the first random transform is what ``CacheDataset`` keeps in memory.

:class:`Preprocessing` is the plain-typed description of the deterministic part; checkpoints store
``Preprocessing.to_dict()`` and inference rebuilds the same pipeline with :func:`inference_transforms`,
whose ``inverse`` (or :func:`invert_to_input_space`) puts a prediction back on the input's grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    CropForegroundd,
    DeleteItemsd,
    EnsureTyped,
    Invertd,
    LoadImaged,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    RandCropByPosNegLabeld,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
    SqueezeDimd,
)

from seg.data.augmentation import augmentation
from seg.data.sampling import (
    BG_SUFFIX,
    FG_SUFFIX,
    LESION_SUFFIX,
    SAMPLINGS,
    LeanCompose,
    LesionComponentsd,
    PlainCopyd,
    RandCropByLesiond,
    SampledLabelIndicesd,
    WarnIfPaddedd,
)
from seg.errors import check_option
from seg.io import ras_spacing
from seg.types import PathLike

NORMALIZATIONS = ("zscore", "ct", "none")
KEYS = ("image", "label")
INSTANCE_KEY = "instance"  # lesion ids (connected components), cropped and augmented with the patch


@dataclass(frozen=True)
class Preprocessing:
    """The deterministic preprocessing, in plain types (stored in checkpoints, replayed at inference).

    Attributes:
        spatial_dims: dimensions the network sees, 2 or 3.
        image_dims: dimensions of the stored images, 2 (native 2D) or 3. ``spatial_dims=2, image_dims=3``
            means 2D slices (last RAS axis, axial) of 3D volumes.
        target_spacing: spacing to resample to, one value per image axis in RAS order; a non-positive
            value keeps that axis' spacing (MONAI ``Spacing``); None: no resampling.
        normalization: "zscore" (per channel, inside the non-zero region), "ct" (clip ``ct_window`` and
            scale to [0, 1]) or "none".
        ct_window: ``(lo, hi)`` intensity window, required for "ct".
        orientation: axis codes images are reoriented to; None for native 2D images (their in-plane
            affines are often degenerate), which are used as stored.
        crop_foreground: crop to the bounding box of non-zero voxels (any channel).
        channel_names: one name per input channel.
    """

    spatial_dims: int = 3
    image_dims: int = 3
    target_spacing: tuple[float, ...] | None = None
    normalization: str = "zscore"
    ct_window: tuple[float, float] | None = None
    orientation: str | None = "RAS"
    crop_foreground: bool = True
    channel_names: tuple[str, ...] = ("image",)

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3) or self.image_dims not in (2, 3):
            raise ValueError(f"spatial_dims and image_dims must be 2 or 3, got {self.spatial_dims} and "
                             f"{self.image_dims}")
        if self.spatial_dims < self.image_dims - 1 or self.spatial_dims > self.image_dims:
            raise ValueError(f"a {self.spatial_dims}D network cannot be trained on {self.image_dims}D images; "
                             f"use spatial_dims={self.image_dims}")
        check_option("normalization", self.normalization, NORMALIZATIONS)
        if self.normalization == "ct" and (self.ct_window is None or len(self.ct_window) != 2
                                           or not self.ct_window[0] < self.ct_window[1]):
            raise ValueError(f"normalization 'ct' needs ct_window [lo, hi] with lo < hi, got {self.ct_window}")
        if self.target_spacing is not None and len(self.target_spacing) != self.image_dims:
            raise ValueError(f"target_spacing {list(self.target_spacing)} has {len(self.target_spacing)} values "
                             f"but the images are {self.image_dims}D: give one per axis (RAS order)")

    def to_dict(self) -> dict:
        """Plain dict (lists, not tuples) for checkpoints and YAML."""
        out = asdict(self)
        for name in ("target_spacing", "ct_window", "channel_names"):
            out[name] = None if out[name] is None else list(out[name])
        return out

    @classmethod
    def from_dict(cls, values: dict) -> Preprocessing:
        """Inverse of :meth:`to_dict`; unknown keys are errors (a checkpoint from another version)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown preprocessing keys {unknown}; expected a subset of {sorted(known)}")
        kwargs = dict(values)
        for name in ("target_spacing", "ct_window", "channel_names"):
            if kwargs.get(name) is not None:
                kwargs[name] = tuple(kwargs[name])
        return cls(**kwargs)


def median_spacing(paths: Sequence[PathLike]) -> tuple[float, ...]:
    """Per-axis median of :func:`ras_spacing` over ``paths`` (nnU-Net's default target spacing)."""
    if not paths:
        raise ValueError("median_spacing needs at least one image path, got none")
    spacings = np.array([ras_spacing(p) for p in paths], dtype=np.float64)  # (N, ndim)
    return tuple(float(s) for s in np.median(spacings, axis=0))


def _nonzero(x: torch.Tensor) -> torch.Tensor:
    """Foreground of ``CropForegroundd``: any non-zero voxel (module-level so workers can pickle it)."""
    return x != 0


def deterministic_transforms(cfg: Preprocessing, keys: Sequence[str] = KEYS, *,
                             allow_missing_keys: bool = False) -> list[MapTransform]:
    """The deterministic preprocessing of ``keys`` (first key: image, second: label, resampled nearest)."""
    keys = list(keys)
    image_key = keys[0]
    modes = ["bilinear"] + ["nearest"] * (len(keys) - 1)
    missing = {"allow_missing_keys": allow_missing_keys}
    steps: list[MapTransform] = [
        LoadImaged(keys, reader="NibabelReader", ensure_channel_first=True, image_only=True, **missing),
    ]
    if cfg.orientation is not None:
        steps.append(Orientationd(keys, axcodes=cfg.orientation[: cfg.image_dims], labels=None, **missing))
    if cfg.crop_foreground:
        steps.append(CropForegroundd(keys, source_key=image_key, select_fn=_nonzero, allow_smaller=True,
                                     start_coord_key=None, end_coord_key=None, **missing))
    if cfg.target_spacing is not None:
        steps.append(Spacingd(keys, pixdim=cfg.target_spacing, mode=modes, **missing))
    if cfg.normalization == "zscore":
        steps.append(NormalizeIntensityd(image_key, nonzero=True, channel_wise=True))
    elif cfg.normalization == "ct":
        lo, hi = cfg.ct_window
        steps.append(ScaleIntensityRanged(image_key, a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True))
    return steps


def inference_transforms(cfg: Preprocessing | dict, *, with_label: bool = True) -> Compose:
    """Deterministic, invertible pipeline for ``{"image": paths[, "label": path]}`` (label optional).

    The output image is a MetaTensor ``(C, *spatial)`` float32 whose ``applied_operations`` let
    :func:`invert_to_input_space` map a prediction back onto the input file's grid.
    """
    cfg = Preprocessing.from_dict(cfg) if isinstance(cfg, dict) else cfg
    keys = KEYS if with_label else KEYS[:1]
    return Compose(deterministic_transforms(cfg, keys, allow_missing_keys=True))


class LabelToRegionsd(MapTransform):
    """A label map ``(1, *spatial)`` -> binary region channels ``(R, *spatial)`` float32, one per region of
    ``regions`` ({name: labels}, e.g. BraTS ``{"WT": [1, 2, 3, 4], "TC": [1, 3, 4], "ET": [4]}``); MONAI's
    ``ConvertToMultiChannelBasedOnBratsClassesd`` for any regions. Deterministic (cached)."""

    def __init__(self, keys: str, regions: dict[str, list[int]]) -> None:
        super().__init__(keys)
        self.regions = {name: list(v) for name, v in regions.items()}

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            label = d[key]
            channels = [torch.isin(torch.as_tensor(label[0]), torch.tensor(v)) for v in self.regions.values()]
            stacked = torch.stack(channels).float()
            d[key] = MetaTensor(stacked, meta=label.meta) if isinstance(label, MetaTensor) else stacked
        return d


def val_transforms(cfg: Preprocessing, regions: dict[str, list[int]] | None = None) -> Compose:
    """Whole preprocessed volumes with labels (as region channels with ``regions``), MetaTensors (validation)."""
    steps = deterministic_transforms(cfg, KEYS)
    return Compose(steps + ([LabelToRegionsd("label", regions)] if regions else []))


def invert_to_input_space(prediction: torch.Tensor, image: MetaTensor, transforms: Compose, *,
                          nearest: bool = True) -> MetaTensor:
    """Put a prediction made on a preprocessed image back onto the original file's grid.

    Args:
        prediction: ``(K, *spatial)`` on the grid of ``image`` (labels or probabilities; no batch axis).
        image: the preprocessed image ``(C, *spatial)`` MetaTensor that ``transforms`` produced.
        transforms: the pipeline that produced ``image`` (e.g. :func:`inference_transforms`).
        nearest: nearest-neighbour resampling (labels); False interpolates as the image was (probabilities).

    Returns:
        MetaTensor ``(K, *original spatial)`` whose ``affine`` is the input file's affine.
    """
    if tuple(prediction.shape[1:]) != tuple(image.shape[1:]):
        raise ValueError(f"prediction has spatial shape {tuple(prediction.shape[1:])} but the preprocessed "
                         f"image has {tuple(image.shape[1:])}; predict on the preprocessed image")
    inverter = Invertd("pred", transform=transforms, orig_keys="image", nearest_interp=nearest)
    return inverter({"pred": prediction, "image": image})["pred"]


def train_transforms(cfg: Preprocessing, patch_size: Sequence[int], *, samples_per_volume: int = 2,
                     pos_fraction: float = 0.33, augment: bool = True, max_indices: int | None = 10_000,
                     sampling: str = "voxels", lesion_size_power: float = 0.0, instances: bool = False,
                     regions: dict[str, list[int]] | None = None) -> Compose:
    """Deterministic prefix + lesion-centric patches + augmentation.

    Each input case yields ``samples_per_volume`` dicts with ``image`` float32 ``(C, *patch_size)`` and
    ``label`` float32 ``(1, *patch_size)`` (integral values), plain tensors (no metadata: faster steps), and with
    ``instances`` an ``instance`` map ``(1, *patch_size)`` (0 background, k lesion k of the case).
    A patch is centred on a foreground voxel with probability ``pos_fraction``, else on a background voxel:
    ``sampling="voxels"`` draws the voxel uniformly over all lesion voxels (MONAI's ``RandCropByPosNegLabeld``),
    ``"lesions"`` draws a lesion first, with weight ``size ** -lesion_size_power``, then a voxel of it
    (:class:`seg.data.sampling.RandCropByLesiond`). With ``regions`` the label becomes region channels
    ``(R, *patch_size)`` (:class:`LabelToRegionsd`). Augmentation: :mod:`seg.data.augmentation`.
    """
    check_option("sampling", sampling, SAMPLINGS)
    if len(patch_size) != cfg.spatial_dims:
        raise ValueError(f"patch_size {list(patch_size)} has {len(patch_size)} values but spatial_dims is "
                         f"{cfg.spatial_dims}")
    if not 0.0 <= pos_fraction <= 1.0:
        raise ValueError(f"pos_fraction must be in [0, 1], got {pos_fraction}")
    if samples_per_volume < 1:
        raise ValueError(f"samples_per_volume must be >= 1, got {samples_per_volume}")
    slices = cfg.spatial_dims == 2 and cfg.image_dims == 3
    crop_size = [*patch_size, 1] if slices else list(patch_size)  # 2D from 3D: (H, W, 1) patches
    keys = [*KEYS, INSTANCE_KEY] if instances else list(KEYS)
    cached = [*deterministic_transforms(cfg, KEYS), *([LabelToRegionsd("label", regions)] if regions else []),
              WarnIfPaddedd("image", crop_size), SpatialPadd(KEYS, spatial_size=crop_size),
              SampledLabelIndicesd("label", max_indices=max_indices)]
    if sampling == "lesions" or instances:
        cached.append(LesionComponentsd("label", instance_key=INSTANCE_KEY if instances else None))
    crop = RandCropByLesiond if sampling == "lesions" else RandCropByPosNegLabeld
    options = {"size_power": lesion_size_power} if sampling == "lesions" else {}
    per_step: list[MapTransform] = [
        crop(keys, label_key="label", spatial_size=crop_size, pos=pos_fraction, neg=1.0 - pos_fraction,
             num_samples=samples_per_volume, fg_indices_key=f"label{FG_SUFFIX}",
             bg_indices_key=f"label{BG_SUFFIX}", **options),
    ]
    if sampling != "lesions" and instances:  # the per-lesion indices are only for RandCropByLesiond
        per_step.insert(0, DeleteItemsd(f"label{LESION_SUFFIX}"))
    if slices:
        per_step.append(SqueezeDimd(keys, dim=-1))
    per_step.append(PlainCopyd(keys))  # patches own their memory: the cache is never written to
    if augment:
        per_step += augmentation(cfg.spatial_dims, patch_size, keys)
    per_step.append(EnsureTyped(keys, data_type="tensor", dtype=torch.float32, track_meta=False))
    # The nested Compose is Randomizable, so CacheDataset caches exactly ``cached``.
    return Compose([*cached, LeanCompose(per_step)])

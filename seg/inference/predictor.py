"""One case in, its mask (and probabilities) out in exactly the input's space: checkpoints or an exported model,
their preprocessing, sliding windows on a device, the inverse of the preprocessing, postprocessing.

- **Models**: one checkpoint, several (an ensemble: the networks' logits are averaged per window, which equals
  averaging the blended logits, nnU-Net's fold ensemble), or an export of :mod:`seg.inference.export`. Checkpoints
  that differ in preprocessing, labels, activation, window or channels are refused, naming the two files.
- **Memory**: without probabilities the labels path runs end to end: :func:`predict_labels` (slab by slab) on the
  preprocessed grid, then the inverse of the preprocessing on the uint8 labels (nearest neighbour), so no
  ``(K, *volume)`` float tensor exists. With probabilities, :func:`predict_volume` gives them, they are inverted
  linearly onto the input grid, and the labels come from them (as before). Without resampling the two give the same
  mask; with it the labels path resamples labels, the probability path probabilities.
- **Device**: the network and each batch of windows run on ``device``; the image and the output stay on the CPU and
  every finished slab leaves the device at once, so device memory holds windows and slabs, never volumes.
- **Compiled** (``Settings.compile``): the network is compiled once per process for the window batch
  (:mod:`seg.inference.compiled`) on its first case, and every later case reuses the graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from torch import nn

from seg.data.transforms import Preprocessing, inference_transforms, invert_to_input_space
from seg.errors import CheckpointError
from seg.inference.checkpoint import InferenceSpec, load_for_inference
from seg.inference.compiled import compile_for_windows
from seg.inference.postprocess import min_voxels, postprocess, region_labels, regions_to_labels
from seg.inference.sliding_window import predict_labels, predict_volume
from seg.io import image_shape
from seg.networks import window_network
from seg.types import PathLike

COMPATIBLE = ("preprocessing", "label_names", "activation", "roi_size")


class Ensemble(nn.Module):
    """Mean of the logits of several networks (each maps ``(n, C, *roi)`` to ``(n, K, *roi)``)."""

    def __init__(self, networks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(networks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x).float() for m in self.members]).mean(0)


def checkpoints_of(paths: Sequence[PathLike]) -> list[Path]:
    """Checkpoint files from files and run folders (a folder: its ``best.ckpt``, or every ``*/best.ckpt`` below it:
    the folds of a cross-validation)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            inside = [path / "best.ckpt"] if (path / "best.ckpt").is_file() else sorted(path.glob("**/best.ckpt"))
            if not inside:
                raise FileNotFoundError(f"run folder '{path}' holds no best.ckpt (nor */best.ckpt of folds)")
            found += inside
        else:
            found.append(path)
    return found


def load_models(checkpoints: Sequence[PathLike]) -> tuple[nn.Module, InferenceSpec]:
    """The network (an :class:`Ensemble` of several) and the shared spec; incompatible checkpoints raise."""
    paths = checkpoints_of(checkpoints)
    loaded = [load_for_inference(p) for p in paths]
    first_path, (_, first) = paths[0], loaded[0]
    for path, (_, spec) in zip(paths[1:], loaded[1:], strict=True):
        for name in COMPATIBLE:
            if getattr(spec, name) != getattr(first, name):
                raise CheckpointError(f"checkpoints '{first_path}' and '{path}' cannot be ensembled: their {name} "
                                      f"differ ({getattr(first, name)!r} vs {getattr(spec, name)!r})")
        if (spec.network.in_channels, spec.network.out_channels) != (first.network.in_channels, first.network.out_channels):
            raise CheckpointError(f"checkpoints '{first_path}' and '{path}' cannot be ensembled: their networks take "
                                  "or give different numbers of channels")
    networks = [n for n, _ in loaded]
    return (networks[0] if len(networks) == 1 else Ensemble(networks).eval()), first


DEFAULT_BATCH_SIZE = 2  # windows a network call, unless the network prefers another (``preferred_batch_size``)


@dataclass
class Settings:
    """Prediction options; ``None`` takes the checkpoint's value (its postprocessing) or the default."""

    overlap: float = 0.5
    # windows a call; None: the network's ``preferred_batch_size`` (OpenVINO: 1), else 2 (torch on 2 CPU threads: as
    # fast as 4, BraTS 7.6 vs 7.9 s, peak 373 vs 574 MB)
    batch_size: int | None = None
    tta: bool = False
    min_size: int | None = None
    min_size_mm3: float | None = None
    threshold: float | None = None
    peak_threshold: float | None = None
    keep_largest: bool | None = None  # only the largest foreground component (nnU-Net's postprocessing)
    dtype: torch.dtype | None = None  # mixed precision of the network (None: float32)
    compile: bool = False  # torch.compile the network for the window batch (seg.inference.compiled)

    def resolved(self, spec: InferenceSpec) -> Settings:
        post = spec.postprocessing
        given_size = self.min_size is not None or self.min_size_mm3 is not None
        return Settings(**{**{f.name: getattr(self, f.name) for f in fields(self)},
                           "min_size": (self.min_size or 0) if given_size else int(post.get("min_size", 0)),
                           "min_size_mm3": self.min_size_mm3 if given_size else post.get("min_size_mm3"),
                           "threshold": self.threshold if self.threshold is not None else post.get("threshold"),
                           "peak_threshold": self.peak_threshold if self.peak_threshold is not None
                           else post.get("peak_threshold"),
                           "keep_largest": self.keep_largest if self.keep_largest is not None
                           else bool(post.get("keep_largest", False))})


class CasePredictor:
    """A network (or ensemble) with its spec, predicting one case at a time on a device."""

    def __init__(self, network: nn.Module, spec: InferenceSpec, settings: Settings | None = None) -> None:
        self.network, self.spec = network, spec
        self.settings = (settings or Settings()).resolved(spec)
        if self.settings.batch_size is None:
            self.settings.batch_size = getattr(network, "preferred_batch_size", DEFAULT_BATCH_SIZE)
        self.preprocessing = Preprocessing.from_dict(spec.preprocessing)
        self.transforms = inference_transforms(self.preprocessing, with_label=False)
        self._compiled: tuple[type, nn.Module] | None = None  # (the window network's type, its compiled form)

    @classmethod
    def from_checkpoints(cls, checkpoints: Sequence[PathLike], settings: Settings | None = None) -> CasePredictor:
        return cls(*load_models(checkpoints), settings)

    def preprocess(self, images: Sequence[Path]) -> MetaTensor:
        """The checked, preprocessed image ``(C, *spatial)`` of one case (its metadata keeps the inverse)."""
        if len(images) != self.spec.network.in_channels:
            raise ValueError(f"case '{images[0]}' has {len(images)} image file(s) but the model takes "
                             f"{self.spec.network.in_channels} channel(s)")
        for path in images:  # read through seg.io first: every bad file is named, with what is wrong with it
            dims = min(len(image_shape(path)), 3)  # a 4D file holds channels (as the data module counts)
            if dims != self.preprocessing.image_dims:
                raise ValueError(f"the model was trained on {self.preprocessing.image_dims}D images but '{path}' is "
                                 f"a {dims}D image")
        try:
            image = self.transforms({"image": [str(p) for p in images]})["image"]
        except RuntimeError as error:  # MONAI wraps every failure in "applying transform <object at 0x...>"
            cause = error
            while cause.__cause__ is not None:
                cause = cause.__cause__
            raise ValueError(f"cannot preprocess case '{images[0]}': {type(cause).__name__}: {cause}") from None
        if not torch.isfinite(image.as_tensor()).all():
            raise ValueError(f"case '{images[0]}' has NaN or inf voxels")
        if image.shape[0] != self.spec.network.in_channels:
            raise ValueError(f"case '{images[0]}' has {image.shape[0]} channel(s) but the model takes "
                             f"{self.spec.network.in_channels}")
        return image

    def predict(self, image: MetaTensor, *, probabilities: bool = False, device: torch.device | str = "cpu"
                ) -> tuple[np.ndarray, np.ndarray | None]:
        """Labels ``(*input spatial)`` uint8 and, if asked, probabilities ``(K, *input spatial)`` float32."""
        s, device = self.settings, torch.device(device)
        volume = image.as_tensor()[None]  # (1, C, *spatial), stays on the CPU
        network, roi = window_network(self.network, self.spec.network.spatial_dims, volume,
                                      self.spec.roi_size or list(image.shape[1:]))
        if s.compile:  # once per process and window network (a 2D network slides slice-wise over 3D images)
            if self._compiled is None or self._compiled[0] is not type(network):
                self._compiled = (type(network), compile_for_windows(network, s.batch_size))
            network = self._compiled[1]
        activation = self.spec.activation
        options = dict(overlap=s.overlap, batch_size=s.batch_size, tta=s.tta, device=device, dtype=s.dtype,
                       activation=activation)
        if not probabilities:
            size = min_voxels(s.min_size, s.min_size_mm3, _spacing(image))
            labels = predict_labels(network, volume, roi, threshold=s.threshold, min_size=size,
                                    peak_threshold=s.peak_threshold, keep_largest=s.keep_largest, **options)
            labels = self._as_label_map(labels)[0]  # (*spatial) uint8
            restored = invert_to_input_space(MetaTensor(labels[None].float()), image, self.transforms, nearest=True)
            return restored.as_tensor()[0].round().to(torch.uint8).numpy(), None
        probability = predict_volume(network, volume, roi, **options)[0]  # (K, *spatial)
        inverted = invert_to_input_space(MetaTensor(probability), image, self.transforms, nearest=False)
        restored = inverted.as_tensor()
        if activation == "softmax":
            restored[0] = (1.0 - restored[1:].sum(0)).clamp(0.0, 1.0)  # outside the cropped box the inverse pads 0s
        size = min_voxels(s.min_size, s.min_size_mm3, _spacing(inverted))
        labels = postprocess(restored[None], activation=activation, threshold=s.threshold, min_size=size,
                             peak_threshold=s.peak_threshold, keep_largest=s.keep_largest)
        return self._as_label_map(labels)[0].numpy().astype(np.uint8), restored.numpy().astype(np.float32)

    def _as_label_map(self, labels: torch.Tensor) -> torch.Tensor:
        """Softmax labels ``(B, *spatial)`` as they are; sigmoid region masks ``(B, R, *spatial)`` as a label map by
        nnU-Net's rule (:func:`seg.inference.postprocess.regions_to_labels`)."""
        if self.spec.activation != "sigmoid":
            return labels
        if not self.spec.regions:
            return labels[:, 0]  # one sigmoid channel: the mask is the label
        return regions_to_labels(labels, region_labels(self.spec.regions))


def _spacing(image: MetaTensor) -> np.ndarray:
    """Voxel size (mm) of a MetaTensor's grid, one value per spatial axis."""
    ndim = image.ndim - 1
    return np.linalg.norm(np.asarray(image.affine)[:ndim, :ndim], axis=0)

"""File -> file prediction: NIfTI volumes in, NIfTI masks out in exactly each input's space.

For every case, the preprocessing stored in the checkpoint (orientation, cropping, spacing, normalisation;
see :mod:`seg.data.transforms`) is replayed with MONAI's invertible transforms, the network predicts by
sliding window (:func:`seg.inference.predict_volume`), the probabilities are inverted onto the input's
grid, and the mask is written with the *input file's* header, shape and affine (qform and sform) by
:func:`seg.io.write_like` — so the mask opens on top of the scan in any viewer. Writes are atomic.

A case that fails (unreadable file, wrong number of channels, NaN voxels) is reported with its file name;
the other cases continue and the command exits non-zero at the end.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from tqdm import tqdm

from seg.data.layouts import Case, load_dataset
from seg.data.transforms import Preprocessing, inference_transforms, invert_to_input_space
from seg.inference.checkpoint import load_for_inference
from seg.inference.postprocess import min_voxels, postprocess
from seg.inference.sliding_window import predict_volume
from seg.io import case_name, is_nifti, write_like
from seg.networks import window_network
from seg.types import PathLike


def discover_inputs(source: PathLike) -> list[Case]:
    """Cases to predict: a NIfTI file, a folder of NIfTI files, or a dataset.json (its test cases, else all).

    Returns one :class:`~seg.data.layouts.Case` per case with its modality files (nnU-Net's ``CASE_0000``,
    ``CASE_0001`` files of one folder are grouped into case ``CASE``); its name names the output mask.
    """
    source = Path(source)
    if source.suffix == ".json" or (source / "dataset.json").is_file():
        spec = load_dataset(source)
        return [Case(c.name, list(c.images)) for c in (spec.test_cases or spec.cases)]
    if source.is_file():
        return [Case(case_name(source, channel_suffix=True), [source])]
    if not source.is_dir():
        raise FileNotFoundError(f"input '{source}' is neither a NIfTI file, a folder nor a dataset.json")
    groups: dict[str, list[Path]] = {}
    for path in sorted(p for p in source.iterdir() if is_nifti(p)):
        groups.setdefault(case_name(path, channel_suffix=True), []).append(path)
    if not groups:
        raise FileNotFoundError(f"no NIfTI files (.nii, .nii.gz) in '{source}'")
    return [Case(name, files) for name, files in groups.items()]


class Predictor:
    """A trained network plus its preprocessing, predicting one case at a time."""

    def __init__(self, checkpoint: PathLike, *, tta: bool = False, overlap: float = 0.5, batch_size: int = 4,
                 min_size: int | None = None) -> None:
        self.network, self.spec = load_for_inference(checkpoint)
        self.preprocessing = Preprocessing.from_dict(self.spec.preprocessing)
        self.transforms = inference_transforms(self.preprocessing, with_label=False)
        self.in_channels = int(self.spec.network.in_channels)
        self.roi_size = self.spec.roi_size
        post = self.spec.postprocessing  # the training run's postprocessing, unless overridden
        self.min_size = int(post.get("min_size", 0)) if min_size is None else min_size
        self.min_size_mm3 = post.get("min_size_mm3") if min_size is None else None
        self.threshold = post.get("threshold")
        self.tta, self.overlap, self.batch_size = tta, overlap, batch_size

    def __call__(self, images: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
        """Labels ``(*input spatial)`` uint8 and probabilities ``(K, *input spatial)`` float32 of one case."""
        if len(images) != self.in_channels:
            raise ValueError(f"case '{images[0]}' has {len(images)} image file(s) but the checkpoint's network "
                             f"takes {self.in_channels} channel(s)")
        data = self.transforms({"image": [str(p) for p in images]})
        image = data["image"]
        if not torch.isfinite(image.as_tensor()).all():
            raise ValueError(f"case '{images[0]}' has NaN or inf voxels")
        if image.shape[0] != self.in_channels:
            raise ValueError(f"case '{images[0]}' has {image.shape[0]} channel(s) but the checkpoint's network "
                             f"takes {self.in_channels}")
        volume = image.as_tensor()[None]  # (1, C, *spatial)
        network, roi = window_network(self.network, self.spec.network.spatial_dims, volume,
                                      self.roi_size or list(image.shape[1:]))
        probabilities = predict_volume(network, volume, roi, overlap=self.overlap, batch_size=self.batch_size,
                                       tta=self.tta)[0]  # (K, *spatial)
        inverted = invert_to_input_space(MetaTensor(probabilities), image, self.transforms, nearest=False)
        spacing = np.linalg.norm(np.asarray(inverted.affine)[:3, :3], axis=0)  # the input's own grid (mm)
        restored = inverted.as_tensor()
        # Outside the cropped foreground the inverse pads zeros: make that explicit background.
        restored[0] = (1.0 - restored[1:].sum(0)).clamp(0.0, 1.0)
        size = min_voxels(self.min_size, self.min_size_mm3, spacing[: restored.ndim - 1])
        labels = postprocess(restored[None], activation="softmax", threshold=self.threshold, min_size=size)[0]
        return labels.cpu().numpy().astype(np.uint8), restored.cpu().numpy().astype(np.float32)


def predict_files(checkpoint: PathLike, source: PathLike, output: PathLike, *, probabilities: bool = False,
                  overwrite: bool = False, tta: bool = False, min_size: int | None = None) -> list[str]:
    """Predict every case of ``source`` into ``output``; returns the failure messages (empty: all fine)."""
    predictor = Predictor(checkpoint, tta=tta, min_size=min_size)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    cases = discover_inputs(source)
    for case in tqdm(cases, desc="predicting", unit="case"):
        name, images = case.name, case.images
        out_path = output / f"{name}.nii.gz"
        if out_path.exists() and not overwrite:
            tqdm.write(f"skipping {name}: {out_path} exists (use --overwrite)")
            continue
        try:
            labels, probs = predictor(images)
            if probabilities:
                write_like(probs, images[0], output / "probabilities" / f"{name}.nii.gz", dtype=np.float32)
            write_like(labels, images[0], out_path, dtype=np.uint8)
        except (ValueError, OSError, RuntimeError) as error:
            failures.append(f"{images[0]}: {error}")
            tqdm.write(f"FAILED {images[0]}: {error}", file=sys.stderr)
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seg-infer", description="Predict NIfTI masks with a seg checkpoint.")
    parser.add_argument("--checkpoint", required=True, type=Path, help="RUN/best.ckpt")
    parser.add_argument("--input", required=True, type=Path, help="NIfTI file, folder, or dataset.json")
    parser.add_argument("--output", required=True, type=Path, help="output folder")
    parser.add_argument("--probabilities", action="store_true", help="also write float probability maps")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    parser.add_argument("--min-size", type=int, default=None,
                        help="remove components under this many voxels (default: the checkpoint's setting)")
    args = parser.parse_args(argv)
    failures = predict_files(args.checkpoint, args.input, args.output, probabilities=args.probabilities,
                             overwrite=args.overwrite, tta=args.tta, min_size=args.min_size)
    if failures:
        print(f"{len(failures)} case(s) failed:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    print(f"predictions written to {args.output}")
    return 0

"""Synthetic sparse-lesion datasets in the MSD layout, seeded and deterministic.

``make_dataset(out_dir)`` writes ``imagesTr/``, ``labelsTr/``, ``imagesTs/``, ``labelsTs/`` (test labels kept,
same file names, for evaluation) and, last, ``dataset.json``. Command line::

    python -m seg.data.synthetic OUT --cases 24 --test-cases 8 [--dims 2] [--preview montage.png]

What makes the phantoms realistic enough that the loss matters (details in :mod:`seg.data._phantoms`):

- an ellipsoidal "head" with a wavy edge in a box of exact zeros (air), about a third of the box, so
  cropping to the foreground and normalising over non-zero voxels matter, as for skull-stripped brain MR;
- three nested tissue classes (CSF-, GM-, WM-like) from thresholded smooth noise, with partial-volume
  transitions, plus fine correlated texture noise; a smooth multiplicative bias field (exp of a random
  quadratic) and an arbitrary per-case scanner gain (600-1400);
- lesions as irregular star-shaped blobs (random ellipsoid axes and orientation, boundary perturbed by
  random waves), round in millimetres (not in voxels), centred in WM-like tissue, with a 1 mm soft
  edge (partial volume); the label is the occupancy > 0.5. A lesion replaces the tissue by the WM level
  plus ``contrast`` texture stds (default 4-6), while GM-like tissue sits 2 stds above WM: contrast is
  moderate and intensity alone does not find lesions. Radii span ``lesion_radius`` (default 1.5-8 mm
  in 3D: from a few voxels to about a thousand);
- unlabelled distractors as bright as lesions: thin tortuous tubes (vessel-like, 0.5-1 mm radius) and
  lesion-like blobs on the head boundary; lesions keep a gap from them and from each other, so every
  lesion is its own connected component;
- ``foreground_fraction`` is met over the whole dataset (train + test) by skewing the radius distribution
  (``r = lo * (hi / lo) ** (u ** k)``, ``u`` uniform, ``k`` found by bisection) with counts and radii kept
  within their ranges; ``dataset.json["stats"]`` reports the achieved fraction measured on the labels;
- exactly ``round(empty_fraction * cases)`` lesion-free training cases (and likewise for test), which
  still contain distractors;
- non-identity affines: the given (anisotropic) spacing, LPS orientation (first two axes flipped), a
  per-case random origin and a small oblique rotation about the third axis; label and image share the
  affine exactly (qform and sform, code 1 = scanner).

Files: images float32, labels uint8 in {0, 1}. 3D volumes are ``(H, W, D)``; 2D images are written as 2D
NIfTI arrays ``(H, W)`` (no singleton third axis). With ``channels=2`` every channel is its own file
(``case_000_0000.nii.gz`` FLAIR-like, ``case_000_0001.nii.gz`` T1-like, in which lesions are dark and
distractors bright), listed in dataset.json as ``"image": [ch0, ch1]`` (test entries are lists too).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from seg._types import PathLike
from seg.data._phantom_cases import case_affine, plan_cases, render_case
from seg.data._synthetic_files import preview, remove_stale, save_nifti, write_json

__all__ = ["make_dataset", "preview", "main"]

DEFAULT_SHAPE = {2: (128, 128), 3: (64, 64, 48)}
DEFAULT_SPACING = {2: (1.0, 1.0), 3: (1.0, 1.0, 2.0)}
DEFAULT_RADIUS = {2: (1.0, 6.0), 3: (1.5, 8.0)}


def make_dataset(
    out_dir: PathLike,
    *,
    cases: int = 24,
    test_cases: int = 8,
    spatial_dims: int = 3,
    shape: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
    foreground_fraction: float = 0.003,
    lesions_per_case: tuple[int, int] = (1, 6),
    lesion_radius: tuple[float, float] | None = None,
    contrast: tuple[float, float] = (4.0, 6.0),
    distractors: tuple[int, int] = (2, 6),
    empty_fraction: float = 0.15,
    channels: int = 1,
    oblique_degrees: float = 5.0,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write a synthetic sparse-lesion dataset (MSD layout) and return the path of its ``dataset.json``.

    Args:
        out_dir: folder to write into (created if needed).
        cases, test_cases: numbers of training and held-out cases (test labels go to ``labelsTs/``).
        spatial_dims: 2 or 3.
        shape: ``(H, W, D)`` or ``(H, W)``; default (64, 64, 48) in 3D, (128, 128) in 2D.
        spacing: voxel size in mm per axis; default (1, 1, 2) in 3D, (1, 1) in 2D.
        foreground_fraction: target lesion-voxel fraction over all cases (default 0.3 %).
        lesions_per_case: inclusive range of lesions in a non-empty case.
        lesion_radius: range of lesion radii in mm; default (1.5, 8) in 3D, (1, 6) in 2D.
        contrast: range of lesion and distractor brightness, in texture standard deviations.
        distractors: inclusive range of unlabelled distractors per case; ``(0, 0)`` for none.
        empty_fraction: fraction of lesion-free cases, applied to training and test separately.
        channels: 1 (FLAIR-like) or 2 (FLAIR-like + T1-like), one file per channel when 2.
        oblique_degrees: largest rotation of the affine about the third axis (per-case, uniform).
        seed: everything derives from ``numpy.random.default_rng`` seeded with it.
        overwrite: allow writing over an existing dataset (its stale case files are removed).
        progress: show a tqdm bar over cases.

    Returns:
        Path of the written ``dataset.json``.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    shape = tuple(int(n) for n in (shape or DEFAULT_SHAPE[spatial_dims]))
    spacing = tuple(float(s) for s in (spacing or DEFAULT_SPACING[spatial_dims]))
    lesion_radius = tuple(lesion_radius or DEFAULT_RADIUS[spatial_dims])
    _check_arguments(
        cases,
        test_cases,
        spatial_dims,
        shape,
        spacing,
        foreground_fraction,
        lesions_per_case,
        lesion_radius,
        contrast,
        distractors,
        empty_fraction,
        channels,
    )
    out_dir = Path(out_dir)
    if (out_dir / "dataset.json").exists() and not overwrite:
        raise FileExistsError(
            f"{out_dir / 'dataset.json'} exists; pass overwrite=True (--overwrite) to replace "
            f"the dataset or choose another folder"
        )
    start = time.perf_counter()
    plan_seed, *case_seeds = np.random.SeedSequence(seed).spawn(1 + cases + test_cases)
    test_start = max(100, 100 * math.ceil(cases / 100))
    names = [f"case_{i:03d}" for i in range(cases)] + [
        f"case_{test_start + j:03d}" for j in range(test_cases)
    ]
    plans, skew = plan_cases(
        np.random.default_rng(plan_seed),
        cases,
        test_cases,
        spatial_dims,
        shape,
        spacing,
        foreground_fraction,
        lesions_per_case,
        lesion_radius,
        contrast,
        distractors,
        empty_fraction,
    )

    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    suffixes = [""] if channels == 1 else [f"_{c:04d}" for c in range(channels)]
    training, test, foreground, radii, dropped, lesion_counts = [], [], [], [], 0, {}
    for index, (name, plan) in enumerate(
        tqdm(list(zip(names, plans, strict=True)), desc="synthetic cases", disable=not progress)
    ):
        phantom_seed, affine_seed = case_seeds[index].spawn(2)
        image, label, info = render_case(plan, shape, spacing, channels, phantom_seed)
        affine = case_affine(shape, spacing, oblique_degrees, np.random.default_rng(affine_seed))
        images_dir, labels_dir = ("imagesTr", "labelsTr") if index < cases else ("imagesTs", "labelsTs")
        image_files = [f"./{images_dir}/{name}{suffix}.nii.gz" for suffix in suffixes]
        for channel, file in enumerate(image_files):
            save_nifti(image[channel], affine, out_dir / file)
        label_file = f"./{labels_dir}/{name}.nii.gz"
        save_nifti(label, affine, out_dir / label_file)
        image_entry = image_files[0] if channels == 1 else image_files
        if index < cases:
            training.append({"image": image_entry, "label": label_file})
        else:
            test.append(image_entry)
        foreground.append(int(label.sum()))
        radii += info["radii_mm"]
        dropped += info["dropped"]
        lesion_counts[name] = len(info["radii_mm"])

    if overwrite:
        remove_stale(out_dir, names)
    voxels = math.prod(shape)
    achieved = float(np.sum(foreground)) / (voxels * len(names)) if names else 0.0
    stats = {
        "requested_foreground_fraction": foreground_fraction,
        "foreground_fraction": achieved,
        "foreground_fraction_training": float(np.sum(foreground[:cases])) / (voxels * max(cases, 1)),
        "foreground_fraction_test": float(np.sum(foreground[cases:])) / (voxels * max(test_cases, 1)),
        "lesion_free_training": [
            n for n, p in zip(names[:cases], plans[:cases], strict=True) if not p.radii_mm
        ],
        "lesion_free_test": [n for n, p in zip(names[cases:], plans[cases:], strict=True) if not p.radii_mm],
        "lesions": len(radii),
        "lesions_per_case": lesion_counts,  # each lesion is one 26-connected (8 in 2D) component
        "lesions_dropped": dropped,
        "lesion_radius_mm_quartiles": [
            round(float(q), 3) for q in np.quantile(radii, [0, 0.25, 0.5, 0.75, 1])
        ]
        if radii
        else [],
        "radius_skew_k": round(skew, 4),
        "seconds": round(time.perf_counter() - start, 2),
        "parameters": {
            "cases": cases,
            "test_cases": test_cases,
            "spatial_dims": spatial_dims,
            "shape": shape,
            "spacing": spacing,
            "lesions_per_case": list(lesions_per_case),
            "lesion_radius": list(lesion_radius),
            "contrast": list(contrast),
            "distractors": list(distractors),
            "empty_fraction": empty_fraction,
            "channels": channels,
            "oblique_degrees": oblique_degrees,
            "seed": seed,
        },
    }
    dataset = {
        "name": "SyntheticLesions",
        "description": (
            f"Synthetic brain-like MR phantoms with sparse lesions and unlabelled distractors "
            f"(seg.data.synthetic, seed {seed}); lesion voxel fraction {achieved:.4%} "
            f"(requested {foreground_fraction:.4%})"
        ),
        "reference": "seg.data.synthetic",
        "licence": "CC0-1.0",
        "release": "1.0",
        "tensorImageSize": f"{spatial_dims}D",
        "modality": {"0": "MR"} if channels == 1 else {"0": "FLAIR", "1": "T1"},
        "labels": {"0": "background", "1": "lesion"},
        "numTraining": cases,
        "numTest": test_cases,
        "training": training,
        "test": test,
        "stats": stats,
    }
    return write_json(dataset, out_dir / "dataset.json")


def _check_arguments(
    cases,
    test_cases,
    spatial_dims,
    shape,
    spacing,
    foreground_fraction,
    lesions_per_case,
    lesion_radius,
    contrast,
    distractors,
    empty_fraction,
    channels,
) -> None:
    if cases < 0 or test_cases < 0 or cases + test_cases == 0:
        raise ValueError(f"cases and test_cases must be >= 0 and not both 0, got {cases} and {test_cases}")
    if len(shape) != spatial_dims or min(shape) < 8:
        raise ValueError(
            f"shape must have {spatial_dims} sizes >= 8 for spatial_dims={spatial_dims}, got {shape}"
        )
    if len(spacing) != spatial_dims or min(spacing) <= 0:
        raise ValueError(f"spacing must have {spatial_dims} positive values (mm), got {spacing}")
    if not 0 < foreground_fraction < 0.5:
        raise ValueError(f"foreground_fraction must be in (0, 0.5), got {foreground_fraction}")
    for name, pair, low in (
        ("lesions_per_case", lesions_per_case, 1),
        ("lesion_radius", lesion_radius, 0.5),
        ("contrast", contrast, 0.0),
        ("distractors", distractors, 0),
    ):
        if len(pair) != 2 or not low <= pair[0] <= pair[1]:
            raise ValueError(f"{name} must be a range (lo, hi) with {low} <= lo <= hi, got {pair}")
    if not 0 <= empty_fraction <= 1:
        raise ValueError(f"empty_fraction must be in [0, 1], got {empty_fraction}")
    if channels not in (1, 2):
        raise ValueError(f"channels must be 1 (FLAIR-like) or 2 (FLAIR-like + T1-like), got {channels}")


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m seg.data.synthetic", description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--test-cases", type=int, default=8)
    parser.add_argument("--dims", type=int, default=3, choices=(2, 3), help="spatial dimensions")
    parser.add_argument("--shape", type=int, nargs="+", help="e.g. 64 64 48 (default by --dims)")
    parser.add_argument("--spacing", type=float, nargs="+", help="mm per axis, e.g. 1 1 2")
    parser.add_argument("--foreground-fraction", type=float, default=0.003)
    parser.add_argument("--lesions-per-case", type=int, nargs=2, default=(1, 6), metavar=("LO", "HI"))
    parser.add_argument("--lesion-radius", type=float, nargs=2, metavar=("LO", "HI"), help="mm")
    parser.add_argument("--contrast", type=float, nargs=2, default=(4.0, 6.0), metavar=("LO", "HI"))
    parser.add_argument("--distractors", type=int, nargs=2, default=(2, 6), metavar=("LO", "HI"))
    parser.add_argument("--empty-fraction", type=float, default=0.15)
    parser.add_argument("--channels", type=int, default=1, choices=(1, 2))
    parser.add_argument("--oblique-degrees", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset in OUT")
    parser.add_argument("--preview", type=Path, help="also write a PNG montage of a few training cases")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    path = make_dataset(
        args.out,
        cases=args.cases,
        test_cases=args.test_cases,
        spatial_dims=args.dims,
        shape=args.shape,
        spacing=args.spacing,
        foreground_fraction=args.foreground_fraction,
        lesions_per_case=tuple(args.lesions_per_case),
        lesion_radius=args.lesion_radius,
        contrast=tuple(args.contrast),
        distractors=tuple(args.distractors),
        empty_fraction=args.empty_fraction,
        channels=args.channels,
        oblique_degrees=args.oblique_degrees,
        seed=args.seed,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    stats = json.loads(path.read_text())["stats"]
    print(
        f"wrote {path}: lesion fraction {stats['foreground_fraction']:.4%} "
        f"(requested {stats['requested_foreground_fraction']:.4%}), {stats['lesions']} lesions, "
        f"{stats['seconds']} s"
    )
    if args.preview:
        print(f"wrote {preview(path, args.preview)}")
    return path


if __name__ == "__main__":
    main()

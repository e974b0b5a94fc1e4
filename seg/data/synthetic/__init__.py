"""Synthetic sparse-lesion datasets in the MSD layout, seeded and deterministic.

``make_dataset(out_dir)`` writes ``imagesTr/``, ``labelsTr/``, ``imagesTs/``, ``labelsTs/`` (test labels kept,
same file names, for evaluation) and, last, ``dataset.json``. Command line::

    python -m seg.data.synthetic OUT --cases 24 --test-cases 8 [--dims 2] [--preview montage.png]

What makes the phantoms realistic enough that the loss matters (details in :mod:`seg.data.synthetic.phantoms`):

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
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from seg.data.synthetic.cases import CasePlan, case_affine, plan_cases, render_case
from seg.data.synthetic.files import preview, remove_stale
from seg.data.synthetic.manifest import SyntheticSettings, WrittenCase, dataset_json
from seg.io import write_json, write_nifti
from seg.types import PathLike

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
    settings = SyntheticSettings(
        cases=cases,
        test_cases=test_cases,
        spatial_dims=spatial_dims,
        shape=tuple(int(n) for n in (shape or DEFAULT_SHAPE[spatial_dims])),
        spacing=tuple(float(s) for s in (spacing or DEFAULT_SPACING[spatial_dims])),
        foreground_fraction=foreground_fraction,
        lesions_per_case=lesions_per_case,
        lesion_radius=tuple(lesion_radius or DEFAULT_RADIUS[spatial_dims]),
        contrast=contrast,
        distractors=distractors,
        empty_fraction=empty_fraction,
        channels=channels,
        oblique_degrees=oblique_degrees,
        seed=seed,
    )
    out_dir = Path(out_dir)
    if (out_dir / "dataset.json").exists() and not overwrite:
        raise FileExistsError(
            f"{out_dir / 'dataset.json'} exists; pass overwrite=True (--overwrite) to replace "
            f"the dataset or choose another folder"
        )
    start = time.perf_counter()
    plan_seed, *case_seeds = np.random.SeedSequence(seed).spawn(1 + cases + test_cases)
    names = settings.case_names()
    plans, skew = plan_cases(
        np.random.default_rng(plan_seed),
        settings.cases,
        settings.test_cases,
        settings.spatial_dims,
        settings.shape,
        settings.spacing,
        settings.foreground_fraction,
        settings.lesions_per_case,
        settings.lesion_radius,
        settings.contrast,
        settings.distractors,
        settings.empty_fraction,
    )

    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    work = tqdm(
        list(zip(names, plans, case_seeds, strict=True)), desc="synthetic cases", disable=not progress
    )
    written = [
        _write_case(out_dir, settings, name, plan, case_seed, training=index < cases)
        for index, (name, plan, case_seed) in enumerate(work)
    ]
    if overwrite:
        remove_stale(out_dir, names)
    dataset = dataset_json(settings, written, skew, seconds=time.perf_counter() - start)
    return write_json(out_dir / "dataset.json", dataset)


def _write_case(
    out_dir: Path,
    settings: SyntheticSettings,
    name: str,
    plan: CasePlan,
    seed: np.random.SeedSequence,
    *,
    training: bool,
) -> WrittenCase:
    """Render case ``name`` from ``seed`` and write its image file(s), one per channel, and its label.

    The phantom and the affine draw from two streams spawned from ``seed``, in that order.
    """
    phantom_seed, affine_seed = seed.spawn(2)
    shape, spacing, channels = settings.shape, settings.spacing, settings.channels
    image, label, info = render_case(plan, shape, spacing, channels, phantom_seed)
    affine = case_affine(shape, spacing, settings.oblique_degrees, np.random.default_rng(affine_seed))
    images_dir, labels_dir = ("imagesTr", "labelsTr") if training else ("imagesTs", "labelsTs")
    suffixes = [""] if channels == 1 else [f"_{c:04d}" for c in range(channels)]
    image_files = [f"./{images_dir}/{name}{suffix}.nii.gz" for suffix in suffixes]
    for channel, file in enumerate(image_files):
        write_nifti(image[channel], affine, out_dir / file)
    label_file = f"./{labels_dir}/{name}.nii.gz"
    write_nifti(label, affine, out_dir / label_file)
    return WrittenCase(
        name=name,
        training=training,
        image=image_files[0] if channels == 1 else image_files,
        label=label_file,
        planned_lesion_free=not plan.radii_mm,
        foreground_voxels=int(label.sum()),
        radii_mm=info["radii_mm"],
        dropped=info["dropped"],
    )


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



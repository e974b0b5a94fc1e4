"""``make_dataset``: plan every case, render and write each one, then ``dataset.json`` (see :mod:`seg.data.synthetic`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from seg.data.synthetic.cases import CasePlan, case_affine, plan_cases, render_case
from seg.data.synthetic.files import remove_stale
from seg.data.synthetic.manifest import SyntheticSettings, WrittenCase, component_sizes, dataset_json
from seg.data.synthetic.sizes import LesionSizes
from seg.io import write_json, write_nifti
from seg.types import PathLike

__all__ = ["make_dataset"]

DEFAULT_SHAPE = {2: (128, 128), 3: (64, 64, 48)}
DEFAULT_SPACING = {2: (1.0, 1.0), 3: (1.0, 1.0, 2.0)}


def make_dataset(
    out_dir: PathLike,
    *,
    cases: int = 24,
    test_cases: int = 8,
    spatial_dims: int = 3,
    shape: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
    lesion_sizes: str | None = None,
    lesions_per_case: tuple[int, int] | None = None,
    lesion_volume: tuple[float, float] | None = None,
    lesion_volume_range: tuple[float, float] | None = None,
    lesion_radius: tuple[float, float] | None = None,
    foreground_fraction: float | None = None,
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
        lesion_sizes: size model, ``"realistic"`` or ``"radius"``; None: ``"radius"`` if ``lesion_radius`` or
            ``foreground_fraction`` is given, else ``"realistic"`` (see the module docstring).
        lesions_per_case: inclusive range of lesions in a non-empty case; default (2, 15) for ``"realistic"``,
            (1, 6) for ``"radius"``.
        lesion_volume: ``"realistic"``: (median in voxels, sigma of ln V) of the log-normal label volume;
            default (16, 1.3).
        lesion_volume_range: ``"realistic"``: truncation of the volumes, in voxels; default (3, 3000).
        lesion_radius: ``"radius"``: range of lesion radii in mm; default (1.5, 8) in 3D, (1, 6) in 2D.
        foreground_fraction: ``"radius"``: target lesion-voxel fraction over all cases, met by skewing the
            radii; None: log-uniform radii.
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
    sizes = LesionSizes.resolve(
        lesion_sizes,
        spatial_dims,
        lesions_per_case=lesions_per_case,
        lesion_volume=lesion_volume,
        lesion_volume_range=lesion_volume_range,
        lesion_radius=lesion_radius,
        foreground_fraction=foreground_fraction,
    )
    settings = SyntheticSettings(
        cases=cases,
        test_cases=test_cases,
        spatial_dims=spatial_dims,
        shape=tuple(int(n) for n in (shape or DEFAULT_SHAPE[spatial_dims])),
        spacing=tuple(float(s) for s in (spacing or DEFAULT_SPACING[spatial_dims])),
        sizes=sizes,
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
    plans, skew = plan_cases(np.random.default_rng(plan_seed), settings)

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
        target_voxels=info["target_voxels"],
        dropped=info["dropped"],
        component_voxels=component_sizes(label),  # the uint8 array just written
    )


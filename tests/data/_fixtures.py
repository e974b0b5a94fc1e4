"""Tiny NIfTI fixtures with non-identity affines, written straight with nibabel (independent of seg.io)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (8, 8, 6)


def lps_affine(spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Voxel axes pointing Left, Posterior, Superior (x and y flipped w.r.t. RAS), as in BraTS."""
    return np.array([[-spacing[0], 0, 0, 10.0], [0, -spacing[1], 0, 239.0], [0, 0, spacing[2], -5.0], [0, 0, 0, 1]])


def las_affine(spacing: tuple[float, float, float] = (2.0, 2.0, 2.0)) -> np.ndarray:
    """Voxel axes pointing Left, Anterior, Superior, as in ISLES."""
    return np.array([[-spacing[0], 0, 0, 118.7], [0, spacing[1], 0, -79.1], [0, 0, spacing[2], -57.7], [0, 0, 0, 1]])


def anisotropic_affine() -> np.ndarray:
    """0.47 x 0.47 x 8 mm voxels (thick-slice MR)."""
    return np.diag([0.47, 0.47, 8.0, 1.0]) + np.array([[0, 0, 0, -30.0], [0, 0, 0, 12.5], [0, 0, 0, 3.0], [0, 0, 0, 0]])


def oblique_affine() -> np.ndarray:
    """Rotated 20 degrees about z and 10 about x, spacing (0.9, 1.1, 3.0), with an offset."""
    a, b = np.deg2rad(20.0), np.deg2rad(10.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([0.9, 1.1, 3.0])
    affine[:3, 3] = [-12.0, 40.5, 7.25]
    return affine


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, *, dtype: np.dtype | type | None = None,
                qform_code: int = 1, sform_code: int = 2) -> Path:
    """Write ``data`` with the given affine set in both qform and sform, with the given codes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.asarray(data, dtype=dtype) if dtype is not None else np.asarray(data)
    img = nib.Nifti1Image(data, affine, dtype=data.dtype)
    img.header.set_qform(affine, code=qform_code)
    img.header.set_sform(affine, code=sform_code)
    nib.save(img, path)
    return path


def random_image(seed: int = 0, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def blob_label(shape: tuple[int, ...] = SHAPE, value: int = 1, corner: int = 2) -> np.ndarray:
    """Zeros with a 2x2x2 cube of ``value`` at ``(corner, corner, corner)``: 8 foreground voxels."""
    label = np.zeros(shape, dtype=np.uint8)
    label[corner:corner + 2, corner:corner + 2, corner:corner + 2] = value
    return label


def make_msd(root: Path, *, n_train: int = 2, n_test: int = 1, modalities: int = 1,
             affine: np.ndarray | None = None, test_labels: bool = True) -> Path:
    """A tiny MSD dataset (imagesTr/labelsTr/imagesTs/labelsTs + dataset.json); returns the json path."""
    affine = lps_affine() if affine is None else affine
    training, test = [], []
    for i in range(n_train + n_test):
        split = "Tr" if i < n_train else "Ts"
        name = f"case_{i:03d}.nii.gz"
        if modalities == 1:
            images = f"./images{split}/{name}"
            write_nifti(root / images, random_image(i), affine)
        else:
            images = [f"./images{split}/case_{i:03d}_{m:04d}.nii.gz" for m in range(modalities)]
            for m, rel in enumerate(images):
                write_nifti(root / rel, random_image(10 * i + m), affine)
        if split == "Tr" or test_labels:
            write_nifti(root / f"labels{split}" / name, blob_label(value=1 + i % 2), affine, dtype=np.uint8)
        if split == "Tr":
            training.append({"image": images, "label": f"./labelsTr/{name}"})
        else:
            test.append(images)
    spec = {"name": "tiny", "labels": {"0": "background", "1": "lesion", "2": "oedema"},
            "modality": {str(m): f"MR{m}" for m in range(modalities)}, "training": training, "test": test,
            "numTraining": n_train}
    (root / "dataset.json").write_text(json.dumps(spec, indent=2))
    return root / "dataset.json"

"""Tiny NIfTI datasets for the transform and DataModule tests: non-RAS, anisotropic, 24×24×16 volumes."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (24, 24, 16)
# Stored axes -> world: axis 0 runs right-to-left (L), axis 1 inferior (I), axis 2 anterior (A): "LIA".
# RAS spacing of each case is (|a00|, |a21|, |a12|) = (zoom0, zoom2, zoom1).
ZOOMS = [(1.0, 1.5, 3.0), (1.2, 1.5, 2.0), (0.8, 2.0, 3.0), (1.0, 1.0, 2.5)]


def lia_affine(zooms: tuple[float, float, float], origin=(10.0, -5.0, 7.0)) -> np.ndarray:
    """Affine with axis codes ('L', 'I', 'A') and voxel sizes ``zooms`` (stored axis order)."""
    return np.array([[-zooms[0], 0, 0, origin[0]],
                     [0, 0, zooms[2], origin[1]],
                     [0, -zooms[1], 0, origin[2]],
                     [0, 0, 0, 1]], dtype=np.float64)


def case_arrays(index: int, shape: tuple[int, ...] = SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """Image ``(2, *shape)`` float32, zero outside an inner box; label ``shape`` uint8 with classes 1 and 2."""
    rng = np.random.default_rng(index)
    image = np.zeros((2, *shape), dtype=np.float32)
    inner = tuple(slice(2, s - 2) for s in shape)
    image[(slice(None), *inner)] = rng.normal(100.0, 20.0, size=(2, *[s - 4 for s in shape])).clip(1.0)
    label = np.zeros(shape, dtype=np.uint8)
    centre = [s // 2 + (index % 3) - 1 for s in shape]
    label[tuple(slice(c - 2, c + 1) for c in centre)] = 1  # a 3^d lesion
    label[tuple(slice(c + 2, c + 3) for c in centre)] = 2  # a single voxel of class 2
    return image, label


def write_msd_dataset(root: Path, cases: int = 4, *, two_d: bool = False) -> Path:
    """MSD layout (imagesTr/ with one file per channel, labelsTr/, dataset.json); returns the JSON path."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for i in range(cases):
        shape = SHAPE[:2] if two_d else SHAPE
        image, label = case_arrays(i, shape)
        affine = np.diag([*ZOOMS[i][:2], 1.0, 1.0]) if two_d else lia_affine(ZOOMS[i])
        files = []
        for c in range(2):
            name = f"imagesTr/case_{i:03d}_{c:04d}.nii.gz"
            nib.save(nib.Nifti1Image(image[c], affine), root / name)
            files.append(f"./{name}")
        nib.save(nib.Nifti1Image(label, affine), root / f"labelsTr/case_{i:03d}.nii.gz")
        training.append({"image": files, "label": f"./labelsTr/case_{i:03d}.nii.gz"})
    content = {"name": "tiny", "modality": {"0": "T1", "1": "FLAIR"},
               "labels": {"0": "background", "1": "lesion", "2": "oedema"}, "training": training, "test": []}
    path = root / "dataset.json"
    path.write_text(json.dumps(content))
    return path

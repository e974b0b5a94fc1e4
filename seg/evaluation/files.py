"""The files ``seg-evaluate`` compares: finding them, reading label and probability maps, checking their grids.

Label maps must hold integer values; prediction, label and probability map of a case must share shape and affine.
Every error names the file(s) and says how to fix them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from seg.io import NIFTI_SUFFIXES, case_name, read_array


def nifti_files(folder: Path) -> list[Path]:
    """The ``.nii``/``.nii.gz`` files of ``folder``, sorted (hidden files skipped); the folder must exist."""
    if not folder.is_dir():
        raise FileNotFoundError(f"folder '{folder}' does not exist")
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.name.endswith(NIFTI_SUFFIXES))


def load_labels(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """An integer label map ``(*spatial)`` (int64), its affine and spacing; non-integral values raise."""
    array, affine, zooms = read_array(path)
    if array.ndim not in (2, 3):
        raise ValueError(f"label map '{path}' has shape {array.shape}; expected a 2D or 3D label map")
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise ValueError(f"label map '{path}' has non-integral values; expected integer labels "
                             "(threshold or argmax probabilities first)")
    return array.astype(np.int64), affine, zooms[: array.ndim]


def check_same_grid(a: Path, a_shape, a_affine, b: Path, b_shape, b_affine) -> None:
    """Raise, naming both files, unless ``a`` and ``b`` have the same shape and affine."""
    if tuple(a_shape) != tuple(b_shape):
        raise ValueError(f"'{a}' has shape {tuple(a_shape)} but '{b}' has {tuple(b_shape)}; "
                         "they must be on the same voxel grid (resample the prediction to the label's grid)")
    if not np.allclose(a_affine, b_affine, atol=1e-3):
        raise ValueError(f"'{a}' and '{b}' have different affines:\n{np.round(a_affine, 4)}\nvs\n"
                         f"{np.round(b_affine, 4)}\n(write predictions with the label's header, e.g. seg.io.write_like)")


def foreground_probability(path: Path, label_shape: tuple[int, ...],
                           classes: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Foreground probability ``(*spatial)`` and affine: a map of the label's shape is used as is; a
    ``(*spatial, K)`` map (one channel per class) gives 1 - p(background), or with ``classes`` the sum of
    those classes' channels (the probability of the lesion foreground that is evaluated)."""
    array, affine, _ = read_array(path)
    array = array.astype(np.float64)
    if array.shape == label_shape:
        return array, affine
    if array.shape[:-1] == label_shape and array.shape[-1] >= 2:
        if classes is None:
            return 1.0 - array[..., 0], affine
        if max(classes) >= array.shape[-1]:
            raise ValueError(f"probability map '{path}' has {array.shape[-1]} class channels; "
                             f"cannot evaluate classes {list(classes)}")
        return array[..., list(classes)].sum(-1), affine
    raise ValueError(f"probability map '{path}' has shape {array.shape}; expected {label_shape} (foreground "
                     f"probability) or {(*label_shape, 'K')} (one channel per class, background first)")


def probability_file(folder: Path, label_path: Path) -> Path:
    """The probability map of a label's case in ``folder``: ``<case>_prob.nii.gz`` or the label's own name."""
    name = case_name(label_path)
    candidates = [folder / f"{name}_prob{s}" for s in NIFTI_SUFFIXES] + [folder / label_path.name]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise FileNotFoundError(f"no probability map for label '{label_path}': expected '{candidates[0]}' or "
                                f"'{candidates[-1]}'")
    return found

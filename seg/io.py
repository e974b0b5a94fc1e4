"""NIfTI read/write: the one owner of affines and orientation in ``seg``.

Contract (modelled on nnU-Net's image reader/writer, done with nibabel):

- :func:`read_image` reads one ``.nii``/``.nii.gz`` file, or a list of modality files stacked as channels,
  into a :class:`Volume` whose ``array`` is float32 ``(C, *spatial)`` in the file's own voxel order (no
  reorientation, no resampling), with the file's ``affine`` (nibabel's best affine: sform if coded, else
  qform) and its ``header``. Modalities of different shapes raise ``ValueError`` naming both files.
- :func:`read_label` reads a label map as int64 ``(1, *spatial)``. Float files are accepted when every voxel
  is integral (BraTS stores labels as float32 0-4); non-integral or non-finite values raise ``ValueError``.
- 4D files raise unless ``allow_4d=True`` (then the 4th axis becomes channels). Trailing singleton axes beyond
  the third, as in ``(X, Y, Z, 1)``, are dropped: such a file is read as 3D.
- :func:`write_like` writes an array on a reference image's grid: same spatial shape, same affine, same
  qform and sform (raw header fields and their codes copied, so the orientation is identical bit for bit).
  The write goes to a temporary file in the destination folder and is renamed with :func:`os.replace`, so
  a crash never leaves a half-written NIfTI behind.
- A missing file raises ``FileNotFoundError``; an unreadable or corrupt one raises :class:`ImageReadError`
  (a ``ValueError``); both name the file.
"""

from __future__ import annotations

import gzip
import json
import os
import uuid
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from seg._types import PathLike

NIFTI_SUFFIXES = (".nii.gz", ".nii")


class ImageReadError(ValueError):
    """A NIfTI file exists but cannot be read (corrupt, truncated, not NIfTI)."""


@dataclass(frozen=True)
class Volume:
    """An image or label map with its geometry.

    Attributes:
        array: ``(C, *spatial)``; float32 from :func:`read_image`, int64 (C = 1) from :func:`read_label`.
        affine: (4, 4) float64 voxel -> world (RAS+ mm, nibabel convention) of the first file.
        header: the first file's NIfTI header (qform/sform and their codes, zooms, units).
        path: the first file read.
    """

    array: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header
    path: Path

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.array.shape[1:])

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm along each spatial axis (column norms of the affine)."""
        ndim = len(self.spatial_shape)
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :ndim], axis=0))

    @property
    def orientation(self) -> tuple[str, ...]:
        """Axis codes such as ``('L', 'P', 'S')`` (:func:`nibabel.aff2axcodes`)."""
        return tuple(nib.aff2axcodes(self.affine))


def is_nifti(path: PathLike) -> bool:
    """True when the file name ends in ``.nii`` or ``.nii.gz``."""
    return str(path).endswith(NIFTI_SUFFIXES)


def strip_nifti_suffix(name: str) -> str:
    """``'case_001.nii.gz'`` -> ``'case_001'``."""
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def load_nifti(path: PathLike) -> nib.Nifti1Image:
    """Open a NIfTI lazily (header only) with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file '{path}' does not exist")
    if not is_nifti(path):
        raise ImageReadError(f"'{path}' is not a NIfTI file: expected a name ending in .nii or .nii.gz")
    try:
        img = nib.load(path)
    except (ImageFileError, OSError, EOFError, zlib.error, ValueError) as err:
        raise ImageReadError(f"cannot read NIfTI '{path}': {type(err).__name__}: {err}") from err
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise ImageReadError(f"'{path}' was read as {type(img).__name__}, not as a NIfTI image")
    return img


def _read_dataobj(img: nib.Nifti1Image, path: Path) -> np.ndarray:
    """The voxel array with scl_slope/inter applied, in the file's dtype when unscaled."""
    try:
        return np.asanyarray(img.dataobj)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError) as err:
        raise ImageReadError(
            f"cannot read the voxels of '{path}' (file truncated or corrupt?): {type(err).__name__}: {err}"
        ) from err


def _to_channels(data: np.ndarray, path: Path, allow_4d: bool) -> np.ndarray:
    """File array ``(*spatial[, C])`` -> ``(C, *spatial)``; trailing singleton axes beyond 3 dropped."""
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim <= 3:
        return data[None]  # (*spatial) -> (1, *spatial)
    if data.ndim == 4 and allow_4d:
        return np.moveaxis(data, -1, 0)  # (X, Y, Z, C) -> (C, X, Y, Z)
    raise ValueError(
        f"image '{path}' has {data.ndim} dimensions {data.shape} but a 3D volume was expected; "
        "split it into one file per modality, or pass allow_4d=True to read the 4th axis as channels"
    )


def read_image(paths: PathLike | Sequence[PathLike], *, allow_4d: bool = False) -> Volume:
    """Read one NIfTI file, or several modality files of one case stacked as channels.

    Args:
        paths: a ``.nii``/``.nii.gz`` path, or a sequence of them (one per modality, same grid).
        allow_4d: read a 4D file's 4th axis as channels instead of raising.

    Returns:
        Volume with ``array`` float32 ``(C, *spatial)`` and the first file's affine and header.

    Raises:
        FileNotFoundError: a file is missing.
        ImageReadError: a file is corrupt or not NIfTI.
        ValueError: a 4D file (unless ``allow_4d``), or modalities of different spatial shapes.
    """
    path_list = [Path(paths)] if isinstance(paths, str | os.PathLike) else [Path(p) for p in paths]
    if not path_list:
        raise ValueError("read_image needs at least one file path, got an empty list")
    channels: list[np.ndarray] = []
    first_img: nib.Nifti1Image | None = None
    for path in path_list:
        img = load_nifti(path)
        data = _to_channels(_read_dataobj(img, path), path, allow_4d).astype(np.float32, copy=False)
        if first_img is None:
            first_img = img
        elif data.shape[1:] != channels[0].shape[1:]:
            raise ValueError(
                f"modality '{path}' has shape {data.shape[1:]} but '{path_list[0]}' has "
                f"{channels[0].shape[1:]}; all modalities of a case must share one grid"
            )
        channels.append(data)
    array = channels[0] if len(channels) == 1 else np.concatenate(channels, axis=0)
    return Volume(array=array, affine=first_img.affine.astype(np.float64), header=first_img.header,
                  path=path_list[0])


def read_label(path: PathLike) -> Volume:
    """Read a label map as int64 ``(1, *spatial)``.

    Args:
        path: a ``.nii``/``.nii.gz`` label file; integer dtype, or float holding integral values only.

    Raises:
        FileNotFoundError / ImageReadError: missing or unreadable file.
        ValueError: NaN/inf or non-integral values, or a 4D file.
    """
    path = Path(path)
    img = load_nifti(path)
    data = _to_channels(_read_dataobj(img, path), path, allow_4d=False)
    if np.issubdtype(data.dtype, np.floating):
        finite = np.isfinite(data)
        if not finite.all():
            raise ValueError(f"label '{path}' has {int(data.size - finite.sum())} NaN/inf voxels; "
                             "labels must be finite integers")
        fractional = data != np.round(data)
        if fractional.any():
            example = float(data[fractional].flat[0])
            raise ValueError(f"label '{path}' has {int(fractional.sum())} non-integral voxels "
                             f"(e.g. {example!r}); labels must be integers 0..K-1")
    return Volume(array=data.astype(np.int64), affine=img.affine.astype(np.float64), header=img.header,
                  path=path)


def _reference_geometry(reference: Volume | PathLike) -> tuple[tuple[int, ...], nib.Nifti1Header]:
    """Spatial shape and header of the reference, reading only its header when given a path."""
    if isinstance(reference, Volume):
        return reference.spatial_shape, reference.header
    img = load_nifti(reference)
    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape[:3], img.header


def _check_fits_dtype(array: np.ndarray, dtype: np.dtype, out_path: Path) -> None:
    if not np.issubdtype(dtype, np.integer):
        return
    if np.issubdtype(array.dtype, np.floating) and (~np.isfinite(array) | (array != np.round(array))).any():
        raise ValueError(f"cannot write '{out_path}' as {dtype}: the array has non-integral values; "
                         "pass dtype=np.float32 to write probabilities")
    info = np.iinfo(dtype)
    if array.size and (array.min() < info.min or array.max() > info.max):
        raise ValueError(f"cannot write '{out_path}' as {dtype}: values span [{array.min()}, {array.max()}] "
                         f"outside [{info.min}, {info.max}]; pass a wider dtype")


def write_like(array: np.ndarray, reference: Volume | PathLike, out_path: PathLike, *,
               dtype: np.dtype | type = np.uint8) -> Path:
    """Write ``array`` on the grid of ``reference``, atomically.

    Args:
        array: ``(*spatial)`` or ``(C, *spatial)`` (any numeric dtype; a torch tensor must be converted with
            ``.cpu().numpy()`` first). ``spatial`` must equal the reference's spatial shape. C = 1 is
            written as a 3D file, C > 1 as 4D ``(*spatial, C)`` (read back with ``read_image(allow_4d=True)``).
        reference: a :class:`Volume` or the path of a NIfTI on the target grid.
        out_path: destination ending in ``.nii`` or ``.nii.gz``; its folder is created if needed.
        dtype: stored dtype (uint8 for labels; np.float32 for probabilities). Integer dtypes refuse
            non-integral or out-of-range values instead of wrapping them silently.

    Returns:
        ``out_path`` as a :class:`Path`.
    """
    out_path = Path(out_path)
    if not is_nifti(out_path):
        raise ValueError(f"output '{out_path}' must end in .nii or .nii.gz")
    array = np.asarray(array)
    dtype = np.dtype(dtype)
    spatial, ref_header = _reference_geometry(reference)
    if array.shape == spatial:
        data = array
    elif array.shape[1:] == spatial and array.shape[0] >= 1:
        data = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)  # (C, *sp) -> (*sp, C)
    else:
        raise ValueError(f"array of shape {array.shape} does not fit the reference grid {spatial}; "
                         f"expected {spatial} or (C, *{spatial})")
    _check_fits_dtype(data, dtype, out_path)
    # The header copy carries the reference's raw qform/sform fields and codes; passing affine=None keeps
    # nibabel from re-deriving (and rounding) them, so the written geometry equals the reference exactly.
    header = ref_header.copy()
    header.set_data_dtype(dtype)
    header.set_slope_inter(np.nan, np.nan)
    header["cal_min"], header["cal_max"] = 0.0, 0.0
    image = nib.Nifti1Image(data.astype(dtype, copy=False), None, header=header)
    with atomic_path(out_path) as tmp_path:
        nib.save(image, tmp_path)
    return out_path


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` that replaces it when the block succeeds (nothing half-written).

    The temporary name keeps ``path``'s ending (``.nii.gz``, ``.png``, ...) so writers that pick the format
    from the name (nibabel, matplotlib) write the same format; it is removed if the block fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: PathLike, payload: object) -> Path:
    """Write ``payload`` as indented JSON atomically (see :func:`atomic_path`)."""
    return write_text(path, json.dumps(payload, indent=2) + "\n")

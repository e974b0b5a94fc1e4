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
  qform and sform (raw header fields and their codes copied, so the orientation is identical bit for bit),
  atomically (:func:`seg.files.atomic_path`).
- Nothing is allocated that a header merely claims (:func:`load_nifti`). A missing file raises
  ``FileNotFoundError``; an unreadable, corrupt or implausible one :class:`ImageReadError` (a ``ValueError``).
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from seg.errors import ImageReadError
from seg.files import (
    NIFTI_SUFFIXES,
    atomic_path,
    case_name,
    check_declared_size,
    is_nifti,
    not_a_file,
    split_channel,
    strip_nifti_suffix,
    write_json,
    write_text,
)
from seg.types import PathLike

__all__ = ["NIFTI_SUFFIXES", "ImageReadError", "Volume", "atomic_path", "case_name", "image_shape", "is_nifti",
           "iter_slabs", "load_nifti", "not_a_file", "ras_spacing", "read_array", "read_image", "read_label", "split_channel",
           "strip_nifti_suffix", "write_json", "write_like", "write_nifti", "write_text"]



@dataclass(frozen=True)
class Volume:
    """An image or label map with its geometry: ``array`` ``(C, *spatial)`` (float32 from :func:`read_image`, int64
    with C = 1 from :func:`read_label`), the first file's ``affine`` (4, 4, voxel -> RAS+ mm), ``header`` and ``path``."""

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


def load_nifti(path: PathLike) -> nib.Nifti1Image:
    """Open a NIfTI lazily (header only), refusing what cannot be read as a real-valued image: a path that is not a
    file, a name without ``.nii``/``.nii.gz``, complex or RGB voxels, and a header that declares more voxels than the
    file holds (checked before anything is allocated, :func:`seg.files.check_declared_size`). Errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise not_a_file(path, "image file")
    if not is_nifti(path):
        raise ImageReadError(f"'{path}' is not a NIfTI file: expected a name ending in .nii or .nii.gz")
    try:
        img = nib.load(path)
    except (ImageFileError, OSError, EOFError, zlib.error, ValueError) as err:
        raise ImageReadError(f"cannot read NIfTI '{path}': {type(err).__name__}: {err}") from err
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise ImageReadError(f"'{path}' was read as {type(img).__name__}, not as a NIfTI image")
    dtype = img.header.get_data_dtype()
    if dtype.fields is not None or dtype.kind not in "biuf":
        kind = "RGB/structured" if dtype.fields is not None else "complex" if dtype.kind == "c" else "non-numeric"
        raise ImageReadError(f"'{path}' stores {kind} voxels ({dtype}); seg reads real-valued scalar images: "
                             "convert it to one real channel per file (e.g. the magnitude, or one file per colour)")
    offset = int(getattr(img.dataobj, "offset", 0))  # nibabel keeps vox_offset here (the header field reads 0)
    check_declared_size(path, img.shape, dtype.itemsize, offset)
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
    """Read one NIfTI file, or several modality files of one case (same grid) stacked as channels.

    Returns a Volume with ``array`` float32 ``(C, *spatial)`` and the first file's affine and header. A 4D file
    raises unless ``allow_4d`` (its 4th axis then becomes channels), as do modalities of different shapes.
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
    """Read a label map (integer dtype, or float holding integral values only) as int64 ``(1, *spatial)``;
    NaN/inf or non-integral values, or a 4D file, raise ``ValueError``."""
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


def _spatial(shape: Sequence[int]) -> tuple[int, ...]:
    """A header shape without trailing singleton axes beyond the third: ``(X, Y, Z, 1)`` -> ``(X, Y, Z)``."""
    shape = tuple(int(n) for n in shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def image_shape(path: PathLike) -> tuple[int, ...]:
    """Shape of a NIfTI file from its header only (no voxel read), trailing singleton axes beyond 3 dropped."""
    return _spatial(load_nifti(path).shape)


def ras_spacing(path: PathLike) -> tuple[float, ...]:
    """Voxel spacing in RAS axis order from the header only: one value per spatial axis (a 4th axis is ignored);
    native 2D images are not reoriented (``seg.data.transforms.Preprocessing.orientation``), so stored order."""
    image = load_nifti(path)
    ndim = min(len(image.shape), 3)
    zooms = image.header.get_zooms()[:ndim]
    if ndim == 2:
        return tuple(float(z) for z in zooms)
    ornt = nib.io_orientation(image.affine)  # row i: (RAS axis of stored axis i, flip)
    ras = [0.0] * ndim
    for axis, zoom in enumerate(zooms):
        ras[int(ornt[axis, 0])] = float(zoom)
    return tuple(ras)


def iter_slabs(path: PathLike, max_voxels: int = 2**24) -> Iterator[np.ndarray]:
    """A NIfTI file's voxels as slabs along its last axis (contiguous on disk in NIfTI's Fortran order), each of at
    most about ``max_voxels`` voxels: one forward read, never the whole volume in memory (class counting)."""
    path = Path(path)
    img = load_nifti(path)
    shape = img.shape
    if len(shape) == 0:
        raise ImageReadError(f"'{path}' is a 0-d image; expected a volume")
    per_slice = int(np.prod(shape[:-1], dtype=np.int64))
    step = max(1, max_voxels // max(per_slice, 1))
    for k0 in range(0, shape[-1], step):
        try:
            yield np.asarray(img.dataobj[..., k0: k0 + step])
        except (OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError) as err:
            raise ImageReadError(f"cannot read the voxels of '{path}' (file truncated or corrupt?): "
                                 f"{type(err).__name__}: {err}") from err


def read_array(path: PathLike) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """A NIfTI file's voxels in their stored dtype and layout ``(*spatial[, K])`` (trailing singleton axes beyond
    3 dropped), its affine and its voxel size in mm (for evaluation, which compares maps as stored)."""
    path = Path(path)
    img = load_nifti(path)
    array = _read_dataobj(img, path)
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]  # (X, Y, Z, 1) -> (X, Y, Z)
    return array, img.affine.astype(np.float64), tuple(float(z) for z in img.header.get_zooms()[:3])


def write_nifti(array: np.ndarray, affine: np.ndarray, path: PathLike) -> Path:
    """Write ``array`` ``(*spatial)`` with ``affine`` as qform and sform (code 1), atomically; for data made from
    scratch (predictions use :func:`write_like`). Equal arrays give byte-identical files (gzip mtime 0)."""
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm")
    with atomic_path(path) as tmp:
        nib.save(image, tmp)
    return Path(path)


def _reference_geometry(reference: Volume | PathLike) -> tuple[tuple[int, ...], nib.Nifti1Header]:
    """Spatial shape and header of the reference, reading only its header when given a path."""
    if isinstance(reference, Volume):
        return reference.spatial_shape, reference.header
    img = load_nifti(reference)
    return _spatial(img.shape)[:3], img.header


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
    """Write ``array`` on the grid of ``reference`` (a :class:`Volume` or a NIfTI path), atomically; returns ``out_path``.

    ``array`` is ``(*spatial)`` or ``(C, *spatial)`` numpy (C > 1 is written as 4D ``(*spatial, C)``, read back with
    ``read_image(allow_4d=True)``). ``dtype``: uint8 for labels, np.float32 for probabilities; integer dtypes refuse
    non-integral or out-of-range values instead of wrapping them.
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

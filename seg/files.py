"""Files as files: NIfTI suffixes and case names, nnU-Net's channel suffix, what a path is when it is not a file,
whether a file can hold what its header declares, and the one atomic write every writer of ``seg`` uses
(temporary file beside the target, then ``os.replace``).

Nothing here parses NIfTI; that is :mod:`seg.io`'s (which re-exports these names).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import struct
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from seg.errors import ImageReadError
from seg.types import PathLike

NIFTI_SUFFIXES = (".nii.gz", ".nii")
_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
# Largest image read, in voxels (``SEG_MAX_VOXELS``): 2**31 (8 GiB as float32; a 512x512x2000 CT is 2**29).
MAX_VOXELS = int(os.environ.get("SEG_MAX_VOXELS", 2**31))
DEFLATE_MAX_RATIO = 1032  # deflate expands a byte stream at most ~1032:1 (zlib's "Compression ratio" notes)


def is_nifti(path: PathLike) -> bool:
    """True when the file name ends in ``.nii`` or ``.nii.gz``."""
    return str(path).endswith(NIFTI_SUFFIXES)


def strip_nifti_suffix(name: str) -> str:
    """``'case_001.nii.gz'`` -> ``'case_001'``."""
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def split_channel(stem: str) -> tuple[str, int | None]:
    """nnU-Net's channel suffix: ``'case_001_0000'`` -> ``('case_001', 0)``; ``'case_001'`` -> ``('case_001', None)``."""
    match = _CHANNEL_SUFFIX.match(stem)
    return (match["case"], int(match["channel"])) if match else (stem, None)


def case_name(path: PathLike, *, channel_suffix: bool = False) -> str:
    """The case a NIfTI file belongs to: its name without ``.nii``/``.nii.gz`` (``case_001``), and with
    ``channel_suffix=True`` also without nnU-Net's ``_XXXX`` channel index (``case_001_0000`` -> ``case_001``)."""
    stem = strip_nifti_suffix(Path(path).name)
    return split_channel(stem)[0] if channel_suffix else stem


def not_a_file(path: PathLike, what: str = "file") -> FileNotFoundError | IsADirectoryError:
    """The error for a ``path`` that is not a readable file: missing, a dangling link, a link loop, or a folder."""
    path = Path(path)
    if path.is_dir():
        return IsADirectoryError(f"{what} '{path}' is a folder, not a file")
    if path.is_symlink():
        try:
            path.resolve(strict=True)
        except RuntimeError:
            return FileNotFoundError(f"{what} '{path}' is a symbolic link loop (it points back to itself)")
        except OSError:
            return FileNotFoundError(f"{what} '{path}' is a symbolic link to '{os.readlink(path)}', which does not exist")
    return FileNotFoundError(f"{what} '{path}' does not exist")


def _gzip_holds(path: Path, needed: int) -> int | None:
    """``None`` if the gzip file ``path`` decompresses to at least ``needed`` bytes, else how many it holds.

    The trailer (ISIZE, the last member's size mod 2**32) answers at once for a single-member file under 4 GiB;
    otherwise the stream is counted 1 MB at a time, nothing kept, stopping as soon as ``needed`` is reached.
    """
    with open(path, "rb") as handle:
        handle.seek(-4, os.SEEK_END)
        if needed < 2**32 and struct.unpack("<I", handle.read(4))[0] >= needed:
            return None
    total = 0
    with gzip.open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            total += len(chunk)
            if total >= needed:
                return None
    return total


def check_declared_size(path: PathLike, shape: tuple[int, ...], itemsize: int, offset: int) -> None:
    """Refuse a NIfTI whose header declares more voxels than the file holds, or than ``MAX_VOXELS``, before any
    array is allocated.

    ``.nii``: header offset + voxel bytes must fit in the file. ``.nii.gz``: they must fit in what the compressed
    bytes can expand to (``DEFLATE_MAX_RATIO``), and in the stream's uncompressed size.
    """
    path = Path(path)
    voxels = 1
    for n in shape:
        voxels *= int(n)
    declared = offset + voxels * itemsize
    dims = "x".join(str(int(n)) for n in shape)
    if voxels > MAX_VOXELS:
        raise ImageReadError(f"'{path}' declares {dims} = {voxels:,} voxels, more than the limit of {MAX_VOXELS:,} "
                             "(set SEG_MAX_VOXELS to read larger images)")
    size = path.stat().st_size
    gz = path.name.endswith(".gz")
    if gz and declared > DEFLATE_MAX_RATIO * size + 1024:
        present = f"its {size:,} compressed bytes can hold at most {DEFLATE_MAX_RATIO * size:,}"
    elif not gz and declared > size:
        present = f"the file has {size:,} bytes"
    else:
        if not gz:
            return
        try:
            present_bytes = _gzip_holds(path, declared)
        except (OSError, EOFError, zlib.error) as err:
            raise ImageReadError(f"cannot read '{path}' (truncated or corrupt gzip?): {type(err).__name__}: "
                                 f"{err}") from err
        if present_bytes is None:
            return
        present = f"it holds {present_bytes:,} uncompressed bytes"
    raise ImageReadError(f"'{path}' declares {dims} voxels of {itemsize} byte(s) ({declared:,} bytes with its "
                         f"header) but {present}: the file is truncated or its header is wrong")


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` that replaces it when the block succeeds (nothing half-written).

    The temporary name keeps ``path``'s ending (``.nii.gz``, ``.png``, ...) so writers that pick the format
    from the name (nibabel, matplotlib) write the same format; it is removed if the block fails.
    """
    path = Path(path)
    try:
        ensure_folder(path.parent)
    except NotADirectoryError as error:
        raise NotADirectoryError(f"cannot write '{path}': {str(error).split(': ', 1)[1]}") from None
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_paths(*paths: PathLike) -> Iterator[list[Path]]:
    """Temporary paths for several files that appear together or not at all: each replaces its target when the
    block succeeds; if the block or a replacement fails, nothing of this group is left (temporaries removed,
    targets already replaced removed too). Used for a case's mask and probability map."""
    targets = [Path(p) for p in paths]
    for target in targets:
        ensure_folder(target.parent)
    temporaries = [t.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{t.name}") for t in targets]
    replaced: list[Path] = []
    try:
        yield temporaries
        for tmp, target in zip(temporaries, targets, strict=True):
            os.replace(tmp, target)
            replaced.append(target)
    except BaseException:
        for target in replaced:
            target.unlink(missing_ok=True)
        raise
    finally:
        for tmp in temporaries:
            tmp.unlink(missing_ok=True)


def ensure_folder(folder: PathLike) -> Path:
    """Create ``folder`` (and its parents) unless it exists; a regular file in the way is a clear
    ``NotADirectoryError`` naming it, not a traceback from ``mkdir``."""
    folder = Path(folder)
    blocking = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise NotADirectoryError(f"cannot use '{folder}' as a folder: '{blocking}' is a file, not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: PathLike, payload: object) -> Path:
    """Write ``payload`` as indented JSON atomically (see :func:`atomic_path`)."""
    return write_text(path, json.dumps(payload, indent=2) + "\n")

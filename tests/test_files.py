"""seg.files: case names, what a non-file path is, headers that declare more than the file holds, atomic writes.

The huge-header cases are the bad-input report's (issue 12): a 157-byte .nii.gz declaring 800^3 float32 used to
allocate 2.45 GB; each must now fail in well under a second, under 100 MB, with the file named.
"""

from __future__ import annotations

import gzip
import os
import time
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from seg.errors import ImageReadError
from seg.files import atomic_path, case_name, check_declared_size, not_a_file, split_channel, write_text
from seg.io import image_shape, read_image, read_label


def _header_only(path: Path, shape: tuple[int, ...], dtype=np.float32, nifti2: bool = False,
                 payload: bytes = b"\0" * 64) -> Path:
    """A NIfTI whose header declares ``shape`` but which holds only ``payload`` bytes of voxel data."""
    header = (nib.Nifti2Header if nifti2 else nib.Nifti1Header)()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header["vox_offset"] = header.sizeof_hdr + 4
    raw = header.binaryblock + b"\0\0\0\0" + payload
    path.write_bytes(gzip.compress(raw, mtime=0) if path.name.endswith(".gz") else raw)
    return path


@pytest.mark.parametrize(("name", "shape", "nifti2"), [
    ("claims_800.nii.gz", (800, 800, 800), False),  # 2.0 GB as float32
    ("claims_2000.nii.gz", (2000, 2000, 2000), False),
    ("claims_32767.nii.gz", (32767, 32767, 32767), False),  # NIfTI-1's largest dimension
    ("claims_1e5.nii.gz", (100000, 100000, 100000), True),  # NIfTI-2
    ("claims_800.nii", (800, 800, 800), False),  # uncompressed: against the file size
])
def test_header_that_claims_gigabytes_is_refused_before_allocating(tmp_path: Path, name, shape, nifti2) -> None:
    path = _header_only(tmp_path / name, shape, nifti2=nifti2)
    assert path.stat().st_size < 1000
    tracemalloc.start()
    start = time.perf_counter()
    for read in (read_image, read_label, image_shape):
        with pytest.raises(ImageReadError, match=rf"{name}' declares .*(but|more than the limit)"):
            read(path)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seconds < 0.5, seconds
    assert peak < 100 * 2**20, peak


def test_a_gzip_whose_stream_is_shorter_than_declared_is_refused(tmp_path: Path) -> None:
    # 40x40x40 float32 = 256 kB declared; 3 kB of random bytes compress to ~3 kB, whose deflate bound (3 MB) allows
    # it, but the stream (and its gzip trailer) holds 348 + 4 + 3000 bytes
    noise = np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    path = _header_only(tmp_path / "short.nii.gz", (40, 40, 40), payload=noise)
    with pytest.raises(ImageReadError, match=r"short.nii.gz' declares 40x40x40 .* but it holds 3,352 uncompressed"):
        read_image(path)


def test_declared_size_within_the_file_passes_and_the_limit_is_configurable(tmp_path, monkeypatch) -> None:
    path = tmp_path / "ok.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((30, 20, 10), np.float32), np.eye(4)), path)
    assert read_image(path).array.shape == (1, 30, 20, 10)
    monkeypatch.setattr("seg.files.MAX_VOXELS", 5000)
    with pytest.raises(ImageReadError, match="6,000 voxels, more than the limit of 5,000.*SEG_MAX_VOXELS"):
        read_image(path)
    check_declared_size(path, (10, 10, 10), 4, 352)  # 4 kB in a file that holds 24 kB: fine


@pytest.mark.parametrize(("dtype", "kind"), [(np.complex64, "complex"), (np.dtype([("R", "u1"), ("G", "u1"),
                                                                                    ("B", "u1")]), "RGB")])
def test_complex_and_rgb_images_are_refused_with_the_file_named(tmp_path: Path, dtype, kind) -> None:
    path = tmp_path / f"{kind}.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), dtype=dtype), np.eye(4)), path)
    for read in (read_image, read_label):
        with pytest.raises(ImageReadError, match=rf"{kind}.nii.gz' stores {kind}.* real-valued scalar"):
            read(path)


def test_paths_that_are_not_files_say_what_they_are(tmp_path: Path) -> None:
    loop = tmp_path / "loop.nii.gz"
    loop.symlink_to(loop)
    dangling = tmp_path / "dangling.nii.gz"
    dangling.symlink_to(tmp_path / "gone.nii.gz")
    folder = tmp_path / "folder.nii.gz"
    folder.mkdir()
    linked_folder = tmp_path / "linked.nii.gz"
    linked_folder.symlink_to(folder)
    assert "symbolic link loop" in str(not_a_file(loop))
    assert "link to" in str(not_a_file(dangling)) and "gone.nii.gz" in str(not_a_file(dangling))
    assert isinstance(not_a_file(folder), IsADirectoryError) and "is a folder" in str(not_a_file(linked_folder))
    assert str(not_a_file(tmp_path / "absent.nii.gz")).endswith("absent.nii.gz' does not exist")
    with pytest.raises(FileNotFoundError, match="loop.nii.gz' is a symbolic link loop"):
        read_image(loop)
    with pytest.raises(IsADirectoryError, match="folder.nii.gz' is a folder"):
        read_label(folder)


def test_writing_under_a_regular_file_names_the_file_in_the_way(tmp_path: Path) -> None:
    blocker = tmp_path / "results"
    blocker.write_text("a file, not a folder")
    with pytest.raises(NotADirectoryError, match=r"cannot write .*mask.nii.gz': .*results' is a file, not a folder"):
        write_text(blocker / "masks" / "mask.nii.gz", "x")


def test_atomic_path_leaves_nothing_behind_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(("name", "plain", "case"), [
    ("case_001.nii.gz", "case_001", "case_001"), ("case_001_0000.nii.gz", "case_001_0000", "case_001"),
    ("brats_0002_0001.nii", "brats_0002_0001", "brats_0002"), ("x_12.nii.gz", "x_12", "x_12"),
])
def test_case_names_and_the_channel_suffix(name, plain, case) -> None:
    assert case_name(Path("/d") / name) == plain
    assert case_name(name, channel_suffix=True) == case
    assert split_channel("case_001_0003") == ("case_001", 3) and split_channel("case_001") == ("case_001", None)

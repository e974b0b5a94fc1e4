"""seg.io: reading into (C, *spatial), label checks, exact geometry round trips, atomic writes, clear errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from seg.io import ImageReadError, Volume, read_image, read_label, write_like
from tests.data._fixtures import (
    SHAPE,
    anisotropic_affine,
    blob_label,
    las_affine,
    lps_affine,
    oblique_affine,
    random_image,
    write_nifti,
)

AFFINES = {"lps": lps_affine(), "las": las_affine(), "anisotropic": anisotropic_affine(), "oblique": oblique_affine()}


def _assert_same_geometry(written: Path, reference: Path) -> None:
    out, ref = nib.load(written), nib.load(reference)
    assert out.shape == ref.shape
    np.testing.assert_array_equal(out.affine, ref.affine)
    for form in ("qform", "sform"):
        out_aff, out_code = getattr(out.header, f"get_{form}")(coded=True)
        ref_aff, ref_code = getattr(ref.header, f"get_{form}")(coded=True)
        assert int(out_code) == int(ref_code), form
        if ref_aff is not None:
            np.testing.assert_array_equal(out_aff, ref_aff)
    assert nib.aff2axcodes(out.affine) == nib.aff2axcodes(ref.affine)
    np.testing.assert_array_equal(out.header.get_zooms(), ref.header.get_zooms())


def test_read_image_gives_float32_channels_first_with_affine(tmp_path: Path) -> None:
    data = random_image(1)
    path = write_nifti(tmp_path / "img.nii.gz", data, lps_affine())
    vol = read_image(path)
    assert vol.array.shape == (1, *SHAPE) and vol.array.dtype == np.float32
    np.testing.assert_array_equal(vol.array[0], data)
    np.testing.assert_allclose(vol.affine, lps_affine(), atol=1e-6)
    assert vol.orientation == ("L", "P", "S") and vol.path == path
    assert vol.spacing == pytest.approx((1.0, 1.0, 1.0))


def test_read_image_stacks_modalities_in_order(tmp_path: Path) -> None:
    a, b = random_image(1), random_image(2)
    pa = write_nifti(tmp_path / "c_0000.nii.gz", a, las_affine())
    pb = write_nifti(tmp_path / "c_0001.nii", b, las_affine())
    vol = read_image([pa, pb])
    assert vol.array.shape == (2, *SHAPE)
    np.testing.assert_array_equal(vol.array[0], a)
    np.testing.assert_array_equal(vol.array[1], b)
    assert vol.orientation == ("L", "A", "S") and vol.spacing == pytest.approx((2.0, 2.0, 2.0))


def test_read_image_modalities_of_different_shapes_name_both_files(tmp_path: Path) -> None:
    pa = write_nifti(tmp_path / "flair.nii.gz", random_image(1), lps_affine())
    pb = write_nifti(tmp_path / "t1.nii.gz", random_image(2, shape=(8, 8, 5)), lps_affine())
    with pytest.raises(ValueError, match=r"t1\.nii\.gz.*\(8, 8, 5\).*flair\.nii\.gz.*\(8, 8, 6\)"):
        read_image([pa, pb])


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("name", sorted(AFFINES))
def test_write_like_round_trip_keeps_exact_geometry(tmp_path: Path, name: str, suffix: str) -> None:
    reference = write_nifti(tmp_path / f"ref{suffix}", random_image(3), AFFINES[name], qform_code=1, sform_code=2)
    label = blob_label(value=3)
    out = write_like(label, reference, tmp_path / "out" / f"pred{suffix}")
    _assert_same_geometry(out, reference)
    assert nib.load(out).get_data_dtype() == np.uint8
    back = read_label(out)
    np.testing.assert_array_equal(back.array[0], label)
    assert back.orientation == tuple(nib.aff2axcodes(AFFINES[name]))
    assert sorted(p.name for p in out.parent.iterdir()) == [f"pred{suffix}"]  # no temporary left


@pytest.mark.parametrize(("qform_code", "sform_code"), [(0, 2), (2, 1), (1, 0)])
def test_write_like_keeps_qform_and_sform_codes(tmp_path: Path, qform_code: int, sform_code: int) -> None:
    reference = write_nifti(tmp_path / "ref.nii.gz", random_image(4), oblique_affine(),
                            qform_code=qform_code, sform_code=sform_code)
    out = write_like(blob_label(), read_image(reference), tmp_path / "pred.nii.gz")
    _assert_same_geometry(out, reference)


def test_write_like_channels_first_and_multichannel(tmp_path: Path) -> None:
    reference = write_nifti(tmp_path / "ref.nii.gz", random_image(5), anisotropic_affine())
    one = write_like(blob_label()[None], reference, tmp_path / "one.nii.gz")
    assert nib.load(one).shape == SHAPE
    probs = np.stack([1 - blob_label(), blob_label()]).astype(np.float32) * 0.75  # (2, *spatial)
    two = write_like(probs, reference, tmp_path / "two.nii.gz", dtype=np.float32)
    assert nib.load(two).shape == (*SHAPE, 2)
    np.testing.assert_array_equal(read_image(two, allow_4d=True).array, probs)


def test_write_like_rejects_wrong_shape_and_values(tmp_path: Path) -> None:
    reference = write_nifti(tmp_path / "ref.nii.gz", random_image(6), lps_affine())
    with pytest.raises(ValueError, match=r"shape \(8, 8, 5\) does not fit the reference grid \(8, 8, 6\)"):
        write_like(np.zeros((8, 8, 5)), reference, tmp_path / "bad.nii.gz")
    with pytest.raises(ValueError, match="non-integral"):
        write_like(np.full(SHAPE, 0.5), reference, tmp_path / "bad.nii.gz")
    too_big = blob_label().astype(np.int64) * 300
    with pytest.raises(ValueError, match=r"values span \[0, 300\] outside \[0, 255\]"):
        write_like(too_big, reference, tmp_path / "bad.nii.gz")
    assert not (tmp_path / "bad.nii.gz").exists()


def test_write_like_failure_leaves_previous_file_and_no_temporary(tmp_path: Path, monkeypatch) -> None:
    reference = write_nifti(tmp_path / "ref.nii.gz", random_image(7), lps_affine())
    out = write_like(blob_label(), reference, tmp_path / "pred.nii.gz")
    before = out.read_bytes()

    def crash_mid_write(img, filename):
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", crash_mid_write)
    with pytest.raises(OSError, match="disk full"):
        write_like(np.zeros(SHAPE), reference, out)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred.nii.gz", "ref.nii.gz"]


def test_read_label_accepts_integral_float_and_returns_int64(tmp_path: Path) -> None:
    label = blob_label(value=4).astype(np.float32)
    vol = read_label(write_nifti(tmp_path / "seg.nii.gz", label, lps_affine(), dtype=np.float32))
    assert vol.array.dtype == np.int64 and vol.array.shape == (1, *SHAPE)
    np.testing.assert_array_equal(vol.array[0], label.astype(np.int64))


def test_read_label_rejects_non_integral_and_nan_naming_the_file(tmp_path: Path) -> None:
    label = blob_label().astype(np.float32)
    label[0, 0, 0] = 0.5
    path = write_nifti(tmp_path / "soft.nii.gz", label, lps_affine(), dtype=np.float32)
    with pytest.raises(ValueError, match=r"soft\.nii\.gz' has 1 non-integral voxels \(e\.g\. 0\.5\)"):
        read_label(path)
    label[0, 0, 0] = np.nan
    path = write_nifti(tmp_path / "nan.nii.gz", label, lps_affine(), dtype=np.float32)
    with pytest.raises(ValueError, match=r"nan\.nii\.gz' has 1 NaN/inf voxels"):
        read_label(path)


def test_4d_file_raises_unless_allowed_and_trailing_singleton_is_3d(tmp_path: Path) -> None:
    four = write_nifti(tmp_path / "four.nii.gz", np.zeros((*SHAPE, 3), np.float32), lps_affine())
    with pytest.raises(ValueError, match=r"four\.nii\.gz' has 4 dimensions .*allow_4d=True"):
        read_image(four)
    assert read_image(four, allow_4d=True).array.shape == (3, *SHAPE)
    single = write_nifti(tmp_path / "single.nii.gz", np.ones((*SHAPE, 1), np.float32), lps_affine())
    assert read_image(single).array.shape == (1, *SHAPE)


def test_missing_and_corrupt_files_raise_errors_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"absent\.nii\.gz' does not exist"):
        read_image(tmp_path / "absent.nii.gz")
    garbage = tmp_path / "garbage.nii"
    garbage.write_bytes(b"not a nifti at all" * 30)
    with pytest.raises(ImageReadError, match=r"garbage\.nii"):
        read_image(garbage)
    good = write_nifti(tmp_path / "good.nii.gz", random_image(8), lps_affine())
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(gzip.compress(gzip.decompress(good.read_bytes())[:400]))
    with pytest.raises(ImageReadError, match=r"truncated\.nii\.gz"):
        read_image(truncated)
    with pytest.raises(ImageReadError, match=r"truncated\.nii\.gz"):
        read_label(truncated)
    not_nifti = tmp_path / "image.png"
    not_nifti.write_bytes(b"x")
    with pytest.raises(ImageReadError, match="expected a name ending in .nii or .nii.gz"):
        read_image(not_nifti)
    assert issubclass(ImageReadError, ValueError)


def test_brats_case_reads_and_round_trips(brats_case: Path, tmp_path: Path) -> None:
    image = read_image([brats_case / "Flair_subtrMeanDivStd.nii.gz", brats_case / "T1c_subtrMeanDivStd.nii.gz"])
    assert image.array.shape == (2, 240, 240, 155) and image.orientation == ("L", "P", "S")
    label = read_label(brats_case / "OTMultiClass.nii.gz")  # stored as float32 0-4
    assert set(np.unique(label.array)) <= {0, 1, 2, 3, 4} and label.array.max() > 0
    out = write_like(label.array, label, tmp_path / "brats_label.nii.gz")
    _assert_same_geometry(out, brats_case / "OTMultiClass.nii.gz")
    np.testing.assert_array_equal(read_label(out).array, label.array)


def test_isles_case_reads_and_round_trips(isles_case: Path, tmp_path: Path) -> None:
    prefix = isles_case / "sub-strokecase0009_ses-0001"
    image = read_image([f"{prefix}_dwi.nii.gz", f"{prefix}_adc.nii.gz"])
    assert image.array.shape == (2, 112, 112, 73) and image.orientation == ("L", "A", "S")
    mask = read_label(f"{prefix}_msk.nii.gz")  # uint16, sform-only
    assert set(np.unique(mask.array)) == {0, 1}
    out = write_like(mask.array, f"{prefix}_msk.nii.gz", tmp_path / "isles_mask.nii")
    _assert_same_geometry(out, Path(f"{prefix}_msk.nii.gz"))
    np.testing.assert_array_equal(read_label(out).array, mask.array)
    # a prediction written on the (oblique, qform+sform) image grid keeps the image's geometry
    pred = write_like(mask.array, image, tmp_path / "isles_pred.nii.gz")
    _assert_same_geometry(pred, Path(f"{prefix}_dwi.nii.gz"))
    assert isinstance(image, Volume)

"""infer.py / seg-infer: masks in exactly the input's space, failures reported, nothing half-written."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from seg.cli import infer_main
from seg.inference.predict import predict_files
from tests.inference.conftest import _train


def _same_space(prediction: Path, image: Path) -> None:
    out, ref = nib.load(prediction), nib.load(image)
    assert out.shape[:3] == ref.shape[:3]
    np.testing.assert_array_equal(out.affine, ref.affine)
    np.testing.assert_array_equal(out.header.get_qform(), ref.header.get_qform())
    np.testing.assert_array_equal(out.header.get_sform(), ref.header.get_sform())
    assert out.header["qform_code"] == ref.header["qform_code"]
    assert out.header["sform_code"] == ref.header["sform_code"]


def test_dataset_test_cases_come_back_in_their_own_space(trained, tmp_path: Path) -> None:
    checkpoint, dataset = trained
    code = infer_main(["--checkpoint", str(checkpoint), "--input", str(dataset), "--output", str(tmp_path),
                       "--probabilities"])
    assert code == 0
    for image in sorted((dataset.parent / "imagesTs").glob("*.nii.gz")):
        _same_space(tmp_path / image.name, image)
        assert nib.load(tmp_path / image.name).get_data_dtype() == np.uint8
        probabilities = nib.load(tmp_path / "probabilities" / image.name).get_fdata()
        assert probabilities.shape == (*nib.load(image).shape, 2)  # (*spatial, K)
        np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
    assert not list(tmp_path.glob(".tmp*"))


@pytest.mark.parametrize("axcodes", [("L", "A", "S"), ("P", "S", "R")])
def test_non_ras_anisotropic_input_keeps_shape_and_affine(trained, tmp_path: Path, axcodes) -> None:
    checkpoint, dataset = trained
    source = nib.load(sorted((dataset.parent / "imagesTs").glob("*.nii.gz"))[0])
    data = np.asarray(source.dataobj, dtype=np.float32)[:, :, :20]  # (32, 32, 20)
    ornt = nib.orientations.axcodes2ornt(axcodes)
    affine = np.diag([0.0, 0.0, 0.0, 1.0])
    for i, (axis, flip) in enumerate(ornt.astype(int)):
        affine[axis, i] = flip * (0.47, 0.47, 3.0)[i]  # anisotropic: 0.47 x 0.47 x 3 mm
    affine[:3, 3] = (12.0, -40.0, 7.5)
    path = tmp_path / "in" / "scan.nii.gz"
    path.parent.mkdir()
    nib.save(nib.Nifti1Image(data, affine), path)
    assert nib.aff2axcodes(nib.load(path).affine) == axcodes
    assert predict_files(checkpoint, path, tmp_path / "out") == []
    _same_space(tmp_path / "out" / "scan.nii.gz", path)


def test_failing_case_is_reported_and_the_others_continue(trained, tmp_path: Path, capsys) -> None:
    checkpoint, dataset = trained
    folder = tmp_path / "in"
    folder.mkdir()
    good = sorted((dataset.parent / "imagesTs").glob("*.nii.gz"))[0]
    img = nib.load(good)
    nib.save(img, folder / "good.nii.gz")
    bad = np.asarray(img.dataobj, dtype=np.float32)
    bad[5, 5, 5] = np.nan
    nib.save(nib.Nifti1Image(bad, img.affine), folder / "nan_voxels.nii.gz")
    (folder / "broken.nii.gz").write_bytes(b"not a nifti file")
    code = infer_main(["--checkpoint", str(checkpoint), "--input", str(folder), "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1
    assert "nan_voxels.nii.gz" in err and "NaN" in err
    assert "broken.nii.gz" in err
    assert (tmp_path / "o" / "good.nii.gz").is_file()
    assert not (tmp_path / "o" / "nan_voxels.nii.gz").exists()


def test_existing_outputs_are_skipped_unless_overwrite(trained, tmp_path: Path) -> None:
    checkpoint, dataset = trained
    image = sorted((dataset.parent / "imagesTs").glob("*.nii.gz"))[0]
    out = tmp_path / image.name
    out.write_bytes(b"placeholder")
    assert predict_files(checkpoint, image, tmp_path) == []
    assert out.read_bytes() == b"placeholder"
    assert predict_files(checkpoint, image, tmp_path, overwrite=True) == []
    _same_space(out, image)


def test_unsafe_checkpoint_is_refused_by_infer(trained, tmp_path: Path, capsys) -> None:
    _, dataset = trained

    class Payload:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "ran",))

    torch.save({"seg": {}, "x": Payload()}, tmp_path / "evil.ckpt")
    code = infer_main(["--checkpoint", str(tmp_path / "evil.ckpt"), "--input", str(dataset),
                       "--output", str(tmp_path / "o")])
    assert code == 1
    assert "refused to load checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "ran").exists()


def test_real_cases_come_back_in_their_own_space(trained, isles_case: Path, brats_case: Path,
                                                 tmp_path: Path) -> None:
    checkpoint, _ = trained
    dwi = isles_case / "sub-strokecase0009_ses-0001_dwi.nii.gz"  # LAS, 2 mm
    flair = brats_case / "Flair_subtrMeanDivStd.nii.gz"  # LPS, 1 mm, 240 x 240 x 155
    assert predict_files(checkpoint, dwi, tmp_path) == []
    assert predict_files(checkpoint, flair, tmp_path) == []
    _same_space(tmp_path / dwi.name, dwi)
    _same_space(tmp_path / flair.name, flair)


def test_two_dimensional_network_on_three_dimensional_volumes(trained, tmp_path: Path) -> None:
    _, dataset = trained
    checkpoint = _train(dataset, tmp_path / "run2d", "--data.spatial_dims", "2", "--data.patch_size", "[16, 16]")
    image = sorted((dataset.parent / "imagesTs").glob("*.nii.gz"))[0]
    assert predict_files(checkpoint, image, tmp_path / "out") == []
    _same_space(tmp_path / "out" / image.name, image)


def test_multi_modality_cases_and_wrong_channel_count(tmp_path: Path, capsys) -> None:
    from seg.data.synthetic import make_dataset

    dataset = make_dataset(tmp_path / "data", cases=4, test_cases=1, shape=(32, 32, 24), channels=2,
                           foreground_fraction=0.01, empty_fraction=0.0, seed=2, progress=False)
    checkpoint = _train(dataset, tmp_path / "run")
    assert predict_files(checkpoint, dataset, tmp_path / "out") == []  # the test case lists two files
    images = sorted((dataset.parent / "imagesTs").glob("*_0000.nii.gz"))
    _same_space(tmp_path / "out" / images[0].name.replace("_0000", ""), images[0])
    failures = predict_files(checkpoint, images[0], tmp_path / "one")  # one file for a 2-channel network
    assert len(failures) == 1 and "takes 2 channel(s)" in failures[0]


def test_native_two_dimensional_images(tmp_path: Path) -> None:
    from seg.data.synthetic import make_dataset

    dataset = make_dataset(tmp_path / "data", cases=4, test_cases=1, spatial_dims=2, shape=(64, 64),
                           foreground_fraction=0.01, empty_fraction=0.0, seed=4, progress=False)
    checkpoint = _train(dataset, tmp_path / "run", "--data.spatial_dims", "2", "--data.patch_size", "[32, 32]")
    image = sorted((dataset.parent / "imagesTs").glob("*.nii.gz"))[0]
    assert predict_files(checkpoint, image, tmp_path / "out") == []
    _same_space(tmp_path / "out" / image.name, image)

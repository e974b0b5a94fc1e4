"""seg.data.check: every problem reported with its file, summary numbers against hand counts, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from seg.data.check import check_dataset, main, run_check
from seg.data.layouts import load_dataset
from tests.data._fixtures import (
    SHAPE,
    blob_label,
    las_affine,
    lps_affine,
    make_msd,
    random_image,
    write_nifti,
)

VOXELS = int(np.prod(SHAPE))  # 384


def _check(root: Path, **kwargs):
    return check_dataset(load_dataset(root), progress=False, **kwargs)


def test_clean_dataset_is_ok_with_hand_counted_summary(tmp_path: Path) -> None:
    report = _check(make_msd(tmp_path, n_train=2, n_test=1))
    assert report.ok and report.errors == [] and report.warnings == []
    s = report.summary
    assert (s["cases"], s["test_cases"]) == (2, 1)
    assert s["shapes"] == {"(8, 8, 6)": 3} and s["orientations"] == {"LPS": 3} and s["spacings"] == {"(1, 1, 1)": 3}
    # case_000 has eight voxels of class 1, case_001 eight of class 2 (test labels are not counted)
    counts = np.array([2 * VOXELS - 16, 8, 8], dtype=float)
    np.testing.assert_array_equal(s["class_counts"], counts)
    assert s["label_values"] == [0, 1, 2]
    np.testing.assert_allclose(s["alpha"]["inverse"], (1 / counts) / (1 / counts).sum())
    np.testing.assert_allclose(s["alpha"]["inverse_sqrt"], counts**-0.5 / (counts**-0.5).sum())
    lo = min(random_image(i).min() for i in range(3))
    assert s["intensity"][0]["min"] == pytest.approx(lo)
    text = report.format()
    assert "2 training case(s), 1 test case(s): OK" in text and "LPS x3" in text
    assert "lesion 8 (1.04 %)" in text and "alpha inverse:" in text


def test_every_problem_is_listed_with_its_file(tmp_path: Path) -> None:
    make_msd(tmp_path, n_train=8, n_test=0)
    tr = tmp_path / "labelsTr"
    (tmp_path / "imagesTr" / "case_000.nii.gz").unlink()  # missing image
    (tr / "case_001.nii.gz").write_bytes(b"\x1f\x8b corrupt")  # unreadable label
    write_nifti(tr / "case_002.nii.gz", blob_label(shape=(8, 8, 5)), lps_affine(), dtype=np.uint8)
    write_nifti(tr / "case_003.nii.gz", blob_label(), las_affine(), dtype=np.uint8)
    soft = blob_label().astype(np.float32)
    soft[0, 0, 0] = 0.25
    write_nifti(tr / "case_004.nii.gz", soft, lps_affine(), dtype=np.float32)
    write_nifti(tr / "case_005.nii.gz", blob_label(value=7), lps_affine(), dtype=np.uint8)
    nan_image = random_image(6)
    nan_image[1, 2, 3] = np.nan
    write_nifti(tmp_path / "imagesTr" / "case_006.nii.gz", nan_image, lps_affine())
    write_nifti(tmp_path / "imagesTr" / "case_007.nii.gz", np.zeros((*SHAPE, 2), np.float32), lps_affine())
    report = _check(tmp_path)
    assert not report.ok
    expected = [
        "image 'imagesTr/case_000.nii.gz' of case 'case_000' is missing",
        "cannot read NIfTI 'labelsTr/case_001.nii.gz'",
        "label 'labelsTr/case_002.nii.gz' has shape (8, 8, 5) but its image has (8, 8, 6)",
        "label 'labelsTr/case_003.nii.gz' affine differs from its image 'imagesTr/case_003.nii.gz' by up to",
        "label 'labelsTr/case_004.nii.gz' has 1 non-integral voxels",
        "label 'labelsTr/case_005.nii.gz' has values [7] not declared in labels",
        "image 'imagesTr/case_006.nii.gz' has 1 NaN/inf voxels",
        "image 'imagesTr/case_007.nii.gz' has 4 dimensions (8, 8, 6, 2) but a 3D volume was expected",
    ]
    assert len(report.errors) == len(expected)
    for message, error in zip(expected, report.errors, strict=True):
        assert error.startswith(message), (message, error)
    assert "orientation LAS vs LPS" in report.errors[3]
    text = report.format()
    assert "FAILED with 8 error(s)" in text and all(e in text for e in report.errors)


def test_missing_label_modality_mismatch_and_channel_count(tmp_path: Path) -> None:
    make_msd(tmp_path, n_train=3, n_test=0, modalities=2)
    (tmp_path / "labelsTr" / "case_000.nii.gz").unlink()
    write_nifti(tmp_path / "imagesTr" / "case_001_0001.nii.gz", random_image(shape=(8, 8, 4)), lps_affine())
    write_nifti(tmp_path / "imagesTr" / "case_002_0001.nii.gz", random_image(), las_affine())
    report = _check(tmp_path)
    assert report.errors[0] == "label 'labelsTr/case_000.nii.gz' of case 'case_000' is missing"
    assert report.errors[1].startswith("image 'imagesTr/case_001_0001.nii.gz' has shape (8, 8, 4) but "
                                       "'imagesTr/case_001_0000.nii.gz' of the same case has (8, 8, 6)")
    assert report.errors[2].startswith("image 'imagesTr/case_002_0001.nii.gz' affine differs from "
                                       "'imagesTr/case_002_0000.nii.gz' by up to 318.1")  # y offsets 239 vs -79.1
    assert len(report.errors) == 3


def test_affine_within_tolerance_and_no_foreground_warning(tmp_path: Path) -> None:
    make_msd(tmp_path, n_train=2, n_test=0)
    shifted = lps_affine()
    shifted[:3, 3] += 5e-4
    write_nifti(tmp_path / "labelsTr" / "case_000.nii.gz", blob_label(), shifted, dtype=np.uint8)
    write_nifti(tmp_path / "labelsTr" / "case_001.nii.gz", np.zeros(SHAPE), lps_affine(), dtype=np.uint8)
    report = _check(tmp_path)
    assert report.ok, report.errors
    assert report.warnings == ["label 'labelsTr/case_001.nii.gz' (case 'case_001') has no foreground voxels"]
    assert not _check(tmp_path, affine_tolerance=1e-4).ok
    assert "alpha: not computed: class(es) [2] have zero count" in report.format()


def test_empty_dataset_and_duplicate_names(tmp_path: Path) -> None:
    (tmp_path / "dataset.json").write_text(json.dumps({"training": [], "labels": {"0": "bg", "1": "fg"}}))
    report = _check(tmp_path)
    assert report.errors == [f"dataset '{tmp_path}' has no training cases; add labelled cases to it"]
    make_msd(tmp_path, n_train=1, n_test=0)
    content = json.loads((tmp_path / "dataset.json").read_text())
    content["training"] *= 2
    (tmp_path / "dataset.json").write_text(json.dumps(content))
    assert _check(tmp_path).errors == ["training case name 'case_000' appears 2 times"]


def test_msd_4d_file_with_declared_modalities_and_2d_data(tmp_path: Path) -> None:
    write_nifti(tmp_path / "imagesTr" / "a.nii.gz", np.ones((*SHAPE, 2), np.float32), lps_affine())
    write_nifti(tmp_path / "labelsTr" / "a.nii.gz", blob_label(), lps_affine(), dtype=np.uint8)
    spec = {"training": [{"image": "imagesTr/a.nii.gz", "label": "labelsTr/a.nii.gz"}],
            "labels": {"0": "background", "1": "tumour"}, "modality": {"0": "FLAIR", "1": "T1"}}
    (tmp_path / "dataset.json").write_text(json.dumps(spec))
    report = _check(tmp_path)
    assert report.ok, report.errors
    assert [c["channel"] for c in report.summary["intensity"]] == ["FLAIR", "T1"]
    assert report.summary["class_counts"] == [VOXELS - 8, 8]
    # the same 3D files are wrong for a 2D dataset; (H, W, 1) slices are right
    assert "has 3 spatial dimensions (8, 8, 6) but 2D is expected" in _check(tmp_path, spatial_dims=2).errors[0]
    flat = tmp_path / "flat"
    write_nifti(flat / "images" / "s.nii.gz", random_image(shape=(8, 8, 1)), lps_affine())
    write_nifti(flat / "labels" / "s.nii.gz", blob_label(shape=(8, 8, 1), corner=0), lps_affine(), dtype=np.uint8)
    assert _check(flat, spatial_dims=2).ok


def test_run_check_prints_and_returns_exit_code(tmp_path: Path, capsys) -> None:
    make_msd(tmp_path / "good", n_train=1, n_test=0)
    assert run_check(tmp_path / "good") == 0
    assert "1 training case(s), 0 test case(s): OK" in capsys.readouterr().out
    make_msd(tmp_path / "bad", n_train=1, n_test=0)
    (tmp_path / "bad" / "labelsTr" / "case_000.nii.gz").unlink()
    assert main([str(tmp_path / "bad")]) == 1
    assert "label 'labelsTr/case_000.nii.gz' of case 'case_000' is missing" in capsys.readouterr().out
    assert run_check(load_dataset(tmp_path / "good"), quiet=True) == 0
    assert capsys.readouterr().out.count("\n") == 1  # one line when fine and quiet
    assert run_check(load_dataset(tmp_path / "bad"), quiet=True) == 1
    assert "label 'labelsTr/case_000.nii.gz' of case 'case_000' is missing" in capsys.readouterr().out
    assert run_check(tmp_path / "nowhere") == 1
    assert "dataset error: dataset path" in capsys.readouterr().out


def test_real_brats_and_isles_cases(brats_case: Path, isles_case: Path, tmp_path: Path) -> None:
    modalities = ["Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz"]
    brats = {"labels": {"0": "background", "1": "necrosis", "2": "oedema", "3": "non-enhancing", "4": "enhancing"},
             "modality": {"0": "FLAIR", "1": "T1c"},
             "training": [{"image": [str(brats_case / m) for m in modalities],
                           "label": str(brats_case / "OTMultiClass.nii.gz")}]}
    (tmp_path / "dataset.json").write_text(json.dumps(brats))
    report = _check(tmp_path)
    assert report.ok, report.errors
    assert report.summary["orientations"] == {"LPS": 1} and report.summary["shapes"] == {"(240, 240, 155)": 1}
    assert sum(report.summary["class_counts"]) == 240 * 240 * 155
    prefix = str(isles_case / "sub-strokecase0009_ses-0001")
    isles = {"labels": {"0": "background", "1": "infarct"}, "modality": {"0": "DWI", "1": "ADC"},
             "training": [{"image": [f"{prefix}_dwi.nii.gz", f"{prefix}_adc.nii.gz"], "label": f"{prefix}_msk.nii.gz"}]}
    (tmp_path / "dataset.json").write_text(json.dumps(isles))
    report = _check(tmp_path)
    assert report.ok, report.errors
    assert report.summary["orientations"] == {"LAS": 1} and report.summary["spacings"] == {"(2, 2, 2)": 1}
    fraction = report.summary["class_counts"][1] / (112 * 112 * 73)
    assert fraction == pytest.approx(0.00057, abs=5e-5)  # README: foreground 0.057 %


def test_every_label_empty_is_an_error_when_the_config_needs_foreground(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
    training = []
    for i in range(3):
        affine = np.diag([1.0, 1.0, 2.0, 1.0])
        nib.save(nib.Nifti1Image(np.ones((8, 8, 6), np.float32), affine), root / "imagesTr" / f"c{i}.nii.gz")
        nib.save(nib.Nifti1Image(np.zeros((8, 8, 6), np.uint8), affine), root / "labelsTr" / f"c{i}.nii.gz")
        training.append({"image": f"./imagesTr/c{i}.nii.gz", "label": f"./labelsTr/c{i}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({"training": training, "labels": {"0": "background", "1": "lesion"}}))
    spec = load_dataset(root / "dataset.json")
    assert check_dataset(spec, progress=False).ok  # only warnings: a config without alpha auto may go on
    report = check_dataset(spec, progress=False, needs_foreground=True)
    assert not report.ok and "every training label" in report.errors[-1] and "alpha 'auto'" in report.errors[-1]

"""seg.data.layouts: MSD, nnU-Net v2 and plain-folder datasets discovered into one DatasetSpec."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from seg.data.layouts import Case, load_dataset
from tests.data._fixtures import blob_label, las_affine, make_msd, random_image, write_nifti


def _write_nnunet(root: Path, *, channels: int = 2, labels: dict | None = None, tests: bool = True) -> Path:
    for name in ("BRAIN_001", "BRAIN_002"):
        for c in range(channels):
            write_nifti(root / "imagesTr" / f"{name}_{c:04d}.nii.gz", random_image(c), las_affine())
        write_nifti(root / "labelsTr" / f"{name}.nii.gz", blob_label(), las_affine(), dtype=np.uint8)
    if tests:
        for c in range(channels):
            write_nifti(root / "imagesTs" / f"BRAIN_101_{c:04d}.nii.gz", random_image(c), las_affine())
            write_nifti(root / "imagesTs" / f"BRAIN_102_{c:04d}.nii.gz", random_image(c), las_affine())
        write_nifti(root / "labelsTs" / "BRAIN_101.nii.gz", blob_label(), las_affine(), dtype=np.uint8)
    spec = {"channel_names": {str(c): f"mod{c}" for c in range(channels)},
            "labels": labels or {"background": 0, "lesion": 1}, "numTraining": 2, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(spec))
    return root


def test_msd_single_modality_from_json_or_folder(tmp_path: Path) -> None:
    json_path = make_msd(tmp_path, n_train=2, n_test=2)
    (tmp_path / "labelsTs" / "case_003.nii.gz").unlink()  # second test case has no label
    for source in (json_path, tmp_path, str(tmp_path)):
        spec = load_dataset(source)
        assert spec.layout == "msd" and spec.root == tmp_path
        assert [c.name for c in spec.cases] == ["case_000", "case_001"]
        assert spec.cases[0].images == [tmp_path / "imagesTr" / "case_000.nii.gz"]
        assert spec.cases[1].label == tmp_path / "labelsTr" / "case_001.nii.gz"
        assert [(c.name, c.label) for c in spec.test_cases] == [
            ("case_002", tmp_path / "labelsTs" / "case_002.nii.gz"), ("case_003", None)]
        assert spec.labels == {0: "background", 1: "lesion", 2: "oedema"} and spec.num_classes == 3
        assert spec.channel_names == ["MR0"]


def test_msd_multi_modality_and_as_dict(tmp_path: Path) -> None:
    spec = load_dataset(make_msd(tmp_path, n_train=1, n_test=1, modalities=2))
    case = spec.cases[0]
    assert case.as_dict() == {
        "image": [str(tmp_path / "imagesTr" / "case_000_0000.nii.gz"), str(tmp_path / "imagesTr" / "case_000_0001.nii.gz")],
        "label": str(tmp_path / "labelsTr" / "case_000.nii.gz"),
    }
    assert spec.channel_names == ["MR0", "MR1"]
    # the test label is labelsTs/<first image name without its _0000 suffix>
    assert spec.test_cases[0].label == tmp_path / "labelsTs" / "case_001.nii.gz"
    assert Case("x", [Path("a.nii")]).as_dict() == {"image": ["a.nii"]}


def test_nnunet_v2_raw_dataset(tmp_path: Path) -> None:
    spec = load_dataset(_write_nnunet(tmp_path))
    assert spec.layout == "nnunet" and spec.channel_names == ["mod0", "mod1"]
    assert [c.name for c in spec.cases] == ["BRAIN_001", "BRAIN_002"]
    assert spec.cases[1].images == [tmp_path / "imagesTr" / "BRAIN_002_0000.nii.gz",
                                    tmp_path / "imagesTr" / "BRAIN_002_0001.nii.gz"]
    assert spec.cases[1].label == tmp_path / "labelsTr" / "BRAIN_002.nii.gz"
    assert [(c.name, c.label) for c in spec.test_cases] == [
        ("BRAIN_101", tmp_path / "labelsTs" / "BRAIN_101.nii.gz"), ("BRAIN_102", None)]
    assert spec.labels == {0: "background", 1: "lesion"} and spec.ignore_label is None


def test_nnunet_ignore_label_and_region_labels(tmp_path: Path) -> None:
    spec = load_dataset(_write_nnunet(tmp_path, labels={"background": 0, "lesion": 1, "ignore": 2}, tests=False))
    assert spec.ignore_label == 2 and spec.num_classes == 2 and spec.test_cases == []
    _write_nnunet(tmp_path, labels={"background": 0, "whole": [1, 2]}, tests=False)
    with pytest.raises(ValueError, match="region-based labels"):
        load_dataset(tmp_path)


def test_nnunet_badly_named_image_and_missing_modality(tmp_path: Path) -> None:
    _write_nnunet(tmp_path, tests=False)
    (tmp_path / "imagesTr" / "BRAIN_002_0001.nii.gz").unlink()
    spec = load_dataset(tmp_path)  # the missing modality is listed for check_dataset to report
    assert spec.cases[1].images[1] == tmp_path / "imagesTr" / "BRAIN_002_0001.nii.gz"
    write_nifti(tmp_path / "imagesTr" / "BRAIN_003.nii.gz", random_image(), las_affine())
    with pytest.raises(ValueError, match=r"BRAIN_003\.nii\.gz' is not named CASE_XXXX\.nii\.gz"):
        load_dataset(tmp_path)


def test_folders_layout_with_inferred_labels(tmp_path: Path) -> None:
    for i, value in enumerate([1, 3]):
        write_nifti(tmp_path / "images" / f"p{i}.nii.gz", random_image(i), las_affine())
        write_nifti(tmp_path / "labels" / f"p{i}.nii.gz", blob_label(value=value), las_affine(), dtype=np.uint8)
    spec = load_dataset(tmp_path)
    assert spec.layout == "folders" and [c.name for c in spec.cases] == ["p0", "p1"]
    assert spec.cases[1].as_dict() == {"image": [str(tmp_path / "images" / "p1.nii.gz")],
                                       "label": str(tmp_path / "labels" / "p1.nii.gz")}
    assert spec.labels == {0: "background", 1: "class_1", 2: "class_2", 3: "class_3"}  # range(0, 3 + 1)
    (tmp_path / "labels.json").write_text(json.dumps({"0": "background", "1": "a", "2": "b", "3": "c"}))
    assert load_dataset(tmp_path).labels == {0: "background", 1: "a", 2: "b", 3: "c"}


def test_folders_layout_groups_modalities(tmp_path: Path) -> None:
    for c in range(2):
        write_nifti(tmp_path / "images" / f"s1_{c:04d}.nii.gz", random_image(c), las_affine())
    write_nifti(tmp_path / "labels" / "s1.nii.gz", blob_label(), las_affine(), dtype=np.uint8)
    spec = load_dataset(tmp_path)
    assert [c.name for c in spec.cases] == ["s1"] and spec.channel_names == ["channel_0", "channel_1"]
    assert [p.name for p in spec.cases[0].images] == ["s1_0000.nii.gz", "s1_0001.nii.gz"]
    assert spec.labels == {0: "background", 1: "class_1"}


def test_clear_errors_for_unrecognised_or_broken_datasets(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no dataset.json and no images/ \\+ labels/ folders"):
        load_dataset(tmp_path)
    broken = tmp_path / "dataset.json"
    broken.write_text('{"training": [,]}')
    with pytest.raises(ValueError, match=r"dataset\.json' is not valid JSON: .* line 1, column 15"):
        load_dataset(tmp_path)
    broken.write_text(json.dumps({"training": []}))
    with pytest.raises(ValueError, match=r"missing key\(s\) \['labels'\]"):
        load_dataset(broken)
    broken.write_text(json.dumps({"name": "x"}))
    with pytest.raises(ValueError, match=r"neither an MSD dataset\.json .* found keys \['name'\]"):
        load_dataset(broken)
    broken.write_text(json.dumps({"training": [{"image": "a.nii.gz"}], "labels": {"0": "bg", "1": "fg"}}))
    with pytest.raises(ValueError, match=r"training\[0\] must be an object with keys 'image' and 'label'"):
        load_dataset(broken)
    broken.write_text(json.dumps({"training": [], "labels": {"0": "bg", "2": "fg"}}))
    with pytest.raises(ValueError, match=r"consecutive integers \[0, 1\] .* found \[0, 2\]"):
        load_dataset(broken)
    broken.write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0}, "file_ending": ".png"}))
    with pytest.raises(ValueError, match="file_ending '.png' is not supported"):
        load_dataset(broken)

"""Tests of seg.data.synthetic: exact properties of the written files, measured with nibabel and scipy.

``TINY`` passes ``lesion_radius``, so those datasets use the ``"radius"`` size model of earlier versions (the
file-layout tests do not depend on lesion sizes); the ``realistic`` tests below use the defaults.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from seg.data.synthetic import main, make_dataset, preview

TINY = {"shape": (32, 32, 16), "spacing": (1.0, 1.0, 2.0), "lesion_radius": (1.0, 3.0), "progress": False}


def _entries(dataset_json: Path) -> list[tuple[Path, Path]]:
    """(image, label) paths of every case, training then test (test labels from labelsTs/, same name)."""
    data = json.loads(dataset_json.read_text())
    root = dataset_json.parent
    pairs = [(root / e["image"], root / e["label"]) for e in data["training"]]
    pairs += [(root / t, root / t.replace("imagesTs", "labelsTs")) for t in data["test"]]
    return pairs


def _arrays(dataset_json: Path) -> list[np.ndarray]:
    return [np.asanyarray(nib.load(p).dataobj) for pair in _entries(dataset_json) for p in pair]


@pytest.fixture(scope="module")
def tiny3d(tmp_path_factory) -> Path:
    # 8 training + 4 test cases; round(0.25 * 8) = 2 and round(0.25 * 4) = 1 lesion-free cases.
    return make_dataset(
        tmp_path_factory.mktemp("tiny3d"), cases=8, test_cases=4, empty_fraction=0.25, seed=0, **TINY
    )


def test_dataset_json_follows_the_msd_layout_and_its_paths_exist(tiny3d: Path):
    data = json.loads(tiny3d.read_text())
    assert data["tensorImageSize"] == "3D"
    assert data["modality"] == {"0": "MR"}
    assert data["labels"] == {"0": "background", "1": "lesion"}
    assert (data["numTraining"], data["numTest"]) == (8, 4) == (len(data["training"]), len(data["test"]))
    assert data["training"][0] == {
        "image": "./imagesTr/case_000.nii.gz",
        "label": "./labelsTr/case_000.nii.gz",
    }
    assert data["test"][0] == "./imagesTs/case_100.nii.gz"
    for image, label in _entries(tiny3d):
        assert image.is_file() and label.is_file() and image.name == label.name
    assert not list(tiny3d.parent.rglob(".tmp-*"))  # atomic writes leave no temporary files


def test_images_and_labels_share_shape_and_a_non_ras_affine(tiny3d: Path):
    for image_path, label_path in _entries(tiny3d):
        image, label = nib.load(image_path), nib.load(label_path)
        assert image.shape == label.shape == (32, 32, 16)
        assert image.get_data_dtype() == np.float32 and label.get_data_dtype() == np.uint8
        np.testing.assert_array_equal(image.affine, label.affine)
        assert int(image.header["qform_code"]) == int(label.header["qform_code"]) == 1
        assert int(image.header["sform_code"]) == int(label.header["sform_code"]) == 1
        assert nib.aff2axcodes(image.affine) == ("L", "P", "S")
        np.testing.assert_allclose(image.header.get_zooms(), (1.0, 1.0, 2.0), rtol=1e-6)
        assert not np.allclose(image.affine[:3, 3], 0)  # origin offset, not the identity
        assert set(np.unique(np.asanyarray(label.dataobj))) <= {0, 1}
        # air outside the head is exactly zero and every lesion voxel lies in the head
        pixels = np.asanyarray(image.dataobj)
        assert (pixels == 0).mean() > 0.3
        assert np.all(pixels[np.asanyarray(label.dataobj) == 1] > 0)


def test_requested_number_of_lesion_free_cases(tiny3d: Path):
    data = json.loads(tiny3d.read_text())
    sums = [int(np.asanyarray(nib.load(label).dataobj).sum()) for _, label in _entries(tiny3d)]
    train_sums, test_sums = sums[:8], sums[8:]
    assert sum(s == 0 for s in train_sums) == 2  # round(0.25 * 8)
    assert sum(s == 0 for s in test_sums) == 1  # round(0.25 * 4)
    empty_names = [f"case_{i:03d}" for i, s in enumerate(train_sums) if s == 0]
    assert data["stats"]["lesion_free_training"] == empty_names


# 0.002 and 0.005: near the top of what 1-3 mm lesions can fill in a 32x32x16 volume (about 0.006) the
# generator undershoots by ~20 % (lesions clipped at the head boundary are not compensated; see the issue note).
@pytest.mark.parametrize("fraction", [0.002, 0.005])
def test_foreground_fraction_over_the_dataset_is_close_to_the_request(tmp_path: Path, fraction: float):
    path = make_dataset(tmp_path, cases=12, test_cases=4, foreground_fraction=fraction, seed=3, **TINY)
    labels = [np.asanyarray(nib.load(label).dataobj) for _, label in _entries(path)]
    measured = sum(int(lab.sum()) for lab in labels) / sum(lab.size for lab in labels)
    assert measured == pytest.approx(fraction, rel=0.2)
    assert json.loads(path.read_text())["stats"]["foreground_fraction"] == pytest.approx(measured, rel=1e-12)


@pytest.mark.parametrize(
    "sizes",
    [TINY, {"shape": (40, 40, 24), "progress": False}],  # radius model; realistic (the default) model
    ids=["radius", "realistic"],
)
def test_same_seed_gives_identical_arrays_and_files_and_another_seed_differs(tmp_path: Path, sizes: dict):
    kwargs = dict(cases=2, test_cases=1, **sizes)
    first = make_dataset(tmp_path / "a", seed=7, **kwargs)
    again = make_dataset(tmp_path / "b", seed=7, **kwargs)
    other = make_dataset(tmp_path / "c", seed=8, **kwargs)
    for x, y in zip(_arrays(first), _arrays(again), strict=True):
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes()
    for (image_a, label_a), (image_b, label_b) in zip(_entries(first), _entries(again), strict=True):
        assert image_a.read_bytes() == image_b.read_bytes() and label_a.read_bytes() == label_b.read_bytes()
    stats_a, stats_b = (json.loads(p.read_text())["stats"] for p in (first, again))
    assert {**stats_a, "seconds": 0} == {**stats_b, "seconds": 0}
    assert any(x.tobytes() != z.tobytes() for x, z in zip(_arrays(first), _arrays(other), strict=True))


def test_distractors_are_bright_and_not_labelled(tmp_path: Path):
    # Every case lesion-free but one; the lesion-free cases differ only by the distractors' signal.
    kwargs = dict(cases=4, test_cases=0, empty_fraction=0.75, distractors=(3, 3), seed=1, **TINY)
    with_distractors = make_dataset(tmp_path / "on", **kwargs)
    kwargs["distractors"] = (0, 0)
    without = make_dataset(tmp_path / "off", **kwargs)
    empty = json.loads(with_distractors.read_text())["stats"]["lesion_free_training"]
    assert len(empty) == 3
    for name in empty:
        on = nib.load(with_distractors.parent / "imagesTr" / f"{name}.nii.gz").get_fdata()
        off = nib.load(without.parent / "imagesTr" / f"{name}.nii.gz").get_fdata()
        label = np.asanyarray(nib.load(with_distractors.parent / "labelsTr" / f"{name}.nii.gz").dataobj)
        added = on - off
        assert added.min() >= -1e-3 * np.abs(off).max()  # distractors only add brightness
        assert (added > 0.02 * np.median(off[off > 0])).sum() > 5  # ... visibly, on several voxels
        assert label.sum() == 0  # ... and none of them is labelled


def test_two_dimensional_dataset_writes_2d_nifti(tmp_path: Path):
    path = make_dataset(
        tmp_path,
        spatial_dims=2,
        shape=(48, 40),
        lesion_radius=(0.8, 2.5),
        foreground_fraction=0.01,
        cases=3,
        test_cases=1,
        seed=0,
        progress=False,
    )
    assert json.loads(path.read_text())["tensorImageSize"] == "2D"
    for image_path, label_path in _entries(path):
        image, label = nib.load(image_path), nib.load(label_path)
        assert image.shape == label.shape == (48, 40)
        np.testing.assert_array_equal(image.affine, label.affine)
        assert nib.aff2axcodes(image.affine) == ("L", "P", "S")
        assert set(np.unique(np.asanyarray(label.dataobj))) <= {0, 1}
    assert sum(np.asanyarray(nib.load(label).dataobj).sum() for _, label in _entries(path)) > 0


def test_two_channels_are_written_as_one_file_each(tmp_path: Path):
    path = make_dataset(tmp_path, cases=2, test_cases=1, channels=2, seed=0, **TINY)
    data = json.loads(path.read_text())
    assert data["modality"] == {"0": "FLAIR", "1": "T1"}
    images = data["training"][0]["image"]
    assert images == ["./imagesTr/case_000_0000.nii.gz", "./imagesTr/case_000_0001.nii.gz"]
    flair, t1 = (nib.load(path.parent / p) for p in images)
    np.testing.assert_array_equal(flair.affine, t1.affine)
    assert not np.array_equal(flair.get_fdata(), t1.get_fdata())
    assert all((path.parent / p).is_file() for p in data["test"][0])


def test_command_line_writes_a_dataset(tmp_path: Path):
    out = tmp_path / "cli"
    command = [sys.executable, "-m", "seg.data.synthetic", str(out), "--cases", "3", "--test-cases", "1"]
    command += ["--shape", "32", "32", "16", "--lesion-radius", "1", "3", "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    data = json.loads((out / "dataset.json").read_text())
    assert (data["numTraining"], data["numTest"]) == (3, 1)
    assert data["stats"]["parameters"]["lesion_sizes"] == "radius"  # chosen by --lesion-radius
    image = nib.load(out / "imagesTr" / "case_000.nii.gz")
    assert image.shape == (32, 32, 16)
    np.testing.assert_allclose(image.header.get_zooms(), (1.0, 1.0, 2.0), rtol=1e-6)  # default spacing
    assert "lesion fraction" in result.stdout


def test_command_line_size_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    flags = ["--lesion-sizes", "realistic", "--lesion-volume", "10", "1.0", "--lesion-volume-range", "4", "200"]
    path = main([str(tmp_path), "--cases", "2", "--test-cases", "0", "--shape", "32", "32", "16", *flags, "--quiet"])
    parameters = json.loads(path.read_text())["stats"]["parameters"]
    assert parameters["lesion_sizes"] == "realistic" and parameters["lesion_radius"] is None
    assert (parameters["lesion_volume"], parameters["lesion_volume_range"]) == ([10.0, 1.0], [4.0, 200.0])
    assert parameters["lesions_per_case"] == [2, 15]
    assert "realistic lesion sizes" in capsys.readouterr().out


def test_existing_dataset_is_not_overwritten_without_permission(tiny3d: Path):
    with pytest.raises(FileExistsError, match="overwrite=True"):
        make_dataset(tiny3d.parent, cases=1, test_cases=0, **TINY)


def test_overwrite_removes_stale_cases(tmp_path: Path):
    make_dataset(tmp_path, cases=3, test_cases=0, seed=0, **TINY)
    make_dataset(tmp_path, cases=2, test_cases=0, seed=0, overwrite=True, **TINY)
    assert sorted(p.name for p in (tmp_path / "imagesTr").iterdir()) == ["case_000.nii.gz", "case_001.nii.gz"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"spatial_dims": 4}, "spatial_dims must be 2 or 3"),
        ({"shape": (32, 32)}, "shape must have 3 sizes"),
        ({"lesion_radius": (3.0, 1.0)}, "lesion_radius must be a range"),
        ({"channels": 3}, "channels must be 1"),
        ({"foreground_fraction": 0.3}, "out of reach"),
        ({"lesion_sizes": "realistc"}, "did you mean 'realistic'"),
        ({"lesion_sizes": "realistic"}, "lesion_radius cannot be used with lesion_sizes='realistic'"),
        ({"lesion_sizes": "radius", "lesion_volume": (10.0, 1.0)}, "lesion_volume cannot be used"),
        ({"lesion_radius": None, "lesion_volume": (10.0, 0.0)}, "sigma > 0"),
        ({"lesion_radius": None, "lesion_volume": (1.0, 1.0)}, "median inside lesion_volume_range"),
        ({"lesion_radius": None, "lesion_volume_range": (0.0, 10.0)}, "lesion_volume_range must be a range"),
    ],
)
def test_bad_arguments_raise_with_a_clear_message(tmp_path: Path, kwargs: dict, match: str):
    arguments = {**TINY, "cases": 2, "test_cases": 0, **kwargs}
    with pytest.raises(ValueError, match=match):
        make_dataset(tmp_path, **arguments)


def test_preview_writes_a_png(tiny3d: Path, tmp_path: Path):
    out = preview(tiny3d, tmp_path / "montage.png", cases=3)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_lesion_is_one_connected_component(tiny3d: Path):
    counts = json.loads(tiny3d.read_text())["stats"]["lesions_per_case"]
    for _, label_path in _entries(tiny3d):
        label = np.asanyarray(nib.load(label_path).dataobj)
        _, components = ndimage.label(label, structure=np.ones((3, 3, 3)))  # 26-connectivity
        assert components == counts[label_path.name.removesuffix(".nii.gz")]

"""Lesion sizes of seg.data.synthetic: the written labels follow the component sizes of MS / WMH masks.

Everything is measured here on the label files, independently of ``dataset.json``, with
``scipy.ndimage.label`` and full connectivity (26 neighbours in 3D, 8 in 2D). (A file apart from
``test_synthetic.py``, which holds the file-layout tests, to keep both under 300 lines.)
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from seg.data.synthetic import make_dataset

ANISOTROPIC_SPACING = (0.5, 0.5, 5.0)


def _components(dataset_json: Path) -> dict[str, tuple[list[int], np.ndarray]]:
    """Per case: the label's component sizes (voxels) and extents ``(n, d)`` in voxels along each axis."""
    data = json.loads(dataset_json.read_text())
    root = dataset_json.parent
    files = [root / e["label"] for e in data["training"]]
    files += [root / t.replace("imagesTs", "labelsTs") for t in data["test"]]
    cases = {}
    for file in files:
        label = np.asanyarray(nib.load(file).dataobj)
        components, n = ndimage.label(label, structure=np.ones((3,) * label.ndim))
        sizes = np.bincount(components.ravel(), minlength=n + 1)[1:].tolist()
        extents = np.array([[s.stop - s.start for s in box] for box in ndimage.find_objects(components)])
        cases[file.name.removesuffix(".nii.gz")] = (sizes, extents.reshape(n, label.ndim))
    return cases


def _all_sizes(cases: dict[str, tuple[list[int], np.ndarray]]) -> np.ndarray:
    return np.array([size for sizes, _ in cases.values() for size in sizes])


@pytest.fixture(scope="module")
def default3d(tmp_path_factory) -> Path:
    # the default shape (64, 64, 48) at (1, 1, 2) mm and the default (realistic) sizes; about 5 s
    return make_dataset(tmp_path_factory.mktemp("default3d"), cases=16, test_cases=8, seed=0, progress=False)


@pytest.fixture(scope="module")
def anisotropic(tmp_path_factory) -> Path:
    # thick slices, as clinical FLAIR for white-matter hyperintensities; about 4 s
    return make_dataset(
        tmp_path_factory.mktemp("anisotropic"),
        shape=(128, 128, 12),
        spacing=ANISOTROPIC_SPACING,
        cases=16,
        test_cases=0,
        seed=1,
        progress=False,
    )


def test_default_sizes_follow_ms_and_wmh_masks(default3d: Path):
    # Public MS / WMH masks: about two thirds of the lesions under 30 voxels, median 12-30, a few large ones.
    sizes = _all_sizes(_components(default3d))
    assert len(sizes) > 100
    assert 0.55 <= np.mean(sizes < 30) <= 0.8
    assert 10 <= np.median(sizes) <= 35
    assert sizes.max() >= 200 and np.mean(sizes > 300) < 0.1


def test_every_lesion_is_one_component_of_its_planned_size(default3d: Path):
    stats = json.loads(default3d.read_text())["stats"]
    cases = _components(default3d)
    assert max(stats["lesions_per_case"].values()) >= 10  # more lesions per case than the radius model's 1-6
    exact = 0
    for name, (sizes, _) in cases.items():
        planned = sorted(stats["lesion_target_voxels"][name])
        assert len(sizes) == stats["lesions_per_case"][name] == len(planned)  # apart: one component each
        np.testing.assert_allclose(sorted(sizes), planned, rtol=0.1, atol=1)
        exact += sorted(sizes) == planned
    assert exact >= 0.9 * len(cases)  # the label is grown to the planned count, so almost always exactly


def test_stats_report_the_distribution_measured_on_the_labels(default3d: Path):
    stats = json.loads(default3d.read_text())["stats"]
    sizes = _all_sizes(_components(default3d))
    assert stats["lesion_sizes"] == "realistic"
    assert stats["requested_foreground_fraction"] is None and stats["radius_skew_k"] is None
    assert stats["components"] == len(sizes) == stats["lesions"]
    np.testing.assert_allclose(
        stats["component_voxels_quartiles"], np.quantile(sizes, [0, 0.25, 0.5, 0.75, 1]), atol=0.01
    )
    assert stats["components_under_30"] == pytest.approx(np.mean(sizes < 30), abs=1e-4)
    assert stats["components_over_300"] == pytest.approx(np.mean(sizes > 300), abs=1e-4)


def _extents_mm(cases: dict[str, tuple[list[int], np.ndarray]], spacing: tuple[float, ...]) -> np.ndarray:
    """Extent of every component along each axis, in mm. ``(n, d)``."""
    return np.concatenate([extents for _, extents in cases.values()]) * np.asarray(spacing)


def _check_round_in_mm(cases: dict[str, tuple[list[int], np.ndarray]], spacing: tuple[float, ...]) -> None:
    """In-plane extents of 30+ voxel lesions within a factor 2; no lesion longer through-plane than it allows.

    Through-plane the extent is a whole number of slices: a lesion 6 mm long on 5 mm slices spans 2 slices
    (10 mm) when it straddles them. So the check is on the extent minus one slice: at most twice the in-plane
    extent. Smaller lesions are a few voxels, whose in-plane extents are quantised to 1-3 voxels.
    """
    sizes = _all_sizes(cases)
    extents = _extents_mm(cases, spacing)
    resolved = sizes >= 30
    assert resolved.sum() > 20
    in_plane = extents[:, :-1]
    assert np.all(in_plane[resolved].max(1) <= 2 * in_plane[resolved].min(1))
    assert np.all(extents[:, -1] - spacing[-1] <= 2 * in_plane.max(1))


def test_lesions_are_round_in_mm_on_the_default_grid(default3d: Path):
    cases = _components(default3d)
    _check_round_in_mm(cases, (1.0, 1.0, 2.0))
    extents = _extents_mm(cases, (1.0, 1.0, 2.0))[_all_sizes(cases) >= 30]
    ratio = extents.max(1) / extents.min(1)  # 2 mm slices resolve the lesions: all three axes compare
    assert ratio.max() <= 2.5 and np.median(ratio) <= 1.6


def test_anisotropic_grid_keeps_the_distribution_and_round_lesions(anisotropic: Path):
    stats = json.loads(anisotropic.read_text())["stats"]
    cases = _components(anisotropic)
    sizes = _all_sizes(cases)
    assert len(sizes) > 80
    assert 0.5 <= np.mean(sizes < 30) <= 0.85
    assert 8 <= np.median(sizes) <= 40
    for name, (case_sizes, _) in cases.items():
        assert len(case_sizes) == stats["lesions_per_case"][name]  # 26-connectivity on a 10:1 grid
    _check_round_in_mm(cases, ANISOTROPIC_SPACING)
    slices = np.concatenate([extents[:, -1] for _, extents in cases.values()])
    assert np.all(slices[sizes < 300] <= 3)  # small lesions are a few 5 mm slices thick at most
    assert np.mean(slices == 1) > 0.7


def test_two_dimensional_default_sizes(tmp_path: Path):
    path = make_dataset(tmp_path, spatial_dims=2, shape=(64, 64), cases=6, test_cases=0, seed=2, progress=False)
    stats = json.loads(path.read_text())["stats"]
    for name, (sizes, _) in _components(path).items():  # 8-connected components
        assert sorted(sizes) == sorted(stats["lesion_target_voxels"][name])


@pytest.mark.parametrize(
    ("kwargs", "model", "skew"),
    [
        ({}, "realistic", None),
        ({"lesion_radius": (1.0, 3.0)}, "radius", 1.0),  # earlier calls keep the radius model ...
        ({"foreground_fraction": 0.003}, "radius", "bisected"),  # ... and its skew to a fraction
        ({"lesion_sizes": "radius"}, "radius", 1.0),  # log-uniform radii in the default range
    ],
)
def test_the_size_model_follows_the_options_given(tmp_path: Path, kwargs: dict, model: str, skew):
    path = make_dataset(tmp_path, shape=(40, 40, 24), cases=3, test_cases=0, seed=0, progress=False, **kwargs)
    stats = json.loads(path.read_text())["stats"]
    assert stats["lesion_sizes"] == stats["parameters"]["lesion_sizes"] == model
    if skew == "bisected":
        assert stats["radius_skew_k"] not in (None, 1.0)
    else:
        assert stats["radius_skew_k"] == skew

"""Tests for seg.losses.alpha: counts against hand counts / np.unique, α against hand-computed fractions."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import seg.losses.frequencies as frequencies_mod
from seg.losses.alpha import (
    METHODS,
    alpha_from_frequencies,
    alpha_table,
    class_frequencies,
    load_alpha,
    save_alpha,
)

AFFINE = np.array([[-0.9, 0.0, 0.1, 12.0], [0.0, 1.1, 0.0, -30.0], [0.0, 0.0, 2.5, 7.5], [0, 0, 0, 1]])


# ----------------------------------------------------------------------------------------------- counting
def test_counts_2d_and_3d_by_hand():
    a2d = np.array([[0, 1], [2, 1]])  # (H, W): one 0, two 1, one 2
    # (D, H, W): three 0, one 1, two 2, two void (255)
    a3d = np.array([[[0, 0], [255, 2]], [[255, 1], [0, 2]]], dtype=np.uint8)
    counts = class_frequencies([a2d, a3d], 3, ignore_index=255)
    assert counts.dtype == np.float64 and counts.shape == (3,)
    np.testing.assert_array_equal(counts, [1 + 3, 2 + 1, 1 + 2])


def test_torch_bool_and_float_integral_labels_are_accepted():
    t = torch.tensor([[[1, 0], [0, 0]]])  # (1, H, W) int64
    f = np.array([[0.0, 4.0], [4.0, 1.0]], dtype=np.float32)  # BraTS-style float32 labels
    b = np.array([True, False, False])
    np.testing.assert_array_equal(class_frequencies([t, f, b], 5), [3 + 1 + 2, 1 + 1 + 1, 0, 0, 2])


@pytest.mark.parametrize("bad", [0.5, np.nan])
def test_non_integral_labels_rejected_naming_item(bad: float):
    ok = np.zeros((2, 2))
    with pytest.raises(ValueError, match=r"label item 1: labels must be integers.*non-integral"):
        class_frequencies([ok, np.array([[0.0, bad]])], 2)


@pytest.mark.parametrize("value", [7, -1])
def test_out_of_range_value_rejected_naming_value(value: int):
    with pytest.raises(ValueError, match=rf"label item 0: label value {value} is outside 0\.\.2"):
        class_frequencies([np.array([0, 1, value])], 3)


def test_ignore_index_is_not_counted_nor_rejected():
    np.testing.assert_array_equal(class_frequencies([np.array([0, -1, -1, 1])], 2, ignore_index=-1), [1, 1])


def test_num_classes_must_be_positive_int():
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        class_frequencies([np.zeros(3)], 0)


def _write(path: Path, array: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(array, AFFINE), str(path))
    return path


def test_nifti_streaming_equals_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    rng = np.random.default_rng(0)
    arrays = [
        rng.integers(0, 3, size=(5, 4, 6)).astype(np.uint8),
        rng.integers(0, 3, size=(3, 7, 2)).astype(np.float32),  # float-stored, integral
        rng.choice([0, 1, 2, 255], size=(4, 4, 3)).astype(np.int16),
    ]
    paths = [_write(tmp_path / f"case_{i}.nii.gz", a) for i, a in enumerate(arrays)]
    expected = class_frequencies(arrays, 3, ignore_index=255)
    np.testing.assert_array_equal(class_frequencies(paths, 3, ignore_index=255), expected)
    monkeypatch.setattr(frequencies_mod, "_SLAB_VOXELS", 7)  # force reads of 1 slice at a time
    streamed = class_frequencies((str(p) for p in paths), 3, ignore_index=255, progress=True)
    np.testing.assert_array_equal(streamed, expected)


def test_nifti_errors_name_the_file(tmp_path: Path):
    path = _write(tmp_path / "resampled.nii.gz", np.array([[[0.0, 0.3]]], dtype=np.float32))
    with pytest.raises(ValueError, match=r"resampled\.nii\.gz.*non-integral value 0\.3"):
        class_frequencies([path], 2)
    path = _write(tmp_path / "five.nii.gz", np.array([[[0, 5]]], dtype=np.uint8))
    with pytest.raises(ValueError, match=r"five\.nii\.gz.*label value 5 is outside"):
        class_frequencies([path], 2)


def test_presence_counts_voxels_of_items_containing_each_class():
    items = [np.array([0, 0, 1, 1]), np.array([0, 0, 0])]  # class 1 only in the first item (4 voxels)
    counts, present = class_frequencies(items, 3, return_presence=True)
    np.testing.assert_array_equal(counts, [5, 2, 0])
    np.testing.assert_array_equal(present, [7, 4, 0])


# ----------------------------------------------------------------------------------------------- methods
COUNTS = np.array([900.0, 90.0, 10.0])  # fractions 0.9, 0.09, 0.01


def test_inverse_by_hand():
    # 1/f ∝ [1/900, 1/90, 1/10] ∝ [1, 10, 90]
    np.testing.assert_allclose(alpha_from_frequencies(COUNTS, "inverse"), np.array([1, 10, 90]) / 101)


def test_inverse_sqrt_by_hand():
    # 30/sqrt(f·1000) = 30/[30, sqrt(90), sqrt(10)] = [1, sqrt(10), 3 sqrt(10)]
    s = math.sqrt(10)
    expected = np.array([1, s, 3 * s]) / (1 + 4 * s)
    np.testing.assert_allclose(alpha_from_frequencies(COUNTS, "inverse_sqrt"), expected)
    np.testing.assert_allclose(alpha_from_frequencies(torch.tensor(COUNTS)), expected)  # default method


def test_median_by_hand():
    # without presence the median is a common factor: same as inverse
    np.testing.assert_allclose(alpha_from_frequencies(COUNTS, "median"), np.array([1, 10, 90]) / 101)
    # class 2 only in items of 100 voxels: f = [0.9, 0.09, 0.1], median 0.1 -> [1/9, 10/9, 1] ∝ [1, 10, 9]
    got = alpha_from_frequencies(COUNTS, "median", present_voxels=[1000, 1000, 100])
    np.testing.assert_allclose(got, np.array([1, 10, 9]) / 20)


def test_effective_number_by_hand_and_limits():
    beta = 0.99
    effective = [(1 - beta**n) / (1 - beta) for n in (900, 90, 10)]  # Cui et al., eq. (3)
    expected = np.array([1 / e for e in effective])
    got = alpha_from_frequencies(COUNTS, "effective_number", beta=beta)
    np.testing.assert_allclose(got, expected / expected.sum(), rtol=1e-12)
    # β -> 0: every class has effective number 1 -> uniform; β -> 1: inverse frequency
    np.testing.assert_allclose(alpha_from_frequencies(COUNTS, "effective_number", beta=1e-9), [1 / 3] * 3)
    near_inverse = alpha_from_frequencies(COUNTS, "effective_number", beta=1 - 1e-9)
    np.testing.assert_allclose(near_inverse, np.array([1, 10, 90]) / 101, rtol=1e-5)
    with pytest.raises(ValueError, match=r"beta must lie in \(0, 1\)"):
        alpha_from_frequencies(COUNTS, "effective_number", beta=1.0)


def test_effective_number_saturates_on_voxel_counts():
    # same 0.3 % fraction: 1000 voxels -> near inverse; 10^7 voxels with β = 0.9999 -> near uniform
    small = alpha_from_frequencies([997, 3], "effective_number")
    big = alpha_from_frequencies([9_970_000, 30_000], "effective_number")
    assert small[1] > 0.99
    e_bg, e_fg = ((1 - 0.9999**n) / 1e-4 for n in (9_970_000, 30_000))
    np.testing.assert_allclose(big[1], (1 / e_fg) / (1 / e_fg + 1 / e_bg))
    assert abs(big[1] - 0.5) < 0.02


def test_point_three_percent_foreground_numbers():
    # counts [997, 3]: inverse α_fg = (1/3) / (1/3 + 1/997) = 997/1000; inverse_sqrt: sqrt(997)/(sqrt(997)+sqrt(3))
    table = alpha_table([997, 3])
    assert set(table) == set(METHODS)
    np.testing.assert_allclose(table["inverse"], [0.003, 0.997])
    fg = math.sqrt(997) / (math.sqrt(997) + math.sqrt(3))
    np.testing.assert_allclose(table["inverse_sqrt"], [1 - fg, fg])
    assert 0.947 < fg < 0.949
    for alpha in table.values():
        assert alpha.sum() == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------------- clipping
def test_clip_by_hand():
    # inverse ∝ [1, 10, 90]; bounds (0.05, 0.8) pin classes 0 and 2, class 1 takes the rest: 0.15
    got = alpha_from_frequencies(COUNTS, "inverse", clip=(0.05, 0.8))
    np.testing.assert_allclose(got, [0.05, 0.15, 0.8], atol=1e-12)


def test_clip_keeps_ratios_of_unclipped_classes():
    # inverse ∝ [1, 8, 16, 16] / 41; hi = 0.35 pins classes 2, 3; the remaining 0.3 split 1:8
    got = alpha_from_frequencies([800, 100, 50, 50], "inverse", clip=(0.0, 0.35))
    np.testing.assert_allclose(got, [0.3 / 9, 0.3 * 8 / 9, 0.35, 0.35], atol=1e-12)
    untouched = alpha_from_frequencies([800, 100, 50, 50], "inverse", clip=(0.0, 0.5))
    np.testing.assert_allclose(untouched, np.array([1, 8, 16, 16]) / 41)


@pytest.mark.parametrize("clip", [(0.4, 0.9), (0.0, 0.3), (0.5, 0.2)])
def test_infeasible_clip_rejected(clip: tuple[float, float]):
    with pytest.raises(ValueError, match=r"clip=\(lo, hi\) must satisfy"):
        alpha_from_frequencies(COUNTS, clip=clip)


# ----------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("method", METHODS)
def test_absent_class_raises(method: str):
    with pytest.raises(ValueError, match=r"class\(es\) \[1\] have zero count"):
        alpha_from_frequencies([100, 0, 5], method)


def test_unknown_method_suggests_the_closest():
    with pytest.raises(ValueError, match="did you mean 'inverse_sqrt'"):
        alpha_from_frequencies(COUNTS, "inverse_sqr")


def test_bad_frequency_vectors_rejected():
    with pytest.raises(ValueError, match=r"C >= 2, found shape \(1,\)"):
        alpha_from_frequencies([5.0])
    with pytest.raises(ValueError, match="finite and non-negative"):
        alpha_from_frequencies([5.0, -1.0])


# ----------------------------------------------------------------------------------------------- cache file
def test_save_and_load_round_trip(tmp_path: Path):
    alpha = alpha_from_frequencies(COUNTS)
    path = save_alpha(tmp_path / "run" / "alpha.json", COUNTS, alpha, "inverse_sqrt")
    record = load_alpha(path)
    assert record["method"] == "inverse_sqrt"
    np.testing.assert_array_equal(record["counts"], COUNTS)
    np.testing.assert_array_equal(record["alpha"], alpha)
    assert [p.name for p in path.parent.iterdir()] == ["alpha.json"]  # no temporary file left
    (tmp_path / "broken.json").write_text('{"method": "inverse"}')
    with pytest.raises(ValueError, match=r"broken\.json' lacks keys \['alpha', 'counts'\]"):
        load_alpha(tmp_path / "broken.json")


# ----------------------------------------------------------------------------------------------- real data
def test_brats_counts_match_np_unique(brats_case: Path):
    path = brats_case / "OTMultiClass.nii.gz"
    counts = class_frequencies([path], 5)
    assert counts.sum() == 240 * 240 * 155
    values, reference = np.unique(np.asarray(nib.load(str(path)).dataobj), return_counts=True)
    expected = np.zeros(5)
    expected[values.astype(int)] = reference
    np.testing.assert_array_equal(counts, expected)
    assert 0.0009 <= counts[4] / counts.sum() <= 0.0049
    alpha = alpha_from_frequencies(counts)
    assert alpha.sum() == pytest.approx(1.0)
    assert np.argmax(alpha) == np.argmin(expected) and np.argmin(alpha) == np.argmax(expected)

"""Tests of seg.data.transforms (and the index sampler in seg.data.sampling) on tiny non-RAS NIfTI files."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor, get_track_meta

from seg.data.sampling import sampled_label_indices
from seg.data.transforms import (
    Preprocessing,
    inference_transforms,
    invert_to_input_space,
    median_spacing,
    ras_spacing,
    train_transforms,
    val_transforms,
)
from tests.data._pipeline_fixtures import SHAPE, ZOOMS, case_arrays, lia_affine


@pytest.fixture
def case(tmp_path: Path) -> dict:
    """One 2-channel case with a 'LIA' affine, zooms (1.0, 1.5, 3.0) in stored order."""
    image, label = case_arrays(0)
    affine = lia_affine(ZOOMS[0])
    paths = []
    for c in range(2):
        paths.append(str(tmp_path / f"img_{c}.nii.gz"))
        nib.save(nib.Nifti1Image(image[c], affine), paths[-1])
    nib.save(nib.Nifti1Image(label, affine), tmp_path / "lab.nii.gz")
    return {"image": paths, "label": str(tmp_path / "lab.nii.gz"), "arrays": (image, label), "affine": affine}


def _item(case: dict) -> dict:
    return {"image": case["image"], "label": case["label"]}


def test_ras_and_median_spacing_from_headers_equal_hand_computation(tmp_path: Path):
    paths = []
    for i, zooms in enumerate(ZOOMS):
        paths.append(tmp_path / f"{i}.nii.gz")
        nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.float32), lia_affine(zooms)), paths[-1])
    # 'LIA': stored axis 0 -> R/L, axis 1 -> S/I, axis 2 -> A/P, so RAS order is (zoom0, zoom2, zoom1)
    assert ras_spacing(paths[0]) == (1.0, 3.0, 1.5)
    ras = [(z[0], z[2], z[1]) for z in ZOOMS]  # (1, 3, 1.5), (1.2, 2, 1.5), (0.8, 3, 2), (1, 2.5, 1)
    # medians of 4 values: mean of the two middle ones
    assert median_spacing(paths) == pytest.approx(((1.0 + 1.0) / 2, (2.5 + 3.0) / 2, (1.5 + 1.5) / 2))
    assert median_spacing(paths) == pytest.approx(tuple(np.median(np.array(ras), axis=0)))


def test_output_is_ras_and_equals_nibabel_canonical_reorientation(case: dict):
    cfg = Preprocessing(normalization="none", crop_foreground=False, channel_names=("a", "b"))
    out = val_transforms(cfg)(_item(case))
    assert isinstance(out["image"], MetaTensor)
    assert nib.aff2axcodes(out["image"].affine.numpy()) == ("R", "A", "S")
    for c, path in enumerate(case["image"]):
        canonical = nib.as_closest_canonical(nib.load(path))  # nibabel's own reorientation as reference
        np.testing.assert_array_equal(out["image"][c].numpy(), canonical.get_fdata(dtype=np.float32))
        np.testing.assert_allclose(out["image"].affine.numpy(), canonical.affine, atol=1e-6)


def test_zscore_inside_nonzero_region_matches_formula(case: dict):
    cfg = Preprocessing(crop_foreground=False)
    out = val_transforms(cfg)(_item(case))["image"].numpy()  # (2, *RAS spatial)
    for c, path in enumerate(case["image"]):
        raw = nib.as_closest_canonical(nib.load(path)).get_fdata()
        mask = raw != 0
        expected = np.where(mask, (raw - raw[mask].mean()) / raw[mask].std(), 0.0)
        np.testing.assert_allclose(out[c], expected, atol=1e-4)
        assert out[c][mask].mean() == pytest.approx(0.0, abs=1e-5)
        assert out[c][mask].std() == pytest.approx(1.0, abs=1e-4)


def test_ct_window_clips_and_scales_to_unit_range(case: dict):
    cfg = Preprocessing(normalization="ct", ct_window=(90.0, 120.0), crop_foreground=False)
    out = val_transforms(cfg)(_item(case))["image"][0].numpy()
    raw = nib.as_closest_canonical(nib.load(case["image"][0])).get_fdata()
    np.testing.assert_allclose(out, (np.clip(raw, 90.0, 120.0) - 90.0) / 30.0, atol=1e-6)


def test_crop_foreground_keeps_the_nonzero_bounding_box(case: dict):
    cfg = Preprocessing(normalization="none")
    out = val_transforms(cfg)(_item(case))
    # fixture: non-zero inside [2:-2] on every axis -> RAS shape is the reoriented shape minus 4
    assert tuple(out["image"].shape) == (2, SHAPE[0] - 4, SHAPE[2] - 4, SHAPE[1] - 4)
    assert out["label"].shape[1:] == out["image"].shape[1:]


def test_inverse_puts_prediction_back_on_the_input_grid(case: dict):
    cfg = Preprocessing(target_spacing=(0.5, 1.0, 0.75))  # RAS input spacing (1.0, 3.0, 1.5): finer
    pipeline = inference_transforms(cfg)
    out = pipeline(_item(case))
    image = out["image"]
    assert image.shape[1:] != SHAPE  # reoriented, cropped and resampled
    prediction = (image[:1] > 0.5).float()  # a label-like channel on the preprocessed grid
    restored = invert_to_input_space(prediction, image, pipeline)
    assert tuple(restored.shape) == (1, *SHAPE)
    np.testing.assert_allclose(restored.affine.numpy(), case["affine"], atol=1e-6)
    # the label goes forward and back unchanged (nearest neighbour, grid refined by whole factors)
    label_back = invert_to_input_space(out["label"], image, pipeline)
    np.testing.assert_array_equal(label_back[0].numpy(), case["arrays"][1])
    np.testing.assert_allclose(label_back.affine.numpy(), case["affine"], atol=1e-6)


def test_inference_transforms_without_label_and_from_a_plain_dict(case: dict):
    cfg = Preprocessing(target_spacing=(1.0, 1.0, 1.0)).to_dict()
    pipeline = inference_transforms(cfg)  # as restored from a checkpoint
    out = pipeline({"image": case["image"]})
    assert "label" not in out and out["image"].shape[0] == 2
    restored = pipeline.inverse({"image": out["image"]})["image"]  # Compose.inverse on the image itself
    assert tuple(restored.shape) == (2, *SHAPE)
    np.testing.assert_allclose(restored.affine.numpy(), case["affine"], atol=1e-6)


def test_train_patches_3d_are_lesion_centred_with_pos_fraction_one(case: dict):
    patch = (8, 8, 8)
    pipeline = train_transforms(Preprocessing(), patch, samples_per_volume=6, pos_fraction=1.0, augment=False)
    samples = pipeline(_item(case))
    assert len(samples) == 6
    for s in samples:
        assert type(s["image"]) is torch.Tensor  # plain tensors for training
        assert tuple(s["image"].shape) == (2, *patch) and tuple(s["label"].shape) == (1, *patch)
        assert s["label"][0, 4, 4, 4] > 0  # the crop centre (size // 2) is a lesion voxel


def test_train_patches_2d_slices_and_augmentation_keep_shapes(case: dict):
    pipeline = train_transforms(Preprocessing(spatial_dims=2, target_spacing=(1.0, 1.0, -1.0)), (12, 12),
                                samples_per_volume=4, pos_fraction=1.0, augment=True)
    pipeline.set_random_state(seed=0)
    for s in pipeline(_item(case)):
        assert tuple(s["image"].shape) == (2, 12, 12) and tuple(s["label"].shape) == (1, 12, 12)
        assert set(torch.unique(s["label"]).tolist()) <= {0.0, 1.0, 2.0}  # nearest: labels stay integral
        assert s["label"].sum() > 0


def test_patches_are_padded_to_the_patch_size(case: dict):
    patch = (32, 32, 32)  # larger than the cropped volume (20, 12, 20)
    samples = train_transforms(Preprocessing(), patch, samples_per_volume=1, augment=False)(_item(case))
    assert tuple(samples[0]["image"].shape) == (2, *patch)


def test_sampled_label_indices_are_a_bounded_subset():
    label = np.zeros((1, 10, 10, 10), np.uint8)
    label[0, 2:5, 2:5, 2:5] = 1  # 27 foreground voxels
    fg, bg = sampled_label_indices(label, max_indices=100)
    np.testing.assert_array_equal(fg, np.flatnonzero(label[0].ravel()))  # fewer than the bound: all kept
    assert bg.size == 100 and np.all(label[0].ravel()[bg] == 0) and np.unique(bg).size == 100
    fg_all, bg_all = sampled_label_indices(label, max_indices=None)
    assert fg_all.size + bg_all.size == 1000
    np.testing.assert_array_equal(sampled_label_indices(label, 100)[1], bg)  # deterministic


def test_native_2d_images_load_as_2d(tmp_path: Path):
    image, label = case_arrays(1, SHAPE[:2])
    nib.save(nib.Nifti1Image(image[0], np.diag([0.5, 0.5, 1.0, 1.0])), tmp_path / "i.nii.gz")
    nib.save(nib.Nifti1Image(label, np.diag([0.5, 0.5, 1.0, 1.0])), tmp_path / "l.nii.gz")
    item = {"image": [str(tmp_path / "i.nii.gz")], "label": str(tmp_path / "l.nii.gz")}
    cfg = Preprocessing(spatial_dims=2, image_dims=2, orientation=None, target_spacing=(1.0, 1.0))
    out = val_transforms(cfg)(item)
    assert tuple(out["image"].shape) == (1, 10, 10)  # inner 20x20 at 0.5 mm -> 10x10 at 1 mm
    samples = train_transforms(cfg, (8, 8), samples_per_volume=2, pos_fraction=1.0)(item)
    assert tuple(samples[0]["image"].shape) == (1, 8, 8)


def test_preprocessing_round_trips_and_rejects_bad_values():
    cfg = Preprocessing(target_spacing=(1.0, 1.0, 2.0), normalization="ct", ct_window=(-100.0, 200.0))
    assert Preprocessing.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict()["target_spacing"] == [1.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="did you mean 'zscore'"):
        Preprocessing(normalization="z-score")
    with pytest.raises(ValueError, match="needs ct_window"):
        Preprocessing(normalization="ct")
    with pytest.raises(ValueError, match="unknown preprocessing keys \\['colour'\\]"):
        Preprocessing.from_dict({**cfg.to_dict(), "colour": 1})
    with pytest.raises(ValueError, match="3D network cannot be trained on 2D images"):
        Preprocessing(spatial_dims=3, image_dims=2)
    with pytest.raises(ValueError, match="patch_size \\[8, 8\\] has 2 values"):
        train_transforms(Preprocessing(), [8, 8])


def test_training_pipeline_caches_its_deterministic_prefix_and_restores_threads(case: dict):
    from monai.transforms import Randomizable

    pipeline = train_transforms(Preprocessing(), (8, 8, 8), samples_per_volume=2)
    first_random = next(i for i, t in enumerate(pipeline.transforms) if isinstance(t, Randomizable))
    assert first_random == len(pipeline.transforms) - 1  # everything before the patch sampler is cached
    prefix = pipeline(_item(case), end=first_random)
    assert prefix["label_fg_indices"].size == 27 + 1  # the fixture's 3^3 lesion and one class-2 voxel
    threads = torch.get_num_threads()
    pipeline(_item(case))
    # the per-step part runs single-threaded without MetaTensor tracking, then restores both
    assert torch.get_num_threads() == threads and get_track_meta()

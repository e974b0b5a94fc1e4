"""Tests of seg.data.datamodule on tiny MSD datasets (4 cases, 2 channels, 24×24×16, 'LIA' affines)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from seg.data.datamodule import SegDataModule
from seg.data.layouts import load_dataset
from seg.data.splits import split_cases
from seg.data.transforms import train_transforms
from tests.data._pipeline_fixtures import ZOOMS, write_msd_dataset


@pytest.fixture
def dataset_json(tmp_path: Path) -> Path:
    return write_msd_dataset(tmp_path / "data")


def _module(dataset: Path | str, **kwargs) -> SegDataModule:
    options = {"patch_size": [8, 8, 8], "batch_size": 2, "samples_per_volume": 3, "val_fraction": 0.25,
               "target_spacing": None, "augment": False}
    return SegDataModule(str(dataset), **{**options, **kwargs})


def test_train_batches_3d_have_batch_times_samples_patches(dataset_json: Path):
    dm = _module(dataset_json, augment=True)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert tuple(batch["image"].shape) == (2 * 3, 2, 8, 8, 8)  # (B * samples, C, *patch)
    assert tuple(batch["label"].shape) == (2 * 3, 1, 8, 8, 8)
    assert batch["image"].dtype == torch.float32


def test_train_batches_2d_from_volumes_are_slices(dataset_json: Path):
    dm = _module(dataset_json, spatial_dims=2, patch_size=[12, 12], target_spacing="median")
    assert dm.preprocessing["target_spacing"][2] == -1.0  # slices keep their through-plane spacing
    batch = next(iter(dm.train_dataloader()))
    assert tuple(batch["image"].shape) == (2 * 3, 2, 12, 12)
    assert tuple(batch["label"].shape) == (2 * 3, 1, 12, 12)


def test_native_2d_dataset(tmp_path: Path):
    dm = _module(write_msd_dataset(tmp_path / "d2", two_d=True), spatial_dims=2, patch_size=[8, 8])
    assert dm.preprocessing["image_dims"] == 2 and dm.preprocessing["orientation"] is None
    batch = next(iter(dm.train_dataloader()))
    assert tuple(batch["image"].shape) == (6, 2, 8, 8)
    with pytest.raises(ValueError, match="set spatial_dims: 2"):
        _ = _module(tmp_path / "d2" / "dataset.json").preprocessing


def _centre_is_lesion(dm: SegDataModule, pos_fraction: float, draws: int) -> np.ndarray:
    """Whether the centre voxel (index size // 2) of each of ``draws`` training patches is foreground."""
    transform = train_transforms(dm.preprocessing_config, dm.patch_size, samples_per_volume=draws,
                                 pos_fraction=pos_fraction, augment=False)
    transform.set_random_state(seed=1)
    samples = transform({**dm.train_cases[0].as_dict()})
    return np.array([bool(s["label"][0, 4, 4, 4] > 0) for s in samples])


def test_pos_fraction_is_honoured(dataset_json: Path):
    dm = _module(dataset_json)
    assert _centre_is_lesion(dm, 1.0, 40).all()
    assert not _centre_is_lesion(dm, 0.0, 40).any()  # centred on background voxels
    share = _centre_is_lesion(dm, 0.5, 200).mean()
    # Binomial(200, 0.5): standard deviation 0.035; +-0.15 is over 4 standard deviations
    assert 0.35 <= share <= 0.65


def test_split_is_seeded_reproducible_and_disjoint(dataset_json: Path, tmp_path: Path):
    first, second = _module(dataset_json, seed=3), _module(dataset_json, seed=3)
    names = lambda cases: [c.name for c in cases]  # noqa: E731
    assert names(first.train_cases) == names(second.train_cases)
    assert names(first.val_cases) == names(second.val_cases)
    assert len(first.val_cases) == 1  # round(0.25 * 4)
    assert set(names(first.train_cases)).isdisjoint(names(first.val_cases))
    assert set(names(first.train_cases)) | set(names(first.val_cases)) == {f"case_{i:03d}" for i in range(4)}
    np.testing.assert_array_equal(first.class_counts(), second.class_counts())
    # k folds of one seed: disjoint validation sets that cover every case
    folds = [split_cases([f"c{i}" for i in range(7)], seed=0, num_folds=3, fold=k)[1] for k in range(3)]
    assert sorted(sum(folds, [])) == sorted(f"c{i}" for i in range(7))
    assert [len(f) for f in folds] == [3, 2, 2]
    # the split does not depend on the order in which cases were discovered
    assert split_cases(["b", "a", "c", "d"], seed=5) == split_cases(["d", "c", "b", "a"], seed=5)


def test_class_counts_equal_bincount_and_are_cached(dataset_json: Path, tmp_path: Path):
    run = tmp_path / "run"
    dm = _module(dataset_json, cache_dir=str(run))
    expected = np.zeros(3)
    for case in dm.train_cases:
        expected += np.bincount(np.asarray(nib.load(case.label).dataobj).ravel(), minlength=3)
    dm.prepare_data()
    np.testing.assert_array_equal(dm.class_counts(), expected)
    record = json.loads((run / "class_frequencies.json").read_text())
    assert record["counts"] == expected.astype(int).tolist()
    assert record["train_cases"] == [c.name for c in dm.train_cases]
    # a fresh module with the same split reads the file (proved by planting different counts) ...
    record["counts"] = [1, 2, 3]
    (run / "class_frequencies.json").write_text(json.dumps(record))
    np.testing.assert_array_equal(_module(dataset_json, cache_dir=str(run)).class_counts(), [1, 2, 3])
    # ... and another split ignores it and recounts
    other = _module(dataset_json, cache_dir=str(run), num_folds=2, fold=1)
    assert other.class_counts().sum() == 2 * 24 * 24 * 16


def test_val_loader_yields_whole_ras_volumes(dataset_json: Path):
    dm = _module(dataset_json, target_spacing=[1.0, 2.0, 1.5])
    dm.setup("fit")
    batches = list(dm.val_dataloader())
    assert len(batches) == len(dm.val_cases) == 1
    image, label = batches[0]["image"], batches[0]["label"]
    assert isinstance(image, MetaTensor) and isinstance(label, MetaTensor)
    assert image.shape[0] == 1 and image.shape[1] == 2 and label.shape[1] == 1
    assert image.shape[2:] == label.shape[2:]
    assert nib.aff2axcodes(image.affine[0].numpy()) == ("R", "A", "S")
    np.testing.assert_allclose(np.linalg.norm(image.affine[0][:3, :3].numpy(), axis=0), [1.0, 2.0, 1.5])
    assert batches[0]["name"] == [dm.val_cases[0].name]


def test_dataset_facts_and_preprocessing_dict(dataset_json: Path):
    dm = _module(dataset_json, target_spacing="median")
    assert dm.num_classes == 3 and dm.in_channels == 2
    assert dm.label_names == {0: "background", 1: "lesion", 2: "oedema"}
    ras = np.array([(z[0], z[2], z[1]) for z in ZOOMS])  # 'LIA' -> RAS order of the stored zooms
    assert dm.preprocessing == {
        "spatial_dims": 3, "image_dims": 3, "target_spacing": np.median(ras, axis=0).tolist(),
        "normalization": "zscore", "ct_window": None, "orientation": "RAS", "crop_foreground": True,
        "channel_names": ["T1", "FLAIR"],
    }
    json.dumps(dm.preprocessing)  # plain types only (stored in checkpoints)


def test_uncached_dataset_gives_the_same_validation_volume(dataset_json: Path):
    cached, uncached = _module(dataset_json), _module(dataset_json, cache=False)
    cached.setup("validate")
    uncached.setup("validate")
    torch.testing.assert_close(cached.val_dataset[0]["image"].as_tensor(),
                               uncached.val_dataset[0]["image"].as_tensor())


def test_accepts_a_dataset_spec_and_rejects_bad_options(dataset_json: Path):
    dm = SegDataModule(load_dataset(dataset_json), patch_size=[8, 8, 8])
    assert len(dm.train_cases) + len(dm.val_cases) == 4
    with pytest.raises(ValueError, match="target_spacing must be 'median'"):
        _module(dataset_json, target_spacing="mean")
    with pytest.raises(ValueError, match="patch_size \\[8, 8, 8\\] has 3 values but spatial_dims is 2"):
        _module(dataset_json, spatial_dims=2)
    with pytest.raises(ValueError, match="fold must be in 0..1"):
        _ = _module(dataset_json, num_folds=2, fold=2).train_cases

"""seg-train on bad input (issue 12): one clear error before anything is written to the run directory."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from seg.cli import train_main
from seg.data.datamodule import SegDataModule
from seg.training.module import SegModule
from tests.data._pipeline_fixtures import write_msd_dataset
from tests.training.test_train import TINY


def test_a_zero_patch_size_fails_before_the_run_directory_exists(tiny_dataset: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    code = train_main([*TINY, "--dataset", str(tiny_dataset), "--output", str(run), "--data.patch_size", "[0, 0, 0]"])
    assert code == 1
    assert "patch_size must be positive whole numbers of voxels, got [0, 0, 0]" in capsys.readouterr().err
    assert not run.exists()


def test_all_empty_labels_stop_alpha_auto_before_the_run_directory_exists(tmp_path: Path, capsys) -> None:
    root = tmp_path / "empty"
    training = []
    for i in range(3):
        for sub, array in (("imagesTr", np.ones((16, 16, 16), np.float32)), ("labelsTr", np.zeros((16, 16, 16), np.uint8))):
            (root / sub).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(array, np.eye(4)), root / sub / f"c{i}.nii.gz")
        training.append({"image": f"./imagesTr/c{i}.nii.gz", "label": f"./labelsTr/c{i}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({"training": training, "labels": {"0": "background", "1": "lesion"}}))
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as stopped:
        train_main([*TINY, "--dataset", str(root / "dataset.json"), "--output", str(run)])
    assert stopped.value.code == 1
    assert "every training label" in capsys.readouterr().out
    assert not run.exists()


def test_alpha_errors_quote_what_the_user_wrote() -> None:
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]; got 2.0$"):
        SegModule(alpha=2.0)


def test_a_patch_larger_than_the_images_warns_once_with_both_sizes(tmp_path: Path) -> None:
    dataset = write_msd_dataset(tmp_path / "data", cases=4)  # 24x24x16 volumes
    module = SegDataModule(str(dataset), patch_size=[32, 32, 32], target_spacing=None, val_fraction=0.25)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module.setup("fit")
    padded = [w for w in caught if "larger than case" in str(w.message)]
    assert len(padded) == 1 and "[32, 32, 32]" in str(padded[0].message)

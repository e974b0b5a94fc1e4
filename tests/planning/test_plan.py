"""seg-plan: configs planned from synthetic isotropic, anisotropic and 2D datasets and from the real cases."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from monai.data.utils import dense_patch_slices
from monai.inferers.utils import _get_scan_interval

from seg.cli import plan_main, train_main
from seg.data.brats import write_brats_dataset
from seg.data.synthetic import make_dataset
from seg.planning.plan import _lowres, _windows, plan
from seg.planning.topology import plan_patch


def _config(text: str) -> dict:
    return yaml.safe_load(text)


def test_isotropic_dataset_plans_isotropic_3d_without_resampling(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path / "iso", cases=6, test_cases=1, shape=(48, 48, 48), spacing=(1.0, 1.0, 1.0),
                           seed=1, progress=False)
    config = _config(plan(dataset, budget_minutes=4).to_yaml())
    assert config["data"]["spatial_dims"] == 3 and config["data"]["target_spacing"] is None
    assert all(k == [3, 3, 3] for k in config["model"]["kernel_sizes"])
    assert all(len(set(s)) == 1 for s in config["model"]["strides"])
    assert config["trainer"]["max_time"] == "00:00:04:00" and config["data"]["steps_per_epoch"] == 250
    # real-like sizes, most lesions small: the small-lesion postprocessing, no size cut
    assert (config["model"]["min_size"], config["model"]["threshold"], config["model"]["peak_threshold"]) == (0, 0.3, 0.9)
    assert "keep_largest" not in config["model"]  # many lesions a case: never only the largest
    assert config["model"]["sw_overlap"] == 0.5  # a 48^3 case is a few windows
    assert config["data"]["class_counts_from"] == "volumes"  # small lesions: α over whole volumes


@pytest.mark.parametrize(("shape", "patch", "overlap"), [((240, 240, 155), (56, 56, 48), 0.5),
                                                          ((240, 240, 155), (56, 56, 48), 0.25),
                                                          ((512, 512, 16), (160, 160, 5), 0.5), ((40, 30), (48, 32), 0.5)])
def test_window_count_is_monais(shape, patch, overlap) -> None:
    # the plan's window estimate against the windows MONAI's sliding_window_inference actually visits
    scan = _get_scan_interval(shape, patch, len(shape), [overlap] * len(shape))
    padded = [max(n, p) for n, p in zip(shape, patch, strict=True)]
    assert _windows(list(shape), list(patch), overlap) == len(dense_patch_slices(padded, patch, scan))


def test_thick_slices_plan_anisotropic_3d(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path / "aniso", cases=4, test_cases=1, shape=(128, 128, 12),
                           spacing=(0.5, 0.5, 5.0), seed=2, progress=False)
    result = plan(dataset, budget_minutes=8)
    config = _config(result.to_yaml())
    assert result.fingerprint["anisotropy"] == pytest.approx(10.0)
    assert config["model"]["kernel_sizes"][0] == [3, 3, 1] and config["model"]["strides"][1] == [2, 2, 1]
    assert config["data"]["patch_size"][2] <= 12 and config["data"]["spatial_dims"] == 3
    assert "anisotropic 3D" in result.sections["data"]["spatial_dims"][1]


def test_native_2d_images_plan_2d(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path / "flat", cases=4, test_cases=1, spatial_dims=2, shape=(96, 96), seed=3,
                           progress=False)
    config = _config(plan(dataset).to_yaml())
    assert config["data"]["spatial_dims"] == 2 and len(config["data"]["patch_size"]) == 2
    assert all(len(k) == 2 for k in config["model"]["kernel_sizes"])


def test_brats_cases_plan_isotropic_zscore(shared_data: Path, tmp_path: Path) -> None:
    dataset = write_brats_dataset(shared_data / "brats2015", tmp_path / "brats", test_cases=2)
    result = plan(dataset)
    config = _config(result.to_yaml())
    assert result.fingerprint["spacing_ras"]["median"] == [1.0, 1.0, 1.0]
    # large lesions on a CPU: MONAI's residual UNet at the median 1 mm (no 3d_lowres), 8 patches of 56 x 56 x 48
    assert config["data"]["normalization"] == "zscore" and config["data"]["target_spacing"] is None
    assert config["model"]["network"] == "unet" and config["model"]["channels"] == [16, 32, 64, 128]
    assert config["data"]["patch_size"] == [56, 56, 48] and config["data"]["samples_per_volume"] == 4
    assert "kernel_sizes" not in config["model"] and config["data"]["class_counts_from"] == "patches"
    assert len(result.fingerprint["intensity_foreground"]) == 2  # Flair and T1c
    # 4 of the 8 components are specks beside 4 tumours (median 31,500 voxels): not a small-lesion dataset, so no
    # small-lesion postprocessing; 240 x 240 x 155 takes > 64 windows of 56 x 56 x 48 at 0.5: validation at 0.25
    assert result.fingerprint["share_under_30_voxels"] == 0.5 and config["model"]["threshold"] == "auto"
    assert "peak_threshold" not in config["model"] and config["model"]["sw_overlap"] == 0.25
    # with 8 GB of device memory: nnU-Net's DynUNet at 1 mm (its planner makes no 3d_lowres for BraTS either)
    gpu = _config(plan(dataset, device_memory_gb=8).to_yaml())
    assert gpu["model"]["network"] == "dynunet" and gpu["data"]["target_spacing"] is None
    assert all(len(set(s)) == 1 for s in gpu["model"]["strides"]) and gpu["data"]["samples_per_volume"] == 2


def test_lowres_spacing_is_the_first_that_reaches_a_quarter_of_the_image() -> None:
    # nnU-Net's loop: 3 % steps until the patch covers 25 % of the median image; the step before did not
    shape, budget = [240.0, 240.0, 155.0], 2**17
    spacing, size, topology = _lowres([1.0, 1.0, 1.0], shape, budget, median_lesion_mm3=31_500)
    assert math.prod(topology.patch_size) >= 0.25 * math.prod(size)
    before = [s / 1.03 for s in spacing]
    previous = plan_patch(before, [n / b for n, b in zip(shape, before, strict=True)], budget)
    assert math.prod(previous.patch_size) < 0.25 * math.prod(n / b for n, b in zip(shape, before, strict=True))
    assert size == pytest.approx([n / s for n, s in zip(shape, spacing, strict=True)], rel=1e-3)
    # a median lesion of 1,000 mm3 must keep 100 voxels: the spacing stops at 10 mm3 per voxel (2.15 mm)
    spacing, _, _ = _lowres([1.0, 1.0, 1.0], shape, budget, median_lesion_mm3=1_000)
    assert math.prod(spacing) <= 10.0 and math.prod(s * 1.03 for s in spacing) > 10.0
    # an image the patch already covers: no low-resolution plan
    assert _lowres([1.0, 1.0, 1.0], [48.0, 48.0, 48.0], budget, median_lesion_mm3=31_500) is None


def test_isles_case_plans_at_its_2mm_grid(isles_case: Path, tmp_path: Path) -> None:
    root = tmp_path / "isles"
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True)
    for name, target in (("images/s9_0000.nii.gz", "dwi"), ("images/s9_0001.nii.gz", "adc"),
                         ("labels/s9.nii.gz", "msk")):
        (root / name).symlink_to(next(isles_case.glob(f"*_{target}.nii.gz")))
    for name, target in (("images/t9_0000.nii.gz", "dwi"), ("images/t9_0001.nii.gz", "adc"),
                         ("labels/t9.nii.gz", "msk")):  # a second (identical) case: a split needs two
        (root / name).symlink_to(next(isles_case.glob(f"*_{target}.nii.gz")))
    result = plan(root)
    assert result.fingerprint["spacing_ras"]["median"] == pytest.approx([2.0, 2.0, 2.0])
    assert result.fingerprint["lesions_per_case"]["s9"] == 18  # the shared data's README: 18 lesions
    assert _config(result.to_yaml())["model"]["min_size"] == 0  # 11 of 18 under 10 voxels: no size cut


def test_seg_plan_writes_a_config_seg_train_reads(tmp_path: Path, capsys) -> None:
    dataset = make_dataset(tmp_path / "d", cases=4, test_cases=1, shape=(32, 32, 24), seed=4, progress=False)
    out = tmp_path / "plans" / "d.yaml"
    assert plan_main(["--dataset", str(dataset), "--output", str(out), "--budget-minutes", "2"]) == 0
    text = out.read_text()
    assert "# median spacing per axis" in text or "# median" in text  # every key says why
    assert all("#" in line for line in text.splitlines()[3:] if not line.endswith(":"))


def test_large_lesions_leave_postprocessing_to_validation(tmp_path: Path) -> None:
    # radii of 4-6 mm at 1 mm: every lesion is over 250 voxels, so no small-lesion postprocessing is planned
    dataset = make_dataset(tmp_path / "big", cases=4, test_cases=1, shape=(48, 48, 48), lesion_radius=(4.0, 6.0),
                           seed=5, progress=False)
    result = plan(dataset)
    config = _config(result.to_yaml())
    assert result.fingerprint["share_under_30_voxels"] == 0.0
    assert config["model"]["min_size"] == "auto" and config["model"]["threshold"] == "auto"
    assert config["model"]["keep_largest"] == "auto"  # large lesions: nnU-Net's keep-largest, if validation says so
    assert "peak_threshold" not in config["model"] and config["data"]["sampling"] == "voxels"


def test_train_without_config_plans_and_trains(tmp_path: Path, capsys) -> None:
    # seg-train --dataset D (no --config): the plan is written into the run directory and training reads it
    dataset = make_dataset(tmp_path / "d", cases=4, test_cases=1, shape=(32, 32, 24), seed=6, progress=False)
    run = tmp_path / "run"
    argv = ["--dataset", str(dataset), "--output", str(run), "--max-steps", "3", "--trainer.enable_progress_bar",
            "false", "--trainer.val_check_interval", "3"]
    assert train_main(argv) == 0
    assert "planned" in capsys.readouterr().out and (run / "plan.yaml").is_file()
    assert json.loads((run / "step_timing.json").read_text())["steps"] == 3
    config = _config((run / "config.yaml").read_text())
    assert config["data"]["steps_per_epoch"] == 250  # the plan's budget in steps
    assert config["monitor"] == "last"  # and predicts with the final weights, as nnU-Net
    steps = {name: torch.load(run / name, weights_only=True)["global_step"] for name in ("best.ckpt", "last.ckpt")}
    assert steps == {"best.ckpt": 3, "last.ckpt": 3}


def test_dataset_flag_completes_a_config_without_one(tmp_path: Path) -> None:
    # a plan with its data.dataset line removed, and --dataset=D in the equals form: the check runs on D and passes
    dataset = make_dataset(tmp_path / "d", cases=4, test_cases=1, shape=(32, 32, 24), seed=7, progress=False)
    config = _config(plan(dataset).to_yaml())
    del config["data"]["dataset"]
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit) as stop:
        train_main(["--config", str(path), f"--dataset={dataset}", "--check-data", "--output", str(tmp_path / "r")])
    assert stop.value.code == 0

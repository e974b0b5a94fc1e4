"""End-to-end training through the command line on a tiny synthetic dataset."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from seg.cli import train_main
from seg.losses.alpha import alpha_from_frequencies, load_alpha

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--config", str(ROOT / "configs" / "demo.yaml"), "--model.channels", "[4, 8, 16]",
        "--data.patch_size", "[16, 16, 16]", "--data.samples_per_volume", "1", "--data.val_fraction", "0.34",
        "--trainer.limit_train_batches", "2", "--trainer.check_val_every_n_epoch", "1",
        "--trainer.enable_progress_bar", "false", "--trainer.log_every_n_steps", "1"]


def _metrics(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def test_training_writes_the_run_directory(tiny_dataset: Path, tmp_path: Path, recwarn) -> None:
    run = tmp_path / "run"
    assert train_main([*TINY, "--dataset", str(tiny_dataset), "--output", str(run), "--max-epochs", "2"]) == 0
    # called from Python (as seg-compare and the demo do), pytest's own sys.argv is not LightningCLI's business
    assert not [w for w in recwarn if "args parameter is intended" in str(w.message)]
    for name in ("best.ckpt", "last.ckpt", "config.yaml", "alpha.json", "class_frequencies.json",
                 "training_curves.png", "step_timing.json"):
        assert (run / name).is_file(), name
    # α in the run equals the documented method applied to the training split's counts
    record = load_alpha(run / "alpha.json")  # the file a run writes is the one load_alpha reads
    expected = alpha_from_frequencies(record["counts"], method="inverse_sqrt")
    np.testing.assert_allclose(record["alpha"], expected)
    assert record["method"] == "inverse_sqrt" and record["label_names"] == {"0": "background", "1": "lesion"}
    checkpoint = torch.load(run / "best.ckpt", weights_only=True)
    assert checkpoint["seg"]["alpha"] == record["alpha"].tolist()
    assert checkpoint["seg"]["preprocessing"]["orientation"] == "RAS"
    convs = [v for k, v in checkpoint["state_dict"].items() if k.startswith("network.") and v.dim() == 5]
    assert convs and all(v.is_contiguous(memory_format=torch.channels_last_3d) for v in convs)  # trained so on CPU
    rows = _metrics(run)
    logged = {k for row in rows for k, v in row.items() if v}
    assert {"train/focal_step", "train/dice_step", "val/focal", "val/dice", "val/lesion_f1"} <= logged
    # validation covered the whole validation split (2 of 6 cases with val_fraction 0.34)
    assert {float(r["val/cases"]) for r in rows if r.get("val/cases")} == {2.0}


def test_check_data_reports_and_exits(tiny_dataset: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as ok:
        train_main([*TINY, "--dataset", str(tiny_dataset), "--output", str(tmp_path / "r"), "--check-data"])
    assert ok.value.code == 0
    summary = capsys.readouterr().out
    assert "6 training case" in summary and "class" in summary
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "dataset.json").write_text(json.dumps({
        "labels": {"0": "background", "1": "lesion"}, "modality": {"0": "MR"},
        "training": [{"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz"}]}))
    with pytest.raises(SystemExit) as bad:
        train_main([*TINY, "--dataset", str(broken), "--output", str(tmp_path / "r2"), "--check-data"])
    assert bad.value.code == 1
    assert "imagesTr/a.nii.gz" in capsys.readouterr().out


@pytest.mark.parametrize(("override", "message"), [
    (["--model.loss", "focall"], "unknown loss 'focall'.*did you mean 'focal'"),
    (["--model.alpha", "[0.1, 0.2, 0.7]"], r"alpha \[0.1, 0.2, 0.7\] has 3 value\(s\) but there are C=2 classes"),
    (["--model.alpha_method", "inverse_squared"], "unknown alpha_method"),
])
def test_bad_config_fails_before_training_with_one_message(tiny_dataset: Path, tmp_path: Path, capsys,
                                                           override: list[str], message: str) -> None:
    code = train_main([*TINY, "--dataset", str(tiny_dataset), "--output", str(tmp_path / "r"), *override])
    assert code == 1
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not (tmp_path / "r" / "last.ckpt").exists()


def test_unknown_config_key_is_an_error(tiny_dataset: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as error:
        train_main([*TINY, "--dataset", str(tiny_dataset), "--model.gama", "2"])
    assert error.value.code != 0
    assert "gama" in capsys.readouterr().err


def test_resume_after_kill_continues_at_the_same_step(tiny_dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [sys.executable, str(ROOT / "train.py"), *TINY, "--dataset", str(tiny_dataset), "--output", str(run)]
    process = subprocess.Popen([*args, "--max-epochs", "100"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:  # kill -9 once the first epoch's last.ckpt is on disk
        import time

        deadline = time.time() + 240
        while not (run / "last.ckpt").is_file() and time.time() < deadline and process.poll() is None:
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        process.kill()
        process.wait()
    killed = torch.load(run / "last.ckpt", weights_only=True)
    step, epoch = killed["global_step"], killed["epoch"]
    assert 0 < step < 200
    resumed = subprocess.run([*args, "--max-epochs", str(epoch + 2), "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    final = torch.load(run / "last.ckpt", weights_only=True)
    assert final["global_step"] == step + 2  # one more epoch of limit_train_batches=2 steps
    # optimiser and scheduler state carried over: the scheduler counted every step
    assert final["lr_schedulers"][0]["last_epoch"] == final["global_step"]
    assert final["optimizer_states"][0]["state"][0]["step"] == final["global_step"]
    # the log survived the kill and the resume: every epoch is in metrics.csv, each step once. Lightning logs an
    # epoch's mean loss after that epoch's checkpoint (fit_loop.on_advance_end), so a kill in the milliseconds between
    # the two loses the checkpoint's own epoch row, and the resumed run starts at the next epoch (CI hit it once)
    rows = _metrics(run)
    epochs = {int(float(r["epoch"])) for r in rows if r.get("train/loss_epoch")}
    assert set(range(epoch)) | {epoch + 1} <= epochs <= set(range(epoch + 2))
    steps = [r["step"] for r in rows if r.get("train/loss_step")]
    assert len(steps) == len(set(steps)) and len(steps) == final["global_step"]


def test_seed_flag_seeds_everything(tiny_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        train_main([*TINY, "--dataset", str(tiny_dataset), "--output", str(tmp_path / "r"), "--seed", "7",
                    "--check-data"])
    assert torch.initial_seed() == 7


def test_checkpoints_follow_training_when_the_monitored_score_ties(tiny_dataset: Path, tmp_path: Path) -> None:
    # val/cases is the same at every validation: best.ckpt must be the latest of the tied models, and last.ckpt the
    # last validation's (Lightning 2.6 kept the first tie as best and, with save_last, never rewrote last.ckpt)
    run = tmp_path / "run"
    assert train_main([*TINY, "--dataset", str(tiny_dataset), "--output", str(run), "--max-epochs", "3",
                       "--monitor", "val/cases"]) == 0
    steps = {name: torch.load(run / name, weights_only=True)["global_step"] for name in ("best.ckpt", "last.ckpt")}
    assert steps == {"best.ckpt": 6, "last.ckpt": 6}  # 3 epochs of limit_train_batches 2


def test_monitor_last_makes_best_the_final_weights(tiny_dataset: Path, tmp_path: Path) -> None:
    # nnU-Net predicts with its final checkpoint: with --monitor last, best.ckpt holds the same weights as last.ckpt
    run = tmp_path / "run"
    assert train_main([*TINY, "--dataset", str(tiny_dataset), "--output", str(run), "--max-epochs", "3",
                       "--monitor", "last"]) == 0
    best, last = (torch.load(run / name, weights_only=True) for name in ("best.ckpt", "last.ckpt"))
    assert best["global_step"] == last["global_step"] == 6
    for key, value in last["state_dict"].items():
        assert torch.equal(best["state_dict"][key], value), key

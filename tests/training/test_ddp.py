"""Lightning DDP with 2 CPU processes (gloo): same α on both ranks, validation metrics synced."""

from __future__ import annotations

import ast
import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ddp_dataset(tmp_path_factory) -> Path:
    from seg.data.synthetic import make_dataset

    return make_dataset(tmp_path_factory.mktemp("ddp"), cases=6, test_cases=1, shape=(32, 32, 24),
                        foreground_fraction=0.01, empty_fraction=0.0, seed=5, progress=False)


def test_two_process_ddp_on_cpu(ddp_dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    command = [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs" / "demo.yaml"),
               "--dataset", str(ddp_dataset), "--output", str(run), "--max-epochs", "1",
               "--model.channels", "[4, 8, 16]", "--data.patch_size", "[16, 16, 16]",
               "--data.samples_per_volume", "1", "--data.val_fraction", "0.34",
               "--trainer.limit_train_batches", "2", "--trainer.check_val_every_n_epoch", "1",
               "--trainer.enable_progress_bar", "false",
               "--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = re.findall(r"rank (\d)/2: alpha (\[.*?\]) .*counts (\[.*?\])", result.stdout)
    by_rank = {rank: (ast.literal_eval(alpha), ast.literal_eval(counts)) for rank, alpha, counts in lines}
    assert set(by_rank) == {"0", "1"}, result.stdout[-2000:]
    assert by_rank["0"] == by_rank["1"]
    # each rank validated one of the two validation cases; the logged tally covers both
    with open(run / "metrics.csv") as handle:
        cases = {float(r["val/cases"]) for r in csv.DictReader(handle) if r.get("val/cases")}
    assert cases == {2.0}

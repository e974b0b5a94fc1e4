"""Lightning DDP with 2 CPU processes (gloo): same α on both ranks, validation metrics synced, and each validation
case counted once although Lightning's sampler pads an odd validation set with a repeated case."""

from __future__ import annotations

import ast
import csv
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from seg.data.layouts import load_dataset
from seg.data.splits import split_cases
from seg.io import read_label

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
               "--data.samples_per_volume", "1", "--data.val_fraction", "0.5",
               "--trainer.limit_train_batches", "2", "--trainer.check_val_every_n_epoch", "1",
               "--trainer.enable_progress_bar", "false",
               "--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = re.findall(r"rank (\d)/2: alpha (\[.*?\]) .*counts (\[.*?\])", result.stdout)
    by_rank = {rank: (ast.literal_eval(alpha), ast.literal_eval(counts)) for rank, alpha, counts in lines}
    assert set(by_rank) == {"0", "1"}, result.stdout[-2000:]
    assert by_rank["0"] == by_rank["1"]
    # 3 validation cases on 2 ranks: the sampler gives each rank 2 (one case twice); the tally counts 3, and its
    # lesions are exactly the connected components of those 3 label files (scipy, full connectivity)
    with open(run / "metrics.csv") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("val/cases")]
    assert {float(r["val/cases"]) for r in rows} == {3.0}
    spec = load_dataset(ddp_dataset)
    _, val = split_cases([c.name for c in spec.cases], seed=0, val_fraction=0.5)
    labels = {c.name: c.label for c in spec.cases}
    lesions = sum(ndimage.label(read_label(labels[n]).array[0] > 0, structure=np.ones((3, 3, 3)))[1] for n in val)
    assert {float(r["val/gt_lesions"]) for r in rows} == {float(lesions)}

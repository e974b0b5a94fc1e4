"""A tiny trained checkpoint shared by the prediction tests of this package (trained once)."""

from __future__ import annotations

from pathlib import Path

import pytest

from seg.cli import train_main

ROOT = Path(__file__).resolve().parents[2]


def _train(dataset: Path, run: Path, *extra: str) -> Path:
    code = train_main(["--config", str(ROOT / "configs" / "demo.yaml"), "--dataset", str(dataset),
                       "--output", str(run), "--max-epochs", "1", "--model.channels", "[4, 8, 16]",
                       "--data.patch_size", "[16, 16, 16]", "--data.samples_per_volume", "1",
                       "--trainer.limit_train_batches", "2", "--trainer.check_val_every_n_epoch", "1",
                       "--trainer.enable_progress_bar", "false", "--model.min_size", "0", *extra])
    assert code == 0
    return run / "best.ckpt"


@pytest.fixture(scope="package")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    from seg.data.synthetic import make_dataset

    root = tmp_path_factory.mktemp("predict")
    dataset = make_dataset(root / "data", cases=4, test_cases=2, shape=(32, 32, 24), foreground_fraction=0.01,
                           empty_fraction=0.0, seed=11, progress=False)
    return _train(dataset, root / "run"), dataset

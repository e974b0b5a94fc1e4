"""configs/brats.yaml on the BraTS cases of ../shared/data, laid out by links (skipped where absent)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seg.cli import train_main
from seg.data.brats import write_brats_dataset
from seg.data.layouts import load_dataset

ROOT = Path(__file__).resolve().parents[2]


def test_brats_links_form_an_msd_dataset_and_pass_the_check(shared_data: Path, tmp_path: Path, capsys) -> None:
    source = shared_data / "brats2015"
    dataset = write_brats_dataset(source, tmp_path / "brats", test_cases=2)
    spec = load_dataset(dataset)
    cases = sorted(p for p in source.iterdir() if p.is_dir())
    assert len(spec.cases) + len(spec.test_cases) == len(cases)
    assert spec.channel_names == ["FLAIR", "T1c"] and spec.num_classes == 5
    assert all(t.label is not None and t.label.resolve().name == "OTMultiClass.nii.gz" for t in spec.test_cases)
    assert all(p.is_symlink() for p in (tmp_path / "brats" / "imagesTr").iterdir())  # nothing copied
    with pytest.raises(SystemExit) as done:
        train_main(["--config", str(ROOT / "configs" / "brats.yaml"), "--dataset", str(dataset),
                    "--output", str(tmp_path / "run"), "--check-data"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "OK" in out and json.loads(dataset.read_text())["numTraining"] == len(spec.cases)

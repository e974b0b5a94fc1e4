"""seg-infer over a folder with 2 processes (DDP, gloo): the same bytes as 1 process, each case written once, a
failing case reported by every rank, and a restart predicts only what is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _infer(checkpoint: Path, source: Path, output: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same thread count in both runs: the same float sums
    return subprocess.run([sys.executable, str(ROOT / "infer.py"), "--checkpoint", str(checkpoint), "--input",
                           str(source), "--output", str(output), "--num-workers", "0", *extra],
                          capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def folder_of_cases(trained, tmp_path_factory) -> Path:
    _, dataset = trained
    folder = tmp_path_factory.mktemp("cases")
    images = sorted((dataset.parent / "imagesTs").glob("*.nii.gz")) + sorted((dataset.parent / "imagesTr").glob("*.nii.gz"))
    for image in images[:5]:  # 5 cases on 2 ranks: 3 and 2, none twice
        shutil.copy(image, folder / image.name)
    return folder


def test_two_processes_write_the_same_masks_as_one(trained, folder_of_cases: Path, tmp_path: Path) -> None:
    checkpoint, _ = trained
    one = _infer(checkpoint, folder_of_cases, tmp_path / "one")
    assert one.returncode == 0, one.stderr[-2000:]
    two = _infer(checkpoint, folder_of_cases, tmp_path / "two", "--devices", "2", "--strategy", "ddp")
    assert two.returncode == 0, two.stderr[-3000:]
    names = sorted(p.name for p in folder_of_cases.iterdir())
    assert sorted(p.name for p in (tmp_path / "two").glob("*.nii.gz")) == names
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    # a run killed after some cases, restarted, predicts only what is missing
    (tmp_path / "two" / names[1]).unlink()
    kept = {n: (tmp_path / "two" / n).stat().st_mtime_ns for n in names if n != names[1]}
    again = _infer(checkpoint, folder_of_cases, tmp_path / "two", "--devices", "2", "--strategy", "ddp")
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "two" / names[1]).read_bytes() == (tmp_path / "one" / names[1]).read_bytes()
    assert {n: (tmp_path / "two" / n).stat().st_mtime_ns for n in kept} == kept


def test_a_failing_case_on_any_rank_makes_every_rank_exit_non_zero(trained, folder_of_cases: Path,
                                                                   tmp_path: Path) -> None:
    checkpoint, _ = trained
    source = tmp_path / "in"
    shutil.copytree(folder_of_cases, source)
    (source / "zz_broken.nii.gz").write_bytes(b"not a NIfTI")
    result = _infer(checkpoint, source, tmp_path / "out", "--devices", "2", "--strategy", "ddp")
    assert result.returncode != 0
    assert "zz_broken.nii.gz" in result.stderr
    assert len(list((tmp_path / "out").glob("*.nii.gz"))) == 5  # the others were written

"""seg-infer on bad input (issue 12): every failure names its file, exits non-zero, leaves nothing half-written."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import seg.inference.batch as batch_module
from seg.cli import infer_main
from seg.inference.predict import predict_files


def _first_test_image(dataset: Path) -> Path:
    return sorted((dataset.parent / "imagesTs").glob("*.nii.gz"))[0]


def test_a_failing_mask_write_leaves_no_orphan_probability_map(trained, tmp_path: Path, monkeypatch) -> None:
    checkpoint, dataset = trained
    real = batch_module.write_like

    def failing_on_masks(array, reference, out_path, *, dtype=np.uint8):
        if np.dtype(dtype) == np.uint8:
            raise OSError(f"disk full while writing {out_path}")
        return real(array, reference, out_path, dtype=dtype)

    monkeypatch.setattr(batch_module, "write_like", failing_on_masks)
    failures = predict_files(checkpoint, dataset, tmp_path / "out", probabilities=True)
    assert len(failures) == 2 and all("disk full" in f for f in failures)
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]  # no mask, no probability map, no temp


def test_probabilities_asked_later_are_written_without_overwrite(trained, tmp_path: Path) -> None:
    checkpoint, dataset = trained
    assert predict_files(checkpoint, dataset, tmp_path) == []  # masks only
    assert not (tmp_path / "probabilities").exists()
    assert predict_files(checkpoint, dataset, tmp_path, probabilities=True) == []  # masks exist: not complete
    assert len(list((tmp_path / "probabilities").glob("*.nii.gz"))) == 2


def test_unreadable_image_is_named_without_monai_wrapping(trained, tmp_path: Path, capsys) -> None:
    checkpoint, _ = trained
    broken = tmp_path / "in" / "broken.nii.gz"
    broken.parent.mkdir()
    broken.write_bytes(b"not a gzip stream at all")
    assert infer_main(["--checkpoint", str(checkpoint), "--input", str(broken), "--output", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "broken.nii.gz" in err and "applying transform" not in err and "object at 0x" not in err


def test_a_2d_image_given_to_a_3d_model_says_so(trained, tmp_path: Path) -> None:
    checkpoint, _ = trained
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((32, 32), dtype=np.float32), np.eye(4)), flat)
    failures = predict_files(checkpoint, flat, tmp_path / "out")
    assert len(failures) == 1 and "trained on 3D images but" in failures[0] and "flat.nii.gz' is a 2D image" in failures[0]


def test_output_under_a_regular_file_is_one_clear_error(trained, tmp_path: Path, capsys) -> None:
    checkpoint, dataset = trained
    blocker = tmp_path / "results"
    blocker.write_text("a file")
    code = infer_main(["--checkpoint", str(checkpoint), "--input", str(dataset), "--output", str(blocker / "masks")])
    assert code == 1
    assert "results' is a file, not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("target", ["loop", "folder"])
def test_links_and_folders_named_like_images_are_reported_as_such(trained, tmp_path: Path, target) -> None:
    checkpoint, _ = trained
    folder = tmp_path / "in"
    path = folder / "case.nii.gz"  # inside an input folder, where a listing picks it up by its name
    folder.mkdir()
    path.symlink_to(path) if target == "loop" else path.mkdir()
    failures = predict_files(checkpoint, folder, tmp_path / "out")
    expected = "symbolic link loop" if target == "loop" else "is a folder"
    assert len(failures) == 1 and expected in failures[0]

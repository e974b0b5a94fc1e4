"""``seg-infer --precision bf16``: Lightning's bf16 autocast around the sliding window; the probabilities stay those of
float32 within bf16's rounding (8 significant bits: a unit roundoff of 2^-8 ≈ 0.004 per operation), and the masks
nearly everywhere. The stated tolerance (README): max |Δp| ≤ 0.05, mean |Δp| ≤ 2^-8, labels equal on ≥ 99.5 % of
voxels. CPU autocast runs bf16, so the test runs on the CPU what a GPU would run."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from seg.inference.predict import predict_files


def _maps(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(nib.load(p).dataobj, dtype=np.float64) for p in sorted(folder.glob("*.nii.gz"))}


def test_bf16_probabilities_are_float32_within_bf16_rounding(trained, tmp_path: Path) -> None:
    checkpoint, dataset = trained
    for precision in ("32", "bf16"):
        assert predict_files(checkpoint, dataset, tmp_path / precision, probabilities=True, precision=precision,
                             progress=False) == []
    full, half = _maps(tmp_path / "32" / "probabilities"), _maps(tmp_path / "bf16" / "probabilities")
    assert full.keys() == half.keys() and full
    difference = np.concatenate([np.abs(full[name] - half[name]).ravel() for name in full])
    assert 0 < difference.max() <= 0.05  # not 0: bf16 did run (float32 twice would be identical)
    assert difference.mean() <= 2**-8
    labels32, labels16 = _maps(tmp_path / "32"), _maps(tmp_path / "bf16")
    agreement = np.mean(np.concatenate([(labels32[n] == labels16[n]).ravel() for n in labels32]))
    assert agreement >= 0.995

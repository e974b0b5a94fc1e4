"""Postprocessing chosen on validation: the threshold and the size cut that a hand-built case calls for."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from seg.cli import train_main
from seg.inference.predictor import CasePredictor, Settings
from seg.training.tuning import MIN_SIZES, PEAKS, THRESHOLDS, TUNING_FILE, tune
from tests.training.test_train import TINY


def _case() -> tuple[np.ndarray, np.ndarray, float]:
    probability = np.full((30, 30, 30), 0.02, dtype=np.float32)
    label = np.zeros((30, 30, 30), dtype=bool)
    for start in (2, 12, 22):  # three 27-voxel lesions predicted at p = 0.45 (missed at the argmax's 0.5)
        label[start:start + 3, 5:8, 5:8] = True
        probability[start:start + 3, 5:8, 5:8] = 0.45
    probability[5:7, 20, 20] = 0.95  # two confident 2-voxel specks: false positives unless removed
    probability[15:17, 25, 25] = 0.95
    probability[25:28, 20:23, 20:23] = 0.35  # a faint 27-voxel false positive: gone above 0.35
    return probability, label, 2.0  # 2 mm³ voxels


def test_threshold_and_min_size_are_chosen_for_the_best_lesion_f1() -> None:
    result = tune([_case()], thresholds=(0.3, 0.4, 0.5), min_sizes=(0, 3, 5), matching="msseg")
    assert result["threshold"] == 0.4  # keeps the lesions at 0.45, drops the faint FP at 0.35
    assert result["chosen"]["min_size_voxels"] == 3  # removes the specks, and 5 would tie (the smaller wins)
    assert result["chosen"]["lesion_f1"] == 1.0 and result["min_size_mm3"] == pytest.approx(6.0)
    by_setting = {(r["threshold"], r["min_size_voxels"]): r for r in result["table"]}
    assert by_setting[(0.5, 0)]["tp"] == 0 and by_setting[(0.5, 0)]["fp"] == 2  # argmax: specks only
    assert by_setting[(0.3, 3)]["fp"] == 1  # the faint one stays
    assert len(result["table"]) == 9 and all(r["peak_threshold"] == 0.0 for r in result["table"])


def test_peak_threshold_is_chosen_when_it_removes_the_unconfident_false_positives() -> None:
    probability, label, voxel = _case()
    probability[25:28, 20:23, 20:23] = 0.6  # the faint false positive is now above every threshold, but never > 0.9
    for start in (2, 12, 22):
        probability[start + 1, 6, 6] = 0.97  # each lesion has a confident centre
    result = tune([(probability, label, voxel)], thresholds=(0.4, 0.5), min_sizes=(0, 3),
                  peaks=(0.0, 0.9, 0.99), matching="msseg")
    chosen = result["chosen"]
    # peak 0.9: the FP blob (max 0.6) goes, the lesions (max 0.97) stay; the 0.95 specks need min_size 3
    assert (chosen["threshold"], chosen["min_size_voxels"], chosen["peak_threshold"]) == (0.4, 3, 0.9)
    assert chosen["lesion_f1"] == 1.0 and result["peak_threshold"] == 0.9
    by_setting = {(r["threshold"], r["min_size_voxels"], r["peak_threshold"]): r for r in result["table"]}
    assert by_setting[(0.4, 3, 0.0)]["fp"] == 1 and by_setting[(0.4, 3, 0.0)]["tp"] == 3  # hand count: the blob
    assert by_setting[(0.4, 0, 0.99)]["tp"] == 0  # nothing reaches 0.99: everything removed
    assert len(result["table"]) == 2 * 2 * 3


def test_keep_largest_is_chosen_for_one_tumour_and_not_for_many_lesions() -> None:
    # one tumour with confident false positives of 64 voxels, larger than every size cut
    probability = np.full((40, 40, 40), 0.02, dtype=np.float32)
    label = np.zeros((40, 40, 40), dtype=bool)
    label[5:20, 5:20, 5:20] = True
    probability[5:20, 5:20, 5:20] = 0.9
    probability[30:34, 30:34, 30:34] = 0.9  # 64 voxels each, apart from the tumour and each other
    probability[30:34, 5:9, 30:34] = 0.9
    result = tune([(probability, label, 1.0)], thresholds=(0.5,), min_sizes=MIN_SIZES, largest=(False, True))
    chosen = result["chosen"]
    assert result["keep_largest"] is True and chosen["lesion_f1"] == 1.0 and chosen["fp"] == 0
    by_setting = {(r["min_size_voxels"], r["keep_largest"]): r for r in result["table"]}
    assert by_setting[(max(MIN_SIZES), False)]["fp"] == 2  # hand count: no size cut reaches 64 voxels
    assert chosen["min_size_voxels"] == 0  # keep-largest alone does it: the smallest size cut wins the tie
    # three lesions (the first case): keeping one loses two, so it is not chosen
    result = tune([_case()], thresholds=(0.4,), min_sizes=(0, 3), largest=(False, True))
    assert result["keep_largest"] is False and result["chosen"]["lesion_f1"] == 1.0
    lost = {(r["min_size_voxels"], r["keep_largest"]): r for r in result["table"]}[(3, True)]
    assert (lost["tp"], lost["fn"], lost["fp"]) == (1, 2, 0)


def test_tuning_needs_validation_cases() -> None:
    with pytest.raises(ValueError, match="at least one validation case"):
        tune([])


def test_auto_postprocessing_is_tuned_stored_and_used_at_inference(tiny_dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    argv = [*TINY, "--dataset", str(tiny_dataset), "--output", str(run), "--max-epochs", "1",
            "--model.threshold", "auto", "--model.min_size", "auto", "--model.peak_threshold", "auto",
            "--model.keep_largest", "auto"]
    assert train_main(argv) == 0
    record = json.loads((run / TUNING_FILE).read_text())
    assert len(record["table"]) == len(THRESHOLDS) * len(MIN_SIZES) * len(PEAKS) * 2 and record["validation_cases"] == 2
    best = max(r["lesion_f1"] for r in record["table"])
    assert record["chosen"]["lesion_f1"] == best  # the winner is the table's best
    spec = torch.load(run / "best.ckpt", weights_only=True)["seg"]["postprocessing"]
    assert spec["threshold"] == record["threshold"] and spec["tuned_on_validation"] is True
    assert spec["peak_threshold"] == (record["peak_threshold"] or None)
    assert spec["min_size_mm3"] == pytest.approx(record["min_size_mm3"])
    assert spec["keep_largest"] is record["keep_largest"]
    # seg-infer takes the stored settings unless told otherwise
    predictor = CasePredictor.from_checkpoints([run / "best.ckpt"])
    assert (predictor.settings.threshold, predictor.settings.peak_threshold) == (spec["threshold"],
                                                                                 spec["peak_threshold"])
    assert predictor.settings.keep_largest is spec["keep_largest"]
    told = CasePredictor.from_checkpoints([run / "best.ckpt"], Settings(threshold=0.5, peak_threshold=0.0,
                                                                        keep_largest=not spec["keep_largest"]))
    assert (told.settings.threshold, told.settings.peak_threshold) == (0.5, 0.0)
    assert told.settings.keep_largest is not spec["keep_largest"]

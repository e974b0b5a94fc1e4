"""Postprocessing chosen on validation: the threshold and the size cut that a hand-built case calls for."""

from __future__ import annotations

import numpy as np
import pytest

from seg.training.tuning import tune


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
    assert len(result["table"]) == 9


def test_tuning_needs_validation_cases() -> None:
    with pytest.raises(ValueError, match="at least one validation case"):
        tune([])

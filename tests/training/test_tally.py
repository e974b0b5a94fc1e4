"""The validation tally: a case seen twice (DDP padding) counts once; sizes bins and lesion-wise Dice by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from seg.training.tally import ValidationTally


def _case(lesions: list[tuple[slice, ...]], found: list[bool]) -> tuple[torch.Tensor, torch.Tensor]:
    label = torch.zeros(1, 40, 40, 40, dtype=torch.long)
    prediction = torch.zeros_like(label)
    for box, hit in zip(lesions, found, strict=True):
        label[(0, *box)] = 1
        if hit:
            prediction[(0, *box)] = 1
    return prediction, label


def test_a_case_repeated_on_another_rank_counts_once_and_bins_by_size() -> None:
    small = (slice(2, 4), slice(2, 4), slice(2, 4))  # 8 voxels: bin 0-30
    medium = (slice(10, 14), slice(10, 14), slice(10, 14))  # 64: bin 30-300
    large = (slice(20, 28), slice(20, 28), slice(20, 28))  # 512: bin 300-inf
    cases = [_case([small, large], [False, True]), _case([medium], [True]), _case([small], [True])]
    rank0, rank1 = ValidationTally(2), ValidationTally(2)
    for tally, indices in ((rank0, [0, 2]), (rank1, [1, 0])):  # case 0 on both ranks (the sampler's padding)
        tally.reset(3)
        for i in indices:
            tally.update(*cases[i], [i])
    summed = rank0.as_tensor(torch.device("cpu")) + rank1.as_tensor(torch.device("cpu"))  # what reduce("sum") does
    out = rank0.summarise(summed)
    assert out["cases"] == 3 and out["gt_lesions"] == 4
    assert out["lesion_sensitivity"] == pytest.approx(3 / 4) and out["fp_per_volume"] == 0
    assert out["sensitivity_0-30"] == pytest.approx(1 / 2)
    assert out["sensitivity_30-300"] == 1.0 and out["sensitivity_300-inf"] == 1.0
    assert out["lesion_wise_dice"] == pytest.approx(3 / 4)  # three perfect TP lesions / (TP + FN + FP)
    dice_by_case = [2 * 512 / (512 + 520), 1.0, 1.0]  # case 0 misses the small lesion
    assert out["dice"] == pytest.approx(np.mean(dice_by_case))


def test_an_empty_size_bin_is_nan_not_a_perfect_score() -> None:
    tally = ValidationTally(2)
    tally.reset(1)
    tally.update(*_case([(slice(10, 14), slice(10, 14), slice(10, 14))], [True]), [0])
    out = tally.summarise(tally.as_tensor(torch.device("cpu")))
    assert math.isnan(out["sensitivity_0-30"]) and out["sensitivity_30-300"] == 1.0

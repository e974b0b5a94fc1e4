"""ECE on hand-computed examples; the streaming accumulator equals the one-shot computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seg.evaluation.calibration import CalibrationAccumulator, expected_calibration_error


def test_ece_zero_when_probability_matches_frequency():
    prob = np.full(100, 0.8)
    label = np.r_[np.ones(80), np.zeros(20)]
    assert expected_calibration_error(prob, label) == pytest.approx(0.0, abs=1e-12)


def test_ece_is_gap_between_confidence_and_frequency():
    prob = np.full(100, 0.9)
    label = np.r_[np.ones(50), np.zeros(50)]
    assert expected_calibration_error(prob, label) == pytest.approx(0.4)


def test_ece_weights_bins_by_voxel_count():
    # 30 voxels at 0.1 (3 positive: calibrated), 10 voxels at 0.7 (all positive: gap 0.3) -> 10/40 * 0.3.
    prob = np.r_[np.full(30, 0.1), np.full(10, 0.7)]
    label = np.r_[np.ones(3), np.zeros(27), np.ones(10)]
    assert expected_calibration_error(prob, label, n_bins=10) == pytest.approx(0.25 * 0.3)


def test_probability_one_falls_in_last_bin():
    result = _accumulate([(np.array([1.0, 1.0]), np.array([1, 1]))], n_bins=15)
    assert result.bin_count[-1] == 2 and result.ece == pytest.approx(0.0)


def _accumulate(pairs, n_bins=15, masks=None):
    acc = CalibrationAccumulator(n_bins)
    for i, (p, y) in enumerate(pairs):
        acc.update(p, y, None if masks is None else masks[i])
    return acc.compute()


def test_accumulator_over_volumes_equals_one_shot_on_concatenation():
    rng = np.random.default_rng(0)
    volumes = [(rng.random((4, 5, 6)), rng.random((4, 5, 6)) > 0.7) for _ in range(3)]
    streamed = _accumulate(volumes)
    one_shot = expected_calibration_error(np.concatenate([p.ravel() for p, _ in volumes]),
                                          np.concatenate([y.ravel() for _, y in volumes]))
    assert streamed.ece == pytest.approx(one_shot, rel=1e-12)
    assert streamed.bin_count.sum() == 3 * 120
    torch_version = _accumulate([(torch.from_numpy(p), torch.from_numpy(y)) for p, y in volumes])
    assert torch_version.ece == pytest.approx(one_shot, rel=1e-12)


def test_mask_restricts_voxels():
    prob = np.array([0.9, 0.9, 0.05, 0.05])
    label = np.array([1, 0, 0, 0])
    mask = np.array([True, True, False, False])
    assert expected_calibration_error(prob, label, mask=mask) == pytest.approx(0.4)
    result = _accumulate([(prob, label)], masks=[mask])
    assert np.isnan(result.bin_confidence[0]) and result.to_dict()["bin_confidence"][0] is None


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"in \[0, 1\].*not logits"):
        expected_calibration_error(np.array([1.5, -2.0]), np.array([1, 0]))
    with pytest.raises(ValueError, match="no voxels were added"):
        CalibrationAccumulator().compute()
    with pytest.raises(ValueError, match=r"probabilities have shape \(2,\) but the label has \(3,\)"):
        expected_calibration_error(np.zeros(2), np.zeros(3))

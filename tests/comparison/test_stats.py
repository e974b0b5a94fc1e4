"""Bootstrap CI and paired Wilcoxon wrappers against exact properties and SciPy's own test."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from seg.comparison.stats import bootstrap_ci, paired_wilcoxon


def test_bootstrap_ci_contains_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small = rng.normal(0.7, 0.1, 10)
    large = rng.normal(0.7, 0.1, 400)
    mean_s, low_s, high_s = bootstrap_ci(small)
    mean_l, low_l, high_l = bootstrap_ci(large)
    assert mean_s == pytest.approx(small.mean()) and low_s < mean_s < high_s
    assert low_l < mean_l < high_l
    # The width scales roughly as 1/sqrt(n): 400 vs 10 values -> about 6x narrower.
    assert (high_l - low_l) < (high_s - low_s) / 3


def test_bootstrap_ci_is_reproducible_and_drops_nan():
    values = [0.2, 0.5, np.nan, 0.9, 0.4]
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)
    assert bootstrap_ci(values)[0] == pytest.approx(0.5)


def test_bootstrap_ci_degenerate_samples():
    assert bootstrap_ci([0.3]) == (0.3, 0.3, 0.3)
    assert bootstrap_ci([1.0, 1.0, 1.0]) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="values is empty"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="all NaN"):
        bootstrap_ci([np.nan])


def test_paired_wilcoxon_matches_scipy():
    rng = np.random.default_rng(1)
    a = rng.random(20)
    b = a - rng.normal(0.05, 0.05, 20)
    result = paired_wilcoxon(a, b)
    reference = stats.wilcoxon(a, b)
    assert result.pvalue == pytest.approx(reference.pvalue) and result.n == 20
    assert result.statistic == pytest.approx(reference.statistic)


def test_paired_wilcoxon_all_zero_differences_and_nan_pairs():
    same = paired_wilcoxon([0.5, 0.6, np.nan], [0.5, 0.6, 0.1])
    assert (same.statistic, same.pvalue, same.n) == (0.0, 1.0, 2)
    with pytest.raises(ValueError, match="same length"):
        paired_wilcoxon([1.0, 2.0], [1.0])

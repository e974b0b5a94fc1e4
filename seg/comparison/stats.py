"""Statistics for comparing methods over cases: percentile-bootstrap confidence intervals and a paired Wilcoxon test.

Both wrap SciPy (``scipy.stats.bootstrap``, ``scipy.stats.wilcoxon``); what is added here are the edge cases
that SciPy raises or warns on (constant samples, one value, all-zero paired differences) and NaN handling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


def _finite(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0:
        raise ValueError(f"{name} is empty: need at least one value")
    return array


def bootstrap_ci(values: Sequence[float] | np.ndarray, *, n_resamples: int = 2000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``values`` ``(N,)`` and its percentile-bootstrap confidence interval.

    NaN values are dropped (e.g. HD95 of a case with an empty mask). A single value or a constant sample gives
    the degenerate interval ``(mean, mean, mean)``.

    Returns:
        ``(mean, low, high)`` as floats.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    array = _finite(values, "values")
    array = array[~np.isnan(array)]
    if array.size == 0:
        raise ValueError("values are all NaN: nothing to bootstrap")
    mean = float(array.mean())
    if array.size == 1 or np.all(array == array[0]):
        return mean, mean, mean
    result = stats.bootstrap((array,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
                             method="percentile", rng=np.random.default_rng(seed))
    return mean, float(result.confidence_interval.low), float(result.confidence_interval.high)


@dataclass(frozen=True)
class WilcoxonResult:
    """Paired Wilcoxon signed-rank test: statistic, two-sided p-value, number of pairs used."""

    statistic: float
    pvalue: float
    n: int


def paired_wilcoxon(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> WilcoxonResult:
    """Two-sided Wilcoxon signed-rank test of the paired differences ``a - b`` (``(N,)`` each, same case order).

    Pairs where either value is NaN are dropped. When every difference is zero the methods are identical on
    these cases and the result is ``statistic = 0, pvalue = 1`` (SciPy would raise).
    """
    x, y = _finite(a, "a"), _finite(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"paired samples must have the same length, got {x.size} and {y.size} "
                         "(one value per case for each method, same case order)")
    keep = ~(np.isnan(x) | np.isnan(y))
    differences = x[keep] - y[keep]
    n = int(differences.size)
    if n == 0 or np.all(differences == 0):
        return WilcoxonResult(statistic=0.0, pvalue=1.0, n=n)
    result = stats.wilcoxon(differences, alternative="two-sided")
    return WilcoxonResult(statistic=float(result.statistic), pvalue=float(result.pvalue), n=n)

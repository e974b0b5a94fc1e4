"""Seeded splits of a dataset's cases: a train/validation split or k folds, independent of the input order.

Every split is a pure function of the case names and the seed (names sorted, then ``numpy.random.default_rng``),
so every DDP rank and every later run derives the same split without communicating.
"""

from __future__ import annotations

import numpy as np


def split_cases(names: list[str], *, seed: int, val_fraction: float = 0.2, num_folds: int | None = None,
                fold: int = 0) -> tuple[list[str], list[str]]:
    """Seeded split of case names into ``(train, validation)``, independent of the input order.

    With ``num_folds``, the shuffled names are cut into that many near-equal folds and fold ``fold`` is
    the validation set (so the folds of one seed are disjoint and cover every case). Otherwise the first
    ``round(val_fraction * N)`` shuffled names (at least one when ``val_fraction > 0``, at most N - 1).
    """
    if len(set(names)) != len(names):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"case names must be unique to split them; repeated: {duplicates[:5]}")
    ordered = sorted(names)
    order = np.random.default_rng(seed).permutation(len(ordered))
    if num_folds is not None:
        if num_folds < 2 or num_folds > len(ordered):
            raise ValueError(f"num_folds must be between 2 and the number of cases ({len(ordered)}), "
                             f"got {num_folds}")
        if not 0 <= fold < num_folds:
            raise ValueError(f"fold must be in 0..{num_folds - 1}, got {fold}")
        val_positions = set(np.array_split(order, num_folds)[fold].tolist())
    else:
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        n_val = round(val_fraction * len(ordered))
        if val_fraction > 0:
            n_val = min(max(n_val, 1), len(ordered) - 1)
        val_positions = set(order[:n_val].tolist())
    train = [n for i, n in enumerate(ordered) if i not in val_positions]
    val = [n for i, n in enumerate(ordered) if i in val_positions]
    return train, val

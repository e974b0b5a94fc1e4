"""Compatibility: ``seg.alpha`` moved to :mod:`seg.losses.alpha` (α from class frequencies) and
:mod:`seg.losses.frequencies` (the counting); the public names stay importable from here."""

from __future__ import annotations

from seg.losses.alpha import (  # noqa: F401
    DEFAULT_METHOD,
    METHODS,
    alpha_from_frequencies,
    alpha_table,
    load_alpha,
    resolve_alpha,
    save_alpha,
)
from seg.losses.frequencies import class_frequencies  # noqa: F401

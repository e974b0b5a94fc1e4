"""A tiny synthetic dataset shared by the training tests of this package."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="package")
def tiny_dataset(tmp_path_factory) -> Path:
    from seg.data.synthetic import make_dataset

    out = tmp_path_factory.mktemp("tiny")
    return make_dataset(out, cases=6, test_cases=2, shape=(32, 32, 24), foreground_fraction=0.01,
                        empty_fraction=0.0, seed=3, progress=False)

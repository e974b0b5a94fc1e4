"""Shared fixtures. Real data lives in ../shared/data (never copied here); tests using it skip where absent."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture
def brats_case(shared_data: Path) -> Path:
    case = shared_data / "brats2015" / "brats_2013_pat0001_1"
    if not case.is_dir():
        pytest.skip(f"{case} is absent")
    return case


@pytest.fixture
def isles_case(shared_data: Path) -> Path:
    case = shared_data / "isles22"
    if not case.is_dir():
        pytest.skip(f"{case} is absent")
    return case

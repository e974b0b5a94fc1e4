"""Shared type aliases. Shapes follow one vocabulary: ``(B, C, *spatial)``, spatial = ``(H, W)`` or ``(D, H, W)``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Union

import torch

PathLike = Union[str, "os.PathLike[str]"]
Alpha = Union[float, Sequence[float], torch.Tensor, None]  # noqa: UP007 (runtime alias, py3.10)

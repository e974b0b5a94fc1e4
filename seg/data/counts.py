"""The training split's class counts, the input of data-derived α: over whole label volumes or over sampled patches.

``"volumes"`` (default) counts every voxel of the training label files as stored, streamed one file at a time
(:func:`seg.losses.frequencies.class_frequencies`). The loss never sees whole volumes, though: it sees patches, a
third to a half of them centred on a lesion, so whole-volume counts overstate the imbalance the loss faces.
``"patches"`` counts the labels of ``count_patches`` patches drawn through the training pipeline itself (same
sampling, seeded, augmentation included), i.e. the class balance of what the loss is given.

Counts are cached as ``<run>/class_frequencies.json`` (atomically) with everything they depend on, so DDP ranks
and resumed runs read rank 0's result instead of recounting.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from seg.io import write_json
from seg.losses.frequencies import class_frequencies
from seg.types import PathLike

COUNTS_FILE = "class_frequencies.json"
COUNT_SOURCES = ("volumes", "patches")


def count_volumes(labels: list[PathLike], num_classes: int, ignore_index: int | None) -> np.ndarray:
    """Voxel count per class over label files, float64 ``(num_classes,)``."""
    return class_frequencies(labels, num_classes, ignore_index=ignore_index, progress=True)


def count_patches(dataset: Dataset, num_classes: int, patches: int, *, seed: int,
                  ignore_index: int | None = None) -> np.ndarray:
    """Voxel count per class over ``patches`` training patches, float64 ``(num_classes,)``.

    ``dataset`` is the training dataset: item ``i`` is a list of patch dicts (``samples_per_volume`` of them) from
    case ``i % len(dataset)``, drawn with the dataset's transform reseeded with ``seed + 1`` (the caller reseeds it
    for training afterwards).
    """
    if patches < 1:
        raise ValueError(f"count_patches must be >= 1, got {patches}")
    dataset.transform.set_random_state(seed=seed + 1)
    labels, drawn, index = [], 0, 0
    while drawn < patches:
        for sample in dataset[index % len(dataset)]:
            if drawn < patches:
                labels.append(sample["label"])
                drawn += 1
        index += 1
    return class_frequencies(labels, num_classes, ignore_index=ignore_index)


def counts_key(num_classes: int, ignore_index: int | None, train_cases: list[str], source: str,
               patches: int) -> dict[str, Any]:
    """What the counts depend on (a cached file with another key is recounted)."""
    key: dict[str, Any] = {"num_classes": num_classes, "ignore_index": ignore_index, "train_cases": train_cases,
                           "source": source}
    if source == "patches":
        key["patches"] = patches
    return key


def read_cached_counts(cache_dir: PathLike | None, key: dict[str, Any]) -> np.ndarray | None:
    """The counts cached in ``cache_dir`` under ``key``, or None (no file, another key, unreadable)."""
    if cache_dir is None:
        return None
    try:
        record = json.loads((Path(cache_dir) / COUNTS_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if {k: record.get(k) for k in key} != key or record.get("counts") is None:
        return None
    return np.asarray(record["counts"], dtype=np.float64)


def write_cached_counts(cache_dir: PathLike | None, key: dict[str, Any], counts: np.ndarray) -> None:
    if cache_dir is not None:
        write_json(Path(cache_dir) / COUNTS_FILE, {**key, "counts": [int(c) for c in counts]})

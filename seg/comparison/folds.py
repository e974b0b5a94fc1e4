"""Cross-validation folds of a comparison (``folds: K``): every labelled case is a test case exactly once.

The split is nnU-Net's: the case names sorted, shuffled with a fixed seed (12345, nnU-Net's ``KFold`` seed), cut into
K near-equal folds; it is written to ``OUTPUT/splits.json`` in nnU-Net's ``splits_final.json`` format (a list of
``{"train": [...], "val": [...]}``, ``val`` being the fold's held-out test cases) and reused from there, or read from
the config's ``splits:`` file, so it can be handed in or handed on. Each fold becomes an ordinary MSD dataset,
``OUTPUT/folds/fold<k>/dataset.json`` (absolute paths to the files) with ``labelsTs/`` links to its test labels, so
training (which draws its own validation split from the fold's training cases), prediction and evaluation are the
same as with a fixed test set.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from seg.data.layouts import Case, DatasetSpec
from seg.files import write_json

SPLIT_SEED = 12345  # nnU-Net's KFold(shuffle=True, random_state=12345)


def labelled_cases(spec: DatasetSpec) -> list[Case]:
    """The dataset's labelled cases: every training case and every test case with a label."""
    return [*spec.cases, *(c for c in spec.test_cases if c.label is not None)]


def draw_splits(names: list[str], folds: int) -> list[dict[str, list[str]]]:
    """K folds of ``names`` (sorted, shuffled with :data:`SPLIT_SEED`): ``[{"train": [...], "val": [...]}]``."""
    if len(set(names)) != len(names):
        raise ValueError(f"case names must be unique for cross-validation; repeated: "
                         f"{sorted({n for n in names if names.count(n) > 1})[:5]}")
    if not 2 <= folds <= len(names):
        raise ValueError(f"folds must be between 2 and the number of labelled cases ({len(names)}), got {folds}")
    ordered = sorted(names)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(ordered))
    held = [sorted(ordered[i] for i in part) for part in np.array_split(order, folds)]
    return [{"train": sorted(set(ordered) - set(test)), "val": test} for test in held]


def splits_for(output: Path, names: list[str], folds: int, given: Path | None = None) -> list[dict[str, list[str]]]:
    """The splits of this comparison: ``given``, or ``OUTPUT/splits.json`` if present, else drawn and written."""
    path = given or output / "splits.json"
    if path.is_file():
        splits = json.loads(path.read_text())
        tested = sorted(n for s in splits for n in s["val"])
        if tested != sorted(names) or len(splits) != folds:
            raise ValueError(f"'{path}' holds {len(splits)} folds testing {len(tested)} cases, but this comparison has "
                             f"{folds} folds over {len(names)} labelled cases: use another --output or delete it")
        return splits
    splits = draw_splits(names, folds)
    write_json(path, splits)
    return splits


def fold_dataset(spec: DatasetSpec, split: dict[str, list[str]], folder: Path) -> Path:
    """Write fold ``split``'s dataset (training cases, test cases with ``labelsTs/`` links); its ``dataset.json``."""
    by_name = {c.name: c for c in labelled_cases(spec)}
    labels = folder / "labelsTs"
    labels.mkdir(parents=True, exist_ok=True)
    for name in split["val"]:
        label = Path(by_name[name].label).resolve()
        link = labels / f"{name}{''.join(label.suffixes[-2:]) if label.name.endswith('.nii.gz') else label.suffix}"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(label)
    content = {"name": f"{spec.root.name} {folder.name}", "labels": {str(k): v for k, v in spec.labels.items()},
               "modality": {str(i): n for i, n in enumerate(spec.channel_names)},
               "training": [{"image": [_absolute(p) for p in by_name[n].images], "label": _absolute(by_name[n].label)}
                            for n in split["train"]],
               "test": [[_absolute(p) for p in by_name[n].images] for n in split["val"]]}
    return write_json(folder / "dataset.json", content)


def _absolute(path: str | Path) -> str:
    """An absolute path that keeps symbolic links: case names come from file names, and linked cases (the BraTS
    layout of seg.data.brats) all point at files of one name."""
    return os.path.abspath(path)

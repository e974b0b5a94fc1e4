"""Comparison configs (YAML) for ``seg-compare``: reading, ``extends``, path resolution, validation.

The format is described in :mod:`seg.comparison.runner`; this module turns a file into a :class:`CompareConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from seg.errors import check_option

KEYS = ("extends", "base", "output", "dataset", "synthetic", "seeds", "max_epochs", "max_minutes", "train_args",
        "baseline", "variants", "quick", "eval_classes", "eval_dilation", "eval_min_lesion_size", "eval_matching",
        "folds", "splits", "eval_regions")
PATH_KEYS = ("extends", "base", "dataset", "quick", "splits")  # resolved relative to the file that names them
MATCHINGS = ("msseg", "iou", "overlap")


@dataclass(frozen=True)
class CompareConfig:
    """A resolved comparison config (paths absolute; see the module docstring for the keys)."""

    path: Path
    base: Path
    variants: dict[str, list[str]]
    seeds: list[int]
    output: Path = Path("compare_output")
    dataset: Path | None = None
    synthetic: dict[str, Any] | None = None
    max_epochs: int | None = None
    max_minutes: float | None = None
    train_args: list[str] = field(default_factory=list)
    baseline: str = "dice"
    quick: Path | None = None
    eval_classes: list[int] | None = None  # the lesion foreground for evaluation (None: every non-zero label)
    eval_dilation: int = 0  # GT dilation (voxels) of the lesion-wise evaluation
    eval_min_lesion_size: int = 0  # GT lesions under this many voxels are ignored by the lesion-wise evaluation
    eval_matching: str = "msseg"  # the lesion matching rule of the evaluation (seg.evaluation.matching)
    folds: int | None = None  # k-fold cross-validation over every labelled case (None: the dataset's test cases)
    splits: Path | None = None  # a splits.json to use instead of drawing one (nnU-Net's format, "test" for "val")
    eval_regions: dict[str, list[int]] | None = None  # evaluate these label regions (BraTS WT/TC/ET) one by one


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"comparison config '{path}' does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"comparison config '{path}' must be a mapping of keys, got {type(raw).__name__}")
    for key in raw:
        try:
            check_option("key", key, KEYS)
        except ValueError as error:
            raise ValueError(f"comparison config '{path}': {error}") from None
    for key in PATH_KEYS:
        if raw.get(key) is not None:
            raw[key] = (path.parent / str(raw[key])).resolve()
    variants = raw.get("variants")
    if isinstance(variants, dict):  # a variant's --config files are relative to the file naming them
        raw["variants"] = {name: _resolve_configs(path, name, args) for name, args in variants.items()}
    return raw


def _resolve_configs(path: Path, name: str, args: Any) -> list[str]:
    if not isinstance(args, list) or not all(isinstance(a, (str, int, float)) for a in args):
        raise ValueError(f"variant {name!r} in '{path}' must be a list of seg-train arguments, e.g. "
                         f"[--config, loss_dice.yaml] or [--model.loss, focal], got {args!r}")
    out = [str(a) for a in args]
    for i in range(len(out) - 1):
        if out[i] == "--config":
            resolved = (path.parent / out[i + 1]).resolve()
            if not resolved.is_file():
                raise FileNotFoundError(f"variant {name!r} in '{path}' names '--config {out[i + 1]}' but "
                                        f"'{resolved}' does not exist (paths are relative to the comparison file)")
            out[i + 1] = str(resolved)
    return out


def _merged(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    raw = _read_yaml(path)
    parent_path = raw.pop("extends", None)
    if parent_path is None:
        return raw
    if parent_path in seen:
        raise ValueError(f"comparison configs extend each other in a cycle: {[str(p) for p in seen]}")
    parent = _merged(parent_path, (*seen, path))
    parent.pop("quick", None)  # a parent's quick entry does not carry over
    if isinstance(raw.get("variants"), list):  # a list of names selects from the parent's variants
        known = parent.get("variants") or {}
        unknown = [n for n in raw["variants"] if n not in known]
        if unknown:
            raise ValueError(f"'{path}' selects variants {unknown} that '{parent_path}' does not define "
                             f"(it defines {list(known)})")
        raw["variants"] = {n: known[n] for n in raw["variants"]}
    return {**parent, **raw}


def load_config(path: str | Path, *, quick: bool = False) -> CompareConfig:
    """Read a comparison config (following ``extends``; with ``quick`` the file its ``quick`` key names)."""
    path = Path(path).resolve()
    raw = _merged(path)
    if quick:
        if raw.get("quick") is None:
            raise ValueError(f"--quick: comparison config '{path}' has no 'quick:' entry naming the quick config")
        path = raw["quick"]
        raw = _merged(path)
        raw.pop("quick", None)
    missing = [k for k in ("base", "variants", "seeds") if raw.get(k) is None]
    if missing:
        raise ValueError(f"comparison config '{path}' lacks {missing}; see `seg-compare --help` for the format")
    if not isinstance(raw["variants"], dict) or not raw["variants"]:
        raise ValueError(f"'variants' in '{path}' must map names to seg-train arguments, got {raw['variants']!r}")
    if raw.get("dataset") is None and raw.get("synthetic") is None:
        raise ValueError(f"comparison config '{path}' needs 'dataset:' or 'synthetic:' (or pass --dataset)")
    seeds = raw["seeds"]
    if not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"'seeds' in '{path}' must be a non-empty list of distinct integers, got {seeds!r}")
    eval_classes = raw.get("eval_classes")
    if eval_classes is not None and (not isinstance(eval_classes, list) or not eval_classes
                                     or not all(isinstance(c, int) and c > 0 for c in eval_classes)):
        raise ValueError(f"'eval_classes' in '{path}' must be a list of foreground labels (integers > 0), "
                         f"got {eval_classes!r}")
    voxels = {key: 0 if raw.get(key) is None else raw[key] for key in ("eval_dilation", "eval_min_lesion_size")}
    for key, value in voxels.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"'{key}' in '{path}' must be a number of voxels (an integer >= 0), got {value!r}")
    folds = raw.get("folds")
    if folds is not None and (isinstance(folds, bool) or not isinstance(folds, int) or folds < 2):
        raise ValueError(f"'folds' in '{path}' must be an integer >= 2 (k of k-fold cross-validation) or null, "
                         f"got {folds!r}")
    matching = check_option("eval_matching", raw.get("eval_matching", "msseg"), MATCHINGS)
    regions = raw.get("eval_regions")
    if regions is not None and (not isinstance(regions, dict) or not regions or not all(
            isinstance(v, list) and v and all(isinstance(c, int) and c > 0 for c in v) for v in regions.values())):
        raise ValueError(f"'eval_regions' in '{path}' must map region names to lists of labels > 0, e.g. "
                         f"{{WT: [1, 2, 3, 4], ET: [4]}}, got {regions!r}")
    baseline = raw.get("baseline", "dice")
    if baseline not in raw["variants"]:
        raise ValueError(f"baseline {baseline!r} in '{path}' is not one of the variants {list(raw['variants'])}")
    return CompareConfig(path=path, base=raw["base"], variants=raw["variants"], seeds=[int(s) for s in seeds],
                         output=Path(raw.get("output") or "compare_output"), dataset=raw.get("dataset"),
                         synthetic=raw.get("synthetic"), max_epochs=raw.get("max_epochs"),
                         max_minutes=raw.get("max_minutes"), train_args=[str(a) for a in raw.get("train_args", [])],
                         baseline=baseline, quick=raw.get("quick"), eval_classes=eval_classes,
                         eval_matching=matching, folds=folds, splits=raw.get("splits"), eval_regions=regions,
                         **voxels)

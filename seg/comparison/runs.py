"""The runs of a comparison and their folder layout: what to run (variants x seeds x folds, the dataset, the folds),
what is finished, and where each run lives.

The folder layout: one folder per run, ``OUT/runs/<variant>/seed<k>``, finished when its
``evaluation/summary.json`` exists, with the settings it was made with in ``compare_run.json``. Under
cross-validation each seed's folder holds one ``fold<f>`` run per fold, and a seed's results are all its folds'."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seg.comparison.config import CompareConfig
from seg.comparison.folds import fold_dataset, labelled_cases, splits_for
from seg.data.layouts import load_dataset
from seg.data.synthetic import make_dataset
from seg.files import write_text
from seg.training.curves import read_metrics_csv


def run_dir(output: Path, variant: str, seed: int, fold: int | None = None) -> Path:
    """Folder of one run: ``OUT/runs/<variant>/seed<k>``, or ``.../seed<k>/fold<f>`` under cross-validation."""
    folder = Path(output) / "runs" / variant / f"seed{seed}"
    return folder if fold is None else folder / f"fold{fold}"


def is_finished(folder: Path) -> bool:
    """A run is finished when its evaluation summary exists (the evaluation folder is renamed into place last)."""
    return (folder / "evaluation" / "summary.json").is_file()


def epochs_trained(folder: Path) -> int | None:
    """Epochs a run's ``metrics.csv`` logged (``None`` without a log)."""
    metrics_csv = folder / "metrics.csv"
    if not metrics_csv.is_file():
        return None
    try:
        epochs = read_metrics_csv(metrics_csv).get("epoch", np.zeros(0))
    except ValueError:  # a log with a header and no rows
        return None
    epochs = epochs[np.isfinite(epochs)]
    return int(epochs.max()) + 1 if epochs.size else None


def run_settings(argv: list[str], output: Path) -> dict[str, Any]:
    """What makes a run what it is: its arguments (with ``output`` as ``{OUTPUT}``, so a moved output folder
    stays valid) and the SHA-256 of every ``--config`` file they name (an edited base config invalidates runs)."""
    configs = [Path(argv[i + 1]) for i, a in enumerate(argv[:-1]) if a == "--config"]
    return {"argv": [a.replace(str(output), "{OUTPUT}") for a in argv],
            "config_sha256": {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in configs}}


def evaluation_changes(folder: Path, config: CompareConfig) -> list[str]:
    """How the evaluation settings recorded in a finished run's summary differ from the config's ``eval_*`` keys
    (a setting missing from an older summary had its default)."""
    recorded = {"classes": None, "dilation": 0, "min_lesion_size": 0, "matching": "overlap", "regions": None,
                **json.loads((folder / "evaluation" / "summary.json").read_text()).get("settings", {})}
    wanted = {"classes": config.eval_classes, "dilation": config.eval_dilation,
              "min_lesion_size": config.eval_min_lesion_size, "matching": config.eval_matching,
              "regions": config.eval_regions}
    return [f"{key} {recorded[key]!r} (config: {value!r})" for key, value in wanted.items() if recorded[key] != value]


def prepare_dataset(config: CompareConfig, output: Path) -> Path:
    """The dataset.json every run uses: the configured one, or a synthetic one made once into OUTPUT/data."""
    if config.dataset is not None:
        return Path(config.dataset)
    data = output / "data"
    recorded = data / "synthetic.json"
    if (data / "dataset.json").is_file():
        if recorded.is_file() and json.loads(recorded.read_text()) != config.synthetic:
            raise ValueError(f"'{data}' holds a synthetic dataset made with {recorded.read_text().strip()} but the "
                             f"config asks for {config.synthetic}; use another --output")
        print(f"synthetic dataset exists: {data / 'dataset.json'}")
        return data / "dataset.json"
    print(f"making a synthetic dataset in {data} with {config.synthetic}")
    dataset_json = make_dataset(data, **config.synthetic)
    write_text(recorded, json.dumps(config.synthetic) + "\n")
    return dataset_json


def test_label_folder(dataset_json: Path) -> Path:
    """The one folder holding the labels of every test case (the comparison evaluates on them)."""
    spec = load_dataset(dataset_json)
    if not spec.test_cases:
        raise ValueError(f"dataset '{dataset_json}' has no test cases; the comparison predicts and evaluates the "
                         "held-out test cases (MSD 'test' entries with labels in labelsTs/)")
    unlabelled = [c.name for c in spec.test_cases if c.label is None]
    folders = {Path(c.label).parent for c in spec.test_cases if c.label is not None}
    if unlabelled or len(folders) != 1:
        raise ValueError(f"dataset '{dataset_json}': every test case needs a label in one folder (labelsTs/); "
                         f"unlabelled: {unlabelled[:5]}, label folders: {sorted(map(str, folders))}")
    return folders.pop()


def train_argv(config: CompareConfig, variant: str, seed: int, folder: Path, dataset_json: Path) -> list[str]:
    """The seg-train arguments of one run (base, shared arguments, the variant's, then the run's own).

    ``--seed`` sets ``seed_everything`` at parse time (``SegCLI.parse_arguments``), before LightningCLI seeds.
    """
    argv = ["--config", str(config.base), *config.train_args, *config.variants[variant], "--output", str(folder),
            "--seed", str(seed), "--dataset", str(dataset_json)]
    if config.max_epochs is not None:
        argv += ["--max-epochs", str(config.max_epochs)]
    if config.max_minutes is not None:
        argv += ["--max-minutes", str(config.max_minutes)]
    return argv


@dataclass(frozen=True)
class Run:
    """One training run of the comparison: a variant, a seed, a fold (None without cross-validation)."""

    variant: str
    seed: int
    fold: int | None
    folder: Path
    argv: list[str]
    dataset_json: Path
    labels: Path

    @property
    def name(self) -> str:
        return f"{self.variant} seed {self.seed}" + ("" if self.fold is None else f" fold {self.fold}")


def plan_runs(config: CompareConfig, output: Path) -> list[Run]:
    """Every run of the comparison, in order (folds innermost); makes the synthetic data and the folds first."""
    output = Path(output).resolve()
    dataset_json = prepare_dataset(config, output)
    if config.folds is None:
        sets = [(None, dataset_json, test_label_folder(dataset_json))]
    else:
        spec = load_dataset(dataset_json)
        splits = splits_for(output, [c.name for c in labelled_cases(spec)], config.folds, config.splits)
        sets = []
        for k, split in enumerate(splits):
            fold_json = fold_dataset(spec, split, output / "folds" / f"fold{k}")
            sets.append((k, fold_json, fold_json.parent / "labelsTs"))
    runs = []
    for variant in config.variants:
        for seed in config.seeds:
            for fold, data, labels in sets:
                folder = run_dir(output, variant, seed, fold)
                runs.append(Run(variant, seed, fold, folder, train_argv(config, variant, seed, folder, data), data,
                                labels))
    return runs


def pending(config: CompareConfig, runs: list[Run], output: Path) -> tuple[list[Run], list[Run]]:
    """``(finished, to_run)``; a finished run made or evaluated with other settings is an error."""
    output = Path(output).resolve()
    finished, todo = [], []
    for run in runs:
        recorded = run.folder / "compare_run.json"
        if not is_finished(run.folder):
            todo.append(run)
            continue
        if not recorded.is_file() or json.loads(recorded.read_text())["settings"] != run_settings(run.argv, output):
            raise ValueError(f"finished run '{run.folder}' was made with other settings than the current config "
                             f"(see {recorded}); use another --output, or delete that run folder to redo it")
        changes = evaluation_changes(run.folder, config)
        if changes:
            raise ValueError(f"finished run '{run.folder}' was evaluated with {', '.join(changes)}; use another "
                             "--output, or delete that run folder to redo it")
        finished.append(run)
    return finished, todo


def start_run(run: Run, output: Path) -> None:
    """Clear an unfinished run's folder (it restarts from scratch) and record its settings."""
    shutil.rmtree(run.folder, ignore_errors=True)
    write_text(run.folder / "compare_run.json", json.dumps(
        {"variant": run.variant, "seed": run.seed, "fold": run.fold, "train_argv": run.argv,
         "settings": run_settings(run.argv, Path(output).resolve())}, indent=2) + "\n")


def record_failure(run: Run, error: BaseException | str) -> None:
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    write_text(run.folder / "failed.json", json.dumps({"error": text}) + "\n")

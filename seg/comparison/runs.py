"""The folder layout of a comparison: one folder per run, ``OUT/runs/<variant>/seed<k>``, finished when its
``evaluation/summary.json`` exists, with the settings it was made with in ``compare_run.json``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from seg.comparison.config import CompareConfig
from seg.training.curves import read_metrics_csv


def run_dir(output: Path, variant: str, seed: int) -> Path:
    """Folder of one run: ``OUT/runs/<variant>/seed<k>``."""
    return Path(output) / "runs" / variant / f"seed{seed}"


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
    recorded = {"classes": None, "dilation": 0, "min_lesion_size": 0,
                **json.loads((folder / "evaluation" / "summary.json").read_text()).get("settings", {})}
    wanted = {"classes": config.eval_classes, "dilation": config.eval_dilation,
              "min_lesion_size": config.eval_min_lesion_size}
    return [f"{key} {recorded[key]!r} (config: {value!r})" for key, value in wanted.items() if recorded[key] != value]

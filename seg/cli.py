"""Command lines: entry points only, nothing imports this module. The work is done by importable functions.

    seg-train     seg.training.api.train            (train.py; LightningCLI, see that module); without --config
                  but with --dataset, seg.planning.plan plans a config into the run directory first
    seg-plan      seg.planning.plan.main
    seg-export    seg.inference.export.main
    seg-infer     seg.inference.predict.main        (infer.py)
    seg-evaluate  seg.evaluation.evaluate.main
    seg-compare   seg.comparison.runner.main
    seg-plot-focal seg.evaluation.plots.plot_focal_main

A user error (:data:`seg.errors.USER_ERRORS`) is printed as ``error: ...`` and exits with code 1.

Each entry point imports its stage inside the function: a measured start-up cost. On this 2-core machine
``import seg.training.api`` (Lightning, jsonargparse, MONAI transforms) takes 6.6-7.1 s against 3.5-3.8 s for
``import seg.evaluation.evaluate`` alone, so ``seg-evaluate --help`` would be more than twice as slow if this module
imported every stage at the top.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from seg.errors import USER_ERRORS
from seg.files import write_text


def _main(function: Callable[[list[str] | None], object], argv: list[str] | None) -> int:
    try:
        result = function(argv)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0


def train_main(argv: list[str] | None = None) -> int:
    from seg.training.api import train  # start-up cost: see the module docstring

    return _main(lambda args: train(_with_plan(args)), argv)


def _with_plan(argv: list[str] | None) -> list[str] | None:
    """``--dataset D`` without ``--config``: plan a config for D into ``<output>/plan.yaml`` and train with it."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a == "--config" or a.startswith("--config=") for a in args) or "--dataset" not in args \
            or any(a in ("-h", "--help", "--print_config") for a in args):
        return argv
    from seg.planning.plan import plan  # start-up cost: see the module docstring (only when planning)

    dataset = Path(args[args.index("--dataset") + 1])
    output = Path(args[args.index("--output") + 1]) if "--output" in args else Path("runs/default")
    budget = float(args[args.index("--max-minutes") + 1]) if "--max-minutes" in args else 8.0
    planned = plan(dataset, budget_minutes=budget)
    path = output / "plan.yaml"
    write_text(path, planned.to_yaml())
    print(f"no --config given: planned {path} from the dataset's fingerprint (seg-plan; {budget:g}-minute budget)")
    return ["--config", str(path), *args]


def export_main(argv: list[str] | None = None) -> int:
    from seg.inference.export import main  # start-up cost: see the module docstring

    return _main(main, argv)


def plan_main(argv: list[str] | None = None) -> int:
    from seg.planning.plan import main  # start-up cost: see the module docstring

    return _main(main, argv)


def infer_main(argv: list[str] | None = None) -> int:
    from seg.inference.predict import main  # start-up cost: see the module docstring

    return _main(main, argv)


def evaluate_main(argv: list[str] | None = None) -> int:
    from seg.evaluation.evaluate import main  # start-up cost: see the module docstring

    return _main(main, argv)


def compare_main(argv: list[str] | None = None) -> int:
    from seg.comparison.runner import main  # start-up cost: see the module docstring

    return _main(main, argv)


def plot_focal_main(argv: list[str] | None = None) -> int:
    from seg.evaluation.plots import plot_focal_main as main  # start-up cost: see the module docstring

    return _main(main, argv)

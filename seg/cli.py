"""Command lines: entry points only, nothing imports this module. The work is done by importable functions.

    seg-train     seg.training.api.train            (train.py; LightningCLI, see that module)
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

from seg.errors import USER_ERRORS


def _main(function: Callable[[list[str] | None], object], argv: list[str] | None) -> int:
    try:
        result = function(argv)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0


def train_main(argv: list[str] | None = None) -> int:
    from seg.training.api import train  # start-up cost: see the module docstring

    return _main(train, argv)


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

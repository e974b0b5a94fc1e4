"""``seg-compare``: train every loss variant with several seeds on one split, predict, evaluate, report.

    seg-compare --config configs/compare/sparse3d.yaml [--dataset PATH] [--output DIR] [--quick] [--report-only]

A comparison config (YAML) holds only the experiment, never the model (that is the base training config)::

    base: base3d.yaml               # training config every run starts from (relative to this file)
    output: compare_output/sparse3d # default --output
    synthetic: {cases: 24, test_cases: 8, seed: 0}   # generated into OUTPUT/data if absent; or
    # dataset: /path/to/dataset.json                 # a labelled dataset with labelled test cases
    seeds: [0, 1, 2]                # run seeds (seed_everything); the split is data.seed, the same for all
    max_epochs: 30                  # the budget every run gets ...
    max_minutes: 2.5                # ... with a wall-time cap per training run
    train_args: []                  # seg-train arguments for every run (after base, before the variant's)
    baseline: dice                  # the variant the paired tests compare with
    variants:                       # name -> seg-train arguments; a --config path is relative to this file
      dice: [--config, loss_dice.yaml]
      focal_dice_alpha025: [--config, loss_focal_dice.yaml, --model.alpha, "0.25"]
    quick: quick.yaml               # the config --quick uses instead
    # eval_classes: [4]             # evaluate lesions of these labels only (BraTS enhancing tumour)
    # eval_dilation: 0              # GT dilation (voxels) before testing lesion overlap (seg-evaluate --dilation)
    # eval_min_lesion_size: 0       # ignore GT lesions under this many voxels (seg-evaluate --min-lesion-size)
    # extends: sparse3d.yaml        # (in quick.yaml) start from another comparison config; a list of
                                    # names under variants selects from its variants

Each run is ``seg.cli.train(["--config", base, *train_args, *variant, "--output", OUT/runs/<variant>/seed<k>,
"--seed", k, "--max-epochs", e, "--max-minutes", m, "--dataset", dataset])`` called in-process (no interpreter
and import start-up per run; every run builds its own Trainer, module and data module, and ``seed_everything``
is reset by each), followed by :func:`seg.inference.predict.predict_files` on the test cases and
:func:`seg.evaluation.evaluate.evaluate_folders` into ``OUT/runs/<variant>/seed<k>/evaluation``. The evaluation is written
into a temporary folder and renamed into place, so a run is finished exactly when
``evaluation/summary.json`` exists; started again, finished runs are skipped and unfinished ones restart
from scratch. A finished run whose settings changed since (its arguments, the content of a ``--config`` file
they name, or the ``eval_*`` keys its evaluation used) is an error: use another ``--output``, or delete that run's
folder to redo it.
The report (:mod:`seg.comparison.report`) is rebuilt from every finished run at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from seg.comparison.config import CompareConfig, load_config
from seg.comparison.ray_executor import run_with_ray
from seg.comparison.render import write_report
from seg.comparison.runs import (  # noqa: F401 (re-exported)
    Run,
    epochs_trained,
    pending,
    plan_runs,
    prepare_dataset,
    record_failure,
    start_run,
    train_argv,
)
from seg.data.layouts import load_dataset
from seg.errors import USER_ERRORS
from seg.evaluation.evaluate import evaluate_folders
from seg.inference.predict import predict_files
from seg.io import write_text
from seg.training.api import train


def execute_run(argv: list[str], folder: Path, dataset_json: Path, labels: Path, **evaluation: Any) -> dict[str, Any]:
    """Train, predict the test cases, evaluate (:func:`evaluate_run`); the evaluation folder is renamed in last."""
    start = time.perf_counter()
    try:
        train(argv)
    except SystemExit as error:  # jsonargparse (bad argument) and --check-data (bad dataset) exit: name the run
        raise ValueError(f"seg-train exited with code {error.code} in run '{folder}' (a bad argument or a failed "
                         f"dataset check; its message is above); arguments: {argv}") from error
    finally:
        gc.collect()  # in-process runs: free the previous run's cached volumes before the next one
    trained = time.perf_counter()
    predictions = folder / "predictions"
    # best.ckpt is written at the first validation; a run stopped by the time cap before it only has last.ckpt
    checkpoint = folder / "best.ckpt" if (folder / "best.ckpt").is_file() else folder / "last.ckpt"
    failures = predict_files(checkpoint, dataset_json, predictions, probabilities=True, overwrite=True,
                             progress=False)
    if failures:
        raise RuntimeError(f"{len(failures)} test case(s) failed to predict in '{folder}': {failures}")
    timing = {"train_seconds": trained - start, "predict_seconds": time.perf_counter() - trained,
              "epochs": epochs_trained(folder), "checkpoint": checkpoint.name}
    images = {c.name: list(c.images) for c in load_dataset(dataset_json).test_cases}  # for the overlays
    return evaluate_run(folder, labels, timing, start=start, overlays=images, **evaluation)


def evaluate_run(folder: Path, labels: Path, timing: dict[str, Any], *, start: float, **evaluation: Any
                 ) -> dict[str, Any]:
    """Evaluate ``folder/predictions`` against ``labels`` into ``folder/evaluation``, atomically.

    ``evaluation`` (classes, dilation, min_lesion_size, matching, regions) goes to
    :func:`seg.evaluation.evaluate.evaluate_folders`. The evaluation is written into ``folder/.evaluation.tmp`` and
    renamed into place after ``timing.json``, so ``evaluation/summary.json`` exists only when everything of the run is.
    """
    predictions = folder / "predictions"
    staging = folder / ".evaluation.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    evaluated = time.perf_counter()
    # with regions the probability maps hold one sigmoid channel per region, not classes: no ECE of them
    probabilities = None if evaluation.get("regions") else predictions / "probabilities"
    evaluate_folders(predictions, labels, staging, probabilities_dir=probabilities, progress=False, **evaluation)
    timing = {**timing, "evaluate_seconds": time.perf_counter() - evaluated, "total_seconds": time.perf_counter() - start}
    write_text(folder / "timing.json", json.dumps(timing, indent=2) + "\n")
    staging.rename(folder / "evaluation")
    return timing


def evaluation_options(config: CompareConfig) -> dict[str, Any]:
    """The config's ``eval_*`` keys as :func:`seg.evaluation.evaluate.evaluate_folders` arguments."""
    options: dict[str, Any] = {"classes": config.eval_classes, "dilation": config.eval_dilation,
                               "min_lesion_size": config.eval_min_lesion_size, "matching": config.eval_matching}
    if config.eval_regions is not None:
        options["regions"] = config.eval_regions
    return options


def run_comparison(config: CompareConfig, output: Path, *, runner=None) -> list[tuple[str, int, str]]:
    """Every run in order on this process, skipping finished ones; returns ``(run name, seed, status)`` per run.

    ``runner(argv, folder, dataset_json, labels)`` does one run (default :func:`execute_run`, evaluating with
    the config's ``eval_*`` keys; tests pass a fake). A run that raises a user error (:data:`seg.errors.USER_ERRORS`)
    or a RuntimeError is recorded in ``failed.json`` and the others continue.
    """
    if runner is None:
        runner = functools.partial(execute_run, **evaluation_options(config))
    runs = plan_runs(config, output)
    finished, _ = pending(config, runs, output)
    statuses = []
    for index, run in enumerate(runs, start=1):
        prefix = f"[{index}/{len(runs)}] {run.name}:"
        if run in finished:
            print(f"{prefix} skipped (done)", flush=True)
            statuses.append((run.variant, run.seed, "skipped"))
            continue
        start_run(run, output)
        print(f"{prefix} training, predicting, evaluating ...", flush=True)
        try:
            timing = runner(run.argv, run.folder, run.dataset_json, run.labels)
        except USER_ERRORS + (RuntimeError,) as error:
            record_failure(run, error)
            print(f"{prefix} FAILED: {error}", file=sys.stderr, flush=True)
            statuses.append((run.variant, run.seed, "failed"))
            continue
        print(f"{prefix} done in {timing.get('total_seconds', 0) / 60:.1f} min", flush=True)
        statuses.append((run.variant, run.seed, "done"))
    return statuses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seg-compare", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, type=Path, help="comparison config (YAML)")
    parser.add_argument("--dataset", type=Path, default=None, help="dataset.json (overrides dataset/synthetic)")
    parser.add_argument("--output", type=Path, default=None, help="output folder (default: the config's output)")
    parser.add_argument("--quick", action="store_true", help="use the config's quick version (smoke-sized)")
    parser.add_argument("--report-only", action="store_true", help="rebuild the report from finished runs only")
    parser.add_argument("--executor", choices=("sequential", "ray"), default="sequential",
                        help="run one after another here, or as Ray tasks (seg[ray]; see seg.comparison.ray_executor)")
    parser.add_argument("--address", default=None, help="--executor ray: a Ray cluster (HOST:PORT); default local")
    parser.add_argument("--cpus-per-run", type=float, default=1, help="--executor ray: CPUs each run asks for")
    parser.add_argument("--gpus-per-run", type=float, default=0, help="--executor ray: GPUs each run asks for")
    args = parser.parse_args(argv)
    config = load_config(args.config, quick=args.quick)
    if args.dataset is not None:
        config = dataclasses.replace(config, dataset=args.dataset.resolve(), synthetic=None)
    output = args.output or config.output
    start = time.perf_counter()
    if args.report_only:
        failed = []
    elif args.executor == "ray":
        runs = plan_runs(config, output)
        _, todo = pending(config, runs, output)
        print(f"{len(runs) - len(todo)} of {len(runs)} runs finished; {len(todo)} to run on Ray", flush=True)
        statuses = run_with_ray(todo, output, functools.partial(execute_run, **evaluation_options(config)),
                                address=args.address, cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run)
        failed = [run.name for run, status in statuses if status == "failed"]
    else:
        statuses = run_comparison(config, output)
        failed = [f"{v} seed {s}" for v, s, status in statuses if status == "failed"]
    report = write_report(output, list(config.variants), config.seeds, config.baseline,
                          title=f"Loss comparison ({config.path.name})", folds=config.folds)
    print(f"report: {output / 'report.md'} (numbers: {output / 'report.json'}, figures: {output / 'figures'}); "
          f"{len(report['table'])} variant(s) with results, {(time.perf_counter() - start) / 60:.1f} min")
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(failed)} (see failed.json in their folders)", file=sys.stderr)
        return 1
    return 0

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
from seg.comparison.render import write_report
from seg.comparison.runs import epochs_trained, evaluation_changes, is_finished, run_dir, run_settings
from seg.data.layouts import load_dataset
from seg.data.synthetic import make_dataset
from seg.errors import USER_ERRORS
from seg.evaluation.evaluate import evaluate_folders
from seg.inference.predict import predict_files
from seg.io import write_text
from seg.training.api import train


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


def execute_run(argv: list[str], folder: Path, dataset_json: Path, labels: Path, classes: list[int] | None = None,
                dilation: int = 0, min_lesion_size: int = 0) -> dict[str, Any]:
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
    failures = predict_files(checkpoint, dataset_json, predictions, probabilities=True, overwrite=True)
    if failures:
        raise RuntimeError(f"{len(failures)} test case(s) failed to predict in '{folder}': {failures}")
    timing = {"train_seconds": trained - start, "predict_seconds": time.perf_counter() - trained,
              "epochs": epochs_trained(folder), "checkpoint": checkpoint.name}
    return evaluate_run(folder, labels, timing, start=start, classes=classes, dilation=dilation,
                        min_lesion_size=min_lesion_size)


def evaluate_run(folder: Path, labels: Path, timing: dict[str, Any], *, start: float,
                 classes: list[int] | None = None, dilation: int = 0, min_lesion_size: int = 0) -> dict[str, Any]:
    """Evaluate ``folder/predictions`` against ``labels`` into ``folder/evaluation``, atomically.

    ``classes``, ``dilation`` and ``min_lesion_size`` go to :func:`seg.evaluation.evaluate.evaluate_folders`.

    The evaluation is written into ``folder/.evaluation.tmp`` and renamed into place after ``timing.json``,
    so ``evaluation/summary.json`` exists only when everything of the run is written.
    """
    predictions = folder / "predictions"
    staging = folder / ".evaluation.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    evaluated = time.perf_counter()
    evaluate_folders(predictions, labels, staging, probabilities_dir=predictions / "probabilities", classes=classes,
                     dilation=dilation, min_lesion_size=min_lesion_size, progress=False)
    timing = {**timing, "evaluate_seconds": time.perf_counter() - evaluated, "total_seconds": time.perf_counter() - start}
    write_text(folder / "timing.json", json.dumps(timing, indent=2) + "\n")
    staging.rename(folder / "evaluation")
    return timing


def run_comparison(config: CompareConfig, output: Path, *, runner=None) -> list[tuple[str, int, str]]:
    """Every (variant, seed) run in order, skipping finished ones; returns ``(variant, seed, status)`` per run.

    ``runner(argv, folder, dataset_json, labels)`` does one run (default :func:`execute_run`, evaluating with
    the config's ``eval_*`` keys; tests pass a fake). A run that raises one of the user errors of :mod:`seg.cli`
    is recorded in ``failed.json`` and the others continue.
    """
    if runner is None:
        runner = functools.partial(execute_run, classes=config.eval_classes, dilation=config.eval_dilation,
                                   min_lesion_size=config.eval_min_lesion_size)

    output = Path(output).resolve()
    dataset_json = prepare_dataset(config, output)
    labels = test_label_folder(dataset_json)
    plan = [(v, s) for v in config.variants for s in config.seeds]
    statuses = []
    for index, (variant, seed) in enumerate(plan, start=1):
        folder = run_dir(output, variant, seed)
        argv = train_argv(config, variant, seed, folder, dataset_json)
        prefix = f"[{index}/{len(plan)}] {variant} seed {seed}:"
        recorded = folder / "compare_run.json"
        settings = run_settings(argv, output)
        if is_finished(folder):
            if not recorded.is_file() or json.loads(recorded.read_text())["settings"] != settings:
                raise ValueError(f"finished run '{folder}' was made with other settings than the current config "
                                 f"(see {recorded}); use another --output, or delete that run folder to redo it")
            changes = evaluation_changes(folder, config)
            if changes:
                raise ValueError(f"finished run '{folder}' was evaluated with {', '.join(changes)}; use another "
                                 "--output, or delete that run folder to redo it")
            print(f"{prefix} skipped (done)", flush=True)
            statuses.append((variant, seed, "skipped"))
            continue
        shutil.rmtree(folder, ignore_errors=True)  # an unfinished run restarts from scratch
        write_text(recorded, json.dumps({"variant": variant, "seed": seed, "train_argv": argv,
                                               "settings": settings}, indent=2) + "\n")
        print(f"{prefix} training, predicting, evaluating ...", flush=True)
        try:
            timing = runner(argv, folder, dataset_json, labels)
        except USER_ERRORS + (RuntimeError,) as error:
            write_text(folder / "failed.json", json.dumps({"error": f"{type(error).__name__}: {error}"}) + "\n")
            print(f"{prefix} FAILED: {error}", file=sys.stderr, flush=True)
            statuses.append((variant, seed, "failed"))
            continue
        print(f"{prefix} done in {timing.get('total_seconds', 0) / 60:.1f} min", flush=True)
        statuses.append((variant, seed, "done"))
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
    args = parser.parse_args(argv)
    config = load_config(args.config, quick=args.quick)
    if args.dataset is not None:
        config = dataclasses.replace(config, dataset=args.dataset.resolve(), synthetic=None)
    output = args.output or config.output
    start = time.perf_counter()
    if not args.report_only:
        statuses = run_comparison(config, output)
        failed = [f"{v} seed {s}" for v, s, status in statuses if status == "failed"]
    else:
        failed = []
    report = write_report(output, list(config.variants), config.seeds, config.baseline,
                          title=f"Loss comparison ({config.path.name})")
    print(f"report: {output / 'report.md'} (numbers: {output / 'report.json'}, figures: {output / 'figures'}); "
          f"{len(report['table'])} variant(s) with results, {(time.perf_counter() - start) / 60:.1f} min")
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(failed)} (see failed.json in their folders)", file=sys.stderr)
        return 1
    return 0

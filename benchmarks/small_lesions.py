"""Small lesions, side by side in one run: a plain MONAI script, seg with the previous demo settings, the new default.

    python benchmarks/small_lesions.py [--minutes 8] [--seeds 0 1] [--output bench_output/small_lesions] [--reuse]

Data: a synthetic dataset with the real-like lesion sizes (seg.data.synthetic defaults: log-normal volumes, about
two thirds under 30 voxels), 24 training and 16 test cases, seed 7 (neither the demo's nor any tuning run's data).
Each variant trains for the same ``--minutes`` of wall time (validation included) per seed, predicts the test cases
and is evaluated by ``seg.evaluation`` under the default matching rule (msseg), with lesion-size bins <30, 30-300,
>300 voxels. Variants:

- ``plain MONAI``: benchmarks/plain_monai.py (UNet, DiceCELoss, RandCropByPosNegLabeld, 64x64x32 patches, no TTA);
- ``seg previous``: configs/benchmarks/demo_previous.yaml (the demo before this work), with test-time mirroring;
- ``seg default``: configs/demo.yaml, with test-time mirroring (as ``make demo`` predicts);
- ablations of the default, one option changed each (``--variants`` to run them): ``no hysteresis`` (threshold and
  peak off: the argmax), ``lesion sampling``, ``blob`` (lesion sampling + blob_weight 1), ``patch counts``
  (α from sampled patches), ``focal/foreground`` (RetinaNet's normalisation), ``min size 10``.

Prints one row per variant (mean over seeds, each seed's value in the JSON) and writes OUTPUT/results.md/.json.
``--reuse`` reads the evaluation of a run that already finished in OUTPUT (same data, same settings) instead of
training it again, so an interrupted benchmark can be completed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from seg.data.synthetic import make_dataset
from seg.evaluation.evaluate import evaluate_folders
from seg.inference.predict import predict_files
from seg.training.api import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plain_monai import train_and_predict  # noqa: E402 (benchmarks/ is not a package)

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo.yaml"
SEG_VARIANTS: dict[str, tuple[Path, list[str]]] = {
    "seg previous": (ROOT / "configs" / "benchmarks" / "demo_previous.yaml", []),
    "seg default": (DEMO, []),
    "no hysteresis": (DEMO, ["--model.threshold", "null", "--model.peak_threshold", "null"]),
    "lesion sampling": (DEMO, ["--data.sampling", "lesions"]),
    "blob": (DEMO, ["--data.sampling", "lesions", "--model.blob_weight", "1.0"]),
    "patch counts": (DEMO, ["--data.class_counts_from", "patches"]),
    "focal/foreground": (DEMO, ["--model.focal_normalization", "foreground"]),
    "min size 10": (DEMO, ["--model.min_size", "10"]),
}
DEFAULT_VARIANTS = ["plain MONAI", "seg previous", "seg default"]
COLUMNS = ("dice", "lesion_f1", "lesion_wise_dice", "sens_lt30", "sens_30_300", "sens_gt300", "fp_per_volume", "steps")


def _row(summary: dict, steps: int) -> dict[str, float]:
    bins = summary["sensitivity_by_size"]
    return {"dice": summary["dice"], "lesion_f1": summary["lesion_f1"], "lesion_wise_dice": summary["lesion_wise_dice"],
            "sens_lt30": bins["0-30"]["sensitivity"], "sens_30_300": bins["30-300"]["sensitivity"],
            "sens_gt300": bins["300-inf"]["sensitivity"], "fp_per_volume": summary["fp_per_volume"], "steps": steps,
            "lesions": {b: v["tp"] + v["fn"] for b, v in bins.items()}}


def run_seg(variant: tuple[Path, list[str]], data: Path, folder: Path, minutes: float, seed: int) -> dict[str, float]:
    config, overrides = variant
    train(["--config", str(config), "--dataset", str(data), "--output", str(folder / "run"), "--max-minutes",
           str(minutes), "--seed", str(seed), "--trainer.enable_progress_bar", "false", *overrides])
    timing = json.loads((folder / "run" / "step_timing.json").read_text())
    checkpoint = folder / "run" / "best.ckpt"
    predict_files(checkpoint, data, folder / "predictions", overwrite=True, tta=True)
    summary = evaluate_folders(folder / "predictions", data.parent / "labelsTs", folder / "evaluation", progress=False)
    return _row(summary, timing["steps"])


def run_monai(data: Path, folder: Path, minutes: float, seed: int) -> dict[str, float]:
    record = train_and_predict(data, folder, minutes=minutes, seed=seed)
    summary = evaluate_folders(folder / "predictions", data.parent / "labelsTs", folder / "evaluation", progress=False)
    return _row(summary, record["steps"])


def finished(folder: Path) -> dict[str, float] | None:
    """The row of a run that already finished in ``folder`` (its evaluation and step count), else None."""
    summary, monai, timing = folder / "evaluation" / "summary.json", folder / "run.json", folder / "run" / "step_timing.json"
    record = monai if monai.is_file() else timing
    if not (summary.is_file() and record.is_file()):
        return None
    return _row(json.loads(summary.read_text()), json.loads(record.read_text())["steps"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--output", type=Path, default=Path("bench_output/small_lesions"))
    parser.add_argument("--reuse", action="store_true", help="read runs that already finished in OUTPUT")
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=["plain MONAI", *SEG_VARIANTS])
    args = parser.parse_args(argv)
    data = args.output / "data" / "dataset.json"
    if not data.is_file():
        make_dataset(args.output / "data", cases=24, test_cases=16, seed=7, progress=False)
    stats = json.loads(data.read_text())["stats"]
    results: dict[str, list[dict]] = {}
    for seed in args.seeds:  # seeds outermost: a partial run still compares every variant
        for variant in args.variants:
            folder = args.output / variant.replace(" ", "_").replace("/", "_") / f"seed{seed}"
            start = time.perf_counter()
            row = finished(folder) if args.reuse else None
            if row is None:
                row = run_monai(data, folder, args.minutes, seed) if variant == "plain MONAI" else \
                    run_seg(SEG_VARIANTS[variant], data, folder, args.minutes, seed)
            row["wall_minutes"] = (time.perf_counter() - start) / 60
            results.setdefault(variant, []).append(row)
            print(f"{variant} seed {seed}: " + ", ".join(f"{k} {row[k]:.3f}" for k in COLUMNS), flush=True)
    lines = [f"{stats['components']} test+training lesions ({100 * stats['components_under_30']:.0f} % under 30 voxels); "
             f"{args.minutes:g} min of training per run, seeds {args.seeds}; msseg matching; mean [per seed]", "",
             "| variant | " + " | ".join(COLUMNS) + " |", "| --- |" + " --- |" * len(COLUMNS)]
    for variant, rows in results.items():
        cells = [f"{np.nanmean([r[k] for r in rows]):.3f} [" + ", ".join(f"{r[k]:.2f}" for r in rows) + "]"
                 for k in COLUMNS]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print("\n" + text)
    (args.output / "results.md").write_text(text + "\n")
    (args.output / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

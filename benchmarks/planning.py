"""Planned config vs demo.yaml vs a plain MONAI script, the same minutes each, on datasets unlike the demo's.

    python benchmarks/planning.py [--minutes 6] [--datasets clinical isotropic brats] [--output bench_output/planning]
                                  [--seeds 0 1] [--reuse]

Datasets (made or linked into OUTPUT, nothing copied from ../shared/data):

- ``clinical``: synthetic FLAIR-like volumes with clinical 2D-like geometry, 512 x 512 x 16 at 0.47 x 0.47 x 8 mm,
  3 training + 2 test cases, real-like lesion sizes (most under 30 voxels);
- ``isotropic``: synthetic 96^3 at 1 mm, 8 training + 4 test cases;
- ``brats``: the six BraTS-2015 cases of ../shared/data (Flair + T1c, labels 0-4), 4 training + 2 test (links).

For each: ``configs/demo.yaml``, the config ``seg-plan`` writes for the dataset (``--budget-minutes`` = the same
minutes), and benchmarks/plain_monai.py, each trained for ``--minutes`` (validation included), predicting the test
cases (seg with its checkpoint's settings, no test-time augmentation for any), evaluated by ``seg.evaluation`` under
msseg matching. Reports Dice, lesion F1, lesion-wise Dice, FP per volume, steps trained, validation share; with
several ``--seeds`` each config is trained once per seed (seed 0 in ``OUTPUT/NAME/CONFIG``, seed s in
``OUTPUT/NAME/CONFIG_seed<s>``) and the table gives the mean with every seed's value beside it.
``--reuse`` reads a run that already finished in OUTPUT instead of training it again (an interrupted benchmark).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from seg.data.brats import write_brats_dataset
from seg.data.synthetic import make_dataset
from seg.evaluation.evaluate import evaluate_folders
from seg.files import write_text
from seg.inference.predict import predict_files
from seg.planning.plan import plan
from seg.training.api import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plain_monai import train_and_predict  # noqa: E402 (benchmarks/ is not a package)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def dataset(name: str, out: Path) -> Path:
    data = out / "data" / name / "dataset.json"
    if data.is_file():
        return data
    if name == "clinical":
        return make_dataset(data.parent, cases=3, test_cases=2, shape=(512, 512, 16), spacing=(0.47, 0.47, 8.0),
                            seed=21, progress=False)
    if name == "isotropic":
        return make_dataset(data.parent, cases=8, test_cases=4, shape=(96, 96, 96), spacing=(1.0, 1.0, 1.0),
                            seed=22, progress=False)
    return write_brats_dataset(SHARED / "brats2015", data.parent, test_cases=2)


def _row(summary: dict, steps: int, validation_share: float | None) -> dict:
    return {"dice": summary["dice"], "lesion_f1": summary["lesion_f1"], "lesion_wise_dice": summary["lesion_wise_dice"],
            "fp_per_volume": summary["fp_per_volume"], "steps": steps, "validation_share": validation_share}


def run_seg(config: Path, data: Path, folder: Path, minutes: float, seed: int = 0) -> dict:
    run = folder / "run"
    train(["--config", str(config), "--dataset", str(data), "--output", str(run), "--max-minutes", str(minutes),
           "--seed", str(seed), "--trainer.enable_progress_bar", "false"])
    timing = json.loads((run / "step_timing.json").read_text())
    checkpoint = run / "best.ckpt" if (run / "best.ckpt").is_file() else run / "last.ckpt"
    predict_files(checkpoint, data, folder / "predictions", overwrite=True)
    summary = evaluate_folders(folder / "predictions", data.parent / "labelsTs", folder / "evaluation", progress=False)
    return _row(summary, timing["steps"], timing.get("validation_share"))


def mean_row(rows: list[dict]) -> dict:
    """The mean of each figure over seeds (validation share: over the seeds that report one)."""
    out = {key: float(sum(r[key] for r in rows) / len(rows))
           for key in ("dice", "lesion_f1", "lesion_wise_dice", "fp_per_volume", "steps")}
    shares = [r["validation_share"] for r in rows if r["validation_share"] is not None]
    out["validation_share"] = sum(shares) / len(shares) if shares else None
    return out


def finished(folder: Path) -> dict | None:
    """The row of a run that already finished in ``folder``, else None."""
    summary, monai, timing = folder / "evaluation" / "summary.json", folder / "run.json", folder / "run" / "step_timing.json"
    record = monai if monai.is_file() else timing
    if not (summary.is_file() and record.is_file()):
        return None
    rec = json.loads(record.read_text())
    return _row(json.loads(summary.read_text()), rec["steps"], rec.get("validation_share"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=6.0)
    parser.add_argument("--datasets", nargs="+", default=["clinical", "isotropic", "brats"])
    parser.add_argument("--output", type=Path, default=Path("bench_output/planning"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one training run per seed and config")
    parser.add_argument("--reuse", action="store_true", help="read runs that already finished in OUTPUT")
    args = parser.parse_args(argv)
    results: dict[str, dict[str, dict]] = {}
    for name in args.datasets:
        if name == "brats" and not (SHARED / "brats2015").is_dir():
            print(f"skipping brats: {SHARED / 'brats2015'} is absent")
            continue
        data = dataset(name, args.output)
        planned = args.output / "plans" / f"{name}.yaml"
        write_text(planned, plan(data, budget_minutes=args.minutes).to_yaml())
        results[name] = {}
        for variant in ("demo.yaml", "planned", "plain MONAI"):
            seeds = []
            for seed in args.seeds:
                folder = args.output / name / (variant.replace(" ", "_").replace(".yaml", "")
                                               + (f"_seed{seed}" if seed else ""))
                row = finished(folder) if args.reuse else None
                if row is None and variant == "plain MONAI":
                    record = train_and_predict(data, folder, minutes=args.minutes, seed=seed)
                    summary = evaluate_folders(folder / "predictions", data.parent / "labelsTs", folder / "evaluation",
                                               progress=False)
                    row = _row(summary, record["steps"], record["validation_share"])
                elif row is None:
                    row = run_seg(ROOT / "configs" / "demo.yaml" if variant == "demo.yaml" else planned, data, folder,
                                  args.minutes, seed)
                seeds.append(row)
                print(f"{name} / {variant} / seed {seed}: " + json.dumps({k: round(v, 3) if isinstance(v, float)
                                                                          else v for k, v in row.items()}), flush=True)
            results[name][variant] = {"seeds": seeds, **mean_row(seeds)}
    lines = [f"{args.minutes:g} min of training each, msseg matching, mean over seeds {args.seeds} "
             "(each seed's value in brackets)", "",
             "| dataset | config | Dice | lesion F1 | lesion-wise Dice | FP / volume | steps | validation share |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, rows in results.items():
        for variant, r in rows.items():
            share = "n/a" if r["validation_share"] is None else f"{100 * r['validation_share']:.0f} %"
            cells = [f"{r[key]:{form}}" + (" [" + ", ".join(f"{s[key]:{form}}" for s in r["seeds"]) + "]"
                                           if len(r["seeds"]) > 1 else "")
                     for key, form in (("dice", ".3f"), ("lesion_f1", ".3f"), ("lesion_wise_dice", ".3f"),
                                       ("fp_per_volume", ".1f"))]
            lines.append(f"| {name} | {variant} | {' | '.join(cells)} | {r['steps']:.0f} | {share} |")
    text = "\n".join(lines)
    print("\n" + text)
    write_text(args.output / "results.md", text + "\n")
    write_text(args.output / "results.json", json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

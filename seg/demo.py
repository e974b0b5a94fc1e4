"""``make demo``: the main job end to end on an embedded default.

1. make a small synthetic sparse-lesion NIfTI dataset (``demo_output/data``, skipped if present);
2. train ``configs/demo.yaml`` (3D U-Net, focal+Dice, α from class frequencies) into ``demo_output/run``;
3. predict the held-back test cases into ``demo_output/predictions`` (masks in each input's exact space,
   averaged over the 8 axis flips: nnU-Net's default test-time mirroring);
4. evaluate them against ``labelsTs`` into ``demo_output/report`` and print where everything is.

    python -m seg.demo [--output demo_output] [--max-minutes 6.5]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from seg.data.synthetic import make_dataset
from seg.evaluation.evaluate import evaluate_folders
from seg.inference.predict import predict_files
from seg.training.api import train

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def run_demo(output: Path, *, max_minutes: float = 6.5, extra_args: list[str] | None = None) -> dict:
    """Run the four steps; returns the evaluation summary."""
    data_json = output / "data" / "dataset.json"
    if data_json.is_file():
        print(f"[1/4] synthetic dataset exists: {data_json}")
    else:
        print(f"[1/4] making a synthetic sparse-lesion dataset in {data_json.parent}")
        data_json = make_dataset(output / "data", seed=0)
    run_dir = output / "run"
    print(f"[2/4] training {CONFIG.name} into {run_dir} (at most {max_minutes:g} minutes)")
    train(["--config", str(CONFIG), "--dataset", str(data_json), "--output", str(run_dir),
           "--max-minutes", str(max_minutes), *(extra_args or [])])
    predictions = output / "predictions"
    print(f"[3/4] predicting the held-back test cases into {predictions} (with mirroring, as nnU-Net does)")
    failures = predict_files(run_dir / "best.ckpt", data_json, predictions, overwrite=True, probabilities=True,
                             tta=True)
    if failures:
        raise RuntimeError(f"{len(failures)} test case(s) failed to predict: {failures}")
    report = output / "report"
    print(f"[4/4] evaluating against {data_json.parent / 'labelsTs'} into {report}")
    summary = evaluate_folders(predictions, data_json.parent / "labelsTs", report,
                               probabilities_dir=predictions / "probabilities")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("demo_output"))
    parser.add_argument("--max-minutes", type=float, default=6.5)
    args, extra = parser.parse_known_args(argv)
    summary = run_demo(args.output, max_minutes=args.max_minutes, extra_args=extra)
    keys = ("dice", "lesion_f1", "lesion_sensitivity", "lesion_precision", "fp_per_volume")
    print("\ntest-set results: " + json.dumps({k: round(summary[k], 3) for k in keys if k in summary}))
    print(f"predictions: {args.output / 'predictions'}\nreport:      {args.output / 'report' / 'summary.md'}"
          f"\nrun:         {args.output / 'run'} (checkpoints, logs, training_curves.png)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

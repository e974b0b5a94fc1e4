"""Small-lesion sensitivity against false positives per volume, over the postprocessing's operating points.

    python benchmarks/operating_points.py --checkpoint RUN/best.ckpt --dataset DATA/dataset.json [--output DIR]

Predicts the dataset's test cases once with probabilities (test-time mirroring, as ``make demo`` does), then labels
them at every ``threshold`` (foreground where 1 - p(background) > t) and hysteresis ``peak_threshold`` of a grid
(``seg.inference.postprocess.postprocess``; no size cut) and evaluates each under the default (msseg) matching: lesion
F1, sensitivity of lesions under 30 voxels, false-positive lesions per volume, voxel Dice. A free-response curve
(FROC, as lesion-detection papers report it) of small-lesion sensitivity against false positives per volume shows
how much of the small-lesion miss a lower operating point recovers, and at what price. Writes OUTPUT/points.json,
OUTPUT/points.md and OUTPUT/froc.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib
import torch

from seg.evaluation.evaluate import evaluate_folders
from seg.inference.postprocess import postprocess
from seg.inference.predict import predict_files
from seg.io import read_image, write_like

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (the backend first)

THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.5)
PEAKS = (None, 0.5, 0.7, 0.9, 0.97)


def points(probabilities: Path, labels: Path, work: Path) -> list[dict[str, float]]:
    maps = sorted(probabilities.glob("*.nii.gz"))
    volumes = {p.name: read_image(p, allow_4d=True) for p in maps}
    rows = []
    for threshold in THRESHOLDS:
        for peak in PEAKS:
            if peak is not None and peak <= threshold:
                continue
            folder = work / f"t{threshold}_p{peak}"
            for name, volume in volumes.items():
                p = torch.from_numpy(volume.array)[None]  # (1, K, *spatial)
                mask = postprocess(p, threshold=threshold, peak_threshold=peak)[0].numpy()
                write_like(mask, volume, folder / name)
            summary = evaluate_folders(folder, labels, progress=False)
            rows.append({"threshold": threshold, "peak_threshold": peak, "dice": summary["dice"],
                         "lesion_f1": summary["lesion_f1"], "fp_per_volume": summary["fp_per_volume"],
                         "sens_lt30": summary["sensitivity_by_size"]["0-30"]["sensitivity"],
                         "sensitivity": summary["lesion_sensitivity"]})
            print(" ".join(f"{k} {v}" if not isinstance(v, float) else f"{k} {v:.3f}" for k, v in rows[-1].items()),
                  flush=True)
    return rows


def plot(rows: list[dict[str, float]], path: Path) -> None:
    figure, axis = plt.subplots(figsize=(6, 4.5))
    for peak in PEAKS:
        line = sorted((r for r in rows if r["peak_threshold"] == peak), key=lambda r: r["fp_per_volume"])
        if line:
            axis.plot([r["fp_per_volume"] for r in line], [r["sens_lt30"] for r in line], "o-",
                      label=f"peak {peak}" if peak is not None else "no hysteresis")
    axis.axhline(0.6, color="grey", linestyle=":", label="target 0.6")
    axis.set(xlabel="false-positive lesions per volume", ylabel="sensitivity, lesions < 30 voxels",
             title="operating points (thresholds 0.05-0.5)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--dataset", required=True, type=Path, help="dataset.json with a test split")
    parser.add_argument("--output", type=Path, default=Path("bench_output/operating_points"))
    args = parser.parse_args(argv)
    predictions = args.output / "predictions"
    if not (predictions / "probabilities").is_dir():
        predict_files(args.checkpoint, args.dataset, predictions, probabilities=True, tta=True, overwrite=True)
    rows = points(predictions / "probabilities", args.dataset.parent / "labelsTs", args.output / "points")
    lines = ["| threshold | peak | Dice | lesion F1 | sensitivity < 30 | FP / volume |", "| --- |" + " --- |" * 5]
    lines += [f"| {r['threshold']} | {r['peak_threshold']} | {r['dice']:.3f} | {r['lesion_f1']:.3f} | "
              f"{r['sens_lt30']:.3f} | {r['fp_per_volume']:.2f} |" for r in rows]
    (args.output / "points.md").write_text("\n".join(lines) + "\n")
    (args.output / "points.json").write_text(json.dumps(rows, indent=2) + "\n")
    plot(rows, args.output / "froc.png")
    print("\n".join(lines) + f"\n\nwritten: {args.output}/points.md, froc.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""seg.inference.predict_volume against MONAI's sliding_window_inference on a real BraTS volume.

Same MONAI UNet (random weights, seed 0), Flair + T1c of one 240x240x155 case with the air set to 0 by
its brain mask (the files are z-scored, so their air is a constant -3.6; nnU-Net's "nonzero" normalisation
does the same), ROI 96^3, overlap 0.5, Gaussian blending, 2 threads. Every pass runs in a fresh subprocess
(so ``ru_maxrss`` after minus before the pass is that pass's peak memory), variants interleaved:
MONAI (``sw_batch_size=1`` under ``torch.no_grad``), ``predict_volume`` (default: crop to the foreground,
batch 4), ``predict_volume(crop=False)`` (MONAI's window grid) and ``predict_labels`` (uint8 output).

Usage:  python benchmarks/inference.py [--repeats 3] [--case DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CASE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "brats2015" / "brats_2013_pat0001_1"
ROI = (96, 96, 96)
VARIANTS = ("monai", "seg", "seg-nocrop", "seg-labels")


def load_inputs(case: Path):
    """Image ``(1, 2, 240, 240, 155)`` float32 with air 0, and the UNet (seed 0, eval)."""
    import torch
    from monai.networks.nets import UNet

    from seg.io import read_image

    volume = read_image([case / "Flair_subtrMeanDivStd.nii.gz", case / "T1c_subtrMeanDivStd.nii.gz"])
    brain = read_image(case / "brainmask.nii.gz").array > 0.5  # (1, *spatial)
    image = torch.from_numpy(volume.array * brain)[None]  # (C, *spatial) -> (1, C, *spatial)
    torch.manual_seed(0)
    net = UNet(spatial_dims=3, in_channels=2, out_channels=2, channels=(16, 32, 64, 128), strides=(2, 2, 2),
               num_res_units=2).eval()
    return image, net


def worker(variant: str, case: Path, threads: int, out: str | None) -> None:
    """One pass of one variant; prints JSON {seconds, peak_mb}; saves its output to ``out`` if given."""
    import torch
    from monai.inferers import sliding_window_inference

    from seg.inference.sliding_window import predict_labels, predict_volume

    torch.set_num_threads(threads)
    image, net = load_inputs(case)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if variant == "monai":
        with torch.no_grad():
            logits = sliding_window_inference(image, ROI, 1, net, overlap=0.5, mode="gaussian")
            result = torch.softmax(logits, 1)
    elif variant == "seg-labels":
        result = predict_labels(net, image, ROI, overlap=0.5, blend="gaussian")
    else:
        result = predict_volume(net, image, ROI, overlap=0.5, blend="gaussian", crop=variant == "seg")
    seconds = time.perf_counter() - start
    peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024  # KiB on Linux
    if out:
        np.save(out, result.numpy())
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb}))


def compare(outputs: dict[str, Path], case: Path) -> dict[str, dict[str, float]]:
    """Max |Δp| and argmax agreement against MONAI, inside the foreground box and on brain voxels."""
    from seg.inference.sliding_window import foreground_box

    image, _ = load_inputs(case)
    box = foreground_box(image[0])
    brain = (image[0] != 0).any(0).numpy()[box]
    reference = np.load(outputs["monai"])[0][(slice(None), *box)]  # (K, *box)
    stats = {}
    for variant, path in outputs.items():
        if variant == "monai":
            continue
        result = np.load(path)[0]
        if variant == "seg-labels":
            stats[variant] = {"agree": float((result[box] == reference.argmax(0)).mean())}
            continue
        result = result[(slice(None), *box)]
        diff = np.abs(result - reference).max(0)
        stats[variant] = {"diff_box": float(diff.max()), "diff_brain": float(diff[brain].max()),
                          "agree": float((result.argmax(0) == reference.argmax(0)).mean())}
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", type=Path, default=CASE)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.case, args.threads, args.out)
        return
    if not args.case.is_dir():
        print(f"skipped: BraTS case {args.case} is absent")
        return
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        outputs = {v: Path(tmp) / f"{v}.npy" for v in VARIANTS}
        for rep in range(args.repeats):
            for variant in VARIANTS:  # interleaved: one pass of each per repetition
                cmd = [sys.executable, __file__, "--worker", variant, "--case", str(args.case),
                       "--threads", str(args.threads)] + (["--out", str(outputs[variant])] if rep == 0 else [])
                done = subprocess.run(cmd, capture_output=True, text=True, check=True)
                runs[variant].append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(f"rep {rep + 1}/{args.repeats} {variant:<11} {runs[variant][-1]['seconds']:7.2f} s", flush=True)
        stats = compare(outputs, args.case)
    monai_s = float(np.median([r["seconds"] for r in runs["monai"]]))
    print(f"\nROI {ROI}, overlap 0.5, gaussian, {args.threads} threads, median of {args.repeats} fresh processes")
    print(f"{'variant':<12}{'time s':>9}{'speed-up':>10}{'max|dp| box':>13}{'max|dp| brain':>15}"
          f"{'argmax agree':>14}{'peak MB':>9}")
    for variant in VARIANTS:
        seconds = float(np.median([r["seconds"] for r in runs[variant]]))
        peak = float(np.median([r["peak_mb"] for r in runs[variant]]))
        s = stats.get(variant, {})
        box = f"{s['diff_box']:.2e}" if "diff_box" in s else "-"
        brain = f"{s['diff_brain']:.2e}" if "diff_brain" in s else "-"
        agree = f"{100 * s['agree']:.3f}%" if "agree" in s else "-"
        print(f"{variant:<12}{seconds:>9.2f}{monai_s / seconds:>9.2f}x{box:>13}{brain:>15}{agree:>14}{peak:>9.0f}")


if __name__ == "__main__":
    main()

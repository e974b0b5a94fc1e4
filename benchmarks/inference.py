"""Sliding-window inference on a real BraTS volume: seg against MONAI, speed at equal probabilities, and memory.

    python benchmarks/inference.py [--repeats 3] [--threads 2] [--case DIR] [--cohort]

The BraTS Flair + T1c of one case as stored (240 x 240 x 155, z-scored, its background -3.6: nothing is cropped),
a MONAI UNet (channels 16-128, 2 residual units, seed 0), ROI 96^3, overlap 0.5, Gaussian blending, ``--threads``
torch threads. Every pass runs in a fresh subprocess (peak RSS after minus before is that pass's peak memory),
variants interleaved, median of ``--repeats``:

- ``monai-b1``: ``sliding_window_inference(sw_batch_size=1)`` under ``torch.no_grad`` (the reference for memory);
- ``monai-b4``: ``sw_batch_size=4`` under ``torch.inference_mode`` (the tuned MONAI: the reference for speed);
- ``seg-eager-b4``, ``seg-eager-b8``: ``predict_volume(crop=False)`` (MONAI's window grid), 4 and 8 windows a call;
- ``seg-cl-b4``: the same with channels-last weights and windows;
- ``seg-jit-b4``: the network traced (on one window) and frozen (TorchScript); the trace counts in its peak;
- ``seg-compile-b4``, ``seg-compile-b2``: the network compiled (``seg-infer --compile``: Inductor, frozen weights,
  fixed batch of 4 or 2); the compilation (its first call) runs before the clock and is reported on its own;
- ``seg-bf16-b4``, ``seg-bf16cl-b4``: ``predict_volume(dtype=torch.bfloat16)`` (autocast; ``seg-infer --precision
  bf16``), contiguous and channels-last: not equal probabilities, so agreement is reported, not the speed target;
- ``seg-onnx-b4``, ``seg-onnx-b8``: the network exported to ONNX and run by ONNX Runtime (``seg-export``'s engine);
- ``seg-openvino-b4``, ``seg-openvino-b2``: the network as OpenVINO IR, compiled at float32 for its static batch
  shape (``seg-infer --model --engine openvino``); the compilation runs before the clock and is reported on its own
  (``infer-openvino-b2`` compiles within its clock, as a user's first case does);
- ``infer-labels`` / ``infer-probs``: ``CasePredictor`` end to end (read, preprocess, predict, invert) from a
  checkpoint of that UNet, labels only (the memory-bounded path) and with probabilities, 4 windows a call (the
  default); ``infer-labels-b2``, ``infer-labels-b1``: labels only with 2 and 1 windows a call (``--batch-size``);
  ``infer-openvino-b2``, ``infer-openvino-b1``: labels only from that checkpoint's ``seg-export`` through OpenVINO,
  2 and 1 windows a call (1: ``seg-infer``'s default for OpenVINO).

Probabilities are compared with MONAI's (max |dp| over the volume; argmax agreement). With ``--cohort``, also
``seg-infer`` over a folder of 8 volumes (the six cases, two of them twice under other names) with 1 process and with
2 (``--devices 2 --strategy ddp``), from the checkpoint and (with ``openvino``) from its export: cases per minute.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "brats2015"
CASE = SHARED / "brats_2013_pat0001_1"
ROI = (96, 96, 96)
FILES = ("Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz")
VARIANTS = ("monai-b1", "monai-b4", "seg-eager-b4", "seg-eager-b8", "seg-cl-b4", "seg-jit-b4", "seg-compile-b4",
            "seg-compile-b2", "seg-bf16-b4", "seg-bf16cl-b4", "seg-onnx-b4", "seg-onnx-b8", "seg-openvino-b4",
            "seg-openvino-b2", "infer-labels",
            "infer-labels-b2", "infer-labels-b1", "infer-probs", "infer-openvino-b2", "infer-openvino-b1")


def network():
    import torch
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    return UNet(spatial_dims=3, in_channels=2, out_channels=2, channels=(16, 32, 64, 128), strides=(2, 2, 2),
                num_res_units=2).eval()


def checkpoint(folder: Path) -> Path:
    """A seg checkpoint of that UNet (its spec: no resampling, crop to the non-zero box, no normalisation), written
    once into ``folder``."""
    path = folder / "unet.ckpt"
    if path.is_file():
        return path
    import torch

    from seg.inference.checkpoint import InferenceSpec
    from seg.networks import NetworkConfig, build_network

    torch.manual_seed(0)
    config = NetworkConfig(name="unet", in_channels=2, out_channels=2, channels=[16, 32, 64, 128])
    net = build_network(config)
    spec = InferenceSpec(network=config, roi_size=list(ROI), label_names={"0": "background", "1": "tumour"},
                         preprocessing={"spatial_dims": 3, "image_dims": 3, "target_spacing": None,
                                        "normalization": "none", "ct_window": None, "orientation": "RAS",
                                        "crop_foreground": True, "channel_names": ["flair", "t1c"]})
    torch.save({"state_dict": {f"network.{k}": v for k, v in net.state_dict().items()}, "seg": spec.to_dict()}, path)
    return path


def prepare(tmp: Path) -> None:
    """The checkpoint, and its export where OpenVINO is installed, written into ``tmp``."""
    path = checkpoint(tmp)
    if importlib.util.find_spec("openvino") is not None:
        from seg.inference.export import export_model

        export_model([path], tmp / "model")


def worker(variant: str, case: Path, threads: int, out: str | None, tmp: Path) -> None:
    import torch
    from monai.inferers import sliding_window_inference

    from seg.inference.sliding_window import predict_volume
    from seg.io import read_image

    torch.set_num_threads(threads)
    net = network()
    image = torch.from_numpy(read_image([case / f for f in FILES]).array)[None]  # (1, 2, 240, 240, 155)
    # the peak counts from here: a variant's preparation (a trace, an export) is part of what it costs
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    compile_seconds = None
    if variant.startswith(("seg-onnx", "seg-openvino")):
        from seg.inference.export import OnnxNetwork, OpenVinoNetwork, export_onnx, export_openvino

        onnx = tmp / ("unet.onnx" if variant.startswith("seg-onnx") else "unet.xml")  # as seg-export writes them
        if not onnx.is_file():
            (export_onnx if variant.startswith("seg-onnx") else export_openvino)(net, torch.zeros(1, 2, *ROI), onnx)
        start = time.perf_counter()
        net = (OnnxNetwork if variant.startswith("seg-onnx") else OpenVinoNetwork)(onnx)
        if variant.startswith("seg-openvino"):  # compiles its batch shape (48 windows: no shorter last batch)
            net(torch.zeros(int(variant[-1]), 2, *ROI))
        compile_seconds = time.perf_counter() - start
    elif variant == "seg-jit-b4":
        with torch.no_grad():
            net = torch.jit.freeze(torch.jit.trace(net, torch.zeros(1, 2, *ROI)))
    elif variant in ("seg-cl-b4", "seg-bf16cl-b4"):
        net = net.to(memory_format=torch.channels_last_3d)
    if variant.startswith("seg-compile"):
        from seg.inference.compiled import compile_for_windows

        net = compile_for_windows(net, int(variant[-1]))
        start = time.perf_counter()
        with torch.inference_mode():
            net(torch.zeros(1, 2, *ROI))
        compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    if variant.startswith("monai"):
        batch = int(variant[-1])
        context = torch.inference_mode() if batch == 4 else torch.no_grad()
        with context:
            result = torch.softmax(sliding_window_inference(image, ROI, batch, net, overlap=0.5, mode="gaussian"), 1)
    elif variant.startswith("infer"):
        from seg.inference.predictor import CasePredictor, Settings

        batch = int(variant.rsplit("-b", 1)[1]) if re.search(r"-b\d+$", variant) else 4  # infer-labels-b2: 2
        if variant.startswith("infer-openvino"):  # seg-infer --model M --engine openvino
            from seg.inference.export import load_export

            predictor = CasePredictor(*load_export(tmp / "model", engine="openvino"), Settings(batch_size=batch))
        else:
            predictor = CasePredictor.from_checkpoints([checkpoint(tmp)], Settings(batch_size=batch))
        labels, probabilities = predictor.predict(predictor.preprocess([case / f for f in FILES]),
                                                  probabilities=variant == "infer-probs")
        result = torch.from_numpy(labels)
    else:
        last = variant in ("seg-cl-b4", "seg-bf16cl-b4")
        windows = image.contiguous(memory_format=torch.channels_last_3d) if last else image
        result = predict_volume(net, windows, ROI, overlap=0.5, batch_size=int(variant[-1]), crop=False,
                                dtype=torch.bfloat16 if "bf16" in variant else None)
    seconds = time.perf_counter() - start
    peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    if out:
        np.save(out, result.numpy())
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb, "compile_seconds": compile_seconds}))


def cohort(threads: int, tmp: Path) -> dict[str, float]:
    """Cases per minute of seg-infer over 8 volumes with 1 and with 2 processes."""
    folder = tmp / "cohort"
    folder.mkdir()
    cases = sorted(p for p in SHARED.iterdir() if p.is_dir())
    for i, case in enumerate([*cases, *cases[:2]]):
        for c, name in enumerate(FILES):
            (folder / f"case{i}_{c:04d}.nii.gz").symlink_to(case / name)
    if not (tmp / "unet.ckpt").is_file():
        subprocess.run([sys.executable, __file__, "--prepare", "--tmp", str(tmp)], check=True, capture_output=True)
    root = Path(__file__).resolve().parents[1]
    sources = {"checkpoint": ["--checkpoint", str(tmp / "unet.ckpt")]}
    if (tmp / "model" / "spec.json").is_file():
        sources["export, OpenVINO"] = ["--model", str(tmp / "model"), "--engine", "openvino"]
    rates = {}
    for source, given in sources.items():
        for label, extra in (("1 process", []), ("2 processes (ddp)", ["--devices", "2", "--strategy", "ddp"])):
            out = tmp / f"out{len(rates)}"
            start = time.perf_counter()
            subprocess.run([sys.executable, str(root / "infer.py"), *given, "--input", str(folder),
                            "--output", str(out), *extra], check=True, capture_output=True, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": str(threads // (2 if extra else 1))})
            rates[f"{source}, {label}"] = 8 / ((time.perf_counter() - start) / 60)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", type=Path, default=CASE)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--cohort", action="store_true")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.case, args.threads, args.out, args.tmp)
        return
    if args.prepare:
        prepare(args.tmp)
        return
    if not args.case.is_dir():
        print(f"skipped: BraTS case {args.case} is absent")
        return
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in args.variants}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        outputs = {v: tmp / f"{v}.npy" for v in args.variants}
        if any(v.startswith("infer") for v in args.variants):  # made once, before any pass, in a process of its own:
            # a child's peak RSS starts at its parent's (Linux copies it at fork), so this process stays small
            subprocess.run([sys.executable, __file__, "--prepare", "--tmp", str(tmp)], check=True, capture_output=True)
        for rep in range(args.repeats):
            for variant in args.variants:  # interleaved: one pass of each per repetition
                cmd = [sys.executable, __file__, "--worker", variant, "--case", str(args.case), "--threads",
                       str(args.threads), "--tmp", str(tmp)] + (["--out", str(outputs[variant])] if rep == 0 else [])
                done = subprocess.run(cmd, capture_output=True, text=True, check=True)
                runs[variant].append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(f"rep {rep + 1}/{args.repeats} {variant:<13} {runs[variant][-1]['seconds']:7.2f} s "
                      f"{runs[variant][-1]['peak_mb']:6.0f} MB", flush=True)
        reference = np.load(outputs["monai-b1"]) if "monai-b1" in outputs else None
        rates = cohort(args.threads, tmp) if args.cohort else {}
        speed = {v: float(np.median([r["seconds"] for r in runs[v]])) for v in args.variants}
        tuned = speed.get("monai-b4")
        print(f"\nROI {ROI}, overlap 0.5, gaussian, {args.threads} threads, median of {args.repeats} fresh processes")
        print(f"{'variant':<14}{'time s':>8}{'x MONAI b4':>12}{'max |dp|':>11}{'argmax agree':>14}{'peak MB':>9}")
        for v in args.variants:
            result = np.load(outputs[v])
            diff = agree = "-"
            if reference is not None and v.startswith(("seg", "monai-b4")):
                diff = f"{np.abs(result - reference).max():.1e}"
                agree = f"{100 * (result.argmax(1) == reference.argmax(1)).mean():.3f}%"
            ratio = f"{tuned / speed[v]:.2f}x" if tuned else "-"
            peak = float(np.median([r["peak_mb"] for r in runs[v]]))
            print(f"{v:<14}{speed[v]:>8.2f}{ratio:>12}{diff:>11}{agree:>14}{peak:>9.0f}")
        for v in [v for v in args.variants if v.startswith(("seg-compile", "seg-openvino"))]:
            compiles = [r["compile_seconds"] for r in runs[v]]
            print(f"{v}: compilation (before the clock) {np.median(compiles):.1f} s "
                  f"[{min(compiles):.1f}, {max(compiles):.1f}]")
        for label, rate in rates.items():
            print(f"seg-infer over 8 volumes, {label}: {rate:.2f} cases per minute")


if __name__ == "__main__":
    main()

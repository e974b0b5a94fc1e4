"""Time and peak memory of seg's losses and MONAI's, each against its own cross-entropy, in one run.

    python benchmarks/losses.py [--size 96] [--rounds 15] [--threads 2]

Input: float32 logits (2, 2, S, S, S) with 0.5 % foreground voxels, forward + backward, on ``--threads``
threads. Time: each loss is timed interleaved with its own cross-entropy (``F.cross_entropy`` for softmax
losses, ``F.binary_cross_entropy_with_logits`` on the one-hot target for sigmoid losses) in the same
process, so machine load hits both alike; the ratio is the median over rounds of loss time / CE time.
Memory: one fresh Python process per loss; after the inputs exist and a tiny warm-up ran, the peak-RSS
mark is reset (``/proc/self/clear_refs``) and the loss's forward + backward runs once; "extra MB" is the
peak RSS minus the RSS before the call (it includes the logits' gradient, which every loss makes).
glibc is told to serve large blocks with mmap (``MALLOC_MMAP_THRESHOLD_``) so freed memory is not reused
invisibly between runs. Targets (from the issue): FocalLoss <= 1.3x time and <= 1.5x extra memory of
its own CE; FocalDiceLoss <= 1.6x CE time, both as written (one background rule) and as training builds it
(``build_loss("focal_dice", batch_dice=True)``: focal over every voxel, batch Dice over the lesion class).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

Inputs = dict[str, torch.Tensor]


def make_inputs(size: int, requires_grad: bool = True) -> Inputs:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, size, size, size, generator=generator).requires_grad_(requires_grad)
    labels = (torch.rand(2, 1, size, size, size, generator=generator) < 0.005).long()  # 0.5 % foreground
    one_hot = torch.cat([1 - labels, labels], dim=1).float()  # (B, 2, S, S, S)
    return {"logits": logits, "labels": labels, "one_hot": one_hot}


def _losses() -> dict[str, tuple[str, Callable[[Inputs], torch.Tensor]]]:
    """name -> (its own cross-entropy, function of the inputs returning the loss)."""
    from monai.losses import DiceFocalLoss as MonaiDiceFocal
    from monai.losses import FocalLoss as MonaiFocal

    from seg.losses import DiceLoss, FocalDiceLoss, FocalLoss, build_loss

    seg_softmax = FocalLoss(gamma=2.0, alpha=0.75)
    seg_sigmoid = FocalLoss(gamma=2.0, alpha=0.25, activation="sigmoid")
    seg_focal_dice = FocalDiceLoss(gamma=2.0, alpha=0.75)
    # what training runs (configs/demo.yaml): the fused loss, focal over every voxel, batch Dice on the lesion class
    seg_as_trained = build_loss("focal_dice", gamma=2.0, alpha=[0.05, 0.95], batch_dice=True)
    seg_dice = DiceLoss()
    monai_softmax = MonaiFocal(gamma=2.0, alpha=0.75, use_softmax=True, to_onehot_y=True)
    monai_sigmoid = MonaiFocal(gamma=2.0, alpha=0.25, to_onehot_y=True)
    monai_dice_focal = MonaiDiceFocal(gamma=2.0, softmax=True, to_onehot_y=True)
    return {
        "CE (F.cross_entropy)": ("CE (F.cross_entropy)", lambda d: F.cross_entropy(d["logits"], d["labels"][:, 0])),
        "BCE (F.binary_cross_entropy_with_logits)": (
            "BCE (F.binary_cross_entropy_with_logits)",
            lambda d: F.binary_cross_entropy_with_logits(d["logits"], d["one_hot"])),
        "seg FocalLoss softmax a=0.75": ("CE (F.cross_entropy)", lambda d: seg_softmax(d["logits"], d["labels"])),
        "seg FocalLoss sigmoid a=0.25": ("BCE (F.binary_cross_entropy_with_logits)",
                                         lambda d: seg_sigmoid(d["logits"], d["one_hot"])),
        "seg FocalDiceLoss softmax": ("CE (F.cross_entropy)", lambda d: seg_focal_dice(d["logits"], d["labels"])),
        "seg focal_dice as trained": ("CE (F.cross_entropy)",
                                      lambda d: seg_as_trained.terms(d["logits"], d["labels"])["total"]),
        "seg DiceLoss softmax": ("CE (F.cross_entropy)", lambda d: seg_dice(d["logits"], d["labels"])),
        "MONAI FocalLoss softmax": ("CE (F.cross_entropy)", lambda d: monai_softmax(d["logits"], d["labels"])),
        "MONAI FocalLoss sigmoid a=0.25": ("BCE (F.binary_cross_entropy_with_logits)",
                                           lambda d: monai_sigmoid(d["logits"], d["labels"])),
        "MONAI DiceFocalLoss softmax": ("CE (F.cross_entropy)", lambda d: monai_dice_focal(d["logits"], d["labels"])),
    }


TARGETS = {"seg FocalLoss softmax a=0.75": (1.3, 1.5), "seg FocalLoss sigmoid a=0.25": (1.3, 1.5),
           "seg FocalDiceLoss softmax": (1.6, None), "seg focal_dice as trained": (1.6, None)}


def step(loss_fn: Callable[[Inputs], torch.Tensor], inputs: Inputs) -> float:
    """One forward + backward; seconds."""
    inputs["logits"].grad = None
    start = time.perf_counter()
    loss_fn(inputs).backward()
    return time.perf_counter() - start


def _rss_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_memory(name: str, size: int) -> float:
    """Extra peak RSS (MB) of one forward + backward of ``name``; call in a fresh process."""
    loss_fn = _losses()[name][1]
    step(loss_fn, make_inputs(4))  # warm-up on a tiny volume: lazy initialisation off the measurement
    inputs = make_inputs(size)
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # reset the peak-RSS mark (Linux >= 4.0)
        before = _rss_mb("VmRSS")
        step(loss_fn, inputs)
        return _rss_mb("VmHWM") - before
    except OSError:  # no clear_refs: fall back to ru_maxrss, which may hide a smaller peak than the imports'
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        step(loss_fn, inputs)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before


def memory_in_fresh_process(name: str, size: int, threads: int) -> float:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", OMP_NUM_THREADS=str(threads))
    command = [sys.executable, __file__, "--memory-of", name, "--size", str(size), "--threads", str(threads)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["extra_mb"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=96, help="spatial edge S of the (2, 2, S, S, S) logits")
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds per loss (after one warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_of:
        print(json.dumps({"extra_mb": measure_memory(args.memory_of, args.size)}))
        return

    losses = _losses()
    inputs = make_inputs(args.size)
    rows = []
    for name, (reference, loss_fn) in losses.items():
        if name == reference:
            continue
        ref_fn = losses[reference][1]
        step(loss_fn, inputs), step(ref_fn, inputs)  # warm-up
        times, ref_times = [], []
        for _ in range(args.rounds):
            times.append(step(loss_fn, inputs))
            ref_times.append(step(ref_fn, inputs))
        ratio = statistics.median(t / r for t, r in zip(times, ref_times, strict=True))
        rows.append((name, reference, statistics.median(times), statistics.median(ref_times), ratio))
        print(f"timed {name}: {ratio:.2f}x {reference.split()[0]}", file=sys.stderr)

    memory = {name: memory_in_fresh_process(name, args.size, args.threads) for name in losses}
    print(f"\n(2, 2, {args.size}, {args.size}, {args.size}) float32, 0.5 % foreground, forward + backward, "
          f"{args.threads} threads, median of {args.rounds} interleaved rounds\n")
    header = f"{'loss':34s} {'vs':4s} {'ms':>7s} {'CE ms':>7s} {'time x':>7s} {'extra MB':>9s} {'CE MB':>7s} {'mem x':>6s}  target"
    print(header)
    print("-" * len(header))
    for name, reference, t, ref_t, ratio in rows:
        mb, ref_mb = memory[name], memory[reference]
        target = TARGETS.get(name)
        verdict = ""
        if target:
            ok = ratio <= target[0] and (target[1] is None or mb <= target[1] * ref_mb)
            limits = f"<= {target[0]}x time" + (f", <= {target[1]}x MB" if target[1] else "")
            verdict = f"{limits}: {'met' if ok else 'MISSED'}"
        print(f"{name:34s} {reference.split()[0]:4s} {t * 1e3:7.1f} {ref_t * 1e3:7.1f} {ratio:7.2f} "
              f"{mb:9.0f} {ref_mb:7.0f} {mb / max(ref_mb, 1e-9):6.2f}  {verdict}")


if __name__ == "__main__":
    main()

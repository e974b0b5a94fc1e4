"""Channels-last against contiguous network weights on CPU: training step and sliding-window forward.

oneDNN (mkldnn) runs PyTorch's CPU convolutions; with channels-last weights (NHWC / NDHWC) it skips the
layout reorders around every convolution, which matters most in the backward pass. This times, interleaved
in one process, the same network in both layouts (same weights, same inputs):

- ``demo 3D``: the demo's DynUNet and focal+Dice loss (``configs/demo.yaml``), a batch of 4 patches of 32³,
  forward + backward + AdamW step;
- ``BraTS 2D``: the BraTS comparison's 2D DynUNet (``configs/compare/base2d_brats.yaml``), 12 slices of 96²,
  5 classes, the same step;
- ``... inference``: a no-grad forward of one sliding-window batch (``sw_batch_size`` windows).

The ratio is the median over rounds of channels-last time / contiguous time (< 1: channels-last is faster).

    .venv/bin/python benchmarks/memory_format.py [--rounds 15] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch
import yaml

from seg.losses.factory import build_loss
from seg.networks import NetworkConfig, build_network, channels_last

ROOT = Path(__file__).resolve().parents[1]


def _case(config_path: Path, in_channels: int, classes: int) -> dict:
    model = yaml.safe_load(config_path.read_text())["model"]
    data = yaml.safe_load(config_path.read_text())["data"]
    dims = data["spatial_dims"]
    network = build_network(NetworkConfig(name=model["network"], spatial_dims=dims, in_channels=in_channels,
                                          out_channels=classes, channels=model["channels"]))
    batch = data["batch_size"] * data["samples_per_volume"]
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(batch, in_channels, *data["patch_size"], generator=generator)
    label = torch.randint(0, classes, (batch, 1, *data["patch_size"]), generator=generator)
    label[torch.rand(label.shape, generator=generator) < 0.97] = 0  # sparse foreground
    windows = torch.randn(model["sw_batch_size"], in_channels, *data["patch_size"], generator=generator)
    loss = build_loss(model["loss"], gamma=model.get("gamma", 2.0), alpha=[0.1] + [0.9] * (classes - 1))
    return {"network": network, "dims": dims, "image": image, "label": label, "windows": windows, "loss": loss}


def _train_step(network, optimizer, loss, image, label) -> float:
    start = time.perf_counter()
    optimizer.zero_grad()
    loss(network(image), label).backward()
    optimizer.step()
    return time.perf_counter() - start


def _forward(network, windows) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        network(windows)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cases = {"demo 3D": _case(ROOT / "configs" / "demo.yaml", 1, 2),
             "BraTS 2D": _case(ROOT / "configs" / "compare" / "base2d_brats.yaml", 2, 5)}
    print(f"{args.threads} threads, median of {args.rounds} interleaved rounds; ratio = channels-last / contiguous")
    print(f"{'workload':22s} {'contiguous ms':>14s} {'channels-last ms':>17s} {'ratio':>6s}")
    for name, case in cases.items():
        plain = case["network"]
        last = channels_last(copy.deepcopy(plain), case["dims"])
        optimizers = {id(n): torch.optim.AdamW(n.parameters(), lr=1e-4) for n in (plain, last)}
        timings: dict[str, dict[str, list[float]]] = {"train": {"a": [], "b": []}, "infer": {"a": [], "b": []}}
        for round_ in range(args.rounds + 2):  # two warm-up rounds
            for key, network in (("a", plain), ("b", last)):
                train = _train_step(network, optimizers[id(network)], case["loss"], case["image"], case["label"])
                infer = _forward(network.eval(), case["windows"])
                network.train()
                if round_ >= 2:
                    timings["train"][key].append(train)
                    timings["infer"][key].append(infer)
        for kind, label in (("train", "training step"), ("infer", "inference")):
            a, b = timings[kind]["a"], timings[kind]["b"]
            ratio = statistics.median(y / x for x, y in zip(a, b, strict=True))
            print(f"{name + ' ' + label:22s} {statistics.median(a) * 1e3:14.1f} {statistics.median(b) * 1e3:17.1f} "
                  f"{ratio:6.2f}")


if __name__ == "__main__":
    main()

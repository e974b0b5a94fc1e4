"""Share of a training step spent loading data, cached vs uncached, for the demo configuration.

Builds a synthetic sparse-lesion dataset (``seg.data.synthetic.make_dataset``; 64×64×48 volumes), then runs
the same training loop twice — ``SegDataModule(cache=True)`` and ``cache=False`` — timing, per step, the
wait for the next batch and a forward + backward + optimiser step of the demo's network and loss, with the
demo's patch size, batch size and samples per volume (all read from ``configs/demo.yaml``). Both rows are
measured in one run, side by side.

    .venv/bin/python benchmarks/data.py [--cases 16] [--steps 15] [--workers 0 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from seg.data.datamodule import SegDataModule
from seg.losses.factory import build_loss
from seg.networks import NetworkConfig, build_network, cpu_layout

DEMO = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "demo.yaml").read_text())


def make_data(out: Path, cases: int) -> Path:
    """The synthetic dataset of ``seg.data.synthetic`` (default 64×64×48 volumes with sparse lesions)."""
    from seg.data.synthetic import make_dataset

    return make_dataset(out, cases=cases, test_cases=0, seed=0, progress=False)


def batches(loader):
    """Endless iteration over epochs of a DataLoader."""
    while True:
        yield from loader


def run(dataset: Path, *, cache: bool, steps: int, warmup: int, num_workers: int) -> dict[str, float]:
    data, model = DEMO["data"], DEMO["model"]
    dm = SegDataModule(str(dataset), patch_size=data["patch_size"], batch_size=data["batch_size"],
                       samples_per_volume=data["samples_per_volume"], pos_fraction=data["pos_fraction"],
                       target_spacing=data["target_spacing"], cache=cache, num_workers=num_workers)
    start = time.perf_counter()
    dm.setup("fit")
    setup_seconds = time.perf_counter() - start
    torch.manual_seed(0)
    network = cpu_layout(build_network(NetworkConfig(name=model["network"], in_channels=dm.in_channels,
                                                     out_channels=dm.num_classes, channels=model["channels"])), 3)
    optimiser = torch.optim.AdamW(network.parameters(), lr=1e-3)
    loss_fn = build_loss(model["loss"], alpha=[0.05, 0.95])
    data_times, compute_times = [], []
    stream = batches(dm.train_dataloader())
    for step in range(warmup + steps):
        t0 = time.perf_counter()
        batch = next(stream)
        t1 = time.perf_counter()
        optimiser.zero_grad(set_to_none=True)
        logits = network(batch["image"])  # (B * samples, K, *patch)
        loss = loss_fn(logits, batch["label"])  # target (B * samples, 1, *patch)
        loss.backward()
        optimiser.step()
        t2 = time.perf_counter()
        if step >= warmup:
            data_times.append(t1 - t0)
            compute_times.append(t2 - t1)
    data, compute = float(np.mean(data_times)), float(np.mean(compute_times))
    return {"setup": setup_seconds, "data": data, "compute": compute, "share": data / (data + compute)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=16)
    parser.add_argument("--steps", type=int, default=15, help="timed steps per setting (after 3 warm-up)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1],
                        help="DataLoader worker counts to compare (demo config: 0)")
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}, cores: {os.cpu_count()}, load average: "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        dataset = make_data(Path(tmp) / "data", args.cases)
        for workers in args.workers:
            for cache in (True, False):
                name = f"{'cached' if cache else 'uncached'}, {workers} workers"
                rows[name] = run(dataset, cache=cache, steps=args.steps, warmup=3, num_workers=workers)
    print(f"\n{'dataset':<22}{'setup s':>9}{'data ms/batch':>15}{'step ms':>10}{'data share':>12}")
    for name, r in rows.items():
        print(f"{name:<22}{r['setup']:>9.2f}{1e3 * r['data']:>15.1f}{1e3 * r['compute']:>10.1f}"
              f"{100 * r['share']:>11.1f}%")
    for workers in args.workers:
        cached, uncached = rows[f"cached, {workers} workers"], rows[f"uncached, {workers} workers"]
        print(f"{workers} workers: uncached / cached data time {uncached['data'] / cached['data']:.1f}x")
    print("target: data share of a step <= 10 % with the cache (load average above: other jobs share the cores)")


if __name__ == "__main__":
    main()

"""``seg-compare --executor ray``: the runs of a comparison as Ray tasks, on one machine or a Ray cluster.

Every unfinished run (the driver skips finished ones and checks their settings, as the sequential executor does)
becomes one ``ray.remote`` task asking for ``--cpus-per-run`` CPUs and ``--gpus-per-run`` GPUs; Ray places them
where those are free. A task trains, predicts and evaluates exactly as the sequential executor does
(:func:`seg.comparison.runner.execute_run`), in a fresh worker process (``max_calls=1``: no cached volume outlives a
run) with torch using the CPUs it was given, and writes into the same folder layout on the shared filesystem; its
evaluation is renamed into place last, so a killed run never looks finished and is redone next time. A run's user
error or crash is written to its ``failed.json`` and the others go on.

    local: seg-compare --config C --executor ray                       (starts a Ray instance on this machine)
    cluster: ray start --head (one node), ray start --address HEAD:6379 (the others), then
             seg-compare --config C --executor ray --address HEAD:6379  (paths must be on a shared filesystem)

Ray is an optional dependency (``pip install seg[ray]``): it is imported only here, when this executor is chosen.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from seg.comparison.runs import Run, record_failure, start_run
from seg.errors import USER_ERRORS


def _run_task(runner: Callable[..., dict[str, Any]], run: Run, cpus: float) -> dict[str, Any]:
    """One run inside a Ray worker (the function lives in the package, so workers can import it)."""
    torch.set_num_threads(max(1, int(cpus)))
    os.environ.pop("SLURM_NTASKS", None)  # keep Lightning out of SLURM mode inside a worker
    try:
        return {"status": "done", "timing": runner(run.argv, run.folder, run.dataset_json, run.labels)}
    except USER_ERRORS + (RuntimeError,) as error:
        return {"status": "failed", "error": f"{type(error).__name__}: {error}"}


def run_with_ray(runs: list[Run], output: Path, runner: Callable[..., dict[str, Any]], *, address: str | None = None,
                 cpus_per_run: float = 1, gpus_per_run: float = 0, num_cpus: int | None = None) -> list[tuple[Run, str]]:
    """Run ``runs`` (the unfinished ones) as Ray tasks; returns ``(run, "done" | "failed")`` in completion order.

    ``runner(argv, folder, dataset_json, labels)`` does one run (:func:`seg.comparison.runner.execute_run` with the
    config's evaluation options); Ray pickles it by reference, so it must be importable in the workers.

    ``address``: a running Ray cluster (``HOST:PORT``, ``auto`` or ``ray://...``); None starts a local instance with
    ``num_cpus`` CPUs (all of the machine's by default).
    """
    try:
        import ray  # optional dependency: seg[ray]
    except ImportError:
        raise ValueError("--executor ray needs Ray: pip install 'seg[ray]' (or pip install ray)") from None
    if address is None:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(max_calls=1)(_run_task)
        futures = {}
        for run in runs:
            start_run(run, output)
            futures[task.options(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=1,
                                 name=f"seg {run.name}").remote(runner, run, cpus_per_run)] = run
        statuses: list[tuple[Run, str]] = []
        waiting = list(futures)
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1)
            run = futures[ready[0]]
            try:
                result = ray.get(ready[0])
            except ray.exceptions.RayError as error:  # the worker died (OOM, crash) or the node was lost
                result = {"status": "failed", "error": f"{type(error).__name__}: {str(error).splitlines()[0]}"}
            if result["status"] == "failed":
                record_failure(run, result["error"])
                print(f"[{len(statuses) + 1}/{len(futures)}] {run.name}: FAILED: {result['error']}", file=sys.stderr,
                      flush=True)
            else:
                print(f"[{len(statuses) + 1}/{len(futures)}] {run.name}: done in "
                      f"{result['timing'].get('total_seconds', 0) / 60:.1f} min", flush=True)
            statuses.append((run, result["status"]))
        return statuses
    finally:
        ray.shutdown()

"""Walk a volume in cache-sized chunks on the intra-op threads, without torch's per-op thread barriers.

Why by hand: a loss written as ~25 elementwise torch ops over a whole 3D volume makes ~25 full-size
temporaries (hundreds of MB) and ~25 passes through memory. Chunks keep the temporaries in cache and
off the peak, but each small op would then open an OpenMP parallel region; on a busy machine every
region can wait a scheduler time slice for the second thread, which made a chunked loss 50x slower.
So each chunk stays below torch's parallel grain (its ops run on the calling thread alone) and the
chunks themselves are spread over ``torch.get_num_threads()`` Python threads (torch releases the GIL
inside its kernels). Workers run under ``torch.no_grad()``: grad mode is per thread.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

CHUNK_ELEMENTS = 1 << 15  # at most torch's parallel grain size (32768), so no op inside goes parallel
ACCELERATOR_CHUNK_ELEMENTS = 1 << 24  # GPUs: few, large chunks (a kernel launch costs more than a pass)
T = TypeVar("T")

_pool: ThreadPoolExecutor | None = None
_pool_key = (0, 0)  # (workers, process id): a forked child (DataLoader worker) must not reuse the parent's pool
_pool_lock = threading.Lock()


def chunk_bounds(num_voxels: int, elements_per_voxel: int, device: torch.device | None = None) -> list[tuple[int, int]]:
    """``(start, stop)`` ranges over a voxel axis, each about ``CHUNK_ELEMENTS`` elements big (CPU)."""
    size = CHUNK_ELEMENTS if device is None or device.type == "cpu" else ACCELERATOR_CHUNK_ELEMENTS
    step = max(1, size // max(1, elements_per_voxel))
    return [(start, min(num_voxels, start + step)) for start in range(0, num_voxels, step)]


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool, _pool_key
    key = (workers, os.getpid())
    with _pool_lock:
        if _pool is None or _pool_key != key:
            if _pool is not None and _pool_key[1] == key[1]:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="seg-loss")
            _pool_key = key
        return _pool


def map_chunks(fn: Callable[[int, int], T], bounds: list[tuple[int, int]], device: torch.device) -> list[T]:
    """``[fn(start, stop) for each bound]``, spread over the intra-op threads for CPU tensors.

    ``fn`` must only write to disjoint slices; results come back in the order of ``bounds``.
    """
    workers = min(torch.get_num_threads(), len(bounds))
    if device.type != "cpu" or workers <= 1 or threading.current_thread().name.startswith("seg-loss"):
        with torch.no_grad():
            return [fn(start, stop) for start, stop in bounds]

    def run(group: list[tuple[int, int]]) -> list[T]:
        with torch.no_grad():
            return [fn(start, stop) for start, stop in group]

    groups: Iterator[list[tuple[int, int]]] = (bounds[i::workers] for i in range(workers))
    futures = [_executor(workers).submit(run, group) for group in groups]
    results_by_group = [future.result() for future in futures]
    results: list[T] = [None] * len(bounds)  # type: ignore[list-item]
    for i, group_results in enumerate(results_by_group):
        results[i::workers] = group_results
    return results

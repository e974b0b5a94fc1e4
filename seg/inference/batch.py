"""Prediction over many cases on Lightning's ``Trainer.predict``: devices, DDP over GPUs and nodes, prefetching.

``predict_step`` takes one case (read and preprocessed by a DataLoader worker, so loading the next case overlaps
predicting this one), predicts it with :class:`seg.inference.predictor.CasePredictor` on the module's device, and
writes its mask (and probability map) atomically and together (:func:`seg.files.atomic_paths`). Under DDP
(``--devices N --strategy ddp [--num-nodes M]``) Lightning's ``UnrepeatedDistributedSampler`` gives every case to
exactly one rank (no padding, no repeat); the case list is padded with empty items only when it is shorter than the
number of ranks (Lightning's sampler needs one item per rank). A case that fails is recorded with its file and the
others go on; at the end every rank gathers every rank's failures (``all_gather_object``), so every process knows
whether the run succeeded. The batch is never moved to the device: only windows are (see the predictor).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from seg.data.layouts import Case
from seg.files import atomic_paths
from seg.inference.predictor import CasePredictor
from seg.io import write_like

PRECISIONS = {"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed"}


@dataclass
class Job:
    """One case to predict and where its outputs go (mask first, then the probability map if asked)."""

    case: Case
    targets: list[Path]


class _Cases(Dataset):
    """The jobs, each read and preprocessed on access (in a DataLoader worker); ``None`` pads for spare ranks."""

    def __init__(self, jobs: list[Job | None], predictor: CasePredictor) -> None:
        self.jobs, self.predictor = jobs, predictor

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int) -> dict | None:
        job = self.jobs[index]
        if job is None:
            return None
        try:
            return {"job": job, "image": self.predictor.preprocess(job.case.images)}
        except (ValueError, OSError, RuntimeError) as error:
            return {"job": job, "error": f"{job.case.images[0]}: {error}"}


def _first(batch: list):
    return batch[0]


class PredictionModule(pl.LightningModule):
    """Runs the predictor over the cases the sampler gives this rank; collects what was written and what failed."""

    def __init__(self, predictor: CasePredictor, *, probabilities: bool) -> None:
        super().__init__()
        self.predictor, self.probabilities = predictor, probabilities
        self.network = predictor.network if isinstance(predictor.network, torch.nn.Module) else None
        self.failures: list[str] = []
        self.written: list[str] = []

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch  # the volume stays on the CPU; windows go to the device one batch at a time

    def predict_step(self, batch: dict | None, batch_idx: int) -> None:
        if batch is None:
            return
        job: Job = batch["job"]
        try:
            if "error" in batch:
                raise ValueError(batch["error"])
            labels, probabilities = self.predictor.predict(batch["image"], probabilities=self.probabilities,
                                                           device=self.device)
            reference = job.case.images[0]
            with atomic_paths(*job.targets) as temporaries:  # a case's outputs appear together or not at all
                write_like(labels, reference, temporaries[0], dtype=np.uint8)
                if self.probabilities:
                    write_like(probabilities, reference, temporaries[1], dtype=np.float32)
            self.written.append(job.case.name)
        except (ValueError, OSError, RuntimeError) as error:
            message = str(error) if str(error).startswith(str(job.case.images[0])) else f"{job.case.images[0]}: {error}"
            self.failures.append(message)
            tqdm.write(f"FAILED {message}", file=sys.stderr)

    def on_predict_epoch_end(self) -> None:
        if dist.is_available() and dist.is_initialized():
            gathered: list = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, self.failures)
            self.failures = [f for rank in gathered for f in rank]


def run(predictor: CasePredictor, jobs: list[Job], *, probabilities: bool, accelerator: str = "cpu",
        devices: int | list[int] | str = 1, strategy: str = "auto", num_nodes: int = 1, num_workers: int = 0,
        precision: str = "32", progress: bool = True) -> list[str]:
    """Predict ``jobs`` on Lightning; returns every rank's failure messages (empty: all written)."""
    trainer = pl.Trainer(accelerator=accelerator, devices=devices, strategy=strategy, num_nodes=num_nodes,
                         precision=PRECISIONS[precision], logger=False, enable_checkpointing=False,
                         enable_progress_bar=progress, enable_model_summary=False)
    padded: list[Job | None] = list(jobs) + [None] * max(0, trainer.world_size - len(jobs))
    loader = DataLoader(_Cases(padded, predictor), batch_size=1, shuffle=False, num_workers=num_workers,
                        collate_fn=_first)
    module = PredictionModule(predictor, probabilities=probabilities)
    trainer.predict(module, loader, return_predictions=False)
    return module.failures

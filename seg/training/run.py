"""The run directory and the fit loop around Lightning's Trainer.

A run directory holds::

    RUN/best.ckpt, RUN/last.ckpt     checkpoints (best by --monitor, default val/lesion_f1; ``last``: the final weights)
    RUN/config.yaml                  the resolved config (LightningCLI's SaveConfigCallback)
    RUN/alpha.json                   α used, its method and the class counts it came from (seg.losses.alpha.load_alpha)
    RUN/class_frequencies.json       training-split class counts (cached by the data module)
    RUN/metrics.csv, RUN/events.*    CSV and TensorBoard logs
    RUN/training_curves.png          loss terms and validation metrics at the end
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.plugins.io import TorchCheckpointIO

from seg.errors import check_option
from seg.inference.checkpoint import load_checkpoint
from seg.io import atomic_path, write_json
from seg.losses.alpha import ALPHA_FILE, save_alpha
from seg.training.curves import plot_training_curves
from seg.training.schedule import TimeBudget
from seg.training.tuning import tune_postprocessing


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning writes checkpoints in place; a kill mid-write would leave a truncated ``last.ckpt`` that
    ``--resume`` cannot read. Write to a temporary file in the same folder and rename instead."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


class RunCSVLogger(CSVLogger):
    """Lightning's CSVLogger, except that a resumed run keeps its log.

    Lightning's writer deletes ``metrics.csv`` when it starts in a non-empty folder ("Previous log files ... will
    be deleted"), so after ``--resume`` the training curves began at the restart. Here the rows logged up to the
    step the run resumes from (``resume_step``, the checkpoint's global step) are read first and written back at
    once; rows after it (logged before the kill, after the checkpoint) are dropped, as those steps run again.
    Lightning logs an epoch's mean after that epoch's checkpoint, so a kill between the two loses that one row.
    """

    def __init__(self, run_dir: Path, resume_step: int | None = None) -> None:
        super().__init__(save_dir=str(run_dir), name="", version="")
        self.resume_step = resume_step

    @property
    def experiment(self):
        if self._experiment is not None or self.resume_step is None:
            return super().experiment
        kept = self._rows_until(self.resume_step)
        writer = super().experiment  # deletes metrics.csv
        if kept:
            writer.metrics = kept
            writer.save()
        return writer

    def _rows_until(self, step: int) -> list[dict[str, str]]:
        path = Path(self.log_dir) / "metrics.csv"
        if not path.is_file():
            return []
        with open(path, newline="") as handle:
            rows = [r for r in csv.DictReader(handle) if r.get("step") not in (None, "")]
        # at the checkpoint's own step, validation and epoch-end rows came before it; a training step's row (its
        # loss, its learning rate) came after it and runs again
        after = [k for k in (rows[0] if rows else {}) if k.endswith("_step") or k.startswith("lr-")]
        return [r for r in rows if float(r["step"]) < step
                or (float(r["step"]) == step and not any(r.get(k) for k in after))]


def run_loggers(run_dir: Path, resume_step: int | None = None) -> list:
    """TensorBoard and CSV loggers writing straight into ``run_dir`` (``resume_step``: see :class:`RunCSVLogger`)."""
    return [
        TensorBoardLogger(save_dir=str(run_dir), name="", version="", default_hp_metric=False),
        RunCSVLogger(run_dir, resume_step),
    ]


class StepTimer(Callback):
    """Seconds per training step and the share spent waiting for data (time between steps).

    Lightning's profilers report the same split but print pages of tables; this keeps two numbers, written
    to ``RUN/step_timing.json`` and printed at the end of training.
    """

    def __init__(self) -> None:
        self.compute = 0.0
        self.waiting = 0.0
        self.validation = 0.0
        self._validation_start = 0.0
        self.steps = 0
        self._last_end: float | None = None
        self._start = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._last_end = time.perf_counter()  # the first batch's loading counts as waiting

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()
        if self._last_end is not None:
            self.waiting += self._start - self._last_end

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._last_end = time.perf_counter()
        self.compute += self._last_end - self._start
        self.steps += 1

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._last_end = None  # validation time is neither step nor data wait
        self._validation_start = time.perf_counter()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._last_end = time.perf_counter()
        self.validation += self._last_end - self._validation_start

    def summary(self) -> dict[str, float]:
        total = self.compute + self.waiting
        return {"steps": self.steps, "seconds_per_step": total / max(self.steps, 1),
                "data_wait_share": self.waiting / total if total else 0.0,
                "validation_seconds": self.validation,
                "validation_share": self.validation / (total + self.validation) if total + self.validation else 0.0}


def _tune_if_asked(model: pl.LightningModule, datamodule: pl.LightningDataModule, run_dir: Path) -> None:
    """``threshold`` / ``min_size`` / ``peak_threshold`` / ``keep_largest: auto``: choose them on the validation split
    (:mod:`seg.training.tuning`)."""
    hp = model.hparams
    auto_threshold, auto_size = hp.get("threshold") == "auto", hp.get("min_size") == "auto"
    auto_peak, auto_largest = hp.get("peak_threshold") == "auto", hp.get("keep_largest") == "auto"
    if not (auto_threshold or auto_size or auto_peak or auto_largest) \
            or getattr(datamodule, "val_dataset", None) is None:
        return
    post = model.postprocessing()
    tune_postprocessing(run_dir, datamodule.val_dataset, tune_threshold=auto_threshold, tune_min_size=auto_size,
                        matching=hp.get("lesion_matching", "msseg"), overlap=hp.sw_overlap,
                        batch_size=hp.sw_batch_size, fixed_threshold=post["threshold"],
                        fixed_min_size=post["min_size"], tune_peak=auto_peak, fixed_peak=post["peak_threshold"],
                        tune_largest=auto_largest, fixed_largest=post["keep_largest"])


class ValidationBudget(Callback):
    """Keep time-based validation near ``share`` of the wall time: after each validation of ``d`` seconds, the
    interval (``trainer.val_check_interval`` given as a duration) becomes at least ``d (1 - share) / share``.

    Lightning keeps the interval in ``Trainer._val_check_time_interval`` (2.6), which is what is stretched; with a
    step- or epoch-based ``val_check_interval`` this callback does nothing.
    """

    def __init__(self, share: float = 0.1) -> None:
        self.share, self._start = share, 0.0

    def on_validation_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        interval = getattr(trainer, "_val_check_time_interval", None)
        if interval is not None and not trainer.sanity_checking:
            needed = (time.perf_counter() - self._start) * (1 - self.share) / self.share
            trainer._val_check_time_interval = max(float(interval), needed)


class FlushLogsOnCheckpoint(Callback):
    """Write the loggers' buffered rows whenever a checkpoint is written, so a run killed after it can resume with
    its whole log (the CSV logger otherwise flushes every 100 steps)."""

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        for logger in trainer.loggers:
            logger.save()


class LatestBestCheckpoint(ModelCheckpoint):
    """``best.ckpt`` where a tie goes to the later model. Lightning keeps the first of equal scores, so a run whose
    validation lesion F1 stayed 0 kept its first validation's model (BraTS: step 45 of 327) and predicted with it."""

    def check_monitor_top_k(self, trainer, current=None) -> bool:
        if current is None or self.save_top_k == -1 or len(self.best_k_models) < self.save_top_k:
            return current is not None
        better_or_equal = {"min": torch.le, "max": torch.ge}[self.mode]
        return trainer.strategy.reduce_boolean_decision(
            bool(better_or_equal(current, self.best_k_models[self.kth_best_model_path])))


def run_callbacks(run_dir: Path, monitor: str = "val/lesion_f1", mode: str = "max", *,
                  progress_bar: bool = True) -> list:
    """``last.ckpt`` is its own checkpoint callback (no monitor), rewritten at every validation: Lightning 2.6's
    ``save_last`` writes it only when the monitored checkpoint is saved too, so it went stale with the best.
    ``monitor="last"`` makes ``best.ckpt`` the latest weights too (nnU-Net predicts with its final checkpoint)."""
    check_option("--monitor-mode", mode, ("max", "min"))
    callbacks = [
        LatestBestCheckpoint(dirpath=str(run_dir), filename="best", monitor=None if monitor == "last" else monitor,
                             mode=mode, save_top_k=1,
                             enable_version_counter=False, auto_insert_metric_name=False),
        ModelCheckpoint(dirpath=str(run_dir), filename="last", monitor=None, save_top_k=1,
                        enable_version_counter=False, auto_insert_metric_name=False),
        LearningRateMonitor(logging_interval="step"),
        StepTimer(),
        ValidationBudget(),
        TimeBudget(),
        FlushLogsOnCheckpoint(),
    ]
    return callbacks + ([TQDMProgressBar(refresh_rate=5)] if progress_bar else [])


def fit(trainer: pl.Trainer, model: pl.LightningModule, datamodule: pl.LightningDataModule, run_dir: Path,
        *, resume: bool = False) -> Path:
    """Train (or resume from ``run_dir/last.ckpt``), then write α and the training-curve figure."""
    ckpt_path = None
    if resume:
        last = run_dir / "last.ckpt"
        if not last.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at '{last}' (train without --resume first)")
        load_checkpoint(last)  # refuses unsafe files with a clear message before Lightning sees them
        ckpt_path = str(last)
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    if trainer.is_global_zero:
        _tune_if_asked(model, datamodule, run_dir)
        spec = model.inference_spec()
        save_alpha(run_dir / ALPHA_FILE, spec.class_counts, spec.alpha, spec.alpha_method,
                   label_names=spec.label_names)
        timers = [c for c in trainer.callbacks if isinstance(c, StepTimer)]
        if timers and timers[0].steps:
            timing = timers[0].summary()
            write_json(run_dir / "step_timing.json", timing)
            print(f"training: {timing['steps']} steps, {timing['seconds_per_step']:.3f} s/step, "
                  f"{100 * timing['data_wait_share']:.1f} % of it waiting for data; validation "
                  f"{100 * timing['validation_share']:.1f} % of the time")
        metrics_csv = run_dir / "metrics.csv"
        if metrics_csv.is_file():
            plot_training_curves(metrics_csv, run_dir / "training_curves.png")
        print(f"run directory: {run_dir}  (best: {run_dir / 'best.ckpt'}, curves: "
              f"{run_dir / 'training_curves.png'})")
    return run_dir

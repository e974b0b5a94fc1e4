"""``train(argv) -> run directory``: the training task as a function (lightning-hydra-template's ``train(cfg)``).

The config is parsed by Lightning's ``LightningCLI`` (jsonargparse): a YAML file mirrors ``SegModule``
(``model:``), ``SegDataModule`` (``data:``) and ``Trainer`` (``trainer:``); any key can be overridden in
jsonargparse syntax (``--model.gamma 1.0``, ``--trainer.devices 2``); unknown keys are errors; ``--print_config``
prints the resolved config. A few flags users reach for daily are added on top: ``--dataset``, ``--output``,
``--max-epochs``, ``--max-minutes``, ``--max-steps``, ``--seed``, ``--resume``, ``--check-data``, ``--monitor``.

Before anything is instantiated the dataset is checked (:func:`seg.data.check.run_check`); a failed check exits
with its report and nothing is written. ``seg-train`` (:mod:`seg.cli`), the demo and the comparison runner all
call :func:`train`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from seg.data.check import run_check
from seg.data.datamodule import SegDataModule
from seg.data.layouts import DatasetSpec, load_dataset
from seg.inference.checkpoint import load_checkpoint
from seg.io import image_shape
from seg.training.module import SegModule
from seg.training.run import AtomicCheckpointIO, fit, run_callbacks, run_loggers


class SegCLI(LightningCLI):
    """LightningCLI with the run-directory layout and daily flags of ``seg``."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--dataset", type=str | None, default=None,
                            help="MSD dataset.json or nnU-Net dataset folder (overrides data.dataset)")
        parser.add_argument("--output", type=str, default="runs/default", help="run directory")
        parser.add_argument("--max-epochs", type=int | None, default=None, help="overrides trainer.max_epochs")
        parser.add_argument("--max-minutes", type=float | None, default=None, help="wall-time bound")
        parser.add_argument("--max-steps", type=int | None, default=None,
                            help="optimiser-step bound (with data.steps_per_epoch, the same on 3 and on 300 cases)")
        parser.add_argument("--seed", type=int | None, default=None, help="overrides seed_everything")
        parser.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.ckpt")
        parser.add_argument("--check-data", action="store_true", help="check the dataset, print a summary, exit")
        parser.add_argument("--monitor", type=str, default="val/lesion_f1", help="metric choosing best.ckpt ('last': the final weights, as nnU-Net)")
        parser.add_argument("--monitor-mode", type=str, default="max", help="max or min")
        parser.link_arguments("data.spatial_dims", "model.spatial_dims")
        parser.link_arguments("data.patch_size", "model.roi_size")
        parser.link_arguments("model.blob_weight", "data.instance_maps", compute_fn=_needs_instances)
        parser.link_arguments("data.in_channels", "model.in_channels", apply_on="instantiate")
        parser.link_arguments("data.out_channels", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.regions", "model.regions")

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        """Parse, then fold the daily flags into the config (before LightningCLI seeds and instantiates)."""
        super().parse_arguments(parser, args)
        cfg = self.config
        if cfg.max_epochs is not None:
            cfg.trainer.max_epochs = cfg.max_epochs
        if cfg.max_steps is not None:
            cfg.trainer.max_steps = cfg.max_steps
        if cfg.max_minutes is not None:
            seconds = int(round(cfg.max_minutes * 60))
            cfg.trainer.max_time = f"00:{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if cfg.seed is not None:
            cfg.seed_everything = cfg.seed

    def before_instantiate_classes(self) -> None:
        cfg = self.config
        spec = load_dataset(cfg.data.dataset)
        code = run_check(spec, spatial_dims=_stored_dims(spec, cfg.data.spatial_dims), quiet=not cfg.check_data,
                         needs_foreground=cfg.model.alpha == "auto")
        if cfg.check_data or code != 0:
            raise SystemExit(code)
        cfg.data.cache_dir = cfg.output

    def instantiate_trainer(self, **kwargs):
        run_dir = Path(self.config.output)
        trainer_cfg = self.config_init.trainer
        trainer_cfg.default_root_dir = str(run_dir)
        last = run_dir / "last.ckpt"  # --resume keeps the log up to the checkpoint's step
        resume_step = int(load_checkpoint(last).get("global_step", 0)) if self.config.resume and last.is_file() else None
        trainer_cfg.logger = run_loggers(run_dir, resume_step)
        if not trainer_cfg.plugins:
            trainer_cfg.plugins = [AtomicCheckpointIO()]
        monitor, mode = self.config.monitor, self.config.monitor_mode
        callbacks = run_callbacks(run_dir, monitor, mode, progress_bar=trainer_cfg.enable_progress_bar is not False)
        return self._instantiate_trainer({**trainer_cfg, **kwargs}, callbacks)


def _needs_instances(blob_weight: float) -> bool:
    """The blob term needs each patch's lesion-instance map (module-level: jsonargparse links need a function)."""
    return blob_weight > 0


def _stored_dims(spec: DatasetSpec, spatial_dims: int) -> int:
    """Dimensions the images must have: a 2D network trains on 2D images or on slices of 3D volumes."""
    if spatial_dims == 3 or not spec.cases or not spec.cases[0].images[0].is_file():
        return spatial_dims
    shape = list(image_shape(spec.cases[0].images[0]))
    while len(shape) > 2 and shape[-1] == 1:  # (H, W, 1) is a 2D slice
        shape.pop()
    return len(shape)


def build_cli(argv: list[str] | None) -> SegCLI:
    """Parse ``argv`` (``None``: the program's own arguments), check the data and instantiate model, data, trainer."""
    program_argv = sys.argv
    args = list(sys.argv[1:] if argv is None else argv)
    # --dataset is data.dataset, given before parsing: a config without it (a plan, a user's own) is then complete
    dataset = None
    for i, arg in enumerate(args):
        if arg == "--dataset" and i + 1 < len(args):
            dataset = args[i + 1]
        elif arg.startswith("--dataset="):
            dataset = arg.split("=", 1)[1]
    if dataset is not None:
        args += ["--data.dataset", dataset]
    sys.argv = sys.argv[:1]  # the arguments go in as args: LightningCLI would warn about a sys.argv beside them
    try:
        return SegCLI(SegModule, SegDataModule, run=False, args=args, auto_configure_optimizers=False,
                      seed_everything_default=0, save_config_kwargs={"overwrite": True},
                      parser_kwargs={"description": "Train a lesion segmenter (seg)."})
    finally:
        sys.argv = program_argv


def train(argv: list[str] | None = None) -> Path:
    """Parse ``argv``, check the data, train; returns the run directory."""
    cli = build_cli(argv)
    return fit(cli.trainer, cli.model, cli.datamodule, Path(cli.config.output), resume=cli.config.resume)

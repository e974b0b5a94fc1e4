"""Command lines: argument parsing only; the work is done by importable functions.

``seg-train`` / ``train.py`` uses Lightning's ``LightningCLI`` (jsonargparse): a YAML config mirrors
``SegModule`` (``model:``), ``SegDataModule`` (``data:``) and ``Trainer`` (``trainer:``); any key can be
overridden in jsonargparse syntax (``--model.gamma 1.0``, ``--trainer.devices 2``); unknown keys are errors;
``--print_config`` prints the resolved config. A few flags users reach for daily are added on top:
``--dataset``, ``--output``, ``--max-epochs``, ``--max-minutes``, ``--seed``, ``--resume``, ``--check-data``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from seg.checkpoint import CheckpointError

USER_ERRORS = (ValueError, FileNotFoundError, FloatingPointError, CheckpointError, KeyError)


class SegCLI(LightningCLI):
    """LightningCLI with the run-directory layout and daily flags of ``seg``."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--dataset", type=str | None, default=None,
                            help="MSD dataset.json or nnU-Net dataset folder (overrides data.dataset)")
        parser.add_argument("--output", type=str, default="runs/default", help="run directory")
        parser.add_argument("--max-epochs", type=int | None, default=None, help="overrides trainer.max_epochs")
        parser.add_argument("--max-minutes", type=float | None, default=None, help="wall-time bound")
        parser.add_argument("--seed", type=int | None, default=None, help="overrides seed_everything")
        parser.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.ckpt")
        parser.add_argument("--check-data", action="store_true", help="check the dataset, print a summary, exit")
        parser.add_argument("--monitor", type=str, default="val/lesion_f1", help="metric choosing best.ckpt")
        parser.add_argument("--monitor-mode", type=str, default="max", help="max or min")
        parser.link_arguments("data.spatial_dims", "model.spatial_dims")
        parser.link_arguments("data.patch_size", "model.roi_size")
        parser.link_arguments("data.in_channels", "model.in_channels", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        """Parse, then fold the daily flags into the config (before LightningCLI seeds and instantiates)."""
        super().parse_arguments(parser, args)
        cfg = self.config
        if cfg.dataset:
            cfg.data.dataset = cfg.dataset
        if cfg.max_epochs is not None:
            cfg.trainer.max_epochs = cfg.max_epochs
        if cfg.max_minutes is not None:
            seconds = int(round(cfg.max_minutes * 60))
            cfg.trainer.max_time = f"00:{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if cfg.seed is not None:
            cfg.seed_everything = cfg.seed

    def before_instantiate_classes(self) -> None:
        cfg = self.config
        from seg.data.check import run_check
        from seg.data.layouts import load_dataset

        spec = load_dataset(cfg.data.dataset)
        code = run_check(spec, spatial_dims=_stored_dims(spec, cfg.data.spatial_dims), quiet=not cfg.check_data)
        if cfg.check_data or code != 0:
            raise SystemExit(code)
        cfg.data.cache_dir = cfg.output

    def instantiate_trainer(self, **kwargs):
        from seg.training import AtomicCheckpointIO, run_callbacks, run_loggers

        run_dir = Path(self.config.output)
        trainer_cfg = self.config_init.trainer
        trainer_cfg.default_root_dir = str(run_dir)
        trainer_cfg.logger = run_loggers(run_dir)
        if not trainer_cfg.plugins:
            trainer_cfg.plugins = [AtomicCheckpointIO()]
        monitor, mode = self.config.monitor, self.config.monitor_mode
        callbacks = run_callbacks(run_dir, monitor, mode, progress_bar=trainer_cfg.enable_progress_bar is not False)
        return self._instantiate_trainer({**trainer_cfg, **kwargs}, callbacks)


def _stored_dims(spec, spatial_dims: int) -> int:
    """Dimensions the images must have: a 2D network trains on 2D images or on slices of 3D volumes."""
    if spatial_dims == 3 or not spec.cases or not spec.cases[0].images[0].is_file():
        return spatial_dims
    import nibabel as nib

    shape = list(nib.load(str(spec.cases[0].images[0])).shape[:3])
    while len(shape) > 2 and shape[-1] == 1:  # (H, W, 1) is a 2D slice
        shape.pop()
    return len(shape)


def _seg_cli(argv: list[str] | None) -> SegCLI:
    from seg.data.datamodule import SegDataModule
    from seg.module import SegModule

    program_argv = sys.argv
    if argv is not None:  # called from Python (seg-compare, the demo): LightningCLI would warn about sys.argv
        sys.argv = sys.argv[:1]
    try:
        return SegCLI(SegModule, SegDataModule, run=False, args=argv, auto_configure_optimizers=False,
                      seed_everything_default=0, save_config_kwargs={"overwrite": True},
                      parser_kwargs={"description": "Train a lesion segmenter (seg)."})
    finally:
        sys.argv = program_argv


def train(argv: list[str] | None = None) -> Path:
    """Parse ``argv``, check the data, train; returns the run directory."""
    from seg.training import fit

    cli = _seg_cli(argv)
    return fit(cli.trainer, cli.model, cli.datamodule, Path(cli.config.output), resume=cli.config.resume)


def _main(function, argv: list[str] | None) -> int:
    try:
        result = function(argv)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0


def train_main(argv: list[str] | None = None) -> int:
    return _main(train, argv)


def infer_main(argv: list[str] | None = None) -> int:
    from seg.predict import main

    return _main(main, argv)


def evaluate_main(argv: list[str] | None = None) -> int:
    from seg.evaluate import main

    return _main(main, argv)


def compare_main(argv: list[str] | None = None) -> int:
    from seg.compare import main

    return _main(main, argv)


def plot_focal_main(argv: list[str] | None = None) -> int:
    from seg.plots import plot_focal_main as main

    return _main(main, argv)

"""The LightningModule: network + loss + validation metrics + optimiser, nothing else.

``SegModule`` trains a 2D or 3D U-Net (:mod:`seg.networks`) with a loss by name (:mod:`seg.losses.factory`)
and α given by hand or derived from the training split's class frequencies (``alpha="auto"``, via
:mod:`seg.losses.alpha`). Validation predicts whole volumes by sliding window and logs Dice, lesion-wise F1 and
every loss term. Everything inference needs is stored in the checkpoint under ``"seg"``
(see :func:`SegModule.inference_spec`), as plain types, so checkpoints load with ``weights_only=True``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytorch_lightning as pl
import torch

from seg.errors import check_option
from seg.evaluation.matching import RULES as MATCHING_RULES
from seg.inference.checkpoint import InferenceSpec
from seg.inference.postprocess import argmax, min_voxels, postprocess
from seg.losses.alpha import METHODS, resolve_alpha
from seg.losses.factory import LOSSES
from seg.networks import (
    NetworkConfig,
    build_network,
    cpu_layout,
    window_network,
)
from seg.training.objective import Objective, check_finite
from seg.training.schedule import SCHEDULES, budget_scheduler
from seg.training.tally import ValidationTally, sliding_window_logits

OPTIMIZERS = ("adamw", "sgd")


class SegModule(pl.LightningModule):
    """Train a lesion segmenter.

    Args:
        network: network name (``dynunet``, ``unet``, ``basicunet``).
        channels: features per U-Net level.
        kernel_sizes, strides: DynUNet's per-level kernels and strides, per axis where the data is anisotropic
            (``seg-plan`` writes them; None: 3 and stride 2 everywhere). See :class:`seg.networks.NetworkConfig`.
        spatial_dims, in_channels, num_classes: linked from the data module by the CLI.
        loss: one of ``focal``, ``dice``, ``focal_dice``, ``ce``, ``dice_ce``.
        gamma: focal γ (ignored by ``ce``/``dice_ce``/``dice``).
        alpha: ``None`` (unweighted), a number, a per-class list, or ``"auto"``: derived from the training
            split's class frequencies with ``alpha_method`` (see :mod:`seg.losses.alpha` for the one α semantics).
        alpha_method: method for ``alpha="auto"`` (see ``seg.alpha.METHODS``).
        lambda_focal, lambda_dice: weights of the compound's terms.
        include_background: whether the Dice term covers class 0.
        batch_dice: Dice over the whole batch as one volume (nnU-Net's ``batch_dice``) instead of per sample.
        focal_normalization: the focal/CE term's divisor: ``"voxels"`` (the mean) or ``"foreground"`` (the
            batch's lesion voxels, floored at 1; RetinaNet's normalisation).
        blob_weight: weight of the blob term (per-lesion loss, every lesion weighs the same;
            :mod:`seg.losses.blob`); 0 is off.
        deep_supervision: DynUNet heads compared with max-pooled targets (nnU-Net weights 1/2^i).
        optimizer: ``adamw`` or ``sgd`` (Nesterov, momentum 0.99, as nnU-Net); schedule: ``poly`` (power 0.9),
            ``cosine`` or ``constant``; per optimiser step.
        roi_size: sliding-window ROI for validation (linked from the data module's patch size).
        sw_batch_size, sw_overlap: sliding-window batch and overlap for validation.
        min_size: postprocessing: predicted components under this many voxels are removed, in validation
            and (stored in the checkpoint) at inference, as nnU-Net's postprocessing step does; ``"auto"``: chosen
            after training on the validation split (:mod:`seg.training.tuning`), stored in mm³.
        min_size_mm3: the same cut in mm³ (spacing-aware: applied on each input's own grid); the larger wins.
        threshold: foreground where ``1 − p_0 > threshold`` (``None``: the argmax); ``"auto"``: chosen on the
            validation split with ``min_size``.
        peak_threshold: hysteresis: components with no voxel of ``1 − p_0 > peak_threshold`` are removed (None: off);
            ``"auto"``: chosen on the validation split with the others.
        keep_largest: keep only the largest foreground component (nnU-Net's "remove all but the largest
            component", for one lesion per case); ``"auto"``: chosen on the validation split with the others.
        lesion_matching: the lesion matching rule of validation and of the ``auto`` choices
            (``msseg``, ``iou`` or ``overlap``; :mod:`seg.evaluation.matching`).
        regions: linked from the data module: overlapping label regions, one sigmoid output each (focal, Dice and
            α per region; ``num_classes`` is then the number of regions); None: softmax over the classes.
    """

    def __init__(
        self,
        network: str = "dynunet",
        channels: Sequence[int] = (16, 32, 64, 128),
        kernel_sizes: list | None = None,
        strides: list | None = None,
        spatial_dims: int = 3,
        in_channels: int = 1,
        num_classes: int = 2,
        loss: str = "focal_dice",
        gamma: float = 2.0,
        alpha: float | list[float] | str | None = "auto",
        alpha_method: str = "inverse_sqrt",
        lambda_focal: float = 1.0,
        lambda_dice: float = 1.0,
        include_background: bool = False,
        batch_dice: bool = False,
        focal_normalization: str = "voxels",
        blob_weight: float = 0.0,
        deep_supervision: bool = False,
        optimizer: str = "adamw",
        lr: float = 3e-3,
        weight_decay: float = 1e-5,
        schedule: str = "poly",
        roi_size: Sequence[int] | None = None,
        sw_batch_size: int = 4,
        sw_overlap: float = 0.25,
        min_size: int | str = 0,
        min_size_mm3: float | None = None,
        threshold: float | str | None = None,
        peak_threshold: float | str | None = None,
        keep_largest: bool | str = False,
        lesion_matching: str = "msseg",
        regions: dict[str, list[int]] | None = None,
    ) -> None:
        super().__init__()
        check_option("loss", loss.lower(), LOSSES)
        check_option("optimizer", optimizer, OPTIMIZERS)
        check_option("schedule", schedule, SCHEDULES)
        if alpha == "auto":  # resolved from the training split's class counts in setup()
            check_option("alpha_method", alpha_method, METHODS)
        check_option("lesion_matching", lesion_matching, MATCHING_RULES)
        for name, value in (("min_size", min_size), ("threshold", threshold), ("peak_threshold", peak_threshold),
                            ("keep_largest", keep_largest)):
            if isinstance(value, str) and value != "auto":
                raise ValueError(f"{name} must be {'true, false' if name == 'keep_largest' else 'a number'} or "
                                 f"'auto', got {value!r}")
        self.save_hyperparameters()
        self.network_config = NetworkConfig(
            name=network, spatial_dims=spatial_dims, in_channels=in_channels, out_channels=num_classes,
            channels=list(channels), deep_supervision=deep_supervision,
            kernel_sizes=None if kernel_sizes is None else list(kernel_sizes),
            strides=None if strides is None else list(strides),
        )
        self.network = build_network(self.network_config)
        self.activation = "sigmoid" if regions else "softmax"
        if regions and "auto" in (min_size, threshold, peak_threshold, keep_largest):
            raise ValueError("min_size/threshold/peak_threshold/keep_largest 'auto' are chosen for softmax outputs "
                             "only; give values with regions")
        if regions and blob_weight > 0:
            raise ValueError("blob_weight works on label maps (softmax), not on region channels")
        self.alpha_values: list[float] | None = None if alpha == "auto" else resolve_alpha(
            alpha, num_classes, activation=self.activation)
        self.class_counts: list[float] | None = None
        self.preprocessing: dict = {}
        self.label_names: dict[int, str] = {}
        self.criterion = self._make_criterion()
        self._tally = ValidationTally(num_classes, matching=lesion_matching, regions=list(regions or []) or None)

    # ----------------------------------------------------------------------------------- set-up
    def _make_criterion(self) -> Objective:
        hp = self.hparams
        return Objective(hp.loss, gamma=hp.gamma, alpha=self.alpha_values, activation=self.activation,
                         include_background=hp.include_background or self.activation == "sigmoid",
                         lambda_focal=hp.lambda_focal, lambda_dice=hp.lambda_dice,
                         batch_dice=hp.get("batch_dice", False),
                         focal_normalization=hp.get("focal_normalization", "voxels"),
                         blob_weight=hp.get("blob_weight", 0.0), deep_supervision=hp.deep_supervision)

    def setup(self, stage: str) -> None:
        if self.trainer.strategy.root_device.type == "cpu":  # before the strategy moves or wraps the network
            cpu_layout(self.network, self.hparams.spatial_dims)
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None:
            return
        self.preprocessing = dict(getattr(datamodule, "preprocessing", {}))
        self.label_names = {int(k): str(v) for k, v in getattr(datamodule, "label_names", {}).items()}
        if self.class_counts is None:
            self.class_counts = np.asarray(datamodule.class_counts(), dtype=np.float64).tolist()
        if self.hparams.alpha == "auto":
            counts = self.class_counts
            if self.hparams.get("regions"):  # each region is its own binary problem: [negatives, positives]
                total = sum(counts)
                counts = [[total - p, p] for p in (sum(counts[c] for c in labels if c < len(counts))
                                                   for labels in self.hparams.regions.values())]
            self.alpha_values = resolve_alpha("auto", self.hparams.num_classes, method=self.hparams.alpha_method,
                                              counts=counts, activation=self.activation)
            self.criterion = self._make_criterion()
        world = self.trainer.world_size
        rank = f"rank {self.trainer.global_rank}/{world}: " if world > 1 else ""
        # one write with its newline (end=""): under DDP the ranks share stdout, and print's separate write of
        # the newline (unbuffered stdout, PYTHONUNBUFFERED) let another rank's line land in between
        print(f"{rank}alpha {self.alpha_values} ({self.hparams.alpha_method if self.hparams.alpha == 'auto' else 'given'})"
              f", training-split class counts {[int(c) for c in self.class_counts]}\n", end="", flush=True)

    def on_fit_start(self) -> None:
        """Under DDP, make sure every rank derived the same α (the split and the counting are deterministic)."""
        if self.trainer.world_size < 2 or self.alpha_values is None:
            return
        mine = torch.tensor(self.alpha_values, dtype=torch.float64, device=self.device)
        gathered = self.all_gather(mine)  # (world, C)
        if not torch.equal(gathered, mine.expand_as(gathered)):
            raise RuntimeError(f"ranks derived different alpha values: {gathered.tolist()}")

    def inference_spec(self) -> InferenceSpec:
        """Everything inference needs (stored in checkpoints as ``InferenceSpec.to_dict()``)."""
        hp = self.hparams
        return InferenceSpec(
            network=self.network_config, activation=self.activation, regions=self.hparams.get("regions"),
            roi_size=list(hp.roi_size) if hp.roi_size else None, preprocessing=self.preprocessing,
            label_names={str(k): v for k, v in self.label_names.items()}, loss=hp.loss, gamma=float(hp.gamma),
            alpha=self.alpha_values, alpha_method=hp.alpha_method if hp.alpha == "auto" else "given",
            class_counts=self.class_counts, postprocessing=self.postprocessing(),
        )

    def postprocessing(self) -> dict:
        """The fixed postprocessing (``"auto"`` settings count as off until :mod:`seg.training.tuning` chose them)."""
        hp = self.hparams
        threshold, peak, largest = hp.get("threshold"), hp.get("peak_threshold"), hp.get("keep_largest", False)
        return {"min_size": 0 if hp.min_size == "auto" else int(hp.min_size), "min_size_mm3": hp.get("min_size_mm3"),
                "threshold": None if threshold == "auto" else threshold, "peak_threshold": None if peak == "auto" else peak,
                "keep_largest": largest is True}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["seg"] = self.inference_spec().to_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        spec = checkpoint.get("seg") or {}
        if spec.get("alpha") is not None:  # resume: the α the run started with, not a recount
            self.alpha_values = list(spec["alpha"])
            self.criterion = self._make_criterion()

    # ----------------------------------------------------------------------------------- training
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.network(image)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        image, label = _plain(batch["image"]), _plain(batch["label"])
        instances = _plain(batch["instance"]) if "instance" in batch else None
        terms = self.criterion.terms(self.network, self.network(image), label, instances)
        check_finite(terms, self.global_step)
        for name, value in terms.items():
            self.log(f"train/{'loss' if name == 'total' else name}", value.detach(), prog_bar=name == "total",
                     on_step=True, on_epoch=True, batch_size=image.shape[0], sync_dist=True)
        return terms["total"]

    # --------------------------------------------------------------------------------- validation
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        image, label = _plain(batch["image"]), _plain(batch["label"])
        roi = list(self.hparams.roi_size) if self.hparams.roi_size else list(image.shape[2:])
        network, roi = window_network(self.network, self.hparams.spatial_dims, image, roi)
        logits = sliding_window_logits(network, image, roi, overlap=self.hparams.sw_overlap,
                                       batch_size=self.hparams.sw_batch_size)
        terms = self.criterion.criterion.terms(logits, label)  # the named loss on the whole volume, no blob term
        for name, value in terms.items():
            self.log(f"val/{'loss' if name == 'total' else name}", value, on_epoch=True, sync_dist=True,
                     batch_size=1)
        post = self.postprocessing()
        spacing = np.linalg.norm(np.asarray(batch["image"].affine[0])[:3, :3], axis=0) \
            if hasattr(batch["image"], "affine") else None
        size = min_voxels(post["min_size"], post["min_size_mm3"], spacing)
        if self.activation == "sigmoid":  # region masks (B, R, *spatial), compared with the region channels
            prediction = postprocess(torch.sigmoid(logits), activation="sigmoid", threshold=post["threshold"],
                                     min_size=size, peak_threshold=post["peak_threshold"],
                                     keep_largest=post["keep_largest"])
            self._tally.update(prediction, label, [int(i) for i in batch["index"]] if "index" in batch else [batch_idx])
            return
        plain = size <= 1 and post["threshold"] is None and post["peak_threshold"] is None and not post["keep_largest"]
        prediction = argmax(logits) if plain else postprocess(
            torch.softmax(logits, 1), threshold=post["threshold"], min_size=size, peak_threshold=post["peak_threshold"],
            keep_largest=post["keep_largest"])
        indices = [int(i) for i in batch["index"]] if "index" in batch else [batch_idx]
        self._tally.update(prediction, label[:, 0].long(), indices)

    def on_validation_epoch_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        self._tally.reset(len(datamodule.val_cases) if datamodule is not None else 0)

    def on_validation_epoch_end(self) -> None:
        totals = self.trainer.strategy.reduce(self._tally.as_tensor(self.device), reduce_op="sum")
        for name, value in self._tally.summarise(totals).items():
            # already summed over ranks above; sync_dist=True then averages identical values (a no-op)
            self.log(f"val/{name}", value, prog_bar=name in ("dice", "lesion_f1"), sync_dist=True)

    # ---------------------------------------------------------------------------------- optimiser
    def configure_optimizers(self):
        hp = self.hparams
        if hp.optimizer == "sgd":
            opt = torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=0.99, nesterov=True,
                                  weight_decay=hp.weight_decay)
        else:
            opt = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.schedule == "constant":
            return opt
        sched = budget_scheduler(opt, hp.schedule, int(self.trainer.estimated_stepping_batches))  # see TimeBudget
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    """MONAI MetaTensor -> plain tensor (metadata is not needed past the data pipeline, and costs time)."""
    return tensor.as_tensor() if hasattr(tensor, "as_tensor") else tensor

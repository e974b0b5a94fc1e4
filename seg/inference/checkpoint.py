"""Checkpoints that load without running code (``weights_only=True`` semantics), and the typed spec they carry.

A Lightning checkpoint written by :class:`seg.training.module.SegModule` holds, besides the weights, a plain-typed
``"seg"`` entry: an :class:`InferenceSpec` (network config, preprocessing, label names, α and its method,
postprocessing) as a dict with a ``version``. :func:`load_checkpoint` reads the file with
``torch.load(weights_only=True)``: a file carrying a pickle payload (any object other than tensors and plain
containers) is refused with :class:`CheckpointError`, and the payload never runs. A spec of another version, or
one missing a field, is refused with a message that says so (never a ``KeyError``).
"""

from __future__ import annotations

import pickle
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seg.errors import CheckpointError
from seg.networks import NetworkConfig, build_network, cpu_layout
from seg.types import PathLike

__all__ = ["SPEC_VERSION", "CheckpointError", "InferenceSpec", "load_checkpoint", "load_for_inference"]

SPEC_VERSION = 2  # 1: the same fields without "version" (seg before the package layout), read as is


@dataclass
class InferenceSpec:
    """Everything inference needs from a training run, in plain types.

    Attributes:
        network: the network's :class:`seg.networks.NetworkConfig` (deep supervision off for inference).
        roi_size: sliding-window ROI (the training patch), or ``None`` for whole images.
        preprocessing: ``seg.data.transforms.Preprocessing.to_dict()``.
        label_names: {"0": "background", ...}.
        activation: ``"softmax"`` (one class per voxel) or ``"sigmoid"`` (independent channels).
        loss, gamma, alpha, alpha_method, class_counts: how the network was trained (α as used, per class).
        postprocessing: ``{"min_size": voxels, "min_size_mm3", "threshold", "peak_threshold", "keep_largest"}``, the
            defaults of ``seg-infer`` (absent keys: off).
        regions: with ``activation="sigmoid"``, the label regions of the outputs ({name: labels}), written back as a
            label map by :func:`seg.inference.postprocess.regions_to_labels`; None: softmax over the classes.
        version: :data:`SPEC_VERSION` of the writer.
    """

    network: NetworkConfig
    roi_size: list[int] | None
    preprocessing: dict[str, Any]
    label_names: dict[str, str]
    activation: str = "softmax"
    loss: str = "focal_dice"
    gamma: float = 2.0
    alpha: list[float] | None = None
    alpha_method: str = "given"
    class_counts: list[float] | None = None
    postprocessing: dict[str, Any] = field(default_factory=dict)
    regions: dict[str, list[int]] | None = None
    version: int = SPEC_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (what ``torch.load(weights_only=True)`` reads back)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Any, where: PathLike) -> InferenceSpec:
        """Read a stored spec; ``where`` (the checkpoint's path) goes into every error message."""
        if not isinstance(values, dict) or "network" not in values:
            raise CheckpointError(f"checkpoint '{where}' was not written by seg's SegModule (no 'seg' entry)")
        version = values.get("version", 1)
        if version not in (1, SPEC_VERSION):
            raise CheckpointError(f"checkpoint '{where}' has spec version {version!r}; this seg reads versions 1 and "
                                  f"{SPEC_VERSION}: predict with the seg version that trained it, or retrain")
        names = {f.name for f in fields(cls)}
        required = {"network", "roi_size", "preprocessing", "label_names"}  # the fields without a default
        missing = sorted(required - set(values))
        unknown = sorted(set(values) - names)
        if missing or unknown:
            raise CheckpointError(f"checkpoint '{where}': its 'seg' spec (version {version}) lacks {missing} and has "
                                  f"unknown fields {unknown}; it was written by another version of seg")
        network = values["network"]
        try:
            config = NetworkConfig(**network)
        except TypeError as error:
            raise CheckpointError(f"checkpoint '{where}': its network config {network!r} is not one this seg can "
                                  f"build ({error})") from None
        return cls(**{**values, "network": config, "version": SPEC_VERSION})


def load_checkpoint(path: PathLike) -> dict:
    """Load a checkpoint dictionary with ``weights_only=True``; never executes code from the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint '{path}' does not exist" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"refused to load checkpoint '{path}': it holds objects other than tensors and plain types, and "
            f"loading them could run code from the file (weights_only=True refused: {first_line})"
        ) from None
    except (RuntimeError, EOFError, OSError, IndexError, ValueError, KeyError, TypeError) as error:
        # a text or truncated file fails deep inside torch's readers (e.g. "IndexError: pop from empty list")
        raise CheckpointError(f"checkpoint '{path}' is unreadable or not a PyTorch checkpoint "
                              f"({type(error).__name__}: {error})") from None


def load_for_inference(path: PathLike) -> tuple[nn.Module, InferenceSpec]:
    """Rebuild the trained network (eval mode, on the CPU) and return it with the checkpoint's spec."""
    checkpoint = load_checkpoint(path)
    spec = InferenceSpec.from_dict(checkpoint.get("seg") if isinstance(checkpoint, dict) else None, path)
    spec.network.deep_supervision = False
    network = build_network(spec.network)
    prefix = "network."
    state = {k[len(prefix):]: v for k, v in checkpoint.get("state_dict", {}).items() if k.startswith(prefix)}
    state = {k: v for k, v in state.items() if not k.startswith("deep_supervision_heads.")}
    missing, unexpected = network.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"checkpoint '{path}' does not match its network config: "
                              f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    return cpu_layout(network, spec.network.spatial_dims).eval(), spec

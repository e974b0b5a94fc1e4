"""Checkpoints that load without running code (``weights_only=True`` semantics).

A Lightning checkpoint written by :class:`seg.module.SegModule` holds, besides the weights, a plain-typed
``"seg"`` entry: network config, preprocessing, label names, α and its method. :func:`load_checkpoint`
reads it with ``torch.load(weights_only=True)``: a file carrying a pickle payload (any object other than
tensors and plain containers) is refused with :class:`CheckpointError`, and the payload never runs.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from seg._types import PathLike
from seg.networks import NetworkConfig, build_network, cpu_layout


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unsafe, unreadable, or not written by seg."""


def load_checkpoint(path: PathLike) -> dict:
    """Load a checkpoint dictionary with ``weights_only=True``; never executes code from the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint '{path}' does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"refused to load checkpoint '{path}': it holds objects other than tensors and plain types, and "
            f"loading them could run code from the file (weights_only=True refused: {first_line})"
        ) from None
    except (RuntimeError, EOFError, OSError) as error:
        raise CheckpointError(f"checkpoint '{path}' is unreadable or corrupt: {error}") from None


def load_for_inference(path: PathLike) -> tuple[nn.Module, dict]:
    """Rebuild the trained network (eval mode) and return it with the checkpoint's ``"seg"`` spec."""
    checkpoint = load_checkpoint(path)
    spec = checkpoint.get("seg")
    if not isinstance(spec, dict) or "network" not in spec:
        raise CheckpointError(f"checkpoint '{path}' was not written by seg.module.SegModule (no 'seg' entry)")
    config = NetworkConfig(**{**spec["network"], "deep_supervision": False})
    network = build_network(config)
    prefix = "network."
    state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    state = {k: v for k, v in state.items() if not k.startswith("deep_supervision_heads.")}
    missing, unexpected = network.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"checkpoint '{path}' does not match its network config: "
                              f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    return cpu_layout(network, config.spatial_dims).eval(), spec  # loaded on the CPU

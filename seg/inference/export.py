"""``seg-export``: a trained model out of Python training code: TorchScript and ONNX beside a plain JSON spec.

    seg-export --checkpoint RUN/best.ckpt [B.ckpt ...] --output model/

writes ``model/network.pt`` (TorchScript, traced on one window of the training ROI and frozen), ``model/network.onnx``
(ONNX opset 17, batch of windows dynamic, where the network exports and the ``onnx`` package is installed) and
``model/spec.json`` (the :class:`~seg.inference.checkpoint.InferenceSpec`: preprocessing, labels, postprocessing;
no weights). ``seg-infer --model model/`` predicts from it without Lightning or the training code: through ONNX
Runtime when it and ``network.onnx`` are there, else through TorchScript. Several checkpoints export their ensemble.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from seg.errors import CheckpointError
from seg.files import atomic_path, write_json
from seg.inference.checkpoint import InferenceSpec
from seg.inference.predictor import load_models
from seg.types import PathLike

SPEC_FILE, TORCHSCRIPT_FILE, ONNX_FILE = "spec.json", "network.pt", "network.onnx"


def _example(spec: InferenceSpec) -> torch.Tensor:
    """One window ``(1, C, *roi)`` of the training patch (2D networks take 2D windows)."""
    roi = spec.roi_size or [32] * spec.network.spatial_dims
    return torch.randn(1, spec.network.in_channels, *roi[: spec.network.spatial_dims])


def export_model(checkpoints: list[PathLike], output: PathLike) -> dict[str, str]:
    """Export the checkpoint(s) into ``output``; returns {format: file name} of what was written."""
    network, spec = load_models(checkpoints)
    output = Path(output)
    example = _example(spec)
    written = {}
    with torch.inference_mode(False), torch.no_grad():
        traced = torch.jit.freeze(torch.jit.trace(network.eval(), example, check_trace=False))
        with atomic_path(output / TORCHSCRIPT_FILE) as tmp:
            torch.jit.save(traced, str(tmp))
        written["torchscript"] = TORCHSCRIPT_FILE
        try:
            with atomic_path(output / ONNX_FILE) as tmp:
                torch.onnx.export(network, (example,), str(tmp), dynamo=False, opset_version=17,
                                  input_names=["windows"], output_names=["logits"],
                                  dynamic_axes={"windows": {0: "n"}, "logits": {0: "n"}})
            written["onnx"] = ONNX_FILE
        except (ImportError, ModuleNotFoundError, RuntimeError) as error:  # no onnx package, or an op that won't go
            print(f"ONNX export skipped: {type(error).__name__}: {error}")
    write_json(output / SPEC_FILE, {**spec.to_dict(), "exported": written})
    return written


class OnnxNetwork(nn.Module):
    """An ONNX Runtime session behind the network interface: windows ``(n, C, *roi)`` -> logits (CPU float32)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        import onnxruntime  # optional dependency (seg[onnx]): only here

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (logits,) = self.session.run(None, {"windows": x.detach().cpu().float().contiguous().numpy()})
        return torch.from_numpy(np.asarray(logits)).to(x.device)


def load_export(folder: PathLike, *, engine: str = "auto") -> tuple[nn.Module, InferenceSpec]:
    """The exported network (ONNX Runtime if ``engine`` is auto/onnx and available, else TorchScript) and its spec."""
    folder = Path(folder)
    spec_path = folder / SPEC_FILE
    if not spec_path.is_file():
        raise FileNotFoundError(f"'{folder}' is not a seg-export folder: no {SPEC_FILE}")
    record = json.loads(spec_path.read_text())
    exported = record.pop("exported", {})
    spec = InferenceSpec.from_dict(record, spec_path)
    if engine in ("auto", "onnx") and "onnx" in exported:
        try:
            return OnnxNetwork(folder / exported["onnx"]).eval(), spec
        except ImportError:
            if engine == "onnx":
                raise
    if "torchscript" not in exported:
        raise CheckpointError(f"'{folder}' holds no TorchScript network and ONNX Runtime is not installed")
    return torch.jit.load(str(folder / exported["torchscript"]), map_location="cpu").eval(), spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seg-export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, nargs="+", type=Path, help="checkpoint(s) or run folders")
    parser.add_argument("--output", required=True, type=Path, help="export folder")
    args = parser.parse_args(argv)
    written = export_model(args.checkpoint, args.output)
    print(f"exported {', '.join(f'{k} ({v})' for k, v in written.items())} and {SPEC_FILE} to {args.output}")
    return 0

"""``seg-export``: a trained model out of Python training code: TorchScript and ONNX beside a plain JSON spec.

    seg-export --checkpoint RUN/best.ckpt [B.ckpt ...] --output model/

writes ``model/network.pt`` (TorchScript, traced on one window of the training ROI and frozen), ``model/network.onnx``
(ONNX opset 17, batch of windows dynamic, where the network exports and the ``onnx`` package is installed),
``model/network.xml`` + ``.bin`` (OpenVINO IR, float32, where ``openvino`` is installed) and ``model/spec.json``
(the :class:`~seg.inference.checkpoint.InferenceSpec`: preprocessing, labels, postprocessing; no weights).
``seg-infer --model model/`` predicts from it without Lightning or the training code: ``--engine auto`` takes
OpenVINO (``seg[openvino]``; the fastest on a CPU at equal probabilities), else ONNX Runtime (``seg[onnx]``), else
TorchScript. Several checkpoints export their ensemble.

Instance norms go into the exports as explicit means, one axis at a time, each a sum times ``1 / n``: ONNX Runtime's
``InstanceNormalization`` sums a whole 96^3 window at once, and a near-constant channel (a background window) magnifies
that rounding into probabilities 2e-4 away from torch's; axis by axis they agree within ~2e-6 (``_exportable``;
tested). OpenVINO runs at float32 (``INFERENCE_PRECISION_HINT f32``: no silent bf16 on CPUs that have it) from an IR
of the same explicit norms. Its own fused norm (MVN) and a chain of ``ReduceMean`` (which it merges into one reduction
over the whole window) both sum the squares of a channel in one float32 pass: probabilities 1e-3 away from torch's on
a BraTS window. The sums times ``1 / n`` stay three reductions, and its probabilities are torch's within ~2e-6.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from seg.errors import CheckpointError
from seg.files import atomic_path, write_json
from seg.inference.checkpoint import InferenceSpec
from seg.inference.predictor import load_models
from seg.types import PathLike

SPEC_FILE, TORCHSCRIPT_FILE, ONNX_FILE, OPENVINO_FILE = "spec.json", "network.pt", "network.onnx", "network.xml"


def _example(spec: InferenceSpec) -> torch.Tensor:
    """One window ``(1, C, *roi)`` of the training patch (2D networks take 2D windows)."""
    roi = spec.roi_size or [32] * spec.network.spatial_dims
    return torch.randn(1, spec.network.in_channels, *roi[: spec.network.spatial_dims])


class _InstanceNorm(nn.Module):
    """``nn.InstanceNorm{1,2,3}d`` (instance statistics) as means taken one axis at a time, for an accurate export
    (sums times ``1 / n``: OpenVINO merges consecutive ``ReduceMean`` into one inaccurate reduction, not sums)."""

    def __init__(self, norm: nn.modules.instancenorm._InstanceNorm) -> None:
        super().__init__()
        self.eps, self.weight, self.bias = norm.eps, norm.weight, norm.bias

    @staticmethod
    def _mean(x: torch.Tensor) -> torch.Tensor:
        for axis in range(x.dim() - 1, 1, -1):
            x = x.sum(axis, keepdim=True) * (1.0 / x.shape[axis])
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - self._mean(x)
        y = centred * torch.rsqrt(self._mean(centred * centred) + self.eps)
        if self.weight is None:
            return y
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return y * self.weight.view(shape) + self.bias.view(shape)


def _exportable(network: nn.Module) -> nn.Module:
    """A copy of ``network`` whose instance norms (those that normalise by instance statistics) are ``_InstanceNorm``."""
    network = copy.deepcopy(network)
    for module in list(network.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.modules.instancenorm._InstanceNorm) and not child.track_running_stats:
                setattr(module, name, _InstanceNorm(child))
    return network


def export_onnx(network: nn.Module, example: torch.Tensor, path: PathLike, *, exact_norms: bool = True) -> None:
    """``network`` as ONNX (opset 17, the batch of windows dynamic, instance norms ``_exportable`` unless not
    ``exact_norms``), atomically."""
    module = _exportable(network) if exact_norms else network
    with atomic_path(path) as tmp, torch.no_grad():
        torch.onnx.export(module, (example,), str(tmp), dynamo=False, opset_version=17, input_names=["windows"],
                          output_names=["logits"], dynamic_axes={"windows": {0: "n"}, "logits": {0: "n"}})


def export_openvino(network: nn.Module, example: torch.Tensor, path: PathLike) -> None:
    """``network`` as OpenVINO IR (``path`` .xml beside its .bin, float32 weights), converted from the ONNX export
    with its explicit instance norms. The .xml is renamed into place last."""
    import openvino  # optional dependency (seg[openvino]): only here

    path = Path(path)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".openvino-") as name:
        export_onnx(network, example, Path(name) / "network.onnx")
        openvino.save_model(openvino.convert_model(str(Path(name) / "network.onnx")), str(Path(name) / path.name),
                            compress_to_fp16=False)
        os.replace(Path(name) / path.with_suffix(".bin").name, path.with_suffix(".bin"))
        os.replace(Path(name) / path.name, path)


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
            export_onnx(network, example, output / ONNX_FILE)
            written["onnx"] = ONNX_FILE
        except (ImportError, ModuleNotFoundError, RuntimeError) as error:  # no onnx package, or an op that won't go
            print(f"ONNX export skipped: {type(error).__name__}: {error}")
        try:
            export_openvino(network, example, output / OPENVINO_FILE)
            written["openvino"] = OPENVINO_FILE
        except (ImportError, ModuleNotFoundError, RuntimeError) as error:  # no openvino package
            print(f"OpenVINO export skipped: {type(error).__name__}: {error}")
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


class OpenVinoNetwork(nn.Module):
    """An OpenVINO IR (.xml) or ONNX file compiled for the CPU (float32, torch's thread count): windows -> logits.

    The IR's batch of windows is dynamic; each batch shape met is compiled as a static model (OpenVINO plans a static
    shape's memory and kernels once: ~25 % faster a window on a 96^3 UNet than the dynamic batch). A sliding window
    meets two shapes (its batch and the last, shorter one), which stay compiled; the oldest past ``cached`` goes.
    ``seg-infer`` calls it on one window at a time (``preferred_batch_size``): as fast as two on 2 CPU threads, and a
    BraTS volume's labels peak at 335-355 MB instead of 407-447 MB (``benchmarks/inference.py``).
    """

    preferred_batch_size = 1

    def __init__(self, path: Path, cached: int = 2) -> None:
        super().__init__()
        import openvino  # optional dependency (seg[openvino]): only here

        self.core = openvino.Core()
        self.model = self.core.read_model(str(path))
        self.config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": torch.get_num_threads(),
                       "PERFORMANCE_HINT": "LATENCY"}
        self.cached = cached
        self.compiled: OrderedDict[tuple[int, ...], Any] = OrderedDict()

    def _compiled(self, shape: tuple[int, ...]) -> Any:
        if shape in self.compiled:
            self.compiled.move_to_end(shape)
        else:
            model = self.model.clone()
            model.reshape(list(shape))
            self.compiled[shape] = self.core.compile_model(model, "CPU", self.config)
            while len(self.compiled) > self.cached:
                self.compiled.popitem(last=False)
        return self.compiled[shape]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        windows = x.detach().cpu().float().contiguous().numpy()
        logits = self._compiled(windows.shape)(windows)[0]
        return torch.from_numpy(np.asarray(logits)).to(x.device)


ENGINES = {"openvino": OpenVinoNetwork, "onnx": OnnxNetwork}  # the ONNX engines, in auto's order


def load_export(folder: PathLike, *, engine: str = "auto") -> tuple[nn.Module, InferenceSpec]:
    """The exported network and its spec: ``engine`` auto takes the first installed of OpenVINO and ONNX Runtime
    (when the export holds ONNX), else TorchScript; ``openvino``, ``onnx`` or ``torchscript`` asks for one."""
    folder = Path(folder)
    spec_path = folder / SPEC_FILE
    if not spec_path.is_file():
        raise FileNotFoundError(f"'{folder}' is not a seg-export folder: no {SPEC_FILE}")
    record = json.loads(spec_path.read_text())
    exported = record.pop("exported", {})
    spec = InferenceSpec.from_dict(record, spec_path)
    files = {"onnx": exported.get("onnx"), "openvino": exported.get("openvino", exported.get("onnx"))}
    if engine != "torchscript":
        for name, runtime in ENGINES.items():
            if engine in ("auto", name) and files[name]:
                try:
                    return runtime(folder / files[name]).eval(), spec
                except ImportError:
                    if engine == name:
                        raise
        if engine in ENGINES:
            raise CheckpointError(f"'{folder}' holds no network for engine {engine!r}")
    if "torchscript" not in exported:
        raise CheckpointError(f"'{folder}' holds no TorchScript network and no ONNX engine is installed")
    return torch.jit.load(str(folder / exported["torchscript"]), map_location="cpu").eval(), spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seg-export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, nargs="+", type=Path, help="checkpoint(s) or run folders")
    parser.add_argument("--output", required=True, type=Path, help="export folder")
    args = parser.parse_args(argv)
    written = export_model(args.checkpoint, args.output)
    print(f"exported {', '.join(f'{k} ({v})' for k, v in written.items())} and {SPEC_FILE} to {args.output}")
    return 0

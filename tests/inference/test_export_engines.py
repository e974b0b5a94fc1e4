"""The ONNX export is accurate where ONNX Runtime's own instance norm and OpenVINO's fused one are not: against torch
in float64 on a window like a scan's background (near-constant channels), both engines are as close as torch's float32."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.networks.nets import UNet

from seg.inference.export import OnnxNetwork, OpenVinoNetwork, _exportable, export_onnx, export_openvino

ROI = (64, 64, 64)


def _network() -> torch.nn.Module:
    torch.manual_seed(0)
    return UNet(spatial_dims=3, in_channels=2, out_channels=2, channels=(8, 16, 32), strides=(2, 2),
                num_res_units=2, norm="instance").eval()


def _background_window() -> torch.Tensor:
    """A background window as in a z-scored scan (-3.6 everywhere) with one small bright blob at an edge."""
    window = torch.full((2, 2, *ROI), -3.6)
    window[0, :, 50:60, 50:60, 50:60] = 1.5
    window[1] = torch.randn(2, *ROI, generator=torch.Generator().manual_seed(1))
    return window


def _reference(network: torch.nn.Module, window: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(network.double()(window.double()), 1).float()


def test_exportable_instance_norm_is_instance_norm() -> None:
    network = _network()
    exportable = _exportable(network)
    assert not any(isinstance(m, torch.nn.InstanceNorm3d) for m in exportable.modules())
    assert any(isinstance(m, torch.nn.InstanceNorm3d) for m in network.modules())  # the original is untouched
    window = torch.randn(2, 2, *ROI, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(exportable.double()(window), network.double()(window), atol=1e-12, rtol=0)


def _within_torch_float32(network: torch.nn.Module, engine: torch.nn.Module, window: torch.Tensor) -> None:
    with torch.no_grad():
        probabilities = torch.softmax(engine(window), 1)
        eager = torch.softmax(network(window), 1)
    reference = _reference(network, window)
    # torch's float32 is the bar: the export must be as close to float64 as torch is, within a float32 margin
    bar = float((eager - reference).abs().max())
    assert float((probabilities - reference).abs().max()) <= max(4 * bar, 1e-5)


def test_onnx_runtime_runs_the_export_at_float_rounding(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    network, window = _network(), _background_window()
    export_onnx(network, window[:1], tmp_path / "network.onnx")
    _within_torch_float32(network, OnnxNetwork(tmp_path / "network.onnx"), window)


def test_openvino_runs_the_export_at_float_rounding(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    network, window = _network(), _background_window()
    export_openvino(network, window[:1], tmp_path / "network.xml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["network.bin", "network.xml"]  # no temporary left
    _within_torch_float32(network, OpenVinoNetwork(tmp_path / "network.xml"), window)


def test_openvino_merged_means_are_what_the_sums_avoid(tmp_path: Path) -> None:
    """The reason for the sums: the same norms as chained means (OpenVINO merges them into one reduction) miss."""
    openvino = pytest.importorskip("openvino")
    pytest.importorskip("onnx")
    network, window = _network(), _background_window()
    module = _exportable(network)

    def chained_means(x: torch.Tensor) -> torch.Tensor:
        for axis in range(x.dim() - 1, 1, -1):
            x = x.mean(axis, keepdim=True)
        return x

    for norm in module.modules():
        if hasattr(norm, "_mean"):
            norm._mean = chained_means
    torch.onnx.export(module, (window[:1],), str(tmp_path / "chained.onnx"), dynamo=False, opset_version=17,
                      input_names=["windows"], output_names=["logits"], dynamic_axes={"windows": {0: "n"}})
    openvino.save_model(openvino.convert_model(str(tmp_path / "chained.onnx")), str(tmp_path / "chained.xml"),
                        compress_to_fp16=False)
    with torch.no_grad():
        eager = torch.softmax(network(window), 1)
        chained = torch.softmax(OpenVinoNetwork(tmp_path / "chained.xml")(window), 1)
    reference = _reference(network, window)
    assert float((chained - reference).abs().max()) > 10 * float((eager - reference).abs().max())


def test_openvino_compiles_each_batch_shape_static_and_keeps_the_last_two(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    network, window = _network(), _background_window()
    export_openvino(network, window[:1], tmp_path / "network.xml")
    engine = OpenVinoNetwork(tmp_path / "network.xml")
    three = torch.cat([window, window[:1]])
    with torch.no_grad():
        pair, single = engine(window), engine(window[:1])
        engine(window)  # compiled already: moves to the end of the cache
        triple = engine(three)
        eager = network(three)
    shapes = [shape[0] for shape in engine.compiled]
    assert shapes == [2, 3]  # batch 1, the least recently used, went
    assert all(not compiled.input(0).get_partial_shape().is_dynamic for compiled in engine.compiled.values())
    # the same window gives the same logits in every compiled batch shape, and torch's within float32 rounding
    torch.testing.assert_close(single[0], pair[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(triple[:2], pair, atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.softmax(triple, 1), torch.softmax(eager, 1), atol=1e-4, rtol=0)

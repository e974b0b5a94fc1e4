"""The ONNX export is accurate where ONNX Runtime's own instance norm is not, and OpenVINO runs it within its stated
tolerance from its IR: against torch in float64 on a window like a scan's background (near-constant channels)."""

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


def test_onnx_runtime_runs_the_export_at_float_rounding(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    network, window = _network(), _background_window()
    export_onnx(network, window[:1], tmp_path / "network.onnx")
    with torch.no_grad():
        probabilities = torch.softmax(OnnxNetwork(tmp_path / "network.onnx")(window), 1)
        eager = torch.softmax(network(window), 1)
    reference = _reference(network, window)
    # torch's float32 is the bar: the export must be as close to float64 as torch is, within a float32 margin
    bar = float((eager - reference).abs().max())
    assert float((probabilities - reference).abs().max()) <= max(4 * bar, 1e-5)


def test_openvino_runs_the_export_within_its_stated_tolerance(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    network, window = _network(), _background_window()
    export_openvino(network, window[:1], tmp_path / "network.xml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["network.bin", "network.xml"]  # no temporary left
    with torch.no_grad():
        probabilities = torch.softmax(OpenVinoNetwork(tmp_path / "network.xml")(window), 1)
    reference = _reference(network, window)
    assert float((probabilities - reference).abs().max()) <= 5e-3  # the module docstring's ~1e-3, with margin
    assert float((probabilities.argmax(1) == reference.argmax(1)).float().mean()) >= 0.999

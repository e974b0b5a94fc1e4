"""The compiled window network: fixed batches, equal outputs to the eager network, fallback to eager."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import UNet
from torch import nn

from seg.cli import infer_main
from seg.inference.compiled import FixedBatch, compile_for_windows
from seg.inference.predict import predict_files
from seg.inference.sliding_window import predict_volume
from seg.io import read_image, read_label


class Recorder(nn.Module):
    """Doubles its input and records the batch sizes it was called with."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(x.shape[0])
        return 2 * x


def test_partial_batches_are_padded_and_the_padding_dropped() -> None:
    recorder = Recorder()
    fixed = FixedBatch(recorder, 4)
    x = torch.randn(6, 2, 5, 5)
    out = fixed(x)
    assert torch.equal(out, 2 * x)  # (6, 2, 5, 5): the padded windows' outputs are gone
    assert recorder.sizes == [4, 4]  # 4 + (2 padded to 4): the network only ever sees batches of 4
    assert torch.equal(fixed(x[:1]), 2 * x[:1]) and recorder.sizes[-1] == 4


def test_a_failing_compiled_network_falls_back_to_eager_once() -> None:
    class Broken(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("no C++ compiler")

    recorder = Recorder()
    fixed = FixedBatch(Broken(), 2, fallback=recorder)
    with pytest.warns(RuntimeWarning, match="no C.. compiler"):
        out = fixed(torch.ones(2, 1, 3))
    assert torch.equal(out, 2 * torch.ones(2, 1, 3)) and fixed.network is recorder


def test_compiled_unet_predicts_what_monai_predicts() -> None:
    # a MONAI UNet with instance norms and PReLUs (what Inductor fuses), MONAI's own sliding window as the reference;
    # 7 windows in batches of 3: the last batch is partial, so FixedBatch pads it and no shape recompiles
    torch.manual_seed(0)
    net = UNet(spatial_dims=2, in_channels=2, out_channels=3, channels=(4, 8), strides=(2,), num_res_units=1).eval()
    image = torch.randn(1, 2, 40, 28)
    with torch.no_grad():
        reference = torch.softmax(sliding_window_inference(image, (16, 16), 3, net, overlap=0.5, mode="gaussian"), 1)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = compile_for_windows(net, 3)
    with torch.inference_mode():
        result = predict_volume(compiled, image, (16, 16), overlap=0.5, batch_size=3, crop=False)
    assert result.shape == reference.shape
    assert (result - reference).abs().max().item() < 1e-4
    assert compiled.network is not compiled.fallback  # compiled, not fallen back to eager
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1  # one graph for full and partial batches


def test_seg_infer_compile_writes_the_eager_masks(trained, tmp_path) -> None:
    # the tiny trained 3D checkpoint over the two test cases: --compile compiles once (first case) and writes the
    # masks the eager network writes (probabilities within 1e-4, so the same labels)
    checkpoint, dataset = trained
    assert infer_main(["--checkpoint", str(checkpoint), "--input", str(dataset), "--output", str(tmp_path / "eager"),
                       "--probabilities"]) == 0
    assert infer_main(["--checkpoint", str(checkpoint), "--input", str(dataset), "--output", str(tmp_path / "comp"),
                       "--probabilities", "--compile"]) == 0
    eager = sorted((tmp_path / "eager").glob("*.nii.gz"))
    assert len(eager) == 2
    for path in eager:
        np.testing.assert_array_equal(read_label(path).array, read_label(tmp_path / "comp" / path.name).array)
        p, q = (read_image(folder / "probabilities" / path.name, allow_4d=True).array for folder in (tmp_path / "eager", tmp_path / "comp"))
        assert np.abs(p - q).max() < 1e-4


def test_compile_refuses_an_export(tmp_path) -> None:
    with pytest.raises(ValueError, match="--compile"):
        predict_files(None, tmp_path, tmp_path / "out", model=tmp_path, compile=True)

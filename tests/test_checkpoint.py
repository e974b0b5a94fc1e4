"""Checkpoints load with weights_only semantics: a pickle payload is refused and never runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seg.checkpoint import CheckpointError, load_checkpoint, load_for_inference
from seg.networks import NetworkConfig, build_network


class _Payload:
    """Unpickling this object would create a marker file (stands in for arbitrary code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_payload_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "payload_ran"
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "seg": {"network": {}}, "hook": _Payload(marker)}, ckpt)
    with pytest.raises(CheckpointError, match="refused to load checkpoint .*evil.ckpt"):
        load_checkpoint(ckpt)
    assert not marker.exists()
    # the unsafe loader would have run it: proves the test's payload is real
    torch.load(ckpt, weights_only=False)
    assert marker.exists()


def test_network_round_trips_through_a_plain_checkpoint(tmp_path: Path) -> None:
    config = NetworkConfig(spatial_dims=2, in_channels=1, out_channels=2, channels=[4, 8, 16])
    network = build_network(config).eval()
    state = {f"network.{k}": v for k, v in network.state_dict().items()}
    torch.save({"state_dict": state, "seg": {"network": config.to_dict()}}, tmp_path / "ok.ckpt")
    rebuilt, spec = load_for_inference(tmp_path / "ok.ckpt")
    x = torch.randn(1, 1, 16, 16)
    torch.testing.assert_close(rebuilt(x), network(x))
    assert spec["network"]["out_channels"] == 2
    convs = [p for p in rebuilt.parameters() if p.dim() == 4]  # 2D keeps contiguous weights (cpu_layout)
    assert all(p.is_contiguous() for p in convs)


def test_checkpoint_without_seg_entry_is_rejected(tmp_path: Path) -> None:
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="not written by seg"):
        load_for_inference(tmp_path / "other.ckpt")

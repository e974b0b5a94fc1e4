"""Checkpoints load with weights_only semantics: a pickle payload is refused and never runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seg.inference.checkpoint import (
    SPEC_VERSION,
    CheckpointError,
    InferenceSpec,
    load_checkpoint,
    load_for_inference,
)
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


def _spec(config: NetworkConfig) -> InferenceSpec:
    return InferenceSpec(network=config, roi_size=[16, 16], preprocessing={"spatial_dims": 2},
                         label_names={"0": "background", "1": "lesion"}, alpha=[0.1, 0.9],
                         postprocessing={"min_size": 3})


def test_network_round_trips_through_a_plain_checkpoint(tmp_path: Path) -> None:
    config = NetworkConfig(spatial_dims=2, in_channels=1, out_channels=2, channels=[4, 8, 16])
    network = build_network(config).eval()
    state = {f"network.{k}": v for k, v in network.state_dict().items()}
    torch.save({"state_dict": state, "seg": _spec(config).to_dict()}, tmp_path / "ok.ckpt")
    rebuilt, spec = load_for_inference(tmp_path / "ok.ckpt")
    x = torch.randn(1, 1, 16, 16)
    torch.testing.assert_close(rebuilt(x), network(x))
    assert spec == _spec(config)  # every field back, typed (NetworkConfig, not a dict)
    assert spec.network.out_channels == 2 and spec.version == SPEC_VERSION
    convs = [p for p in rebuilt.parameters() if p.dim() == 4]  # 2D keeps contiguous weights (cpu_layout)
    assert all(p.is_contiguous() for p in convs)


def test_checkpoint_without_seg_entry_is_rejected(tmp_path: Path) -> None:
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="not written by seg"):
        load_for_inference(tmp_path / "other.ckpt")


def _saved(tmp_path: Path, seg_entry: dict) -> Path:
    path = tmp_path / "spec.ckpt"
    torch.save({"state_dict": {}, "seg": seg_entry}, path)
    return path


def test_spec_of_another_version_or_with_missing_fields_is_refused_clearly(tmp_path: Path) -> None:
    stored = _spec(NetworkConfig(spatial_dims=2, channels=[4, 8, 16])).to_dict()
    with pytest.raises(CheckpointError, match="spec version 99.*reads versions 1 and 2"):
        load_for_inference(_saved(tmp_path, {**stored, "version": 99}))
    without = {k: v for k, v in stored.items() if k != "preprocessing"}
    with pytest.raises(CheckpointError, match=r"lacks \['preprocessing'\]"):
        load_for_inference(_saved(tmp_path, without))
    with pytest.raises(CheckpointError, match="network config .* is not one this seg can build"):
        load_for_inference(_saved(tmp_path, {**stored, "network": {"name": "dynunet", "depth": 3}}))


def test_version_one_spec_without_a_version_field_still_reads(tmp_path: Path) -> None:
    config = NetworkConfig(spatial_dims=2, channels=[4, 8, 16])
    network = build_network(config)
    stored = {k: v for k, v in _spec(config).to_dict().items() if k != "version"}  # as written before version 2
    path = tmp_path / "v1.ckpt"
    torch.save({"state_dict": {f"network.{k}": v for k, v in network.state_dict().items()}, "seg": stored}, path)
    _, spec = load_for_inference(path)
    assert spec.version == SPEC_VERSION and spec.alpha == [0.1, 0.9]


def test_text_file_given_as_a_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    text = tmp_path / "notes.ckpt"
    text.write_text("this is not a checkpoint\n")
    with pytest.raises(CheckpointError, match="notes.ckpt' is unreadable or not a PyTorch checkpoint"):
        load_checkpoint(text)
    with pytest.raises(FileNotFoundError, match="is a folder"):
        load_checkpoint(tmp_path)

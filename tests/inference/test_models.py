"""Prediction models: labels-only path = probability path without resampling, ensembles average logits and refuse
mismatches by file, exports predict what their checkpoint predicts (ONNX Runtime within 1e-4 of torch)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from seg.cli import export_main, infer_main
from seg.errors import CheckpointError
from seg.inference.checkpoint import load_checkpoint, load_for_inference
from seg.inference.export import OnnxNetwork, OpenVinoNetwork, load_export
from seg.inference.predict import lightning_device, predict_files
from seg.inference.predictor import CasePredictor, Ensemble, Settings, load_models


def _masks(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(nib.load(p).dataobj) for p in sorted(folder.glob("*.nii.gz"))}


def test_labels_only_path_equals_the_probability_path(trained, tmp_path: Path) -> None:
    checkpoint, dataset = trained
    assert predict_files(checkpoint, dataset, tmp_path / "labels") == []
    assert predict_files(checkpoint, dataset, tmp_path / "probs", probabilities=True) == []
    labels, probs = _masks(tmp_path / "labels"), _masks(tmp_path / "probs")
    assert labels.keys() == probs.keys() and len(labels) == 2
    for name in labels:  # no resampling in this config: the inverse is a flip and a pad, exact for both
        np.testing.assert_array_equal(labels[name], probs[name])


def test_an_ensemble_averages_the_logits_of_its_members(trained, tmp_path: Path) -> None:
    checkpoint, _ = trained
    other = tmp_path / "other.ckpt"
    state = load_checkpoint(checkpoint)
    state["state_dict"] = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v
                           for k, v in state["state_dict"].items()}
    torch.save(state, other)
    ensemble, spec = load_models([checkpoint, other])
    assert isinstance(ensemble, Ensemble)
    a, b = load_for_inference(checkpoint)[0], load_for_inference(other)[0]
    x = torch.randn(2, spec.network.in_channels, *spec.roi_size)
    with torch.no_grad():
        torch.testing.assert_close(ensemble(x), (a(x) + b(x)) / 2)


def test_checkpoints_with_other_preprocessing_are_refused_naming_both(trained, tmp_path: Path) -> None:
    checkpoint, _ = trained
    state = load_checkpoint(checkpoint)
    state["seg"]["preprocessing"]["normalization"] = "none"
    other = tmp_path / "other_preprocessing.ckpt"
    torch.save(state, other)
    with pytest.raises(CheckpointError, match=r"best.ckpt' and '.*other_preprocessing.ckpt' cannot be ensembled: "
                                              r"their preprocessing differ"):
        load_models([checkpoint, other])


def test_a_run_folder_of_folds_is_an_ensemble(trained, tmp_path: Path) -> None:
    checkpoint, dataset = trained
    for fold in ("fold0", "fold1"):
        (tmp_path / "cv" / fold).mkdir(parents=True)
        (tmp_path / "cv" / fold / "best.ckpt").symlink_to(checkpoint)
    network, _ = load_models([tmp_path / "cv"])
    assert isinstance(network, Ensemble) and len(network.members) == 2
    assert predict_files([tmp_path / "cv"], dataset, tmp_path / "out") == []  # identical folds: the same masks
    assert predict_files(checkpoint, dataset, tmp_path / "single") == []
    for name, mask in _masks(tmp_path / "single").items():
        np.testing.assert_array_equal(_masks(tmp_path / "out")[name], mask)


def test_export_predicts_what_the_checkpoint_predicts(trained, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    checkpoint, dataset = trained
    assert export_main(["--checkpoint", str(checkpoint), "--output", str(tmp_path / "model")]) == 0
    assert {p.name for p in (tmp_path / "model").iterdir()} >= {"network.pt", "network.onnx", "spec.json"}
    network, spec = load_for_inference(checkpoint)
    window = torch.randn(3, spec.network.in_channels, *spec.roi_size)  # a batch of 3: the batch axis is dynamic
    has_openvino = importlib.util.find_spec("openvino") is not None
    with torch.no_grad():
        reference = network(window)
        for engine in ("onnx", "torchscript", *(["openvino"] if has_openvino else [])):
            exported, exported_spec = load_export(tmp_path / "model", engine=engine)
            assert exported_spec == spec
            torch.testing.assert_close(exported(window), reference, atol=1e-4, rtol=0)
    # auto: OpenVINO (the faster at equal probabilities, benchmarks/inference.py) before ONNX Runtime
    assert isinstance(load_export(tmp_path / "model")[0], OpenVinoNetwork if has_openvino else OnnxNetwork)
    if has_openvino:
        assert {"network.xml", "network.bin"} <= {p.name for p in (tmp_path / "model").iterdir()}
    # windows a call: the network's preference (OpenVINO one), else 2; a given --batch-size wins
    assert CasePredictor(*load_export(tmp_path / "model")).settings.batch_size == (1 if has_openvino else 2)
    assert CasePredictor(*load_export(tmp_path / "model"), Settings(batch_size=3)).settings.batch_size == 3
    assert CasePredictor.from_checkpoints([checkpoint]).settings.batch_size == 2
    assert infer_main(["--model", str(tmp_path / "model"), "--input", str(dataset), "--output",
                       str(tmp_path / "from_export")]) == 0
    assert predict_files(checkpoint, dataset, tmp_path / "from_checkpoint") == []
    for name, mask in _masks(tmp_path / "from_checkpoint").items():
        np.testing.assert_array_equal(_masks(tmp_path / "from_export")[name], mask)


@pytest.mark.parametrize(("device", "expected"), [("cpu", ("cpu", None)), ("auto", ("auto", None)),
                                                   ("cuda", ("gpu", None)), ("cuda:1", ("gpu", [1])),
                                                   ("mps", ("mps", None))])
def test_device_names_map_to_lightning(device, expected) -> None:
    assert lightning_device(device) == expected


def test_unknown_device_suggests_a_name() -> None:
    with pytest.raises(ValueError, match="unknown device 'cdua'.*did you mean 'cuda'"):
        lightning_device("cdua")


def test_case_predictor_keeps_volumes_on_the_cpu(trained) -> None:
    checkpoint, dataset = trained
    predictor = CasePredictor.from_checkpoints([checkpoint])
    image = predictor.preprocess(sorted((dataset.parent / "imagesTs").glob("*.nii.gz"))[:1])
    labels, probabilities = predictor.predict(image, device="cpu")
    assert labels.dtype == np.uint8 and probabilities is None  # labels only: no (K, *volume) map made

"""Tumour regions: labels to overlapping channels and back by nnU-Net's rule (against MONAI's BraTS converter),
a sigmoid module trained on them, and seg-infer writing the label map back."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import ConvertToMultiChannelBasedOnBratsClasses

from seg.cli import infer_main, train_main
from seg.data.transforms import LabelToRegionsd
from seg.inference.postprocess import region_labels, regions_to_labels

ROOT = Path(__file__).resolve().parents[2]
BRATS_2018 = {"TC": [1, 4], "WT": [1, 2, 4], "ET": [4]}  # MONAI's channels for labels 1 NCR/NET, 2 ED, 4 ET
BRATS_2015 = {"WT": [1, 2, 3, 4], "TC": [1, 3, 4], "ET": [4]}


def test_label_to_regions_equals_monai_brats_converter() -> None:
    label = torch.tensor([0, 1, 2, 4])[torch.randint(0, 4, (1, 6, 7, 5))]
    ours = LabelToRegionsd("label", BRATS_2018)({"label": label})["label"]
    monai = ConvertToMultiChannelBasedOnBratsClasses(et_label=4)(label)  # (TC, WT, ET)
    np.testing.assert_array_equal(ours.numpy(), np.asarray(monai).astype(np.float32))


def test_regions_write_back_by_nnunet_rule() -> None:
    assert region_labels(BRATS_2015) == [2, 1, 4]  # WT -> oedema, TC -> necrosis, ET -> enhancing
    label = torch.tensor([[0, 1, 2, 3, 4]])[:, None]  # (B=1, 1, 5)
    masks = LabelToRegionsd("label", BRATS_2015)({"label": label[0]})["label"][None]  # (1, R, 5)
    back = regions_to_labels(masks, region_labels(BRATS_2015))
    # later regions overwrite earlier ones: 3 (non-enhancing, in WT and TC only) comes back as TC's label 1
    assert back.tolist() == [[0, 1, 2, 1, 4]]
    with pytest.raises(ValueError, match="no label outside the later regions"):
        region_labels({"ET": [4], "TC": [1, 3, 4], "WT": [1, 2, 3, 4], "X": [4]})


def _brats_like(root: Path) -> Path:
    """A tiny multi-class dataset: nested blobs labelled 2 (outer), 1 (middle), 4 (core)."""
    import json

    rng = np.random.default_rng(0)
    entries, tests = [], []
    for i in range(5):
        image = rng.normal(0, 1, (24, 24, 16)).astype(np.float32)
        label = np.zeros((24, 24, 16), np.uint8)
        c = rng.integers(8, 16, 3)
        for value, r in ((2, 5), (1, 3), (4, 2)):
            box = tuple(slice(int(x) - r, int(x) + r) for x in (c[0], c[1], min(c[2], 11)))
            label[box] = value
            image[box] += 1.5
        folder = "imagesTs" if i == 4 else "imagesTr"
        for sub in (folder, "labelsTs" if i == 4 else "labelsTr"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(image, np.eye(4)), root / folder / f"c{i}.nii.gz")
        nib.save(nib.Nifti1Image(label, np.eye(4)), root / ("labelsTs" if i == 4 else "labelsTr") / f"c{i}.nii.gz")
        if i < 4:
            entries.append({"image": f"./imagesTr/c{i}.nii.gz", "label": f"./labelsTr/c{i}.nii.gz"})
        else:
            tests.append(f"./imagesTs/c{i}.nii.gz")
    labels = {"0": "background", "1": "necrosis", "2": "oedema", "3": "non-enhancing", "4": "enhancing"}
    (root / "dataset.json").write_text(json.dumps({"training": entries, "test": tests, "labels": labels}))
    return root / "dataset.json"


def test_a_region_model_trains_with_sigmoid_and_predicts_a_label_map(tmp_path: Path) -> None:
    dataset = _brats_like(tmp_path / "data")
    run = tmp_path / "run"
    code = train_main(["--config", str(ROOT / "configs" / "demo.yaml"), "--dataset", str(dataset), "--output", str(run),
                       "--max-epochs", "2", "--model.channels", "[4, 8, 16]", "--data.patch_size", "[16, 16, 16]",
                       "--data.regions", "{WT: [1, 2, 3, 4], TC: [1, 3, 4], ET: [4]}", "--model.min_size", "0",
                       "--data.val_fraction", "0.25", "--trainer.limit_train_batches", "2",
                       "--trainer.check_val_every_n_epoch", "1", "--trainer.enable_progress_bar", "false"])
    assert code == 0
    checkpoint = torch.load(run / "best.ckpt", weights_only=True)
    assert checkpoint["seg"]["activation"] == "sigmoid" and list(checkpoint["seg"]["regions"]) == ["WT", "TC", "ET"]
    assert len(checkpoint["seg"]["alpha"]) == 3  # one α per region, each of its own binary counts
    head = [v for k, v in checkpoint["state_dict"].items() if k.startswith("network.output_block")][0]
    assert head.shape[0] == 3  # one output per region
    assert infer_main(["--checkpoint", str(run / "best.ckpt"), "--input", str(dataset), "--output",
                       str(tmp_path / "out")]) == 0
    mask = np.asarray(nib.load(tmp_path / "out" / "c4.nii.gz").dataobj)
    assert set(np.unique(mask)) <= {0, 1, 2, 4}  # only labels the regions write back

"""A plain MONAI training script: the reference seg's benchmarks compare against, side by side.

What a MONAI user writes from the tutorials, nothing from seg: LoadImaged -> Orientationd("RAS") ->
NormalizeIntensityd(nonzero, channel-wise) -> SpatialPadd -> RandCropByPosNegLabeld (1:1, 4 patches) ->
random flips, a CacheDataset, a residual UNet (16-32-64-128), DiceCELoss, Adam 1e-3, batch 2 x 4 patches.
It trains for ``minutes`` of wall time (the clock starts once the data are cached; validation counts
against it), validates on a seeded 20 % hold-out at every 10 % of the budget and once at the end (sliding
window, mean foreground Dice), keeps the best weights and writes ``OUT/predictions/<case>.nii.gz`` (uint8,
in the input image's exact grid, via Invertd) and ``OUT/run.json``. No post-processing, no TTA.

    python benchmarks/plain_monai.py --dataset DATA/dataset.json --output OUT --minutes 8 --seed 0 \
        [--patch 64 64 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import CacheDataset, DataLoader
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric
from monai.networks.nets import UNet
from monai.networks.utils import one_hot
from monai.transforms import (
    Compose,
    Invertd,
    LoadImaged,
    NormalizeIntensityd,
    Orientationd,
    RandCropByPosNegLabeld,
    RandFlipd,
    SpatialPadd,
)
from monai.utils import set_determinism


def case_name(path: str) -> str:
    """``imagesTs/X_0000.nii.gz`` -> ``X``."""
    name = Path(path).name.removesuffix(".gz").removesuffix(".nii")
    return name.removesuffix("_0000")


def preprocess(keys) -> list:
    """The deterministic transforms, shared by training, validation and test (and inverted for the masks)."""
    return [
        LoadImaged(keys, ensure_channel_first=True),
        Orientationd(keys, axcodes="RAS"),
        NormalizeIntensityd("image", nonzero=True, channel_wise=True),
    ]


def train_and_predict(dataset_json: Path, output: Path, *, minutes: float, seed: int = 0,
                      patch=(64, 64, 32), threads: int = 2) -> dict:
    """Train for ``minutes`` of wall time, predict the test cases; returns (and writes) run.json's content."""
    torch.set_num_threads(threads)
    set_determinism(seed)
    dataset_json, output, patch = Path(dataset_json), Path(output), tuple(patch)
    meta, root = json.loads(dataset_json.read_text()), dataset_json.parent
    path = lambda p: [str(root / q) for q in p] if isinstance(p, list) else str(root / p)  # noqa: E731
    cases = [{"image": path(c["image"]), "label": path(c["label"])} for c in meta["training"]]
    random.Random(seed).shuffle(cases)
    n_val = max(1, round(0.2 * len(cases))) if len(cases) > 1 else 0
    val_cases, train_cases = cases[:n_val] or cases, cases[n_val:]
    num_classes = len(meta["labels"])

    keys = ["image", "label"]
    train_tf = Compose(
        preprocess(keys)
        + [SpatialPadd(keys, spatial_size=patch)]
        + [RandCropByPosNegLabeld(keys, "label", spatial_size=patch, pos=1, neg=1, num_samples=4)]
        + [RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in range(3)]
    )
    t0 = time.monotonic()
    train_ds = CacheDataset(train_cases, train_tf, progress=False)
    val_ds = CacheDataset(val_cases, Compose(preprocess(keys)), progress=False)
    cache_seconds = time.monotonic() - t0
    loader = DataLoader(train_ds, batch_size=2, shuffle=True, num_workers=0)

    in_channels = val_ds[0]["image"].shape[0]
    model = UNet(spatial_dims=3, in_channels=in_channels, out_channels=num_classes,
                 channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=2)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    dice = DiceMetric(include_background=False, reduction="mean")

    def infer(x):  # one channel-first volume -> its label map, (1, X, Y, Z)
        logits = sliding_window_inference(x[None], roi_size=patch, sw_batch_size=4, predictor=model,
                                          overlap=0.5)
        return logits.argmax(1, keepdim=True)[0]

    def validate() -> float:
        model.eval()
        with torch.no_grad():
            for item in val_ds:
                pred = infer(item["image"])[None]
                dice(one_hot(pred, num_classes), one_hot(item["label"][None], num_classes))
        model.train()
        score = dice.aggregate().item()
        dice.reset()
        return score

    def forever(dl):  # epochs without end: the clock, not an epoch count, stops training
        while True:
            yield from dl

    budget, steps, val_seconds, last_val, next_val = 60 * minutes, 0, 0.0, 0.0, 6 * minutes
    best_dice, best_state = -1.0, copy.deepcopy(model.state_dict())
    start = time.monotonic()
    for batch in forever(loader):
        optimizer.zero_grad()
        loss = loss_fn(model(batch["image"]), batch["label"])
        loss.backward()
        optimizer.step()
        steps += 1
        elapsed = time.monotonic() - start
        final = elapsed + last_val >= budget  # stop early enough for one last validation to fit
        if final or elapsed >= next_val:
            t = time.monotonic()
            score = validate()
            last_val = time.monotonic() - t
            val_seconds += last_val
            next_val += budget / 10
            print(f"step {steps}  loss {loss.item():.4f}  val dice {score:.4f}  {elapsed:.0f}/{budget:.0f} s")
            if score > best_dice:  # NaN (no foreground in any validation label) never wins
                best_dice, best_state = score, copy.deepcopy(model.state_dict())
        if final:
            break
    train_seconds = time.monotonic() - start

    model.load_state_dict(best_state)
    model.eval()
    (output / "predictions").mkdir(parents=True, exist_ok=True)
    torch.save(best_state, output / "best_model.pt")
    test_tf = Compose(preprocess("image"))
    invert = Invertd("pred", transform=test_tf, orig_keys="image", nearest_interp=True)
    t = time.monotonic()
    with torch.no_grad():
        for image in meta.get("test", []):
            item = test_tf({"image": path(image)})
            item["pred"] = infer(item["image"])
            mask = invert(item)["pred"][0].numpy().astype(np.uint8)
            ref = nib.load(first := path(image)[0] if isinstance(image, list) else path(image))
            out = nib.Nifti1Image(mask, ref.affine, ref.header)
            out.set_data_dtype(np.uint8)
            out.header.set_slope_inter(1, 0)
            nib.save(out, output / "predictions" / f"{case_name(first)}.nii.gz")
    # train_seconds: training + validation (the clock starts once the data are cached); seconds_per_step
    # excludes validation.
    run = {"steps": steps, "train_seconds": round(train_seconds, 2),
           "validation_share": round(val_seconds / train_seconds, 4),
           "best_val_dice": best_dice if best_dice >= 0 else None,
           "seconds_per_step": round((train_seconds - val_seconds) / steps, 4),
           "cache_seconds": round(cache_seconds, 2), "predict_seconds": round(time.monotonic() - t, 2)}
    (output / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    return run


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", dest="dataset_json", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--minutes", type=float, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--patch", type=int, nargs=3, default=(64, 64, 32))
    parser.add_argument("--threads", type=int, default=2)
    print(json.dumps(train_and_predict(**vars(parser.parse_args()))))

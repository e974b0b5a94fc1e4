"""Postprocessing chosen on the validation split: the probability threshold, the smallest kept component, the
peak (hysteresis) threshold a kept component must reach, and whether only the largest component is kept.

With ``model.threshold``, ``model.min_size``, ``model.peak_threshold`` and/or ``model.keep_largest`` set to ``auto``,
after training the best checkpoint predicts each validation case once (whole preprocessed volumes, as validation
does); every combination of the candidate thresholds (foreground where ``1 − p_0 > t``), minimum component sizes,
peaks and keep-largest (nnU-Net's "remove all but the largest component", applied after the others) is scored by the
pooled lesion F1 under the run's lesion matching rule (ties: higher voxel Dice, then the setting closest to no
postprocessing); the winner is written into ``best.ckpt`` and ``last.ckpt`` (their ``InferenceSpec.postprocessing``)
and the whole table into ``RUN/postprocessing.json``. nnU-Net decides its postprocessing on validation folds the same way. The size is
stored in mm³ of the validation grid, so inference applies it spacing-aware on every input's own grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from seg.evaluation.metrics import detection_scores, dice, lesion_metrics
from seg.files import atomic_path, write_json
from seg.inference.checkpoint import load_checkpoint, load_for_inference
from seg.inference.sliding_window import predict_volume
from seg.networks import window_network

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
MIN_SIZES = (0, 3, 5, 10, 20, 40)  # voxels of the validation grid
PEAKS = (0.0, 0.9, 0.95, 0.98)  # 0: every component reaches it (off)
TUNING_FILE = "postprocessing.json"


def validation_probabilities(checkpoint: Path, dataset, *, overlap: float, batch_size: int
                             ) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Foreground probability ``1 − p_0`` ``(*spatial)`` float32, the binary label, and the voxel volume (mm³) of
    every case of ``dataset`` (preprocessed whole volumes, as the validation loader gives them)."""
    network, spec = load_for_inference(checkpoint)
    out = []
    for item in dataset:
        image = item["image"]
        volume = image.as_tensor()[None] if hasattr(image, "as_tensor") else torch.as_tensor(image)[None]
        affine = np.asarray(image.affine) if hasattr(image, "affine") else np.eye(4)
        voxel_mm3 = float(abs(np.linalg.det(affine[:3, :3]))) or 1.0
        roi = spec.roi_size or list(volume.shape[2:])
        net, roi = window_network(network, spec.network.spatial_dims, volume, roi)
        probabilities = predict_volume(net, volume, roi, overlap=overlap, batch_size=batch_size, crop=False)[0]
        label = torch.as_tensor(item["label"])[0] > 0
        out.append(((1 - probabilities[0]).numpy().astype(np.float32), label.numpy(), voxel_mm3))
    return out


def tune(cases: Sequence[tuple[np.ndarray, np.ndarray, float]], *, thresholds: Sequence[float] = THRESHOLDS,
         min_sizes: Sequence[int] = MIN_SIZES, peaks: Sequence[float] = (0.0,), largest: Sequence[bool] = (False,),
         matching: str = "msseg") -> dict[str, Any]:
    """Score every (threshold, min size, peak, keep-largest) on ``cases`` (from :func:`validation_probabilities`); the
    best and the table. Each threshold's components are labelled once (full connectivity); sizes and peaks filter
    them, then keep-largest keeps the largest survivor."""
    if not cases:
        raise ValueError("choosing postprocessing on validation needs at least one validation case")
    totals: dict[tuple, dict[str, Any]] = {}
    for probability, label, _ in cases:
        structure = ndimage.generate_binary_structure(probability.ndim, probability.ndim)
        for threshold in thresholds:
            components, n = ndimage.label(probability > threshold, structure=structure)
            index = np.arange(1, n + 1)
            sizes = np.bincount(components.ravel(), minlength=n + 1)[1:]
            highest = ndimage.maximum(probability, components, index) if n else np.zeros(0)
            for size, peak, only_largest in product(min_sizes, peaks, largest):
                kept = (sizes >= size) & (np.asarray(highest) > peak)
                if only_largest and kept.sum() > 1:  # the largest survivor (ties: the first label)
                    kept = np.arange(n) == np.argmax(np.where(kept, sizes, -1))
                mask = np.concatenate([[False], kept])[components]
                lesions = lesion_metrics(mask, label, matching=matching)
                row = totals.setdefault((threshold, size, peak, only_largest),
                                        {"tp": 0, "fp": 0, "fn": 0, "tp_pred": 0, "dices": []})
                for key in ("tp", "fp", "fn", "tp_pred"):
                    row[key] += lesions[key]
                row["dices"].append(dice(mask, label))
    rows = []
    for (threshold, size, peak, only_largest), row in totals.items():
        scores = detection_scores(row["tp"], row["fp"], row["fn"],
                                  tp_pred=None if matching == "overlap" else row["tp_pred"])
        rows.append({"threshold": threshold, "min_size_voxels": size, "peak_threshold": peak,
                     "keep_largest": only_largest, "lesion_f1": scores["lesion_f1"],
                     "dice": float(np.mean(row["dices"])), "tp": row["tp"], "fp": row["fp"], "fn": row["fn"]})
    best = max(rows, key=lambda r: (round(r["lesion_f1"], 9), round(r["dice"], 9), -abs(r["threshold"] - 0.5),
                                    -r["keep_largest"], -r["min_size_voxels"], -r["peak_threshold"]))
    voxel_mm3 = float(np.median([v for *_, v in cases]))
    return {"threshold": best["threshold"], "min_size_mm3": best["min_size_voxels"] * voxel_mm3,
            "peak_threshold": best["peak_threshold"], "keep_largest": best["keep_largest"], "chosen": best,
            "voxel_mm3": voxel_mm3, "matching": matching,
            "table": rows}


def apply_to_checkpoints(run_dir: Path, postprocessing: dict[str, Any]) -> None:
    """Write ``postprocessing`` into the ``"seg"`` spec of ``best.ckpt`` and ``last.ckpt`` (atomically)."""
    for name in ("best.ckpt", "last.ckpt"):
        path = run_dir / name
        if path.is_file():
            checkpoint = load_checkpoint(path)
            checkpoint["seg"]["postprocessing"] = {**checkpoint["seg"].get("postprocessing", {}), **postprocessing}
            with atomic_path(path) as tmp:
                torch.save(checkpoint, tmp)


def tune_postprocessing(run_dir: Path, dataset, *, tune_threshold: bool, tune_min_size: bool, matching: str,
                        overlap: float, batch_size: int, fixed_threshold: float | None, fixed_min_size: int,
                        tune_peak: bool = False, fixed_peak: float | None = None, tune_largest: bool = False,
                        fixed_largest: bool = False) -> dict[str, Any]:
    """Choose on ``dataset`` (the validation split) what is ``auto``, store it in the checkpoints; the record."""
    checkpoint = run_dir / "best.ckpt" if (run_dir / "best.ckpt").is_file() else run_dir / "last.ckpt"
    cases = validation_probabilities(checkpoint, dataset, overlap=overlap, batch_size=batch_size)
    result = tune(cases, thresholds=THRESHOLDS if tune_threshold else (fixed_threshold or 0.5,),
                  min_sizes=MIN_SIZES if tune_min_size else (fixed_min_size,),
                  peaks=PEAKS if tune_peak else (fixed_peak or 0.0,),
                  largest=(False, True) if tune_largest else (fixed_largest,), matching=matching)
    chosen = {"threshold": result["threshold"] if tune_threshold else fixed_threshold,
              "min_size": 0 if tune_min_size else fixed_min_size,
              "min_size_mm3": result["min_size_mm3"] if tune_min_size else None,
              "peak_threshold": (result["peak_threshold"] or None) if tune_peak else fixed_peak,
              "keep_largest": result["keep_largest"] if tune_largest else fixed_largest,
              "tuned_on_validation": True}
    apply_to_checkpoints(run_dir, chosen)
    write_json(run_dir / TUNING_FILE, {**result, "applied": chosen, "validation_cases": len(cases)})
    row = result["chosen"]
    print(f"postprocessing chosen on {len(cases)} validation case(s) ({matching} matching): threshold "
          f"{row['threshold']}, components under {row['min_size_voxels']} voxels "
          f"({result['min_size_mm3']:.3g} mm³) removed, peak threshold {row['peak_threshold']}, "
          f"{'only the largest component kept' if row['keep_largest'] else 'every component kept'}: validation lesion F1 "
          f"{row['lesion_f1']:.3f}, Dice {row['dice']:.3f}")
    return chosen

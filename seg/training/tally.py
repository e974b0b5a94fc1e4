"""Validation during training: whole-volume sliding-window logits, and the epoch's per-case tally.

The tally keeps one row per validation case (Dice per foreground class; lesion TP, FP, FN, true predicted
components, the TP lesions' Dice; TP/FN per lesion-size bin) and how often the case was seen. Under DDP,
Lightning's distributed sampler pads the validation set with repeated cases when it does not divide by the number
of ranks; one ``strategy.reduce(..., "sum")`` of the rows and the counts, and each row divided by its count, counts
every case exactly once (a repeated case gives identical numbers). Lesion-wise F1 then comes from pooled counts,
not from averages over ranks, under the run's matching rule (:mod:`seg.evaluation.matching`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from seg.evaluation.metrics import detection_scores, dice, dice_per_class, lesion_metrics, size_bin_names
from seg.inference.sliding_window import predict_volume

SIZE_BINS = (30, 300)  # voxels: <30 (two thirds of real MS/WMH lesions), 30-300, >300


def sliding_window_logits(network: nn.Module, image: torch.Tensor, roi_size: Sequence[int], *,
                          overlap: float = 0.25, batch_size: int = 4) -> torch.Tensor:
    """Blended logits ``(B, K, *spatial)`` of a whole volume ``(B, C, *spatial)``, Gaussian blending.

    The validation pipeline has already cropped the volume to its foreground, so windows cover all of it
    (``crop=False``): logits everywhere, which the validation loss needs.
    """
    return predict_volume(network, image, roi_size, overlap=overlap, blend="gaussian", batch_size=batch_size,
                          activation=None, crop=False)


class ValidationTally:
    """Per-case sums of an epoch (foreground = any non-zero label); see the module docstring."""

    def __init__(self, num_classes: int, *, matching: str = "msseg", size_bins: Sequence[float] = SIZE_BINS,
                 regions: Sequence[str] | None = None) -> None:
        self.num_classes, self.matching, self.size_bins = num_classes, matching, tuple(size_bins)
        self.regions = list(regions) if regions else None  # region mode: one Dice per region, lesions of every region
        self.bin_names = size_bin_names(self.size_bins)
        self.dices = len(self.regions) if self.regions else num_classes - 1
        self.fields = self.dices + 5 + 2 * len(self.bin_names)  # dices, tp, fp, fn, tp_pred, dice_sum, bins
        self.reset(0)

    def reset(self, cases: int) -> None:
        """Start an epoch over ``cases`` validation cases (the table grows if a larger index comes)."""
        self._rows = torch.zeros((cases, self.fields + 1), dtype=torch.float64)  # last column: times seen

    def update(self, prediction: torch.Tensor, label: torch.Tensor, indices: Sequence[int]) -> None:
        """Add label maps ``(B, *spatial)`` (integer; region mode: masks ``(B, R, *spatial)``) of the validation
        cases ``indices`` (their dataset positions)."""
        pred_np, label_np = prediction.cpu().numpy(), label.cpu().numpy()
        for p, t, index in zip(pred_np, label_np, indices, strict=True):
            if index >= self._rows.shape[0]:
                self._rows = torch.cat([self._rows, torch.zeros((index + 1 - self._rows.shape[0], self.fields + 1),
                                                                dtype=torch.float64)])
            pairs = [(p[r] > 0, t[r] > 0) for r in range(len(self.regions))] if self.regions else [(p > 0, t > 0)]
            dices = [dice(a, b) for a, b in pairs] if self.regions else \
                list(dice_per_class(p, t, num_classes=self.num_classes)[1:])
            row = np.zeros(self.fields + 1)
            row[:self.dices], row[-1] = dices, 1.0
            for a, b in pairs:  # lesion counts pooled over the regions
                lesions = lesion_metrics(a, b, matching=self.matching, size_bins=self.size_bins)
                dice_sum = sum(lesion["dice"] for lesion in lesions["lesions"] if lesion["detected"])
                bins = [lesions["size_bins"][name][key] for name in self.bin_names for key in ("tp", "fn")]
                row[self.dices:-1] += [lesions["tp"], lesions["fp"], lesions["fn"], lesions["tp_pred"], dice_sum, *bins]
            self._rows[index] += torch.from_numpy(row)

    def as_tensor(self, device: torch.device) -> torch.Tensor:
        return self._rows.to(device)

    def summarise(self, rows: torch.Tensor) -> dict[str, float]:
        """Metrics from (possibly all-reduced) rows; each case counted once however often it was seen."""
        rows = rows.double().cpu()
        seen = rows[:, -1]
        rows = rows[seen > 0, :-1] / seen[seen > 0, None]  # (cases, fields)
        k = self.dices
        cases = float(rows.shape[0])
        dice_classes = rows[:, :k].mean(0) if cases else torch.ones(k, dtype=torch.float64)
        tp, fp, fn, tp_pred, dice_sum = (float(v) for v in rows[:, k:k + 5].sum(0))
        out = {"dice": float(dice_classes.mean()), "cases": cases}
        if self.regions:
            out.update({f"dice_{name}": float(d) for name, d in zip(self.regions, dice_classes, strict=True)})
        elif k > 1:
            out.update({f"dice_class{c + 1}": float(d) for c, d in enumerate(dice_classes)})
        out.update(detection_scores(tp, fp, fn, tp_pred=None if self.matching == "overlap" else tp_pred))
        out["lesion_wise_dice"] = dice_sum / (tp + fn + fp) if tp + fn + fp else 1.0
        out["fp_per_volume"] = fp / max(cases, 1.0)
        out["gt_lesions"] = tp + fn
        bins = rows[:, k + 5:].sum(0).reshape(-1, 2)  # (bins, [tp, fn])
        for name, (tp_b, fn_b) in zip(self.bin_names, bins.tolist(), strict=True):
            out[f"sensitivity_{name}"] = tp_b / (tp_b + fn_b) if tp_b + fn_b else float("nan")
        return out

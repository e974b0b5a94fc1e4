"""Validation during training: whole-volume sliding-window logits and epoch tallies of Dice and lesion F1.

The tally keeps sums (Dice per foreground class, case count, lesion TP/FP/FN) in one small tensor, so
under DDP a single ``strategy.reduce(..., "sum")`` syncs the epoch's metrics exactly: lesion-wise F1 is
computed from pooled counts, not averaged over ranks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from seg.evaluation.metrics import detection_scores, dice_per_class, lesion_metrics
from seg.inference.sliding_window import predict_volume


def sliding_window_logits(network: nn.Module, image: torch.Tensor, roi_size: Sequence[int], *,
                          overlap: float = 0.25, batch_size: int = 4) -> torch.Tensor:
    """Blended logits ``(B, K, *spatial)`` of a whole volume ``(B, C, *spatial)``, Gaussian blending.

    The validation pipeline has already cropped the volume to its foreground, so windows cover all of it
    (``crop=False``): logits everywhere, which the validation loss needs.
    """
    return predict_volume(network, image, roi_size, overlap=overlap, blend="gaussian", batch_size=batch_size,
                          activation=None, crop=False)


class ValidationTally:
    """Epoch sums: per-class Dice, cases, lesion TP/FP/FN (foreground = any non-zero label)."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.reset()

    def reset(self) -> None:
        self._sums = torch.zeros(self.num_classes - 1 + 4, dtype=torch.float64)  # dice_1..K-1, cases, tp, fp, fn

    def update(self, prediction: torch.Tensor, label: torch.Tensor) -> None:
        """Add a batch of label maps ``(B, *spatial)`` (integer) to the tally."""
        pred_np, label_np = prediction.cpu().numpy(), label.cpu().numpy()
        k = self.num_classes - 1
        for p, t in zip(pred_np, label_np, strict=True):
            self._sums[:k] += torch.as_tensor(dice_per_class(p, t, num_classes=self.num_classes)[1:])
            self._sums[k] += 1
            lesions = lesion_metrics(p > 0, t > 0)
            self._sums[k + 1] += lesions["tp"]
            self._sums[k + 2] += lesions["fp"]
            self._sums[k + 3] += lesions["fn"]

    def as_tensor(self, device: torch.device) -> torch.Tensor:
        return self._sums.to(device)

    def summarise(self, sums: torch.Tensor) -> dict[str, float]:
        """Metrics from (possibly all-reduced) sums."""
        sums = sums.double().cpu()
        k = self.num_classes - 1
        cases, tp, fp, fn = (float(v) for v in sums[k:k + 4])
        dice_classes = sums[:k] / max(cases, 1.0)
        out = {"dice": float(dice_classes.mean()), "cases": cases}
        if k > 1:
            out.update({f"dice_class{c + 1}": float(d) for c, d in enumerate(dice_classes)})
        out.update(detection_scores(tp, fp, fn))
        out["fp_per_volume"] = fp / max(cases, 1.0)
        return out

"""Calibration of foreground probabilities: expected calibration error (ECE) and reliability-diagram data.

Focal loss changes calibration (Mukhoti et al., 2020), so the evaluation reports it next to Dice.

Definition used here (binary, "foreground reliability"): each voxel contributes its foreground probability
``p`` and its true label ``y`` (1 = lesion). Voxels are put into ``n_bins`` equal-width bins of ``p`` on [0, 1]
(the last bin includes 1.0), and

    ECE = sum_b (n_b / N) * | mean(p in b) - mean(y in b) |.

Example: every voxel at p = 0.9 with half of them lesion gives ECE = |0.9 - 0.5| = 0.4.
This is not the top-label (max-probability) ECE of Guo et al. 2017: for sparse lesions the top-label version is
dominated by confident background voxels, while this one asks "when the model says 30 % lesion, is it lesion
30 % of the time?".

Memory: :class:`CalibrationAccumulator` keeps three ``(n_bins,)`` sums, so any number of volumes can be pooled
without keeping them (no subsampling needed). Most voxels of a brain MR are easy background at p ≈ 0, which
pulls the ECE towards 0; pass ``mask`` (e.g. the brain mask, or a dilated region around label ∪ prediction)
to restrict the voxels that count.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class CalibrationResult:
    """ECE and the per-bin data of a reliability diagram (each array ``(n_bins,)`` float64).

    ``bin_confidence`` and ``bin_frequency`` are NaN for empty bins.
    """

    ece: float
    bin_edges: np.ndarray  # (n_bins + 1,)
    bin_count: np.ndarray
    bin_confidence: np.ndarray  # mean predicted foreground probability in the bin
    bin_frequency: np.ndarray  # observed fraction of foreground voxels in the bin

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict (NaN becomes None)."""
        out: dict[str, object] = {}
        for key, value in asdict(self).items():
            if isinstance(value, np.ndarray):
                out[key] = [None if np.isnan(v) else float(v) for v in value]
            else:
                out[key] = float(value)
        return out


def _to_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


class CalibrationAccumulator:
    """Streaming ECE: ``update`` with one volume at a time, ``compute`` once at the end.

    Example:
        >>> acc = CalibrationAccumulator(n_bins=10)
        >>> acc.update(np.full(10, 0.9), np.array([1] * 5 + [0] * 5))
        >>> round(acc.compute().ece, 6)
        0.4
    """

    def __init__(self, n_bins: int = 15) -> None:
        if n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {n_bins}")
        self.n_bins = n_bins
        self.edges = np.linspace(0.0, 1.0, n_bins + 1)
        self.count = np.zeros(n_bins, dtype=np.float64)
        self.sum_prob = np.zeros(n_bins, dtype=np.float64)
        self.sum_label = np.zeros(n_bins, dtype=np.float64)

    def update(self, prob: np.ndarray | torch.Tensor, label: np.ndarray | torch.Tensor,
               mask: np.ndarray | torch.Tensor | None = None) -> None:
        """Add voxels.

        Args:
            prob: foreground probabilities in [0, 1], any shape ``(*spatial)``, float.
            label: ground truth of the same shape (non-zero = foreground).
            mask: optional boolean array of the same shape; only voxels where it is true count.
        """
        p = _to_numpy(prob).astype(np.float64, copy=False)
        y = _to_numpy(label) > 0
        if p.shape != y.shape:
            raise ValueError(f"probabilities have shape {p.shape} but the label has {y.shape}")
        if mask is not None:
            m = _to_numpy(mask).astype(bool, copy=False)
            if m.shape != p.shape:
                raise ValueError(f"mask has shape {m.shape} but the probabilities have {p.shape}")
            p, y = p[m], y[m]
        p, y = p.ravel(), y.ravel()
        if p.size and (not np.isfinite(p).all() or p.min() < 0.0 or p.max() > 1.0):
            raise ValueError(f"probabilities must be finite and in [0, 1], found range [{np.nanmin(p)}, "
                             f"{np.nanmax(p)}]; pass softmax/sigmoid outputs, not logits")
        # Bin index floor(p * n) with p = 1.0 folded into the last bin (equal-width bins, right edge closed).
        which = np.minimum((p * self.n_bins).astype(np.int64), self.n_bins - 1)
        self.count += np.bincount(which, minlength=self.n_bins)
        self.sum_prob += np.bincount(which, weights=p, minlength=self.n_bins)
        self.sum_label += np.bincount(which, weights=y.astype(np.float64), minlength=self.n_bins)

    def compute(self) -> CalibrationResult:
        """ECE and reliability data of everything added so far; raises if nothing was added."""
        total = self.count.sum()
        if total == 0:
            raise ValueError("no voxels were added to the calibration accumulator (empty inputs or masks)")
        with np.errstate(invalid="ignore", divide="ignore"):
            confidence = np.where(self.count > 0, self.sum_prob / self.count, np.nan)
            frequency = np.where(self.count > 0, self.sum_label / self.count, np.nan)
        gaps = np.abs(self.sum_prob - self.sum_label)  # = n_b * |conf_b - freq_b|
        return CalibrationResult(ece=float(gaps.sum() / total), bin_edges=self.edges.copy(),
                                 bin_count=self.count.copy(), bin_confidence=confidence, bin_frequency=frequency)


def expected_calibration_error(prob: np.ndarray | torch.Tensor, label: np.ndarray | torch.Tensor, *,
                               n_bins: int = 15, mask: np.ndarray | torch.Tensor | None = None) -> float:
    """ECE of foreground probabilities ``(*spatial)`` against a binary label (definition in the module docstring)."""
    accumulator = CalibrationAccumulator(n_bins)
    accumulator.update(prob, label, mask)
    return accumulator.compute().ece

"""Class frequencies -> focal-loss class weights α, by documented methods.

**One α semantics.** ``alpha[c]`` is the weight given to voxels whose *true* class is ``c`` (softmax), and
the weights sum to 1 over classes. The rarer class gets the *higher* α. For C = 2 this is
``alpha = [1 - a, a]``, the focal-loss convention where a scalar α with two classes means ``[1 - α, α]``;
for a sigmoid head with one foreground channel use ``a = alpha[1]`` (weight on positives, ``1 - a`` on
negatives). For several sigmoid channels compute each channel's α from its own binary counts
``[total - n_c, n_c]``.

Contrast with RetinaNet (Lin et al., 2017): there α = 0.25 on *positives* (the rare class) worked best,
i.e. *less* weight on the rare class, because γ = 2 already suppresses the many easy negatives and α only
re-balances what is left. Data-derived α goes the other way (rare class ≫ 0.5); with γ = 2 the two effects
add up, which is why the default here is the gentlest method.

**Methods** (``METHODS``), with f_c = n_c / Σn and weights normalised to sum to 1:

- ``"inverse"``: α_c ∝ 1 / f_c.
- ``"inverse_sqrt"`` (default): α_c ∝ 1 / sqrt(f_c).
- ``"effective_number"`` (Cui et al., CVPR 2019, "Class-Balanced Loss Based on Effective Number of
  Samples"): α_c ∝ (1 - β) / (1 - β^{n_c}). The effective number E_n = (1 - β^n) / (1 - β) grows like n
  for n ≪ 1 / (1 - β) and saturates at 1 / (1 - β) for n ≫ 1 / (1 - β); so β sets the count K = 1/(1 - β)
  beyond which a class counts as "fully sampled", and α moves from inverse frequency (β -> 1) to uniform
  (β = 0). It needs absolute COUNTS (not fractions) and, unlike the others, depends on dataset size. With
  the paper's β = 0.9999 (K = 10^4) and voxel counts in the millions every class above ~5·10^4 voxels is
  saturated: 10^7 voxels with 0.3 % lesion gives α_lesion = 0.513 (nearly uniform), while 10^3 voxels
  with 0.3 % gives 0.997. For voxels choose K near the rarest class's count, β = 1 - 1/K.
- ``"median"`` (median-frequency balancing, Eigen & Fergus, ICCV 2015): α_c ∝ median(f) / f_c with
  f_c = n_c / (voxels of the items in which class c occurs) — pass ``present_voxels`` from
  ``class_frequencies(..., return_presence=True)``. Without it f_c = n_c / Σn and, after normalisation,
  the result equals ``"inverse"`` (the median is one common factor).

**Why inverse_sqrt is the default.** At 0.3 % foreground (counts [997, 3]) ``inverse`` gives
α = [0.003, 0.997]: background is weighted 1/332 of the lesion, and with γ = 2 shrinking the easy background
terms further the loss barely penalises false positives and the network can over-segment. ``inverse_sqrt``
gives [0.052, 0.948] (an 18:1 ratio), still strongly favouring the lesion. On BraTS 2013 pat0001
(labels 0-4) inverse gives 0.932 to the tiny class 3 (818 voxels) and 0.0001 to background;
inverse_sqrt gives [0.0065, 0.120, 0.084, 0.680, 0.110].

**Clipping** ``clip=(lo, hi)`` bounds the *normalised* α: α_c = clip(t·w_c, lo, hi) with the scale t chosen
so that Σα = 1 (classes strictly inside the bounds keep their ratios). Needs C·lo ≤ 1 ≤ C·hi.

**Absent classes.** A class with zero count raises ``ValueError``: α for a class never seen is undefined
(1/0), and a silent finite fallback would hide a wrong ``num_classes`` or a missing label.

Hand-written: MONAI has no class-frequency or α utility; counting is ``np.bincount`` on slabs read
through nibabel's array proxy, so a volume is never fully materialised when it is large.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterable
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from tqdm.auto import tqdm

from seg._types import PathLike

METHODS: tuple[str, ...] = ("inverse", "inverse_sqrt", "effective_number", "median")
DEFAULT_METHOD = "inverse_sqrt"

# Largest number of voxels read from one NIfTI at once (64 MB as float32); bigger volumes are read in slabs
# along the last axis, which is contiguous on disk for NIfTI's Fortran order.
_SLAB_VOXELS = 2**24

LabelItem = np.ndarray | torch.Tensor | PathLike


def _as_integer_labels(array: np.ndarray, where: str) -> np.ndarray:
    """Return ``array`` as int64, rejecting non-integral floats (e.g. resampled labels) with ``where`` named."""
    if array.dtype == np.bool_:
        return array.astype(np.int64)
    if np.issubdtype(array.dtype, np.floating):
        bad = ~np.isfinite(array) | (array != np.round(array))
        if bad.any():
            raise ValueError(
                f"{where}: labels must be integers, found non-integral value {float(array[bad].flat[0]):g} "
                f"({int(bad.sum())} voxels); resample labels with nearest-neighbour interpolation"
            )
    elif not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{where}: expected an integer or float label array, found dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def _count(array: np.ndarray, num_classes: int, ignore_index: int | None, where: str) -> np.ndarray:
    flat = _as_integer_labels(np.asarray(array), where).ravel()
    if ignore_index is not None:
        flat = flat[flat != ignore_index]
    if flat.size == 0:
        return np.zeros(num_classes, dtype=np.int64)
    lo, hi = int(flat.min()), int(flat.max())
    if lo < 0 or hi >= num_classes:
        value = lo if lo < 0 else hi
        raise ValueError(
            f"{where}: label value {value} is outside 0..{num_classes - 1} (num_classes={num_classes}); "
            "raise num_classes, or pass ignore_index for a void label"
        )
    return np.bincount(flat, minlength=num_classes)


def _count_nifti(path: Path, num_classes: int, ignore_index: int | None) -> tuple[np.ndarray, int]:
    """Count one NIfTI file slab by slab; returns (counts, number of counted voxels)."""
    img = nib.load(str(path), keep_file_open=True)  # one gzip stream, read forwards slab after slab
    shape = img.shape
    counts = np.zeros(num_classes, dtype=np.int64)
    if len(shape) == 0:
        raise ValueError(f"{path}: expected a label volume, found a 0-d image")
    per_slice = int(np.prod(shape[:-1], dtype=np.int64))
    step = max(1, _SLAB_VOXELS // max(per_slice, 1))
    for k0 in range(0, shape[-1], step):
        slab = np.asarray(img.dataobj[..., k0 : k0 + step])
        counts += _count(slab, num_classes, ignore_index, f"label file '{path}'")
    return counts, int(counts.sum())


def class_frequencies(
    labels: Iterable[LabelItem],
    num_classes: int,
    *,
    ignore_index: int | None = None,
    progress: bool = False,
    return_presence: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Voxel count per class over a stream of label maps, one item in memory at a time.

    Args:
        labels: iterable of label maps: numpy arrays or torch tensors of any shape (e.g. ``(1, *spatial)``),
            integer dtype or float holding integers; or paths to NIfTI files (read with nibabel, in slabs).
        num_classes: number of classes C; values must lie in ``0..C-1``.
        ignore_index: label value not counted (e.g. 255 for void). Other out-of-range values raise.
        progress: show a tqdm bar over the items.
        return_presence: also return, per class, the number of counted voxels of the items in which the
            class occurs (the denominator of Eigen & Fergus' median-frequency balancing).

    Returns:
        float64 ``(C,)`` absolute counts; with ``return_presence`` a pair ``(counts, present_voxels)``.

    Raises:
        ValueError: non-integral or out-of-range label values, naming the file (or item index) and value.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, found {num_classes!r}")
    total = np.zeros(num_classes, dtype=np.int64)
    present = np.zeros(num_classes, dtype=np.int64)
    for i, item in enumerate(tqdm(labels, desc="class frequencies", disable=not progress)):
        if isinstance(item, str | os.PathLike):
            counts, voxels = _count_nifti(Path(item), num_classes, ignore_index)
        else:
            if isinstance(item, torch.Tensor):
                item = item.detach().cpu().numpy()
            counts = _count(np.asarray(item), num_classes, ignore_index, f"label item {i}")
            voxels = int(counts.sum())
        total += counts
        present += np.where(counts > 0, voxels, 0)
    if return_presence:
        return total.astype(np.float64), present.astype(np.float64)
    return total.astype(np.float64)


def _check_method(method: str) -> None:
    if method not in METHODS:
        close = difflib.get_close_matches(str(method), METHODS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"unknown alpha method {method!r}, expected one of {METHODS}{hint}")


def _clip_on_simplex(weights: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """α_c = clip(t·w_c, lo, hi) with t such that Σα = 1 (bisection for the clipped set, then exact t)."""
    t_lo, t_hi = 0.0, hi / weights.min()  # total(t_lo) = C·lo <= 1 <= C·hi = total(t_hi)
    for _ in range(200):
        t = 0.5 * (t_lo + t_hi)
        if np.clip(t * weights, lo, hi).sum() < 1.0:
            t_lo = t
        else:
            t_hi = t
    alpha = np.clip(t_hi * weights, lo, hi)
    free = (alpha > lo) & (alpha < hi)
    if free.any():  # exact scale for the classes inside the bounds, so that Σα = 1 to rounding
        alpha[free] = weights[free] * (1.0 - alpha[~free].sum()) / weights[free].sum()
    return alpha


def alpha_from_frequencies(
    freqs: np.ndarray | torch.Tensor | Iterable[float],
    method: str = DEFAULT_METHOD,
    *,
    clip: tuple[float, float] | None = None,
    beta: float = 0.9999,
    present_voxels: np.ndarray | Iterable[float] | None = None,
) -> np.ndarray:
    """Class weights α summing to 1, larger for rarer classes (see the module docstring for each method).

    Args:
        freqs: ``(C,)`` voxel counts per class, C >= 2 (fractions work too except for ``effective_number``).
        method: one of ``METHODS``.
        clip: ``(lo, hi)`` bounds on the normalised α, with ``C·lo <= 1 <= C·hi``; None for no bounds.
        beta: β of ``effective_number``, 0 < β < 1; saturation count 1 / (1 - β) voxels.
        present_voxels: ``(C,)`` voxels of the items containing each class, for ``median`` (optional).

    Returns:
        float64 ``(C,)`` α with Σα = 1.

    Raises:
        ValueError: unknown method, a class with zero count, negative or non-finite input, bad clip/beta.
    """
    _check_method(method)
    n = np.asarray(freqs.detach().cpu() if isinstance(freqs, torch.Tensor) else freqs, dtype=np.float64)
    if n.ndim != 1 or n.size < 2:
        raise ValueError(f"freqs must be a (C,) vector with C >= 2, found shape {n.shape}")
    if not np.all(np.isfinite(n)) or (n < 0).any():
        raise ValueError(f"freqs must be finite and non-negative, found {n.tolist()}")
    absent = np.flatnonzero(n == 0)
    if absent.size:
        raise ValueError(
            f"class(es) {absent.tolist()} have zero count in {n.tolist()}: α is undefined for a class never "
            "seen; check num_classes and the label files, or drop the class"
        )
    f = n / n.sum()
    if method == "inverse":
        weights = 1.0 / f
    elif method == "inverse_sqrt":
        weights = 1.0 / np.sqrt(f)
    elif method == "effective_number":
        if not 0.0 < beta < 1.0:
            raise ValueError(f"beta must lie in (0, 1), found {beta}; for voxel counts use 1 - 1/K")
        effective = -np.expm1(n * np.log(beta)) / (1.0 - beta)  # (1 - β^n) / (1 - β), exact for β near 1
        weights = 1.0 / effective
    else:  # median
        if present_voxels is not None:
            denom = np.asarray(present_voxels, dtype=np.float64)
            if denom.shape != n.shape or (denom < n).any():
                raise ValueError(
                    f"present_voxels must be (C,) and >= the counts, found {denom.tolist()} for {n.tolist()}"
                )
            f = n / denom
        weights = np.median(f) / f
    alpha = weights / weights.sum()
    if clip is not None:
        lo, hi = (float(v) for v in clip)
        c = n.size
        if not (0.0 <= lo < hi <= 1.0) or c * lo > 1.0 + 1e-12 or c * hi < 1.0 - 1e-12:
            raise ValueError(
                f"clip=(lo, hi) must satisfy 0 <= lo < hi <= 1 and {c}·lo <= 1 <= {c}·hi for {c} classes, "
                f"found {clip}"
            )
        alpha = _clip_on_simplex(weights, lo, hi)
    return alpha


def alpha_table(counts: np.ndarray | Iterable[float], **kwargs: object) -> dict[str, np.ndarray]:
    """The α every method in ``METHODS`` gives for ``counts`` ``(C,)``; ``kwargs`` go to each call."""
    return {method: alpha_from_frequencies(counts, method, **kwargs) for method in METHODS}  # type: ignore[arg-type]


def save_alpha(path: PathLike, counts: np.ndarray, alpha: np.ndarray, method: str) -> Path:
    """Cache counts and α as JSON next to a run (written to a temporary file, then ``os.replace``)."""
    _check_method(method)
    path = Path(path)
    record = {
        "method": method,
        "counts": np.asarray(counts, dtype=np.float64).tolist(),
        "alpha": np.asarray(alpha, dtype=np.float64).tolist(),
    }
    from seg.io import write_json

    return write_json(path, record)


def load_alpha(path: PathLike) -> dict[str, object]:
    """Read a file written by ``save_alpha``: ``{"method": str, "counts": (C,), "alpha": (C,)}`` float64."""
    path = Path(path)
    record = json.loads(path.read_text())
    missing = {"method", "counts", "alpha"} - set(record)
    if missing:
        raise ValueError(f"alpha file '{path}' lacks keys {sorted(missing)}; rewrite it with save_alpha")
    counts = np.asarray(record["counts"], dtype=np.float64)
    alpha = np.asarray(record["alpha"], dtype=np.float64)
    if counts.shape != alpha.shape:
        raise ValueError(
            f"alpha file '{path}': counts {counts.shape} and alpha {alpha.shape} differ in length"
        )
    return {"method": record["method"], "counts": counts, "alpha": alpha}

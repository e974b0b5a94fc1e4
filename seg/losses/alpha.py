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

**One function.** :func:`resolve_alpha` turns whatever the user wrote (``None``, a number, a list, ``"auto"``) into
the per-channel vector every loss uses; config checks, the training module and the losses all call it. Counting
the classes is :mod:`seg.losses.frequencies`' job. Hand-written: MONAI has no class-frequency or α utility.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from seg.errors import check_option
from seg.files import write_json
from seg.losses.frequencies import class_frequencies  # noqa: F401 (re-exported)
from seg.types import PathLike

METHODS: tuple[str, ...] = ("inverse", "inverse_sqrt", "effective_number", "median")
DEFAULT_METHOD = "inverse_sqrt"
ACTIVATIONS = ("softmax", "sigmoid")


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
    check_option("alpha method", method, METHODS)
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


def resolve_alpha(alpha: float | Sequence[float] | torch.Tensor | str | None, num_classes: int, *,
                  activation: str = "softmax", method: str = DEFAULT_METHOD,
                  counts: np.ndarray | Sequence[float] | None = None) -> list[float] | None:
    """The one α semantics: what the user wrote -> one weight per channel ``(C,)``, or ``None`` (unweighted).

    Every caller (config validation, the training module, the losses) goes through this function.

    Args:
        alpha: ``None``; a number; one value per class/channel; or ``"auto"`` (derived from ``counts`` by
            ``method``, see :func:`alpha_from_frequencies`).
        num_classes: C, the network's output channels.
        activation: ``"softmax"``: α_c weights voxels whose true class is c; a number is accepted for C = 2 only
            and means ``[1 − α, α]`` (ambiguous otherwise). ``"sigmoid"``: α_c weights channel c's positives and
            1 − α_c its negatives (torchvision's ``sigmoid_focal_loss``); a number applies to every channel;
            each value must lie in [0, 1].
        method: the method of ``"auto"`` (one of ``METHODS``).
        counts: for ``"auto"``: softmax, ``(C,)`` voxel counts per class; sigmoid, ``(C, 2)`` counts of
            [negatives, positives] per channel (each channel is its own binary problem, α_c = its positives' α).
    Raises:
        ValueError: an unknown string or method, a number where it would be ambiguous, a wrong length,
            negative or non-finite values, ``"auto"`` without counts. The message quotes what was given.
    """
    check_option("activation", activation, ACTIVATIONS)
    if alpha is None:
        return None
    if isinstance(alpha, str):
        if alpha != "auto":
            raise ValueError(f"alpha must be null, a number, one value per class or 'auto', got {alpha!r}")
        check_option("alpha_method", method, METHODS)
        if counts is None:
            raise ValueError("alpha 'auto' needs the training split's class counts; none were given")
        n = np.asarray(counts, dtype=np.float64)
        if activation == "sigmoid":
            if n.shape != (num_classes, 2):
                raise ValueError(f"sigmoid alpha 'auto' needs [negatives, positives] per channel, shape "
                                 f"({num_classes}, 2); got counts of shape {n.shape}")
            return [float(alpha_from_frequencies(row, method)[1]) for row in n]
        return alpha_from_frequencies(n, method).tolist()
    values = torch.as_tensor(alpha, dtype=torch.float64).detach().cpu()
    if values.ndim == 0:
        if activation == "sigmoid":
            values = values.repeat(num_classes)
        elif num_classes == 2:
            if not 0 <= float(values) <= 1:
                raise ValueError(f"a scalar alpha weights the lesion class by alpha and background by 1 - alpha, so "
                                 f"it must be in [0, 1]; got {_quote(alpha)}")
            values = torch.stack([1 - values, values])
        else:
            raise ValueError(f"a scalar alpha ({float(values):g}) is ambiguous for softmax with C={num_classes} "
                             f"classes; give a list of {num_classes} values (one per class, background first) or "
                             "'auto' (see seg.losses.alpha)")
    if values.ndim != 1 or values.numel() != num_classes:
        raise ValueError(f"alpha {_quote(alpha)} has {values.numel()} value(s) but there are C={num_classes} "
                         "classes (background included): give one value per class")
    if not bool(torch.isfinite(values).all()) or bool((values < 0).any()):
        raise ValueError(f"alpha values must be finite and >= 0, got {_quote(alpha)}")
    if activation == "sigmoid" and bool((values > 1).any()):
        raise ValueError(f"sigmoid alpha weights positives by α and negatives by 1 − α, so α must be in [0, 1]; "
                         f"got {_quote(alpha)}")
    return values.tolist()


def _quote(alpha: object) -> str:
    return str(alpha.tolist() if isinstance(alpha, torch.Tensor) else list(alpha) if isinstance(alpha, tuple) else alpha)


ALPHA_FILE = "alpha.json"


def save_alpha(path: PathLike, counts: np.ndarray | Sequence[float] | None, alpha: Sequence[float] | None,
               method: str, **extra: object) -> Path:
    """Write α, its method (``"given"`` for a hand-set α) and the counts it came from as JSON, atomically.

    This is the ``RUN/alpha.json`` of a training run; ``extra`` keys (e.g. ``label_names``) are kept.
    """
    if method != "given":
        check_option("alpha method", method, METHODS)
    record = {"method": method,
              "counts": None if counts is None else np.asarray(counts, dtype=np.float64).tolist(),
              "alpha": None if alpha is None else np.asarray(alpha, dtype=np.float64).tolist(), **extra}
    return write_json(Path(path), record)


def load_alpha(path: PathLike) -> dict[str, object]:
    """Read a file written by :func:`save_alpha` (e.g. ``RUN/alpha.json``): ``{"method", "counts", "alpha", ...}``,
    counts and α as float64 arrays (``None`` where absent, e.g. an unweighted run)."""
    path = Path(path)
    record = json.loads(path.read_text())
    missing = {"method", "counts", "alpha"} - set(record)
    if missing:
        raise ValueError(f"alpha file '{path}' lacks keys {sorted(missing)}; rewrite it with save_alpha")
    counts, alpha = (None if record[k] is None else np.asarray(record[k], dtype=np.float64) for k in ("counts", "alpha"))
    if counts is not None and alpha is not None and counts.shape != alpha.shape:
        raise ValueError(f"alpha file '{path}': counts {counts.shape} and alpha {alpha.shape} differ in length")
    return {**record, "counts": counts, "alpha": alpha}

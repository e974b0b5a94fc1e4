"""The per-chunk work of the focal loss: the formula's value and gradient on one piece of the volume.

See :mod:`seg.losses.focal` for the derivation (both activations reduce to the true-class margin ``z``).
Everything here runs under ``torch.no_grad()`` on a chunk of ``CHUNK_ELEMENTS`` elements
(:mod:`seg.losses._chunks`); :class:`seg.losses.focal._FocalFunction` and
:class:`seg.losses.compound._FocalDiceFunction` drive it.
"""

from __future__ import annotations

import math

import torch


def _power(base: torch.Tensor, gamma: float) -> torch.Tensor:
    """``base ** γ`` in place, with the cheap kernels for the common γ."""
    if gamma == 1:
        return base
    if gamma == 2:
        return base.square_()
    if gamma == 0.5:
        return base.sqrt_()
    return base.pow_(gamma)


def _focal_terms(nz: torch.Tensor, gamma: float, with_slope: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per element, from the negated margin ``nz = -z`` (``p_t = σ(z)``):

    value ``-(1 - p_t)^γ log p_t`` and slope ``-d value/dz = (1 - p_t)^γ ((1 - p_t) + γ p_t (-log p_t)) >= 0``,
    both finite for every γ >= 0 and every finite logit.

    One ``exp`` and one ``log1p`` give all three quantities, accurate at both ends: with ``e = exp(nz)``,
    ``p_t = 1 / (1 + e)``, ``1 - p_t = e p_t`` and ``-log p_t = log1p(e)`` (``softplus``, which is an exp and
    a log1p itself, plus ``sigmoid``, another exp, cost ~25 % more on CPU). ``nz`` is clamped at 80 before
    the exp (``e^80`` is finite in float32); beyond it ``-log p_t = nz`` to float precision, hence the max.
    """
    e = torch.clamp_max(nz, 80.0).exp_()
    neg_log_p = torch.maximum(torch.log1p(e), nz)  # -log p_t = softplus(nz)
    p = torch.add(e, 1).reciprocal_()  # p_t
    one_minus_p = e.mul_(p)
    focus = None if gamma == 0 else (torch.square(one_minus_p) if gamma == 2 else _power(one_minus_p.clone(), gamma))
    slope = None
    if with_slope:
        slope = one_minus_p if gamma == 0 else torch.addcmul(one_minus_p, p, neg_log_p, value=gamma)
        if focus is not None:
            slope.mul_(focus)
    value = neg_log_p if focus is None else neg_log_p.mul_(focus)
    return value, slope


class FocalSpec:
    """Everything but the tensors: options and α (as Python floats or a (1, C, 1) tensor)."""

    def __init__(self, gamma: float, alpha: torch.Tensor | None, activation: str, include_background: bool,
                 ignore_index: int | None, reduction: str, is_labels: bool, dtype: torch.dtype) -> None:
        self.gamma, self.softmax, self.is_labels = float(gamma), activation == "softmax", is_labels
        self.include_background, self.ignore_index, self.reduction = include_background, ignore_index, reduction
        self.alpha, self.dtype = alpha, dtype  # alpha: (C,) in the compute dtype, or None
        self.alpha_pair = tuple(alpha.tolist()[:2]) if alpha is not None else None  # two-class softmax
        self.grad_scale = 1.0  # set by the caller when the sigmoid training path should write d mean/dx directly
        self.normalizer: float | None = None  # the mean's divisor when it is not the element count (foreground)

    def prescales_gradient(self) -> bool:
        """True where :func:`_sigmoid_chunk` writes the gradient already times ``grad_scale``: the sigmoid
        training path (γ > 0, "mean"/"sum"). Folding 1/count into α_t there saves the backward a full pass
        over the logits-sized gradient."""
        return not self.softmax and self.gamma > 0 and self.reduction != "none"


def _binary_weights(positive: torch.Tensor, a_pos, a_neg, keep: torch.Tensor | None):
    """α_t (for the value) and α_t·(1 − 2t) (dz/dx sign folded in, for the gradient), zero where not kept.

    ``positive`` is a float 0/1 tensor; ``a_pos``/``a_neg`` Python floats or broadcastable tensors.
    """
    if isinstance(a_pos, float) and a_pos == a_neg == 1.0:
        weight = None if keep is None else keep.to(positive.dtype)
        signed = torch.mul(positive, -2).add_(1)  # 1 − 2t
    else:
        weight = torch.mul(positive, a_pos - a_neg).add_(a_neg)
        signed = torch.mul(positive, -(a_pos + a_neg)).add_(a_neg)
        if keep is not None:
            weight.mul_(keep)
    if keep is not None:
        signed.mul_(keep)
    return weight, signed


def _sigmoid_chunk(x: torch.Tensor, target: torch.Tensor, spec: FocalSpec, grad: torch.Tensor | None):
    """The sigmoid branch of :func:`focal_chunk`, in as few passes over the chunk as the formula allows.

    Sigmoid focal does its elementwise work on every channel (softmax focal on one margin per voxel), so
    passes count double here. With γ > 0 and ``"mean"``/``"sum"`` (training), α_t is folded into the
    focusing term once and the value is a dot product: 13 cheap passes and 2 transcendental ones
    (an exp and a log1p) for value and gradient, against ~8 and 2 (log_sigmoid, sigmoid) in
    ``F.binary_cross_entropy_with_logits`` forward + backward. Under ``"mean"``/``"sum"`` only the sum
    is returned (a 0-d tensor).
    """
    start = 0 if spec.include_background else 1
    logits = x[:, start:]  # (B, C', n)
    keep = None
    if spec.is_labels:
        y = target.unsqueeze(1)  # (B, 1, n)
        classes = torch.arange(start, x.shape[1], device=x.device).view(1, -1, 1)
        positive = (y == classes).to(x.dtype)  # one-hot, (B, C', n)
        if spec.ignore_index is not None:
            keep = (y != spec.ignore_index).to(x.dtype)  # (B, 1, n), broadcast over channels
    else:
        hot = target[:, start:]
        if spec.ignore_index is not None:
            keep = (hot != spec.ignore_index).to(x.dtype)
        positive = (hot == 1).to(x.dtype) if keep is not None or hot.dtype != x.dtype else hot
    nz = torch.addcmul(logits, logits, positive, value=-2)  # -z: x on negatives, -x on positives
    weight = a_pos = a_neg = None
    if spec.alpha is not None:
        a_pos = spec.alpha[start:].view(1, -1, 1)  # (1, C', 1)
        a_neg = 1 - a_pos
        scale = spec.grad_scale  # 1 except on the prescaled training path (see FocalSpec.prescales_gradient)
        weight = torch.addcmul(a_neg * scale, positive, (a_pos - a_neg) * scale)  # α_t (× scale)
    if keep is not None:
        weight = keep.expand_as(positive) if weight is None else weight.mul_(keep)
    count = float(keep.sum()) * positive.shape[1] if keep is not None and spec.is_labels else (
        float(keep.sum()) if keep is not None else float(nz.numel()))

    if spec.gamma == 0 or spec.reduction == "none":  # the general path
        value, slope = _focal_terms(nz, spec.gamma, grad is not None)
        if grad is not None:
            if start:
                grad[:, :start].zero_()
            # d loss/dx = slope · α_t (1 − 2t)
            signed = torch.mul(positive, -2).add_(1) if a_pos is None else torch.addcmul(a_neg, positive, -(a_pos + a_neg))
            if keep is not None:
                signed.mul_(keep)
            torch.mul(slope, signed, out=grad[:, start:])
        if spec.reduction == "none":
            return (value if weight is None else value.mul_(weight)), count
        return (value.sum() if weight is None else torch.dot(value.reshape(-1), weight.reshape(-1))), count

    # γ > 0, summed: the same formula with α_t folded into the focusing term once, A = α_t (1 − p)^γ,
    # so value = Σ A (−log p) and d loss/dx = (1 − 2t) A ((1 − p) + γ p (−log p)).
    total = _summed_terms(nz, positive, weight, spec, grad, start, safe=False)
    if not bool(torch.isfinite(total)):  # |logit| beyond exp's range (or a NaN logit): redo the chunk safely
        total = _summed_terms(nz, positive, weight, spec, grad, start, safe=True)
    return total, count


def _summed_terms(nz, positive, weight, spec: FocalSpec, grad: torch.Tensor | None, start: int, safe: bool):
    """The sigmoid training path's value (0-d) and gradient (into ``grad``) for one chunk.

    ``safe=False`` skips ``_focal_terms``' clamp and maximum (two of ~14 passes, ~10 % of the loss's time):
    unclamped, ``exp(nz)`` is finite for ``nz`` up to ~88 (float32), where ``log1p`` is still exact, and
    beyond that it is inf, which makes ``1 − p = inf · 0`` NaN and so the chunk's total non-finite; the
    caller then redoes the chunk with ``safe=True``. Logits that large are rare, so the check is free.
    """
    e = torch.clamp_max(nz, 80.0).exp_() if safe else torch.exp(nz)  # as in _focal_terms
    neg_log_p = torch.maximum(torch.log1p(e), nz) if safe else torch.log1p(e)
    p = torch.add(e, 1).reciprocal_()
    one_minus_p = e.mul_(p)
    focused = torch.square(one_minus_p) if spec.gamma == 2 else _power(one_minus_p.clone(), spec.gamma)
    scale = spec.grad_scale
    if weight is not None:
        focused.mul_(weight)  # the scale is in there
    elif scale != 1.0:
        focused.mul_(scale)
    total = torch.dot(neg_log_p.reshape(-1), focused.reshape(-1)) / scale
    if grad is not None:
        if start:
            grad[:, :start].zero_()
        inner = torch.addcmul(one_minus_p, p, neg_log_p, value=spec.gamma).mul_(focused)
        torch.addcmul(inner, inner, positive, value=-2, out=grad[:, start:])  # × (1 − 2t)
    return total


def focal_chunk(x: torch.Tensor, target: torch.Tensor, spec: FocalSpec, grad: torch.Tensor | None,
                shared: dict[str, torch.Tensor | None] | None = None):
    """Focal loss of one chunk; writes ``d loss/d x`` (per element, unscaled) into ``grad`` if given.

    With two-class softmax, ``shared`` (if given) receives ``diff = x_1 − x_0``, ``positive`` (0/1 float)
    and ``keep`` (not ignored, background included; float or ``None``) for the Dice term of :class:`seg.losses.FocalDiceLoss` to reuse.

    Args:
        x: logits ``(B, C, n)`` in the compute dtype.
        target: labels ``(B, n)`` or multi-hot ``(B, C, n)``, any dtype.
        grad: ``(B, C, n)`` view to fill, or ``None``.

    Returns:
        ``(value, count)``: per-element loss ``(B, n)`` (softmax) or ``(B, C', n)`` (sigmoid, kept channels),
        zero where nothing contributes, and the number of contributing elements.
    """
    need_grad = grad is not None
    if not spec.softmax:
        return _sigmoid_chunk(x, target, spec, grad)

    keep = not_ignored = None
    labels = target
    if spec.ignore_index is not None:
        keep = not_ignored = target != spec.ignore_index
        labels = torch.where(keep, target, 0)
    if not spec.include_background:
        keep = labels != 0 if keep is None else keep & (labels != 0)
    count = float(keep.sum()) if keep is not None else float(labels.numel())
    if x.shape[1] == 2:  # the common binary case: z = ±(x_1 − x_0)
        positive = labels.to(x.dtype)  # (B, n), 0/1
        diff = x[:, 1] - x[:, 0]
        nz = torch.addcmul(diff, diff, positive, value=-2)
        if shared is not None:
            shared.update(diff=diff, positive=positive, keep=None if not_ignored is None else not_ignored.to(x.dtype))
        a_neg, a_pos = (1.0, 1.0) if spec.alpha is None else spec.alpha_pair
        weight, signed = _binary_weights(positive, a_pos, a_neg, keep)
        value, slope = _focal_terms(nz, spec.gamma, need_grad)
        if need_grad:
            torch.mul(slope, signed, out=grad[:, 1])  # d loss/dx_1 = slope · α_t · (1 − 2t)
            torch.neg(grad[:, 1], out=grad[:, 0])
        return (value if weight is None else value.mul_(weight)), count

    index = labels.long().unsqueeze(1)  # (B, 1, n)
    others = x.scatter(1, index, -math.inf)  # the true class masked out
    lse_others = torch.logsumexp(others, dim=1, keepdim=True)  # (B, 1, n)
    nz = lse_others.sub_(x.gather(1, index)).squeeze(1)  # (B, n)
    weight = torch.take(spec.alpha, index.squeeze(1)) if spec.alpha is not None else None
    if keep is not None:
        weight = keep.to(x.dtype) if weight is None else weight.mul_(keep)
    value, slope = _focal_terms(nz, spec.gamma, need_grad)
    if need_grad:
        if weight is not None:
            slope.mul_(weight)
        slope = slope.unsqueeze(1)  # (B, 1, n)
        # dz/dx_j = −softmax over j ≠ t, dz/dx_t = 1; others − lse_others = others + x_t + nz
        torch.exp(others.sub_(nz.unsqueeze(1)).sub_(x.gather(1, index)), out=grad)
        grad.mul_(slope).scatter_(1, index, slope.neg())
    return (value if weight is None else value.mul_(weight)), count

"""Soft Dice loss (Milletari et al., 2016), with nnU-Net's batch Dice.

    Dice_c = (2 Σ p_c t_c + s) / (Σ p_c + Σ t_c + s),      loss = 1 − mean_c Dice_c

sums over the voxels of each image (``batch=False``) or over the whole batch (``batch=True``, nnU-Net's
``batch_dice``: intersections and sizes are summed over the batch before dividing, so an image without
foreground does not count as a perfect or a failed case on its own). ``s = smooth`` in both numerator
and denominator (MONAI's ``smooth_nr = smooth_dr``): empty ground truth with an empty prediction gives 0.

Written by hand (MONAI's ``DiceLoss`` computes the same numbers, tested) so that it shares targets,
background handling and ``ignore_index`` with the focal loss, and for cost: the gradient only needs
the per-class sums, so forward keeps nothing but those sums, and backward recomputes probabilities
chunk by chunk (no logits-sized one-hot or probability tensor lives between the passes).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from seg.losses._chunks import chunk_bounds, map_chunks
from seg.losses._targets import ACTIVATIONS, REDUCTIONS, check_option, compute_dtype, flatten_inputs


class DiceSpec:
    """Options of one Dice evaluation (tensors excluded)."""

    def __init__(self, activation: str, include_background: bool, batch: bool, smooth: float,
                 ignore_index: int | None, reduction: str, is_labels: bool, dtype: torch.dtype) -> None:
        self.softmax, self.include_background, self.batch = activation == "softmax", include_background, batch
        self.smooth, self.ignore_index, self.reduction = float(smooth), ignore_index, reduction
        self.is_labels, self.dtype = is_labels, dtype


def _probabilities_and_target(x: torch.Tensor, target: torch.Tensor, spec: DiceSpec):
    """``p (B, C, n)``, one-hot ``t (B, C, n)`` and ``keep`` (broadcastable, or ``None``), compute dtype."""
    p = torch.softmax(x, dim=1) if spec.softmax else torch.sigmoid(x)
    keep = None
    if spec.is_labels:
        y = target.unsqueeze(1)  # (B, 1, n)
        if spec.ignore_index is not None:
            keep = (y != spec.ignore_index).to(x.dtype)
        classes = torch.arange(x.shape[1], device=x.device).view(1, -1, 1)
        t = (y == classes).to(x.dtype)  # (B, C, n); ignored voxels match no class
    else:
        t = (target == 1).to(x.dtype)
        if spec.ignore_index is not None:
            keep = (target != spec.ignore_index).to(x.dtype)
    if keep is not None:
        p, t = p.mul_(keep), t.mul_(keep)
    return p, t, keep


def _binary_softmax(x: torch.Tensor, target: torch.Tensor, spec: DiceSpec):
    """Two-class softmax: ``x_1 − x_0``, ``t_1`` and ``keep``, all ``(B, n)``; ``t_1`` is 0 where not kept."""
    keep = None
    if spec.ignore_index is not None:
        keep = (target != spec.ignore_index).to(x.dtype)
    t1 = (target == 1).to(x.dtype)
    return x[:, 1] - x[:, 0], t1, keep


def binary_softmax_sums(diff: torch.Tensor, t1: torch.Tensor, keep: torch.Tensor | None,
                        p1_p0: torch.Tensor | None = None) -> torch.Tensor:
    """Class-1 sums ``(3, B)`` = (Σ p_1 t_1, Σ p_1, Σ t_1) of a two-class softmax chunk (see ``binary_to_sums``).

    ``diff = x_1 − x_0``, ``t_1`` and ``keep`` are ``(B, n)``. If given, ``p1_p0`` ``(B, n)`` receives
    ``p_1 p_0`` (0 where not kept) for :func:`binary_softmax_grad_into`.
    """
    p1 = torch.sigmoid(diff)
    if keep is not None:
        p1.mul_(keep)
    if p1_p0 is not None:
        torch.mul(p1, torch.rsub(p1, 1), out=p1_p0)
    return torch.stack([(p1 * t1).sum(-1), p1.sum(-1), t1.sum(-1)]).double()


def binary_to_sums(class1: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """Full sums ``(3, B, 2)`` from class-1 sums ``(3, B)`` and kept voxels per image ``(B,)``.

    Class 0 follows from class 1 on the kept voxels: p_0 = 1 − p_1, t_0 = 1 − t_1.
    """
    inter1, pred1, true1 = class1
    class0 = torch.stack([kept - pred1 - true1 + inter1, kept - pred1, kept - true1])
    return torch.stack([class0, class1], dim=-1)


def dice_chunk_sums(x: torch.Tensor, target: torch.Tensor, spec: DiceSpec) -> torch.Tensor:
    """Per-image, per-class sums of one chunk: float64 ``(3, B, C)`` = (Σ p·t, Σ p, Σ t).

    Args:
        x: logits ``(B, C, n)`` in the compute dtype; target: labels ``(B, n)`` or multi-hot ``(B, C, n)``.
    """
    if spec.softmax and spec.is_labels and x.shape[1] == 2:
        diff, t1, keep = _binary_softmax(x, target, spec)
        kept = keep.sum(-1).double() if keep is not None else torch.full((x.shape[0],), float(x.shape[2]),
                                                                          dtype=torch.float64, device=x.device)
        return binary_to_sums(binary_softmax_sums(diff, t1, keep), kept)
    p, t, _ = _probabilities_and_target(x, target, spec)
    return torch.stack([(p * t).sum(-1), p.sum(-1), t.sum(-1)]).double()


def dice_from_sums(sums: torch.Tensor, spec: DiceSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dice, denominator)`` per kept class: ``(B, C')``, or ``(1, C')`` with ``batch=True``."""
    if spec.batch:
        sums = sums.sum(dim=1, keepdim=True)  # (3, B, C) -> (3, 1, C)
    if not spec.include_background:
        sums = sums[:, :, 1:]
    intersection, predicted, actual = sums
    denominator = predicted + actual + spec.smooth
    return (2 * intersection + spec.smooth) / denominator, denominator


def dice_grad_into(x: torch.Tensor, target: torch.Tensor, spec: DiceSpec, slope: torch.Tensor,
                   offset: torch.Tensor, out: torch.Tensor, existing: float | None = None) -> None:
    """Write one chunk's gradient into ``out (B, C, n)``, given ``d loss/d p_c = slope_c t_c + offset_c``.

    ``slope`` and ``offset`` are ``(B, C, 1)``, zero for dropped channels. With ``existing = s``, ``out``
    already holds another softmax/sigmoid loss's gradient and becomes ``s · out + this gradient``.
    """
    if spec.softmax and spec.is_labels and x.shape[1] == 2:
        diff, t1, keep = _binary_softmax(x, target, spec)
        p1 = torch.sigmoid(diff)
        p1_p0 = p1.mul_(torch.rsub(p1, 1))
        gain, bias = binary_gain_bias(slope, offset)
        binary_softmax_grad_into(t1, p1_p0 if keep is None else p1_p0.mul_(keep), gain, bias, out, existing)
        return
    p, t, keep = _probabilities_and_target(x, target, spec)
    d_p = torch.addcmul(offset, t, slope)  # (B, C, n)
    if keep is not None:
        d_p.mul_(keep)
    if spec.softmax:  # d/dx_j = p_j (g_j − Σ_k p_k g_k)
        grad = d_p.sub_((p * d_p).sum(dim=1, keepdim=True)).mul_(p)
    else:
        grad = d_p.mul_(p).mul_(torch.rsub(p, 1))  # sigmoid: g · p (1 − p)
    if existing is None:
        out.copy_(grad)
    else:
        torch.add(grad, out, alpha=existing, out=out)


def binary_gain_bias(slope: torch.Tensor, offset: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For two classes, g_1 − g_0 = t_1 · gain + bias with gain = s_1 + s_0, bias = o_1 − o_0 − s_0: (B, 1) each."""
    return slope[:, 1] + slope[:, 0], offset[:, 1] - offset[:, 0] - slope[:, 0]


def binary_softmax_grad_into(t1: torch.Tensor, p1_p0: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor,
                             out: torch.Tensor, existing: float | None) -> None:
    """Two-class softmax case of :func:`dice_grad_into` from ``t_1`` and ``p_1 p_0`` (B, n), 0 where not kept.

    d/dx_1 = p_1 p_0 (g_1 − g_0) (see :func:`binary_gain_bias`). Any loss of a 2-class softmax has
    d/dx_0 = −d/dx_1, so channel 0 is written as −channel 1.
    """
    grad1 = torch.addcmul(bias, t1, gain).mul_(p1_p0)  # (B, n)
    if existing is None:
        out[:, 1] = grad1
    else:
        torch.add(grad1, out[:, 1], alpha=existing, out=out[:, 1])
    torch.neg(out[:, 1], out=out[:, 0])


def dice_slopes(dice: torch.Tensor, denominator: torch.Tensor, weight: torch.Tensor, spec: DiceSpec,
                shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn ``d total/d Dice_c = −weight_c`` into ``(slope, offset)`` of ``d total/d p`` (see above).

    d Dice/d p_v = (2 t_v − Dice) / denominator, so d total/d p_v = −weight (2 t_v − Dice) / denominator.
    """
    batch, channels = shape
    slope = -2 * weight / denominator
    offset = weight * dice / denominator
    start = 0 if spec.include_background else 1
    full = torch.zeros(2, batch, channels, dtype=torch.float64, device=dice.device)
    full[0, :, start:], full[1, :, start:] = slope, offset  # broadcasts (1, C') over B for batch Dice
    full = full.to(spec.dtype).unsqueeze(-1)  # (2, B, C, 1)
    return full[0], full[1]


class _DiceFunction(torch.autograd.Function):
    """Soft Dice over ``x (B, C, N)``: keeps only the per-class sums; backward recomputes ``p``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, target: torch.Tensor, spec: DiceSpec) -> torch.Tensor:
        bounds = chunk_bounds(x.shape[2], x.shape[0] * x.shape[1], x.device)
        parts = map_chunks(lambda a, b: dice_chunk_sums(x[:, :, a:b].to(spec.dtype), target[..., a:b], spec),
                           bounds, x.device)
        dice, denominator = dice_from_sums(torch.stack(parts).sum(0), spec)
        ctx.save_for_backward(x, target, dice, denominator)
        ctx.spec = spec
        loss = 1 - dice  # (B, C') or (1, C')
        if spec.reduction == "none":
            return (loss[0] if spec.batch else loss).to(x.dtype)
        return (loss.mean() if spec.reduction == "mean" else loss.sum()).to(x.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        x, target, dice, denominator = ctx.saved_tensors
        spec: DiceSpec = ctx.spec
        g = grad_output.double()
        if spec.reduction == "none":
            weight = g.unsqueeze(0) if spec.batch else g
        else:
            weight = (g / dice.numel() if spec.reduction == "mean" else g).expand_as(dice)
        slope, offset = dice_slopes(dice, denominator, weight, spec, (x.shape[0], x.shape[1]))
        grad = torch.empty(x.shape, dtype=spec.dtype, device=x.device)

        def run(a: int, b: int) -> None:
            dice_grad_into(x[:, :, a:b].to(spec.dtype), target[..., a:b], spec, slope, offset, grad[:, :, a:b])

        map_chunks(run, chunk_bounds(x.shape[2], x.shape[0] * x.shape[1], x.device), x.device)
        return grad.to(x.dtype), None, None


def dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    activation: str = "softmax",
    include_background: bool = False,
    batch: bool = False,
    smooth: float = 1e-5,
    ignore_index: int | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Soft Dice loss ``1 − (2 Σ p t + s) / (Σ p + Σ t + s)``, per image and class, 2D or 3D.

    Args:
        logits: raw scores ``(B, C, *spatial)``, float16/32/64.
        target: integer labels ``(B, 1, *spatial)`` or ``(B, *spatial)`` (integral float allowed), or
            one-/multi-hot 0/1 ``(B, C, *spatial)`` (one-hot only for softmax).
        activation: ``"softmax"`` or ``"sigmoid"``; probabilities are taken over all channels.
        include_background: if False (the default, as in nnU-Net), channel 0's Dice is left out.
        batch: sum intersections and sizes over the batch before dividing (nnU-Net's ``batch_dice``).
        smooth: added to numerator and denominator; empty truth and empty prediction give loss 0.
        ignore_index: label value whose voxels leave every sum.
        reduction: ``"mean"`` over images and kept classes, ``"sum"``, or ``"none"``: ``(B, C')`` per
            image and kept class, ``(C',)`` with ``batch=True`` (C' = C − 1 without background).

    Returns:
        Scalar, or the shape above, in the logits' dtype.
    """
    check_option("reduction", reduction, REDUCTIONS)
    if not (math.isfinite(smooth) and smooth >= 0):
        raise ValueError(f"smooth must be a finite number >= 0, found {smooth}")
    x, flat_target, is_labels = flatten_inputs(logits, target, activation, ignore_index)
    if not include_background and x.shape[1] == 1:
        raise ValueError("include_background=False leaves no channel of a single-channel output; "
                         "set include_background=True")
    spec = DiceSpec(activation, include_background, batch, smooth, ignore_index, reduction, is_labels,
                    compute_dtype(logits))
    return _DiceFunction.apply(x, flat_target, spec)


class DiceLoss(nn.Module):
    """:func:`dice_loss` as a module; arguments as there."""

    def __init__(self, activation: str = "softmax", include_background: bool = False, batch: bool = False,
                 smooth: float = 1e-5, ignore_index: int | None = None, reduction: str = "mean") -> None:
        super().__init__()
        check_option("activation", activation, ACTIVATIONS)
        check_option("reduction", reduction, REDUCTIONS)
        self.activation, self.include_background, self.batch = activation, include_background, batch
        self.smooth, self.ignore_index, self.reduction = smooth, ignore_index, reduction

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return dice_loss(logits, target, activation=self.activation, include_background=self.include_background,
                         batch=self.batch, smooth=self.smooth, ignore_index=self.ignore_index,
                         reduction=self.reduction)

    def extra_repr(self) -> str:
        return (f"activation={self.activation!r}, include_background={self.include_background}, "
                f"batch={self.batch}, smooth={self.smooth}")

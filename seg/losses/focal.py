"""Focal loss (Lin et al., 2017, "Focal Loss for Dense Object Detection", §3).

    FL(p_t) = -α_t (1 - p_t)^γ log(p_t)

Written by hand rather than taken from MONAI/torchvision/kornia because those (a) produce NaN gradients
for 0 < γ < 1 once a prediction saturates (autograd of ``(1 - p)^γ`` at ``p = 1`` is ``inf · 0``,
kornia #918), (b) silently drop a scalar α under softmax (MONAI #8117), and (c) cost 2-3× the time and
4-7× the extra memory of cross-entropy on 3D volumes.

How this one avoids all three. Both activations reduce to a binary problem on the true-class logit
margin ``z``: sigmoid ``z = ±x`` (sign of the target), softmax ``z = x_t − logsumexp_{j≠t} x_j``, so that
``p_t = σ(z)``, ``log p_t = logsigmoid(z)``, ``1 − p_t = σ(−z)`` — all exact in floating point, even at
logits of ±30. The derivative needs no ``(1 − p_t)^{γ−1}``:

    d FL / dz = α_t (1 − p_t)^γ (γ p_t log p_t − (1 − p_t))

(the ``(1 − p_t)`` from ``dp_t/dz = p_t (1 − p_t)`` cancels the ``−1`` in the exponent), so the gradient
is finite for every γ ≥ 0. A custom autograd function walks the volume in cache-sized chunks and,
while each chunk is in cache, writes its gradient into one logits-sized buffer (cross-entropy keeps a
logits-sized ``log_softmax`` for its backward instead); backward only scales that buffer. No other
full-size temporary exists, so the loss costs about one cross-entropy in time and memory
(``benchmarks/losses.py``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from seg.losses._chunks import chunk_bounds, map_chunks
from seg.losses._focal_chunk import FocalSpec, focal_chunk
from seg.losses._targets import (
    NORMALIZATIONS,
    REDUCTIONS,
    alpha_vector,
    check_option,
    compute_dtype,
    flatten_inputs,
    foreground_count,
)
from seg.types import Alpha


class _FocalFunction(torch.autograd.Function):
    """Focal loss over ``x (B, C, N)``.

    The gradient is cheap to get while the forward pass has ``p_t`` in cache, so forward fills it chunk
    by chunk into one logits-sized buffer (only when a gradient is needed) and backward just scales it,
    in place. Cross-entropy keeps a logits-sized ``log_softmax`` for its backward, so the memory is the
    same. A second backward through the same graph (``retain_graph=True``) recomputes from the saved
    logits and target.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, target: torch.Tensor, spec: FocalSpec) -> torch.Tensor:
        if spec.prescales_gradient() and spec.reduction == "sum":
            spec.grad_scale = 1.0
        elif spec.prescales_gradient() and spec.normalizer is not None:  # the divisor is known before the pass
            spec.grad_scale = 1.0 / spec.normalizer
        elif spec.prescales_gradient() and spec.ignore_index is None:
            kept_channels = x.shape[1] - (0 if spec.include_background else 1)
            spec.grad_scale = 1.0 / max(x.shape[0] * kept_channels * x.shape[2], 1)
        values, count, grad = _FocalFunction._run(x, target, spec, ctx.needs_input_grad[0])
        count = count if spec.normalizer is None else spec.normalizer
        ctx.save_for_backward(x, target)
        ctx.spec, ctx.count, ctx.grad = spec, count, grad
        if spec.reduction == "none":
            return values.to(x.dtype)
        total = math.fsum(values)
        if spec.reduction == "mean":
            total /= max(count, 1.0)  # nothing to average (all ignored) gives 0, not NaN
        return torch.tensor(total, dtype=x.dtype, device=x.device)

    @staticmethod
    def _run(x: torch.Tensor, target: torch.Tensor, spec: FocalSpec, need_grad: bool):
        out = None
        if spec.reduction == "none":
            shape = (x.shape[0], x.shape[2]) if spec.softmax else tuple(x.shape)
            out = torch.zeros(shape, dtype=spec.dtype, device=x.device)  # (B, N) or (B, C, N)
        grad = torch.empty(x.shape, dtype=spec.dtype, device=x.device) if need_grad else None

        def run(start: int, stop: int) -> tuple[float, float]:
            value, count = focal_chunk(x[:, :, start:stop].to(spec.dtype), target[..., start:stop], spec,
                                       None if grad is None else grad[:, :, start:stop])
            if out is None:
                return float(value.sum()), count
            if spec.softmax:
                out[:, start:stop] = value  # (B, n)
            else:
                out[:, out.shape[1] - value.shape[1]:, start:stop] = value  # (B, C', n), channel 0 stays 0
            return 0.0, count

        results = map_chunks(run, chunk_bounds(x.shape[2], x.shape[0] * x.shape[1], x.device), x.device)
        count = sum(c for _, c in results)
        return (out if out is not None else [s for s, _ in results]), count, grad

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        x, target = ctx.saved_tensors
        spec: FocalSpec = ctx.spec
        grad, ctx.grad = ctx.grad, None  # hand the buffer over: autograd can keep it as .grad, no copy
        if grad is None:
            grad = _FocalFunction._run(x, target, spec, True)[2]
        if spec.reduction == "none":
            scale = grad_output.to(spec.dtype)
            grad.mul_(scale.unsqueeze(1) if spec.softmax else scale)  # (B, N) -> (B, 1, N)
        else:
            prescaled = spec.grad_scale != 1.0  # forward already divided the gradient by the count
            factor = float(grad_output) / (max(ctx.count, 1.0) if spec.reduction == "mean" and not prescaled else 1.0)
            if factor != 1.0:
                grad.mul_(factor)
        return grad.to(x.dtype), None, None


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    gamma: float = 2.0,
    alpha: Alpha = None,
    activation: str = "softmax",
    include_background: bool = True,
    ignore_index: int | None = None,
    reduction: str = "mean",
    normalization: str = "voxels",
) -> torch.Tensor:
    """Focal loss ``FL(p_t) = -α_t (1 - p_t)^γ log(p_t)`` (Lin et al., 2017), 2D or 3D.

    Args:
        logits: raw scores ``(B, C, *spatial)``, float16/32/64 (computed in float32, float64 kept).
        target: integer labels ``(B, 1, *spatial)`` or ``(B, *spatial)`` (float dtype allowed if the
            values are whole numbers), or one-/multi-hot 0/1 ``(B, C, *spatial)`` (one-hot only for softmax).
            With sigmoid and a single channel, the target is that channel's binary mask.
        gamma: focusing parameter γ ≥ 0; γ = 0 is cross-entropy. Any γ, including 0 < γ < 1, has finite gradients.
        alpha: class weight α (``None``: unweighted).
            sigmoid: a scalar weights the positives of every channel by α and the negatives by 1 − α
            (as torchvision's ``sigmoid_focal_loss``); a length-C sequence does so per channel.
            softmax: a length-C sequence, a voxel of true class c gets α_c; a scalar is allowed for
            C = 2 only and means ``[1 − α, α]``; for C > 2 a scalar raises (it would be ambiguous).
        activation: ``"softmax"`` (one class per voxel) or ``"sigmoid"`` (independent channels).
        include_background: if False, channel 0 leaves the loss: under sigmoid its term is dropped, under
            softmax voxels whose true class is 0 contribute nothing (the softmax still spans every channel).
        ignore_index: label value (or multi-hot value) whose voxels contribute nothing, exactly.
        reduction: ``"mean"`` averages over the contributing elements (softmax: voxels that are not
            ignored or dropped background, like ``F.cross_entropy`` — but α does not enter the divisor;
            sigmoid: such voxels × channels, like torchvision's ``.mean()``); 0 when none contribute.
            ``"sum"`` adds them. ``"none"`` returns the per-element loss, zero where nothing contributes:
            softmax ``(B, *spatial)``, sigmoid ``(B, C, *spatial)``.
        normalization: the divisor of ``"mean"``: ``"voxels"`` (the contributing elements, above) or
            ``"foreground"``: the number of foreground elements in the batch (softmax: voxels of a class >= 1;
            sigmoid: positive entries), floored at 1 — RetinaNet's normalisation by the anchors assigned to
            ground truth (Lin et al., 2017, §4), which keeps a sparse lesion's loss from vanishing in the mean.

    Returns:
        A scalar for ``"mean"``/``"sum"``, else the shape above, in the logits' dtype.

    Example — γ = 0 is cross-entropy:

    >>> import torch, torch.nn.functional as F
    >>> logits, labels = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    >>> torch.allclose(focal_loss(logits, labels, gamma=0.0), F.cross_entropy(logits, labels))
    True
    """
    check_option("reduction", reduction, REDUCTIONS)
    check_option("normalization", normalization, NORMALIZATIONS)
    if not (math.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"gamma must be a finite number >= 0, found {gamma}")
    x, flat_target, is_labels = flatten_inputs(logits, target, activation, ignore_index)
    alpha_values = alpha_vector(alpha, x.shape[1], activation)
    dtype = compute_dtype(logits)
    if alpha_values is not None:
        alpha_values = alpha_values.to(device=x.device, dtype=dtype)
    spec = FocalSpec(gamma, alpha_values, activation, include_background, ignore_index, reduction,
                     is_labels, dtype)
    if normalization == "foreground" and reduction == "mean":
        spec.normalizer = foreground_count(flat_target, is_labels, include_background, ignore_index)
    loss = _FocalFunction.apply(x, flat_target, spec)
    if reduction == "none":
        batch, channels, *spatial = logits.shape
        return loss.reshape(batch, *spatial) if activation == "softmax" else loss.reshape(logits.shape)
    return loss


class FocalLoss(nn.Module):
    """:func:`focal_loss` as a module; arguments as there.

    α is kept as a non-persistent buffer (it follows ``.to(device)`` but stays out of ``state_dict``);
    nothing is assigned to ``self`` in ``forward``.
    """

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: Alpha = None,
        activation: str = "softmax",
        include_background: bool = True,
        ignore_index: int | None = None,
        reduction: str = "mean",
        normalization: str = "voxels",
    ) -> None:
        super().__init__()
        check_option("activation", activation, ("softmax", "sigmoid"))
        check_option("reduction", reduction, REDUCTIONS)
        self.normalization = check_option("normalization", normalization, NORMALIZATIONS)
        if not (math.isfinite(gamma) and gamma >= 0):
            raise ValueError(f"gamma must be a finite number >= 0, found {gamma}")
        self.gamma, self.activation, self.reduction = float(gamma), activation, reduction
        self.include_background, self.ignore_index = include_background, ignore_index
        alpha_tensor = None if alpha is None else torch.as_tensor(alpha, dtype=torch.float64).detach().clone()
        if alpha_tensor is not None and alpha_tensor.ndim > 1:
            raise ValueError(f"alpha must be a scalar or a length-C sequence, found shape {tuple(alpha_tensor.shape)}")
        self.register_buffer("alpha", alpha_tensor, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return focal_loss(logits, target, gamma=self.gamma, alpha=self.alpha, activation=self.activation,
                          include_background=self.include_background, ignore_index=self.ignore_index,
                          reduction=self.reduction, normalization=self.normalization)

    def extra_repr(self) -> str:
        alpha = None if self.alpha is None else self.alpha.tolist()
        return f"gamma={self.gamma}, alpha={alpha}, activation={self.activation!r}, reduction={self.reduction!r}"

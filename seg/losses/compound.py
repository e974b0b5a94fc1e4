"""Focal + Dice in one pass: ``λ_focal · focal + λ_dice · (1 − Dice)``, both terms exposed for logging.

Both terms share one activation. MONAI's ``DiceFocalLoss`` does not: under ``softmax=True`` its focal term still
uses sigmoid (MONAI issue #8242). ``activation`` and ``include_background`` mean exactly what they mean in
:func:`seg.losses.focal_loss` and :func:`seg.losses.dice_loss`, and ``FocalDiceLoss(...).terms(x, y)["focal"]`` equals
``focal_loss(x, y, ...)``. ``dice_include_background`` gives the Dice term its own background rule: training uses
``include_background=True, dice_include_background=False`` (nnU-Net's arrangement: the focal/CE term sees every
voxel, so it sees every false positive; Dice covers the foreground classes).

Written as one autograd function so the logits are read once per pass: forward computes the focal
value and gradient and the Dice sums chunk by chunk; backward scales the focal gradient in place and
adds the Dice gradient (which needs the finished sums) in a second walk.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from seg.losses._chunks import chunk_bounds, map_chunks
from seg.losses._focal_chunk import FocalSpec, focal_chunk
from seg.losses._targets import (
    ACTIVATIONS,
    NORMALIZATIONS,
    alpha_vector,
    check_option,
    compute_dtype,
    flatten_inputs,
    foreground_count,
)
from seg.losses.dice import (
    DiceSpec,
    binary_gain_bias,
    binary_softmax_grad_into,
    binary_softmax_sums,
    binary_to_sums,
    dice_chunk_sums,
    dice_from_sums,
    dice_grad_into,
    dice_slopes,
)
from seg.types import Alpha


class _FocalDiceFunction(torch.autograd.Function):
    """``(focal mean, Dice loss mean)`` over ``x (B, C, N)``; one logits-sized buffer, no other big tensor."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, target: torch.Tensor, focal: FocalSpec, dice: DiceSpec):
        need_grad = ctx.needs_input_grad[0]
        grad = torch.empty(x.shape, dtype=focal.dtype, device=x.device) if need_grad else None

        binary = focal.softmax and focal.is_labels and x.shape[1] == 2
        # two-class softmax: keep p_1 p_0 per voxel (a quarter of the logits' size) for the Dice backward
        p1_p0 = torch.empty(x.shape[0], x.shape[2], dtype=focal.dtype, device=x.device) if binary and need_grad else None

        def run(a: int, b: int) -> tuple[float, float, torch.Tensor]:
            chunk, part = x[:, :, a:b].to(focal.dtype), target[..., a:b]
            shared: dict[str, torch.Tensor | None] = {}
            value, count = focal_chunk(chunk, part, focal, None if grad is None else grad[:, :, a:b], shared)
            if binary:  # reuse x_1 − x_0 and the 0/1 target of the focal term
                sums = binary_softmax_sums(shared["diff"], shared["positive"], shared["keep"],
                                           None if p1_p0 is None else p1_p0[:, a:b])
            else:
                sums = dice_chunk_sums(chunk, part, dice)
            return float(value.sum()), count, sums

        results = map_chunks(run, chunk_bounds(x.shape[2], x.shape[0] * x.shape[1], x.device), x.device)
        count = sum(r[1] for r in results) if focal.normalizer is None else focal.normalizer
        focal_value = math.fsum(r[0] for r in results) / max(count, 1.0)
        sums = torch.stack([r[2] for r in results]).sum(0)
        if binary:
            kept = (target != dice.ignore_index).sum(-1) if dice.ignore_index is not None else x.shape[2]
            sums = binary_to_sums(sums, torch.as_tensor(kept, dtype=torch.float64, device=x.device).expand(x.shape[0]))
        dice_value, denominator = dice_from_sums(sums, dice)
        ctx.save_for_backward(x, target, dice_value, denominator)
        ctx.specs, ctx.count, ctx.grad, ctx.p1_p0 = (focal, dice), count, grad, p1_p0
        as_tensor = dict(dtype=x.dtype, device=x.device)
        return torch.tensor(focal_value, **as_tensor), (1 - dice_value).mean().to(**as_tensor)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_focal: torch.Tensor, grad_dice: torch.Tensor):
        x, target, dice_value, denominator = ctx.saved_tensors
        focal, dice = ctx.specs
        grad, ctx.grad = ctx.grad, None  # hand the focal-gradient buffer over (see FocalLoss)
        bounds = chunk_bounds(x.shape[2], x.shape[0] * x.shape[1], x.device)
        if grad is None:  # a second backward through the same graph: recompute it
            grad = torch.empty(x.shape, dtype=focal.dtype, device=x.device)
            map_chunks(lambda a, b: focal_chunk(x[:, :, a:b].to(focal.dtype), target[..., a:b], focal,
                                                grad[:, :, a:b]), bounds, x.device)
        focal_scale = float(grad_focal) / max(ctx.count, 1.0)
        weight = (grad_dice.double() / dice_value.numel()).expand_as(dice_value)
        slope, offset = dice_slopes(dice_value, denominator, weight, dice, (x.shape[0], x.shape[1]))

        p1_p0 = ctx.p1_p0
        gain, bias = binary_gain_bias(slope, offset) if p1_p0 is not None else (None, None)

        def run(a: int, b: int) -> None:
            if p1_p0 is not None:  # t_1 is 0 where ignored, and so is p_1 p_0
                t1 = (target[:, a:b] == 1).to(focal.dtype)
                binary_softmax_grad_into(t1, p1_p0[:, a:b], gain, bias, grad[:, :, a:b], focal_scale)
                return
            dice_grad_into(x[:, :, a:b].to(focal.dtype), target[..., a:b], dice, slope, offset, grad[:, :, a:b],
                           existing=focal_scale)

        map_chunks(run, bounds, x.device)
        return grad.to(x.dtype), None, None, None


class FocalDiceLoss(nn.Module):
    """``λ_focal · focal_loss + λ_dice · dice_loss`` with one activation and one background rule.

    Args:
        gamma, alpha, activation, include_background, ignore_index: as in :func:`seg.losses.focal_loss`;
            ``activation``, ``ignore_index`` and (unless ``dice_include_background`` is given) ``include_background``
            apply to the Dice term too.
        dice_include_background: the Dice term's background rule; ``None``: ``include_background``.
        focal_normalization: the focal term's divisor, ``"voxels"`` or ``"foreground"`` (see
            :func:`seg.losses.focal_loss`).
        lambda_focal, lambda_dice: weights of the two terms (>= 0).
        batch, smooth: the Dice term's options, as in :func:`seg.losses.dice_loss`.

    ``forward(logits, target)`` returns the weighted total (a scalar); ``terms(logits, target)`` returns
    ``{"focal", "dice", "total"}`` (each term unweighted and mean-reduced; ``total`` is what ``forward``
    returns) so training can log each term. Nothing is stored on the module during ``forward``.
    """

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: Alpha = None,
        activation: str = "softmax",
        lambda_focal: float = 1.0,
        lambda_dice: float = 1.0,
        include_background: bool = True,
        ignore_index: int | None = None,
        batch: bool = False,
        smooth: float = 1e-5,
        dice_include_background: bool | None = None,
        focal_normalization: str = "voxels",
    ) -> None:
        super().__init__()
        check_option("activation", activation, ACTIVATIONS)
        for name, value in (("gamma", gamma), ("lambda_focal", lambda_focal), ("lambda_dice", lambda_dice),
                            ("smooth", smooth)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, found {value}")
        self.gamma, self.activation = float(gamma), activation
        self.lambda_focal, self.lambda_dice = float(lambda_focal), float(lambda_dice)
        self.include_background, self.ignore_index = include_background, ignore_index
        self.dice_include_background = include_background if dice_include_background is None else dice_include_background
        self.batch, self.smooth = batch, float(smooth)
        self.focal_normalization = check_option("focal_normalization", focal_normalization, NORMALIZATIONS)
        alpha_tensor = None if alpha is None else torch.as_tensor(alpha, dtype=torch.float64).detach().clone()
        if alpha_tensor is not None and alpha_tensor.ndim > 1:
            raise ValueError(f"alpha must be a scalar or a length-C sequence, found shape {tuple(alpha_tensor.shape)}")
        self.register_buffer("alpha", alpha_tensor, persistent=False)

    def terms(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"focal": …, "dice": …, "total": …}`` for ``logits (B, C, *spatial)`` and a target as in focal_loss."""
        x, flat_target, is_labels = flatten_inputs(logits, target, self.activation, self.ignore_index)
        if not (self.include_background and self.dice_include_background) and x.shape[1] == 1:
            raise ValueError("include_background=False leaves no channel of a single-channel output; "
                             "set include_background=True")
        dtype = compute_dtype(logits)
        alpha = alpha_vector(self.alpha, x.shape[1], self.activation)
        focal = FocalSpec(self.gamma, None if alpha is None else alpha.to(device=x.device, dtype=dtype),
                          self.activation, self.include_background, self.ignore_index, "mean", is_labels, dtype)
        if self.focal_normalization == "foreground":
            focal.normalizer = foreground_count(flat_target, is_labels, self.include_background, self.ignore_index)
        dice = DiceSpec(self.activation, self.dice_include_background, self.batch, self.smooth, self.ignore_index,
                        "mean", is_labels, dtype)
        focal_value, dice_value = _FocalDiceFunction.apply(x, flat_target, focal, dice)
        total = self.lambda_focal * focal_value + self.lambda_dice * dice_value
        return {"focal": focal_value, "dice": dice_value, "total": total}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.terms(logits, target)["total"]

    def extra_repr(self) -> str:
        alpha = None if self.alpha is None else self.alpha.tolist()
        return (f"gamma={self.gamma}, alpha={alpha}, activation={self.activation!r}, "
                f"lambda_focal={self.lambda_focal}, lambda_dice={self.lambda_dice}, "
                f"include_background={self.include_background}, dice_include_background={self.dice_include_background}")

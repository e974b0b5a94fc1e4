"""Input checks shared by the losses: option names, logits/target shapes, label values, α.

Every loss in :mod:`seg.losses` accepts the same targets, checked here once at the boundary:

* integer labels ``(B, 1, *spatial)`` or ``(B, *spatial)`` of any integer dtype, or a float dtype whose
  values are integral (BraTS stores labels as float32);
* one-/multi-hot ``(B, C, *spatial)`` with values 0/1 (same shape as the logits). Under softmax it must
  be one-hot (one 1 per voxel) and is turned into labels.

The checked target is returned flattened, not converted: the losses convert it chunk by chunk, so a
float or uint8 label volume is never copied whole into int64 (this keeps their peak memory low).
"""

from __future__ import annotations

import torch

from seg.errors import check_option
from seg.losses._chunks import chunk_bounds, map_chunks
from seg.losses.alpha import resolve_alpha
from seg.types import Alpha

__all__ = ["ACTIVATIONS", "NORMALIZATIONS", "REDUCTIONS", "alpha_vector", "check_labels", "check_multihot",
           "check_option", "compute_dtype", "flatten_inputs", "foreground_count"]

ACTIVATIONS = ("softmax", "sigmoid")
REDUCTIONS = ("mean", "sum", "none")


def compute_dtype(logits: torch.Tensor) -> torch.dtype:
    """float64 stays float64 (for gradcheck); half and bfloat16 are computed in float32."""
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point tensor, found dtype {logits.dtype}")
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


def _raise_bad_values(values: torch.Tensor, num_classes: int, ignore_index: int | None) -> None:
    bad = values[(values < 0) | (values >= num_classes)]
    if ignore_index is not None:
        bad = bad[bad != ignore_index]
    if bad.numel():
        value = bad[0].item()
        ignore = f" or ignore_index={ignore_index}" if ignore_index is not None else ""
        raise ValueError(
            f"target has label value {value:g}, but the logits have {num_classes} channels, so labels must lie in "
            f"[0, {num_classes - 1}]{ignore}; check the label map or the number of output channels"
        )


def _nonzero_somewhere(values: torch.Tensor) -> bool:
    """True if any value is non-zero or NaN: one fused min/max reduction, no boolean temporaries."""
    low, high = torch.aminmax(values)
    return bool(low != 0) or bool(high != 0)  # NaN != 0


def _first_bad(flat: torch.Tensor, is_bad, excess=None) -> float | None:
    """The first value of ``flat`` where ``is_bad(part)`` is true, checked chunk by chunk, else ``None``.

    ``excess(part)``, if given, is a cheaper screen: a tensor that is zero exactly where the values are
    good (e.g. ``t − t²`` for 0/1 targets); ``is_bad`` then only runs on a chunk that fails it. On the
    benchmark's one-hot target this makes the check ~4x cheaper than comparisons (6.3 ms -> 1.7 ms).
    """

    def check(start: int, stop: int) -> float | None:
        part = flat[start:stop]
        if excess is not None and not _nonzero_somewhere(excess(part)):
            return None
        bad = is_bad(part)
        return part[bad][0].item() if bool(bad.any()) else None

    found = map_chunks(check, chunk_bounds(flat.numel(), 1, flat.device), flat.device)
    return next((value for value in found if value is not None), None)


def _check_integral(flat: torch.Tensor) -> None:
    if not flat.is_floating_point():
        return
    value = _first_bad(flat, lambda part: part != part.round(), torch.frac)  # also true for NaN
    if value is not None:
        raise ValueError(
            f"target is a float tensor with a non-integral value {value:g}; labels must be whole numbers "
            "(round or cast the label map, and check it was not resampled with linear interpolation)"
        )


def check_labels(labels: torch.Tensor, num_classes: int, ignore_index: int | None) -> None:
    """Raise ``ValueError`` unless every value is an integer in ``[0, num_classes)`` or ``ignore_index``."""
    if labels.numel() == 0:
        return
    _check_integral(labels.reshape(-1))
    low, high = torch.aminmax(labels.reshape(-1).to(torch.float64) if labels.dtype == torch.bool else labels)
    if low < 0 or high >= num_classes:
        _raise_bad_values(labels.reshape(-1), num_classes, ignore_index)


def check_multihot(target: torch.Tensor, ignore_index: int | None) -> None:
    """Raise ``ValueError`` unless every value is 0, 1 or ``ignore_index``."""
    ignore = ignore_index
    if target.dtype == torch.bool:
        return

    def is_bad(part: torch.Tensor) -> torch.Tensor:
        bad = (part != 0) & (part != 1)
        return bad & (part != ignore) if ignore is not None else bad

    def excess(part: torch.Tensor) -> torch.Tensor:  # t − t² is zero only at 0 and 1 (exactly, as one FMA)
        return torch.addcmul(part, part, part, value=-1)

    value = _first_bad(target.reshape(-1), is_bad, excess if ignore is None else None)
    if value is not None:
        raise ValueError(
            f"one-/multi-hot target has value {value:g}; expected only 0 and 1 (soft targets are not supported)"
        )


def flatten_inputs(
    logits: torch.Tensor, target: torch.Tensor, activation: str, ignore_index: int | None
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Check shapes and values; return ``(logits (B, C, N), target, is_labels)``.

    ``target`` comes back as labels ``(B, N)`` when ``is_labels`` else as multi-hot ``(B, C, N)``,
    in its own dtype (a view where possible). ``N`` is the number of voxels per image.
    """
    check_option("activation", activation, ACTIVATIONS)
    if logits.ndim < 3:
        raise ValueError(f"logits must have shape (B, C, *spatial) with 1-3 spatial dims, found {tuple(logits.shape)}")
    batch, channels, *spatial = logits.shape
    if activation == "softmax" and channels < 2:
        raise ValueError(
            f"softmax needs at least 2 channels, logits have shape {tuple(logits.shape)}; "
            "use activation='sigmoid' for a single foreground channel"
        )
    if target.is_complex():
        raise ValueError(f"target must be real-valued, found dtype {target.dtype}")
    label_shapes = ((batch, *spatial), (batch, 1, *spatial))
    x = logits.reshape(batch, channels, -1)  # (B, C, *spatial) -> (B, C, N)
    if tuple(target.shape) == tuple(logits.shape) and (channels > 1 or activation == "sigmoid"):
        check_multihot(target, ignore_index)
        if activation == "sigmoid":
            return x, target.reshape(batch, channels, -1), False  # (B, C, N)
        per_voxel = (target == 1).sum(dim=1)
        ignored = (target == ignore_index).all(dim=1) if ignore_index is not None else torch.zeros_like(per_voxel, dtype=torch.bool)
        if bool(((per_voxel != 1) & ~ignored).any()):
            raise ValueError(
                "softmax needs one class per voxel, but the (B, C, *spatial) target is not one-hot "
                "(some voxel has zero or several 1s); pass integer labels (B, 1, *spatial) or use activation='sigmoid'"
            )
        labels = target.argmax(dim=1)
        if ignore_index is not None:
            labels = torch.where(ignored, torch.full_like(labels, ignore_index), labels)
        return x, labels.reshape(batch, -1), True
    if tuple(target.shape) not in label_shapes:
        raise ValueError(
            f"logits have shape {tuple(logits.shape)} but target has shape {tuple(target.shape)}; expected labels "
            f"{label_shapes[1]} or {label_shapes[0]}, or a multi-hot target of the logits' shape"
        )
    if activation == "sigmoid" and channels == 1:  # a single channel: the target is its binary mask
        check_multihot(target, ignore_index)
        return x, target.reshape(batch, 1, -1), False
    check_labels(target, channels, ignore_index)
    return x, target.reshape(batch, -1), True  # (B, N)


NORMALIZATIONS = ("voxels", "foreground")


def foreground_count(target: torch.Tensor, is_labels: bool, include_background: bool,
                     ignore_index: int | None) -> float:
    """The divisor of ``normalization="foreground"``: positive elements of the flattened target, floored at 1.

    Labels ``(B, N)``: voxels of a class >= 1 (not ignored). Multi-hot ``(B, C, N)``: 1-entries of the kept
    channels. RetinaNet divides its summed focal loss so, by the anchors assigned to ground truth (Lin et al., 2017).
    """
    if is_labels:
        positive = target > 0 if ignore_index is None else (target > 0) & (target != ignore_index)
    else:
        positive = (target if include_background else target[:, 1:]) == 1
    return max(float(positive.sum()), 1.0)


def alpha_vector(alpha: Alpha, num_classes: int, activation: str) -> torch.Tensor | None:
    """The user's α as a float64 vector ``(C,)``, or ``None`` for unweighted (:func:`seg.losses.alpha.resolve_alpha`)."""
    values = resolve_alpha(alpha, num_classes, activation=activation)
    return None if values is None else torch.tensor(values, dtype=torch.float64)

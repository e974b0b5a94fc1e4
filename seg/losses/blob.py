"""Blob loss (Kofler et al., 2023, "blob loss: instance imbalance aware loss functions for semantic segmentation",
IPMI; reference code neuronflow/blob_loss): the loss of each ground-truth lesion on its own, so a 20-voxel lesion
weighs as much as a 2,000-voxel one.

For lesion k of image b, every other lesion's voxels are masked out (the reference keeps lesion k and all
background voxels, ``label_mask[element_label == k] = 1`` on the inverted foreground mask), the criterion is
evaluated on what is left, the per-lesion values are averaged over the lesions of the image, and the image values
over the images that have at least one lesion (0 when none has):

    blob = mean_b mean_k [ λ_focal · focal(V_bk) + λ_dice · (1 − Dice(V_bk)) ],   V_bk = background_b ∪ lesion_bk

with ``focal(V) = Σ_V FL / |V|`` (``focal_normalization="voxels"``) or ``Σ_V FL / max(|lesion_bk|, 1)``
(``"foreground"``) and the foreground Dice ``(2 Σ_k p + s) / (Σ_V p + |lesion_bk| + s)``, p the foreground
probability ``1 − softmax(x)_0``. Training adds ``blob_weight · blob`` to the global loss (Kofler's
``main_weight · main + blob_weight · blob``).

Written as sums rather than one masked loss per lesion (the reference's loop): the per-voxel focal values and p
are computed once, and every lesion's sums are gathered with one ``index_add``, so the cost does not grow with the
number of lesions. With one lesion in a patch the blob term equals the global focal + foreground Dice.
"""

from __future__ import annotations

import torch

from seg.errors import check_option
from seg.losses._targets import NORMALIZATIONS, flatten_inputs
from seg.losses.focal import focal_loss
from seg.types import Alpha


def blob_loss(logits: torch.Tensor, target: torch.Tensor, instances: torch.Tensor, *, gamma: float = 2.0,
              alpha: Alpha = None, lambda_focal: float = 1.0, lambda_dice: float = 1.0, smooth: float = 1e-5,
              focal_normalization: str = "voxels") -> torch.Tensor:
    """The blob term of softmax logits (see the module docstring).

    Args:
        logits: ``(B, C, *spatial)``, softmax over C (C >= 2; class 0 is background).
        target: integer labels ``(B, 1, *spatial)`` or ``(B, *spatial)``.
        instances: lesion ids of the same shape as the labels: 0 background, k >= 1 lesion k (any integers;
            voxels of a lesion label must carry its id).
        gamma, alpha: the focal term's (:func:`seg.losses.focal_loss`); ``lambda_focal`` / ``lambda_dice`` weigh
            the per-lesion focal and Dice terms (0 drops one: blob focal, blob Dice).
        focal_normalization: ``"voxels"`` or ``"foreground"`` (the per-lesion focal's divisor).

    Returns:
        A scalar in the logits' dtype (0 when no image holds a lesion).
    """
    check_option("focal_normalization", focal_normalization, NORMALIZATIONS)
    x, labels, is_labels = flatten_inputs(logits, target, "softmax", None)  # (B, C, N), (B, N)
    if not is_labels:
        raise ValueError("blob_loss takes integer labels (B, 1, *spatial), not a one-hot target")
    ids = instances.reshape(labels.shape[0], -1).long()  # (B, 1, *spatial) -> (B, N)
    if ids.shape != labels.shape:
        raise ValueError(f"instances have shape {tuple(instances.shape)} but the target has {tuple(target.shape)}")
    lesion = labels > 0
    if bool((ids[lesion] <= 0).any()) or bool((ids[~lesion] != 0).any()):
        raise ValueError("instances must be >= 1 exactly on lesion voxels (label > 0) and 0 elsewhere")
    focal = focal_loss(logits, target, gamma=gamma, alpha=alpha, reduction="none").reshape(ids.shape)  # (B, N)
    p = 1 - torch.softmax(x.float() if x.dtype != torch.float64 else x, dim=1)[:, 0]  # (B, N) foreground
    per_image = []
    for b in range(ids.shape[0]):
        found, slot = torch.unique(ids[b], return_inverse=True)  # (S,) ids present, (N,) slot of each voxel
        is_lesion = found > 0
        if not bool(is_lesion.any()):
            continue

        def sums(values: torch.Tensor, slot: torch.Tensor = slot, n: int = found.numel()) -> torch.Tensor:
            return torch.zeros(n, dtype=values.dtype, device=values.device).index_add(0, slot, values)  # (S,)

        voxels, focal_sums, p_sums = sums(torch.ones_like(p[b])), sums(focal[b]), sums(p[b])
        sizes = voxels[is_lesion]  # (K,)
        focal_k = focal_sums[~is_lesion].sum() + focal_sums[is_lesion]  # Σ over background ∪ lesion k
        divisor = sizes.clamp_min(1) if focal_normalization == "foreground" else voxels[~is_lesion].sum() + sizes
        dice_k = (2 * p_sums[is_lesion] + smooth) / (p_sums[~is_lesion].sum() + p_sums[is_lesion] + sizes + smooth)
        per_image.append((lambda_focal * focal_k / divisor + lambda_dice * (1 - dice_k)).mean())
    if not per_image:
        return logits.sum() * 0  # no lesion in the batch: 0, still in the graph
    return torch.stack(per_image).mean().to(logits.dtype)

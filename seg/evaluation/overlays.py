"""Look at the masks: one PNG per case with the axial slices holding the most lesion voxels.

Image (first channel) in grey, ground truth as a green contour, prediction as a red one; a missed ground-truth lesion
is ringed in yellow, a false-positive component marked with a magenta cross (both as the case's lesion matching rule
decided them). The slices are taken from the volume in its own orientation and shown in the radiological
convention (the patient's right on the image's left, anterior up), worked out from the affine and stated on the
figure. A montage of several cases (the comparison report's worst, median and best) is :func:`montage`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.image import imread
from scipy import ndimage

from seg.evaluation.matching import connectivity_structure
from seg.evaluation.plots import new_figure, save_figure
from seg.io import read_image
from seg.types import PathLike

SLICES = 3


def _display_axes(affine: np.ndarray) -> tuple[int, int, int, bool, bool]:
    """Stored axes running along R, A and S, and whether R and A run backwards in storage."""
    axes = [int(np.argmax(np.abs(affine[r, :3]))) for r in range(3)]
    return axes[0], axes[1], axes[2], affine[0, axes[0]] < 0, affine[1, axes[1]] < 0


def _to_display(plane: np.ndarray, r_axis_first: bool, flip_r: bool, flip_a: bool) -> np.ndarray:
    """A stored slice -> rows anterior at the top, columns with the patient's right on the left (radiological)."""
    view = plane if r_axis_first else plane.T  # (R, A)
    if flip_r:
        view = view[::-1]
    if flip_a:
        view = view[:, ::-1]
    return view[::-1, ::-1].T  # (A from top, R reversed: right on the left)


def marks(components: np.ndarray, ids: set[int]) -> list[tuple[float, float]]:
    """(row, column) centres of the components of a displayed slice whose ids are in ``ids`` (those the case's
    lesion matching called missed or false positive: a found lesion's prediction beyond the truth is not marked)."""
    return [tuple(np.argwhere(components == c).mean(0)) for c in np.unique(components) if c in ids]


def draw_overlay(out_png: PathLike, images: Sequence[PathLike], label: np.ndarray, prediction: np.ndarray,
                 affine: np.ndarray, case: Mapping[str, Any], *, connectivity: int | None = None) -> Path:
    """Write the overlay of one case: ``label``/``prediction`` binary ``(*spatial)`` on the grid of ``images``;
    components labelled with the ``connectivity`` the case was evaluated with (None: full)."""
    image = read_image(list(images)).array[0]
    if image.shape != label.shape:
        raise ValueError(f"image '{images[0]}' has shape {image.shape} but its label has {label.shape}")
    structure = connectivity_structure(label.ndim, connectivity)
    gt_cc, pred_cc = ndimage.label(label, structure=structure)[0], ndimage.label(prediction, structure=structure)[0]
    if image.ndim == 2:
        image, label, prediction, gt_cc, pred_cc = (v[..., None] for v in (image, label, prediction, gt_cc, pred_cc))
        affine = np.eye(4)
    r, a, s, flip_r, flip_a = _display_axes(affine)
    lesion = (label | prediction).sum(axis=tuple(i for i in range(3) if i != s))
    chosen = sorted(np.argsort(lesion)[::-1][:SLICES]) if lesion.any() else [image.shape[s] // 2]
    missed, false_positives = set(case.get("missed_components", [])), set(case.get("false_positive_components", []))
    fig = new_figure(3.2 * len(chosen), 3.6)
    for k, index in enumerate(chosen):
        take = [slice(None)] * 3
        take[s] = index
        views = [_to_display(v[tuple(take)], r < a, flip_r, flip_a) for v in (image, label, prediction, gt_cc, pred_cc)]
        ax = fig.add_subplot(1, len(chosen), k + 1)
        ax.imshow(views[0], cmap="gray", interpolation="nearest")
        for mask, colour in ((views[1], "lime"), (views[2], "red")):
            if mask.any():
                ax.contour(mask.astype(float), levels=[0.5], colors=colour, linewidths=0.8)
        for y, x in marks(views[3], missed):
            ax.scatter([x], [y], s=160, facecolors="none", edgecolors="yellow", linewidths=1.2)
        for y, x in marks(views[4], false_positives):
            ax.scatter([x], [y], s=60, marker="x", c="magenta", linewidths=1.2)
        ax.set_title(f"slice {index}", fontsize=8)
        ax.set_axis_off()
    fig.suptitle(f"{case.get('case', '')}: lesion F1 {case.get('lesion_f1', float('nan')):.2f}, Dice "
                 f"{case.get('dice', float('nan')):.2f} ({case.get('matching', '')}); green truth, red prediction, "
                 "yellow missed, magenta FP\nradiological: patient's right on the left, anterior up", fontsize=8)
    return save_figure(fig, out_png, dpi=90)


def montage(out_png: PathLike, panels: Sequence[tuple[str, PathLike]]) -> Path:
    """Stack existing overlay PNGs (``(title, path)``, top to bottom) into one figure."""
    images = [(title, imread(str(path))) for title, path in panels if Path(path).is_file()]
    if not images:
        raise ValueError("montage: none of the overlay images exists")
    width = max(img.shape[1] for _, img in images) / 90
    fig = new_figure(width, sum(img.shape[0] for _, img in images) / 90 + 0.3 * len(images))
    for k, (title, img) in enumerate(images):
        ax = fig.add_subplot(len(images), 1, k + 1)
        ax.imshow(img)
        ax.set_title(title, fontsize=9, loc="left")
        ax.set_axis_off()
    return save_figure(fig, out_png, dpi=90)

"""Files of :mod:`seg.data.synthetic`: stale-file cleanup and a PNG preview (NIfTI writes are :func:`seg.io.write_nifti`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from seg.evaluation.plots import new_figure, save_figure
from seg.io import read_array, split_channel
from seg.types import PathLike

_SUBFOLDERS = ("imagesTr", "labelsTr", "imagesTs", "labelsTs")


def remove_stale(out_dir: Path, names: Sequence[str]) -> None:
    """Delete ``case_*.nii.gz`` files of an earlier dataset in ``out_dir`` whose case is not in ``names``."""
    keep = set(names)
    for sub in _SUBFOLDERS:
        for file in (out_dir / sub).glob("case_*.nii.gz"):
            case = file.name.removesuffix(".nii.gz")
            if case not in keep and split_channel(case)[0] not in keep:
                file.unlink()


def _display_slice(image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2D views ``(H, W)``: the axial slice with most lesion voxels (the middle one when there are none)."""
    if image.ndim == 2:
        return image, label
    per_slice = label.reshape(-1, label.shape[-1]).sum(0)
    index = int(per_slice.argmax()) if per_slice.any() else label.shape[-1] // 2
    return image[..., index], label[..., index]


def preview(dataset_json: PathLike, out_png: PathLike, *, cases: int = 8) -> Path:
    """PNG montage of the first ``cases`` training cases (channel 0) with the label outlined in red.

    Shows the slice with the most lesion voxels of each case, in array orientation (not radiological).
    """
    dataset_json = Path(dataset_json)
    entries = json.loads(dataset_json.read_text())["training"][:cases]
    if not entries:
        raise ValueError(f"{dataset_json} lists no training cases to preview")
    columns = min(4, len(entries))
    rows = -(-len(entries) // columns)
    figure = new_figure(3 * columns, 3 * rows)
    for i, entry in enumerate(entries):
        image_file = entry["image"] if isinstance(entry["image"], str) else entry["image"][0]
        image = read_array(dataset_json.parent / image_file)[0]
        label = read_array(dataset_json.parent / entry["label"])[0]
        image2d, label2d = _display_slice(image, label)
        axes = figure.add_subplot(rows, columns, i + 1)
        axes.imshow(image2d.T, cmap="gray", origin="lower", interpolation="nearest")
        if label2d.any():
            axes.contour(label2d.T, levels=[0.5], colors="red", linewidths=0.8)
        axes.set_title(f"{Path(image_file).name.split('.')[0]}: {int(label.sum())} lesion voxels", fontsize=8)
        axes.set_axis_off()
    return save_figure(figure, out_png, dpi=100)

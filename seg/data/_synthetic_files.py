"""Files of :mod:`seg.data.synthetic`: atomic NIfTI/JSON writes, stale-file cleanup and a PNG preview."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from seg import io as seg_io
from seg._types import PathLike
from seg.io import atomic_path

_SUBFOLDERS = ("imagesTr", "labelsTr", "imagesTs", "labelsTs")


def save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    """Write ``array`` ``(*spatial)`` with ``affine`` (4, 4) as qform and sform (code 1, scanner), atomically.

    nibabel gzips with mtime 0 and no file name, so equal arrays give byte-identical files.
    """
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm")
    with atomic_path(path) as tmp:
        nib.save(image, tmp)
    return path


def write_json(data: dict, path: Path) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    return seg_io.write_json(path, data)


def remove_stale(out_dir: Path, names: Sequence[str]) -> None:
    """Delete ``case_*.nii.gz`` files of an earlier dataset in ``out_dir`` whose case is not in ``names``."""
    keep = set(names)
    for sub in _SUBFOLDERS:
        for file in (out_dir / sub).glob("case_*.nii.gz"):
            case = file.name.removesuffix(".nii.gz")
            if case not in keep and case.rsplit("_", 1)[0] not in keep:
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
    from matplotlib.figure import Figure  # no pyplot: no global state, no display backend

    dataset_json = Path(dataset_json)
    entries = json.loads(dataset_json.read_text())["training"][:cases]
    if not entries:
        raise ValueError(f"{dataset_json} lists no training cases to preview")
    columns = min(4, len(entries))
    rows = -(-len(entries) // columns)
    figure = Figure(figsize=(3 * columns, 3 * rows), layout="constrained")
    for i, entry in enumerate(entries):
        image_file = entry["image"] if isinstance(entry["image"], str) else entry["image"][0]
        image = np.asanyarray(nib.load(dataset_json.parent / image_file).dataobj)
        label = np.asanyarray(nib.load(dataset_json.parent / entry["label"]).dataobj)
        image2d, label2d = _display_slice(image, label)
        axes = figure.add_subplot(rows, columns, i + 1)
        axes.imshow(image2d.T, cmap="gray", origin="lower", interpolation="nearest")
        if label2d.any():
            axes.contour(label2d.T, levels=[0.5], colors="red", linewidths=0.8)
        axes.set_title(f"{Path(image_file).name.split('.')[0]}: {int(label.sum())} lesion voxels", fontsize=8)
        axes.set_axis_off()
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        figure.savefig(tmp, dpi=100)
    return out_png

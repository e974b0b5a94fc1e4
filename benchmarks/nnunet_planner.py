"""seg-plan against nnU-Net's own ExperimentPlanner on the same datasets: spacing, patch size, pooling per axis.

    python benchmarks/nnunet_planner.py [--datasets clinical isotropic brats isles] [--output bench_output/nnunet_planner]
                                        [--nnunet-python PYTHON]

The datasets are those of benchmarks/planning.py (made or linked into OUTPUT/data, nothing copied from
../shared/data), plus ``isles``: the one ISLES'22 case of ../shared/data (DWI, 112 x 112 x 73 at 2 mm) as a one-case
dataset. Each is linked again as an nnU-Net v2 raw dataset (``Dataset9NN_<name>``: symbolic links and an nnU-Net
``dataset.json``) and planned twice:

- nnU-Net 2.8.1: ``DatasetFingerprintExtractor`` then the default ``ExperimentPlanner`` (8 GB of GPU memory), run in
  ``--nnunet-python`` (default: this interpreter). Its planner imports torch but not torchvision; on a machine where
  ``pip install nnunetv2`` would pull a CUDA torchvision (through timm), install it without dependencies next to the
  CPU torch: ``pip install --no-deps nnunetv2==2.8.1 dynamic-network-architectures==0.4.4 batchgenerators==0.25.5
  batchgeneratorsv2==0.3.6 acvl-utils==0.2.6 simpleitk blosc2 ndindex einops yacs scikit-learn threadpoolctl joblib
  future unittest2 traceback2 linecache2 argparse graphviz seaborn`` (and numpy, scipy, scikit-image, nibabel, pandas,
  tifffile if absent);
- ``seg-plan --device-memory 8`` (the same memory: seg's 2^21-voxel budget is nnU-Net's 128^3 at 8 GB) and seg-plan's
  CPU default.

nnU-Net's axes (its SimpleITK array order, transposed so the coarsest axis comes first) are mapped back to the image's
voxel axes, seg's (RAS) too, so each row reads per voxel axis of the stored image. Prints and writes
OUTPUT/results.md and results.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from seg.data.layouts import load_dataset
from seg.files import write_text
from seg.planning.plan import plan

sys.path.insert(0, str(Path(__file__).resolve().parent))
from planning import SHARED, dataset  # noqa: E402 (benchmarks/ is not a package)

NNUNET = """
import json, os, sys
from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
dataset_id = int(sys.argv[1])
DatasetFingerprintExtractor(dataset_id, num_processes=2).run(overwrite_existing=True)
planner = ExperimentPlanner(dataset_id, gpu_memory_target_in_gb=8)
planner.plan_experiment()
print("PLANS " + json.dumps(planner.plans))
"""


def isles_dataset(out: Path) -> Path:
    """The ISLES'22 case as a one-case MSD dataset (links)."""
    root = out / "data" / "isles"
    if (root / "dataset.json").is_file():
        return root / "dataset.json"
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    case = SHARED / "isles22" / "sub-strokecase0009_ses-0001"
    (root / "imagesTr" / "isles_0001_0000.nii.gz").symlink_to(f"{case}_dwi.nii.gz")
    (root / "labelsTr" / "isles_0001.nii.gz").symlink_to(f"{case}_msk.nii.gz")
    meta = {"name": "ISLES22-one-case", "modality": {"0": "DWI"}, "labels": {"0": "background", "1": "infarct"},
            "numTraining": 1, "numTest": 0, "test": [],
            "training": [{"image": "./imagesTr/isles_0001_0000.nii.gz", "label": "./labelsTr/isles_0001.nii.gz"}]}
    write_text(root / "dataset.json", json.dumps(meta, indent=2) + "\n")
    return root / "dataset.json"


def nnunet_raw(data: Path, raw: Path, dataset_id: int, name: str) -> None:
    """Link an MSD dataset (``CASE_000C.nii.gz`` images) as nnU-Net v2's ``Dataset<ID>_<name>``."""
    spec = load_dataset(data)
    folder = raw / f"Dataset{dataset_id}_{name}"
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for case in spec.cases:
        for c, image in enumerate(case.images):
            link = folder / "imagesTr" / f"{case.name}_{c:04d}.nii.gz"
            if not link.is_symlink():
                link.symlink_to(Path(image).resolve())
        link = folder / "labelsTr" / f"{case.name}.nii.gz"
        if not link.is_symlink():
            link.symlink_to(Path(case.label).resolve())
    meta = {"channel_names": {str(i): n for i, n in enumerate(spec.channel_names)},
            "labels": {n: int(k) for k, n in spec.labels.items()},
            "numTraining": len(spec.cases), "file_ending": ".nii.gz"}
    write_text(folder / "dataset.json", json.dumps(meta, indent=2) + "\n")


def nnunet_plans(python: str, output: Path, dataset_id: int) -> dict:
    env = {**os.environ, "nnUNet_raw": str(output / "nnUNet_raw"), "nnUNet_preprocessed": str(output / "nnUNet_pre"),
           "nnUNet_results": str(output / "nnUNet_results"), "OMP_NUM_THREADS": "2"}
    done = subprocess.run([python, "-c", NNUNET, str(dataset_id)], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"nnU-Net's planner failed in {python}:\n{done.stderr[-3000:]}")
    return json.loads(next(line[6:] for line in done.stdout.splitlines() if line.startswith("PLANS ")))


def voxel_axes_of_nnunet(values, transpose_forward: list[int]) -> list:
    """nnU-Net's per-axis values (transposed SimpleITK z, y, x order) in the image's voxel order (i, j, k)."""
    array_order = [None] * len(transpose_forward)
    for position, axis in enumerate(transpose_forward):
        array_order[axis] = values[position]
    return array_order[::-1]


def voxel_axes_of_ras(values, image: Path) -> list:
    """seg's per-axis values (RAS order) in the image's voxel order."""
    ornt = nib.orientations.io_orientation(nib.load(str(image)).affine)  # voxel axis i -> RAS axis ornt[i, 0]
    return [values[int(ornt[i, 0])] for i in range(len(values))]


def pooling(strides) -> list[int]:
    """Poolings per axis from per-stage strides."""
    return [int(round(math.log2(np.prod([s[a] for s in strides])))) for a in range(len(strides[0]))]


def seg_row(data: Path, memory: float | None) -> dict:
    planned = plan(data, budget_minutes=8, device_memory_gb=memory)
    spec = load_dataset(data)
    image = Path(spec.cases[0].images[0])
    spacing = planned.value("data", "target_spacing") or planned.fingerprint["spacing_ras"]["median"]
    channels, dims = planned.value("model", "channels"), len(spacing)
    if planned.value("model", "network") == "unet":  # MONAI's residual UNet: 3 everywhere, stride 2 after level 1
        strides, first_kernel = [[1] * dims] + [[2] * dims] * (len(channels) - 1), [3] * dims
    else:
        strides, first_kernel = planned.value("model", "strides"), planned.value("model", "kernel_sizes")[0]
    return {"spacing": voxel_axes_of_ras([round(s, 3) for s in spacing], image),
            "patch": voxel_axes_of_ras(planned.value("data", "patch_size"), image),
            "pooling": voxel_axes_of_ras(pooling(strides), image), "stages": len(strides),
            "first_kernel": voxel_axes_of_ras(first_kernel, image), "features": channels,
            "network": planned.value("model", "network")}


def nnunet_row(plans: dict, configuration: str) -> dict | None:
    c = plans["configurations"].get(configuration)
    if c is None:
        return None
    arch, forward = c["architecture"]["arch_kwargs"], plans["transpose_forward"]
    return {"spacing": voxel_axes_of_nnunet([round(s, 3) for s in c["spacing"]], forward),
            "patch": voxel_axes_of_nnunet(c["patch_size"], forward),
            "pooling": voxel_axes_of_nnunet(pooling(arch["strides"]), forward), "stages": len(arch["strides"]),
            "first_kernel": voxel_axes_of_nnunet(arch["kernel_sizes"][0], forward),
            "features": list(arch["features_per_stage"])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["clinical", "isotropic", "brats", "isles"])
    parser.add_argument("--output", type=Path, default=Path("bench_output/nnunet_planner"))
    parser.add_argument("--nnunet-python", default=sys.executable)
    args = parser.parse_args(argv)
    output = args.output.resolve()
    results: dict[str, dict] = {}
    for number, name in enumerate(args.datasets):
        if name in ("brats", "isles") and not SHARED.is_dir():
            print(f"skipping {name}: {SHARED} is absent")
            continue
        data = isles_dataset(output) if name == "isles" else dataset(name, output)
        dataset_id = 990 + number
        nnunet_raw(data, output / "nnUNet_raw", dataset_id, name)
        plans = nnunet_plans(args.nnunet_python, output, dataset_id)
        results[name] = {"nnU-Net 3d_fullres": nnunet_row(plans, "3d_fullres"),
                         "nnU-Net 3d_lowres": nnunet_row(plans, "3d_lowres"),
                         "seg-plan --device-memory 8": seg_row(data, 8.0), "seg-plan (CPU)": seg_row(data, None)}
        for planner, row in results[name].items():
            print(f"{name} / {planner}: {json.dumps(row)}", flush=True)
    lines = ["Per voxel axis of the stored image (i, j, k).", "",
             "| dataset | planner | spacing mm | patch | poolings per axis | stages | first kernel | features |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, rows in results.items():
        for planner, r in rows.items():
            if r is None:
                lines.append(f"| {name} | {planner} | (none) | | | | | |")
                continue
            lines.append(f"| {name} | {planner} | {' × '.join(f'{s:g}' for s in r['spacing'])} | "
                         f"{' × '.join(str(p) for p in r['patch'])} | {r['pooling']} | {r['stages']} | "
                         f"{r['first_kernel']} | {r['features'][0]}–{r['features'][-1]}"
                         + (" (residual UNet)" if r.get("network") == "unet" else "") + " |")
    text = "\n".join(lines)
    print("\n" + text)
    write_text(output / "results.md", text + "\n")
    write_text(output / "results.json", json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

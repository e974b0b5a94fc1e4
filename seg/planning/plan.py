"""``seg-plan``: a training config that fits the user's dataset, planned from its fingerprint as nnU-Net plans.

    seg-plan --dataset D [--budget-minutes 8] [--device-memory GB] --output configs/plans/NAME.yaml

Every choice is written into the YAML with a one-line comment saying why; ``seg-train --config`` reads it like any
config, and ``seg-train --dataset D`` without ``--config`` plans first (into the run directory) and says so.

The rules (nnU-Net's where it has one, :mod:`seg.planning.topology`):

- **target spacing**: the per-axis median (RAS); when the coarsest axis is more than 3 times coarser than the others
  and holds fewer than a third as many voxels, it takes that axis' 10th percentile instead (nnU-Net's anisotropy
  rule: thick slices are not interpolated from their median). No resampling when every case is already on it.
- **large lesions on a CPU**: where the lesions are not small (below), pooling is isotropic and no
  ``--device-memory`` is given, MONAI's residual ``UNet`` (16 to 128 features, its first convolution strided, so no
  level runs at full resolution) trains at the median spacing on 8 patches a step. Measured on BraTS (4 + 2 cases,
  4 minutes, final weights, seeds 0 and 1): Dice 0.43 / 0.39 against 0.22 / 0.05 for the DynUNet at 2.5 mm below.
- **low resolution for large lesions** otherwise (nnU-Net's ``3d_lowres``): when the patch covers under 25 % of the
  median image, the spacing is coarsened 3 % a step until it covers 25 %, stopping before the median lesion falls
  under 100 voxels; predictions are resampled back to each input's grid. seg trains only this stage (no cascade).
- **the final weights** (``monitor: last``, nnU-Net's ``checkpoint_final``): the poly rate reaches 0 as the budget
  runs out, and a best checkpoint picked on one or two validation cases by lesion F1 was an early one (BraTS: step
  31 of 364, test Dice 0.25 against 0.42 for the final weights; clinical: step 95 of 327, 0.32 against 0.48).
- **α counted on sampled patches** (``data.class_counts_from: patches``): half of the patches are centred on lesion
  voxels, so for large lesions a patch is mostly lesion and counts over whole volumes overstate the imbalance the
  loss sees (BraTS: background α 0.012 from volumes, 0.020 from patches; DynUNet at 2.5 mm, Dice 0.15 vs 0.25,
  lesion F1 0 vs 0.20). Not for small lesions, whose patches stay mostly background: on the small-lesion screening
  (16 test cases, 118 lesions) patch counts lost lesion F1 0.669 -> 0.639 and sensitivity under 30 voxels 0.54 -> 0.40; the planning
  benchmark's single runs split (isotropic Dice 0.38 volumes vs 0.34 patches, clinical 0.32 vs 0.47), so small-lesion
  datasets keep counting over volumes.
- **2D or 3D**: 2D for native 2D images; otherwise 3D, anisotropic where the spacing is (the topology keeps 1-wide
  kernels and no pooling along thick slices until the in-plane spacing catches up).
- **patch**: isotropic in mm, within a voxel budget (CPU: 2^17 voxels, the patch of a plain MONAI script that trains
  at ~0.6 s/step on 2 cores; with ``--device-memory G``: 2^21 · G / 8, nnU-Net's 128³ at 8 GB), clipped to the median
  resampled shape, cut along the axis it covers most until it fits; DynUNet kernels and strides per axis from it.
- **features**: 8 doubling to 64 per level on CPU (a DynUNet's first level runs at full resolution: with 16 to 128 a
  step of 4 patches of 160 x 160 x 5 took 1.97 s on 2 cores, with 8 to 64 0.93 s, against 0.57 s for the plain MONAI
  script's step); nnU-Net's 32 to 320 on GPUs, used with ``--device-memory``.
- **normalisation**: CT (a channel named CT): clip to the foreground's 0.5-99.5 % intensities, then scale; else
  z-score inside the non-zero region (nnU-Net's mapping).
- **postprocessing from the lesions**: when at least 30 % of the training lesions are under 30 voxels and the
  median lesion is under 100, no size cut, threshold 0.3 and hysteresis at 0.9 (what ``benchmarks/small_lesions.py``
  measured best on real-like lesion sizes; choosing them on a few validation cases was noisier); else the threshold,
  the smallest kept component and whether only the largest component is kept (nnU-Net's postprocessing, for one
  tumour per case) are chosen on the validation split. The median keeps a few specks beside large
  lesions from counting as a small-lesion dataset (BraTS: 4 of 8 components under 30 voxels, median 31,500).
  Patches are centred on lesion voxels (MONAI's positive/negative sampling): the lesion-balanced sampler did not
  help in that benchmark, so the plan does not switch it on.
- **budget in steps**: an epoch is 250 optimiser steps (nnU-Net's), whatever the number of cases; training stops at
  the budget; validation runs on a time interval and is kept near 10 % of the training time; it slides its windows
  at overlap 0.5, or 0.25 when a median case would need more than 64 windows at 0.5 (MONAI's default overlap; a
  3.4x cheaper pass over a BraTS volume; prediction keeps its own 0.5).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from seg.data.check import check_dataset
from seg.data.layouts import DatasetSpec, load_dataset
from seg.files import write_text
from seg.io import image_shape
from seg.planning.topology import plan_patch
from seg.types import PathLike

CPU_VOXELS = {3: 2**17, 2: 2**16}
STEPS_PER_EPOCH = 250
ANISOTROPY = 3.0
SMALL_MEDIAN = 100  # voxels: the median lesion of a small-lesion dataset is under this (real MS/WMH: 12-30)
VAL_WINDOWS = 64  # sliding windows per median validation case above which validation overlaps 0.25, not 0.5
LOWRES_COVERAGE = 0.25  # nnU-Net's lowres_creation_threshold: a patch under this share of the median image
LOWRES_STEP = 1.03  # nnU-Net's spacing_increase_factor


@dataclass
class Plan:
    """The planned config: per section (``model``, ``data``, ``trainer``) {key: (value, why)}, and the fingerprint."""

    dataset: str
    sections: dict[str, dict[str, tuple[Any, str]]] = field(default_factory=dict)
    fingerprint: dict[str, Any] = field(default_factory=dict)

    def set(self, section: str, key: str, value: Any, why: str) -> None:
        """``section`` ``""``: a top-level key of the config (``monitor``)."""
        self.sections.setdefault(section, {})[key] = (value, why)

    def value(self, section: str, key: str) -> Any:
        return self.sections[section][key][0]

    def to_yaml(self) -> str:
        """The config as YAML, each key with its reason as a comment (readable by ``seg-train --config``)."""
        f = self.fingerprint
        lines = [f"# Planned by seg-plan for {self.dataset}",
                 f"# fingerprint: median spacing {f.get('spacing_ras', {}).get('median')} mm, median shape "
                 f"{f.get('shape_ras', {}).get('median')}, anisotropy {f.get('anisotropy', 0):.2f}, "
                 f"{sum(f.get('lesions_per_case', {}).values())} training lesions "
                 f"({100 * (f.get('share_under_30_voxels') or 0):.0f} % under 30 voxels)",
                 "seed_everything: 0"]
        for section, entries in sorted(self.sections.items(), key=lambda item: item[0] != ""):
            if section:
                lines.append(f"{section}:")
            for key, (value, why) in entries.items():
                text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
                text = text[:-4].strip() if text.endswith("\n...") or text.endswith(" ...") else text
                lines.append(f"{'  ' if section else ''}{key}: {text}  # {why}")
        return "\n".join(lines) + "\n"


def _target_spacing(f: dict[str, Any]) -> tuple[list[float], str]:
    median = list(f["spacing_ras"]["median"])
    if len(median) < 3:
        return median, "median spacing"
    shape = f["shape_ras"]["median"]
    worst = int(np.argmax(median))
    others = [i for i in range(len(median)) if i != worst]
    if median[worst] > ANISOTROPY * max(median[i] for i in others) and \
            shape[worst] * ANISOTROPY < min(shape[i] for i in others):
        target = max(f["spacing_ras"]["p10"][worst], max(median[i] for i in others) + 1e-5)
        median[worst] = round(target, 5)
        return median, f"median, axis {worst} at its 10th percentile (anisotropy >= {ANISOTROPY:g}, as nnU-Net)"
    return median, "median spacing per axis (nnU-Net)"


def _lowres(spacing: list[float], shape: list[float], budget: int, median_lesion_mm3: float):
    """nnU-Net's ``3d_lowres`` spacing: coarsen the spacing by 3 % a step (axes more than 2x finer than the coarsest
    first) until the patch covers ``LOWRES_COVERAGE`` of the median image, keeping the median lesion at least
    ``SMALL_MEDIAN`` voxels; ``None`` when that leaves the image less than 2x smaller (nnU-Net drops it then)."""
    target, size = np.asarray(spacing, dtype=float), np.asarray(shape, dtype=float)
    topology = plan_patch(list(target), list(size), budget)
    while math.prod(topology.patch_size) < LOWRES_COVERAGE * math.prod(size):
        step = np.where(target.max() / target > 2, LOWRES_STEP, 1.0) if np.any(target.max() / target > 2) \
            else np.full_like(target, LOWRES_STEP)
        if median_lesion_mm3 / math.prod(target * step) < SMALL_MEDIAN:
            break
        target, size = target * step, np.asarray(shape) * np.asarray(spacing) / (target * step)
        topology = plan_patch(list(target), list(size), budget)
    if math.prod(shape) / math.prod(size) < 2:
        return None
    return [round(float(t), 3) for t in target], [float(n) for n in size], topology


def _windows(shape: list[float], patch: list[int], overlap: float) -> int:
    """Sliding windows over ``shape`` at ``overlap``: MONAI's grid, ``ceil((n - p) / int(p (1 - overlap))) + 1`` per axis."""
    return math.prod(math.ceil(max(round(n) - p, 0) / max(int(p * (1 - overlap)), 1)) + 1
                     for n, p in zip(shape, patch, strict=True))


def plan(dataset: PathLike | DatasetSpec, *, budget_minutes: float = 8.0, device_memory_gb: float | None = None,
         progress: bool = False) -> Plan:
    """Fingerprint ``dataset`` (one checking pass) and plan a config for it; a dataset that fails its check raises."""
    spec = dataset if isinstance(dataset, DatasetSpec) else load_dataset(dataset)
    stored = [n for n in image_shape(spec.cases[0].images[0])[:3]] if spec.cases else []
    while len(stored) > 2 and stored[-1] == 1:  # (H, W, 1) is a 2D image
        stored.pop()
    report = check_dataset(spec, spatial_dims=2 if len(stored) == 2 else 3, progress=progress, needs_foreground=True)
    if not report.ok:
        raise ValueError(f"cannot plan for '{spec.root}': its check failed:\n" + "\n".join(f"  - {e}" for e in report.errors))
    f = report.summary["fingerprint"]
    result = Plan(dataset=str(spec.root), fingerprint={k: v for k, v in f.items() if k != "lesion_sizes"})
    dims = len(f["spacing_ras"]["median"])
    spacing, why = _target_spacing(f)
    spread = np.asarray(f["spacing_ras"]["max"]) - np.asarray(f["spacing_ras"]["min"])
    shape = [m * s / t for m, s, t in zip(f["shape_ras"]["median"], f["spacing_ras"]["median"], spacing, strict=True)]
    budget = CPU_VOXELS[dims] if device_memory_gb is None else int(2**21 * device_memory_gb / 8)
    topology = plan_patch(spacing, shape, budget)
    small = f.get("share_under_30_voxels") or 0.0
    median_lesion = f["lesion_size_voxels_quartiles"][2] if f.get("lesion_size_voxels_quartiles") else 0.0
    small_lesions = small >= 0.3 and median_lesion < SMALL_MEDIAN
    # large lesions, isotropic pooling, a CPU: MONAI's residual UNet at full resolution (module docstring)
    residual = dims == 3 and not small_lesions and device_memory_gb is None and \
        all(stride == [2] * dims for stride in topology.strides[1:])
    lowres = None if dims < 3 or small_lesions or residual or not f.get("lesion_size_mm3_quartiles") else \
        _lowres(spacing, shape, budget, f["lesion_size_mm3_quartiles"][2])
    if lowres is not None:
        fullres_cover = math.prod(topology.patch_size) / math.prod(shape)
        spacing, shape, topology = lowres
        why = (f"nnU-Net's 3d_lowres: at the median spacing the patch covers {100 * fullres_cover:.1f} % of the median "
               f"image; coarsened until it covers {100 * LOWRES_COVERAGE:g} % (the median lesion keeps "
               f"{f['lesion_size_mm3_quartiles'][2] / math.prod(spacing):.0f} voxels)")
    resample = bool(np.any(spread > 0.01 * np.asarray(spacing))) or spacing != f["spacing_ras"]["median"]
    base, cap = (8, 64) if device_memory_gb is None else (32, 320)  # CPU: see the module docstring
    anisotropic = max(spacing) / min(spacing) >= ANISOTROPY
    if residual:
        result.set("model", "network", "unet", "large lesions on a CPU: MONAI's residual UNet, whose first "
                   "convolution strides, trains at full resolution (BraTS: Dice 0.41 vs 0.14 for DynUNet at 2.5 mm)")
        result.set("model", "channels", [16 * 2**i for i in range(topology.levels)],
                   f"{topology.levels} levels from the patch; 16 doubling, as MONAI's tutorials")
    else:
        result.set("model", "network", "dynunet", "nnU-Net's U-Net (MONAI DynUNet)")
        result.set("model", "channels", [min(base * 2**i, cap) for i in range(topology.levels)],
                   f"{topology.levels} levels from the patch; {base} doubling to at most {cap} features")
        result.set("model", "kernel_sizes", topology.kernel_sizes, "1 along an axis until its spacing is within 2x "
                   "the finest (nnU-Net)" if anisotropic else "3 everywhere")
        result.set("model", "strides", topology.strides, "no pooling along an axis until its spacing catches up "
                   "(nnU-Net)" if anisotropic else "isotropic pooling")
    result.set("model", "loss", "focal_dice", "focal over every voxel + batch Dice over the lesions")
    result.set("model", "alpha", "auto", "from the class frequencies the loss sees (inverse_sqrt; data.class_counts_from)")
    result.set("model", "batch_dice", True, "nnU-Net's batch Dice: a lesion-free patch does not score alone")
    result.set("model", "lesion_matching", "msseg", "validation and tuning by a rule a blob cannot win")
    if small_lesions:
        share = f"{100 * small:.0f} % of the lesions are under 30 voxels, median {median_lesion:g}"
        result.set("model", "min_size", 0, f"{share}: no size cut (benchmarks/small_lesions.py)")
        result.set("model", "threshold", 0.3, "a low threshold grows found lesions to their edges ...")
        result.set("model", "peak_threshold", 0.9, "... and hysteresis drops the faint specks it lets in")
    else:
        result.set("model", "min_size", "auto", "smallest kept component chosen on validation, stored in mm3")
        result.set("model", "threshold", "auto", "foreground threshold chosen on validation")
        result.set("model", "keep_largest", "auto", "only the largest component kept if validation says so (nnU-Net)")
    windows = _windows(shape, topology.patch_size, 0.5)
    result.set("model", "sw_overlap", 0.5 if windows <= VAL_WINDOWS else 0.25,
               f"validation's sliding-window overlap: a median case takes {windows} windows at 0.5"
               + ("" if windows <= VAL_WINDOWS else f", {_windows(shape, topology.patch_size, 0.25)} at 0.25"))
    result.set("data", "dataset", str(dataset) if not isinstance(dataset, DatasetSpec) else str(spec.root),
               "the dataset planned for (--dataset overrides it)")
    result.set("data", "spatial_dims", dims, "native 2D images" if dims == 2 else
               ("anisotropic 3D" if anisotropic else "3D volumes"))
    result.set("data", "patch_size", topology.patch_size,
               f"{' x '.join(f'{p * s:.0f}' for p, s in zip(topology.patch_size, spacing, strict=True))} mm, "
               f"{math.prod(topology.patch_size)} voxels (budget {budget})")
    result.set("data", "batch_size", 2, "cases per step (nnU-Net's minimum)")
    result.set("data", "samples_per_volume", 4 if residual else 2,
               f"patches per case: {8 if residual else 4} patches per step")
    result.set("data", "target_spacing", [round(s, 5) for s in spacing] if resample else None,
               why if resample else f"{why}: every case is already on it, no resampling")
    ct = any("ct" == n.lower() or n.lower().startswith("ct") for n in spec.channel_names) and dims == 3
    intensity = f["intensity_foreground"]
    result.set("data", "normalization", "ct" if ct else "zscore",
               "a CT channel: window of the foreground intensities" if ct else "z-score inside the non-zero region")
    if ct:
        result.set("data", "ct_window", [round(intensity[0]["p00_5"], 3), round(intensity[0]["p99_5"], 3)],
                   "foreground 0.5-99.5 % intensities (nnU-Net)")
    result.set("data", "sampling", "voxels", "centres on lesion voxels (lesion-balanced sampling measured no better)")
    result.set("data", "pos_fraction", 0.5, "half of the patches centred on a lesion")
    if small_lesions:
        result.set("data", "class_counts_from", "volumes", "α counted over whole label volumes: small lesions leave "
                   "lesion-centred patches mostly background (patch counts measured worse on small lesions)")
    else:
        result.set("data", "class_counts_from", "patches", "α counted on sampled patches, not whole volumes: lesion-"
                   "centred patches of large lesions are mostly lesion, and volume counts overstate the imbalance")
    result.set("data", "steps_per_epoch", STEPS_PER_EPOCH, "an epoch is 250 steps (nnU-Net), whatever the cases")
    result.set("data", "val_fraction", 0.2, "validation split")
    result.set("data", "num_workers", 0, "the cached pipeline is cheap next to a step on CPU")
    seconds = int(round(budget_minutes * 60))
    result.set("trainer", "max_time", f"00:{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}",
               f"the budget: {budget_minutes:g} minutes of training")
    result.set("trainer", "max_epochs", 100_000, "bounded by max_time")
    interval = max(30, seconds // 8)
    result.set("trainer", "val_check_interval", f"00:00:{interval // 60:02d}:{interval % 60:02d}",
               "validation every 1/8 of the budget, stretched to keep it near 10 % of the time")
    result.set("trainer", "check_val_every_n_epoch", 1, "time-based validation checks after every step")
    result.set("trainer", "num_sanity_val_steps", 0, "no sanity validation")
    result.set("trainer", "log_every_n_steps", 10, "a row of metrics.csv every 10 steps")
    result.set("", "monitor", "last",
               "predict with the final weights (nnU-Net): the poly rate reaches 0 with the budget")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seg-plan", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, type=Path, help="dataset.json or dataset folder")
    parser.add_argument("--budget-minutes", type=float, default=8.0, help="training wall time to plan for")
    parser.add_argument("--device-memory", type=float, default=None, help="accelerator memory in GB (default: CPU)")
    parser.add_argument("--output", required=True, type=Path, help="YAML config to write")
    args = parser.parse_args(argv)
    result = plan(args.dataset, budget_minutes=args.budget_minutes, device_memory_gb=args.device_memory,
                  progress=True)
    write_text(args.output, result.to_yaml())
    print(result.to_yaml() + f"wrote {args.output}")
    return 0

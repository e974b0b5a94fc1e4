"""``seg-infer``: NIfTI volumes in, NIfTI masks out in exactly each input's space, on the user's devices.

    seg-infer --checkpoint RUN/best.ckpt [B.ckpt ... | RUN_OF_FOLDS/] --input FILE|DIR|dataset.json --output DIR
              [--model EXPORT_DIR [--engine auto|onnx|openvino|torchscript]] [--device auto|cpu|cuda|cuda:N|mps]
              [--devices N --strategy ddp --num-nodes M]
              [--probabilities] [--overwrite] [--tta/--no-tta] [--overlap 0.5] [--batch-size 2]
              [--min-size N | --min-size-mm3 V] [--threshold T] [--peak-threshold P] [--keep-largest]
              [--precision 32|bf16|16]
              [--num-workers 1] [--compile]

For every case the preprocessing stored with the model (orientation, cropping, spacing, normalisation) is replayed
with MONAI's invertible transforms, the network predicts by sliding window, the prediction is inverted onto the
input's grid, and the mask is written with the input file's header, shape and affine (qform and sform), so it opens
on top of the scan in any viewer (:mod:`seg.inference.predictor`). Cases run through Lightning's
``Trainer.predict`` (:mod:`seg.inference.batch`): one device, or several GPUs and nodes under DDP. Existing outputs
are skipped unless ``--overwrite`` (only a case whose outputs are all there is complete, so a killed run restarted
predicts what is missing); a failing case is reported by file and the others go on; the exit code is non-zero if any
case failed on any rank. Options left out take the checkpoint's settings (postprocessing) or the defaults.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from seg.data.layouts import Case, load_dataset
from seg.errors import check_option
from seg.files import ensure_folder
from seg.inference.batch import PRECISIONS, Job, run
from seg.inference.export import load_export
from seg.inference.predictor import CasePredictor, Settings, load_models
from seg.io import case_name, is_nifti
from seg.types import PathLike


def discover_inputs(source: PathLike) -> list[Case]:
    """Cases to predict: a NIfTI file, a folder of NIfTI files, or a dataset.json (its test cases, else all).

    Returns one :class:`~seg.data.layouts.Case` per case with its modality files (nnU-Net's ``CASE_0000``,
    ``CASE_0001`` files of one folder are grouped into case ``CASE``); its name names the output mask.
    """
    source = Path(source)
    if source.suffix == ".json" or (source / "dataset.json").is_file():
        spec = load_dataset(source)
        return [Case(c.name, list(c.images)) for c in (spec.test_cases or spec.cases)]
    if source.is_file():
        return [Case(case_name(source, channel_suffix=True), [source])]
    if not source.is_dir():
        raise FileNotFoundError(f"input '{source}' is neither a NIfTI file, a folder nor a dataset.json")
    groups: dict[str, list[Path]] = {}
    for path in sorted(p for p in source.iterdir() if is_nifti(p)):
        groups.setdefault(case_name(path, channel_suffix=True), []).append(path)
    if not groups:
        raise FileNotFoundError(f"no NIfTI files (.nii, .nii.gz) in '{source}'")
    return [Case(name, files) for name, files in groups.items()]


def lightning_device(device: str) -> tuple[str, int | list[int] | None]:
    """``--device`` -> Lightning's (accelerator, devices or None for ``--devices``): auto, cpu, cuda, cuda:N, mps."""
    if device.startswith("cuda:"):
        return "gpu", [int(device.split(":", 1)[1])]
    accelerator = {"auto": "auto", "cpu": "cpu", "cuda": "gpu", "gpu": "gpu", "mps": "mps"}.get(device)
    if accelerator is None:
        check_option("device", device, ("auto", "cpu", "cuda", "cuda:N", "mps"))
    return accelerator, None


def predict_files(checkpoint: PathLike | Sequence[PathLike] | None, source: PathLike, output: PathLike, *,
                  model: PathLike | None = None, engine: str = "auto", probabilities: bool = False,
                  overwrite: bool = False, tta: bool = False, min_size: int | None = None,
                  min_size_mm3: float | None = None,
                  threshold: float | None = None, peak_threshold: float | None = None,
                  keep_largest: bool | None = None, overlap: float = 0.5, batch_size: int | None = None,
                  device: str = "cpu", devices: int = 1,
                  strategy: str = "auto", num_nodes: int = 1, num_workers: int = 0,
                  precision: str = "32", compile: bool = False, progress: bool = True) -> list[str]:
    """Predict every case of ``source`` into ``output``; returns the failure messages (empty: all fine).

    ``checkpoint``: one checkpoint, several (an ensemble), or run folders of folds; or ``model``: an export folder.
    """
    output = Path(output)
    ensure_folder(output)  # a file in the way is one clear error, before any model is read
    check_option("precision", precision, tuple(PRECISIONS))
    if (checkpoint is None) == (model is None):
        raise ValueError("give either --checkpoint (one or more) or --model (an export folder of seg-export)")
    if compile and model is not None:
        raise ValueError("--compile compiles a checkpoint's network; an export (--model) is already compiled")
    settings = Settings(overlap=overlap, batch_size=batch_size, tta=tta, min_size=min_size, min_size_mm3=min_size_mm3,
                        threshold=threshold, peak_threshold=peak_threshold, keep_largest=keep_largest,
                        compile=compile)
    if model is not None:
        network, spec = load_export(model, engine=engine)
    else:
        paths = [checkpoint] if isinstance(checkpoint, str | Path) else list(checkpoint)
        network, spec = load_models(paths)
    predictor = CasePredictor(network, spec, settings)
    jobs = []
    for case in discover_inputs(source):
        targets = [output / f"{case.name}.nii.gz"] + ([output / "probabilities" / f"{case.name}.nii.gz"]
                                                      if probabilities else [])
        if all(t.exists() for t in targets) and not overwrite:  # skip only what is complete
            print(f"skipping {case.name}: its output(s) exist (use --overwrite)")
            continue
        jobs.append(Job(case, targets))
    if not jobs:
        return []
    accelerator, chosen = lightning_device(device)
    return run(predictor, jobs, probabilities=probabilities, accelerator=accelerator,
               devices=chosen if chosen is not None else devices, strategy=strategy, num_nodes=num_nodes,
               num_workers=num_workers, precision=precision, progress=progress)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seg-infer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", nargs="+", type=Path, help="RUN/best.ckpt, several (ensemble) or run folders")
    parser.add_argument("--model", type=Path, help="an export folder of seg-export (instead of --checkpoint)")
    parser.add_argument("--engine", default="auto", choices=("auto", "openvino", "onnx", "torchscript"),
                        help="runtime of an export (auto: OpenVINO, else ONNX Runtime, else TorchScript)")
    parser.add_argument("--input", required=True, type=Path, help="NIfTI file, folder, or dataset.json")
    parser.add_argument("--output", required=True, type=Path, help="output folder")
    parser.add_argument("--probabilities", action="store_true", help="also write float probability maps")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=False,
                        help="average over all axis flips (nnU-Net's mirroring)")
    parser.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="windows per network call (default: 1 for OpenVINO, else 2; on a CPU as fast as 4 with "
                        "half the activations)")
    parser.add_argument("--min-size", type=int, default=None, help="remove components under N voxels "
                        "(default: the checkpoint's postprocessing)")
    parser.add_argument("--min-size-mm3", type=float, default=None, help="remove components under V mm^3")
    parser.add_argument("--threshold", type=float, default=None, help="foreground where 1 - p(background) > T")
    parser.add_argument("--peak-threshold", type=float, default=None, help="keep only components with a voxel "
                        "above P (hysteresis; 0 keeps all; default: the checkpoint's postprocessing)")
    parser.add_argument("--keep-largest", action=argparse.BooleanOptionalAction, default=None,
                        help="keep only the largest foreground component (default: the checkpoint's postprocessing)")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:N or mps (auto: CUDA if present)")
    parser.add_argument("--devices", type=int, default=1, help="devices (processes) per node, with --strategy ddp")
    parser.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp for several devices")
    parser.add_argument("--num-nodes", type=int, default=1, help="machines, with --strategy ddp")
    parser.add_argument("--num-workers", type=int, default=1, help="DataLoader workers reading the next cases")
    parser.add_argument("--precision", default="32", help="32, bf16 or 16 (mixed precision on accelerators)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network once per process (faster "
                        "windows at equal outputs; the compilation pays over several cases)")
    args = parser.parse_args(argv)
    failures = predict_files(args.checkpoint, args.input, args.output, model=args.model, engine=args.engine,
                             probabilities=args.probabilities, overwrite=args.overwrite, tta=args.tta,
                             min_size=args.min_size, min_size_mm3=args.min_size_mm3, threshold=args.threshold,
                             peak_threshold=args.peak_threshold, keep_largest=args.keep_largest,
                             overlap=args.overlap, batch_size=args.batch_size,
                             device=args.device, devices=args.devices, strategy=args.strategy, num_nodes=args.num_nodes,
                             num_workers=args.num_workers, precision=args.precision, compile=args.compile)
    if failures:
        print(f"{len(failures)} case(s) failed:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    print(f"predictions written to {args.output}")
    return 0

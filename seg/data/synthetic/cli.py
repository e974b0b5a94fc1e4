"""``python -m seg.data.synthetic OUT ...``: the command line of :func:`seg.data.synthetic.make_dataset`.

Every flag is one of ``make_dataset``'s arguments; a flag left out takes that function's default. Lesion
sizes: ``--lesion-sizes realistic`` (the default; ``--lesion-volume MEDIAN SIGMA``, ``--lesion-volume-range
LO HI``, in voxels) or ``--lesion-sizes radius`` (``--lesion-radius LO HI`` in mm, ``--foreground-fraction F``);
without ``--lesion-sizes``, giving ``--lesion-radius`` or ``--foreground-fraction`` selects ``radius``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from seg.data.synthetic.dataset import make_dataset
from seg.data.synthetic.files import preview
from seg.data.synthetic.sizes import LESION_SIZES


def _pair(values: Sequence[float] | None) -> tuple | None:
    return None if values is None else tuple(values)


def main(argv: Sequence[str] | None = None) -> Path:
    """Parse ``argv`` (default ``sys.argv[1:]``), write the dataset, print a summary; returns the dataset.json path."""
    parser = argparse.ArgumentParser(
        prog="python -m seg.data.synthetic",
        description="Synthetic sparse-lesion datasets in the MSD layout, seeded and deterministic.",
    )
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--test-cases", type=int, default=8)
    parser.add_argument("--dims", type=int, default=3, choices=(2, 3), help="spatial dimensions")
    parser.add_argument("--shape", type=int, nargs="+", help="e.g. 64 64 48 (default by --dims)")
    parser.add_argument("--spacing", type=float, nargs="+", help="mm per axis, e.g. 1 1 2")
    parser.add_argument(
        "--lesion-sizes",
        choices=LESION_SIZES,
        help="size model: realistic (log-normal voxel volumes, the default) or radius (radii in mm); "
        "default radius if --lesion-radius or --foreground-fraction is given, else realistic",
    )
    parser.add_argument(
        "--lesions-per-case", type=int, nargs=2, metavar=("LO", "HI"), help="default 2 15 (realistic), 1 6 (radius)"
    )
    parser.add_argument(
        "--lesion-volume", type=float, nargs=2, metavar=("MEDIAN", "SIGMA"),
        help="realistic: log-normal label volume, median in voxels and sigma of ln V (default 16 1.3)",
    )
    parser.add_argument(
        "--lesion-volume-range", type=float, nargs=2, metavar=("LO", "HI"),
        help="realistic: truncation of the volumes in voxels (default 3 3000)",
    )
    parser.add_argument(
        "--lesion-radius", type=float, nargs=2, metavar=("LO", "HI"),
        help="radius: range of radii in mm (default 1.5 8 in 3D, 1 6 in 2D)",
    )
    parser.add_argument(
        "--foreground-fraction", type=float,
        help="radius: lesion-voxel fraction to meet over the dataset by skewing the radii (default: no skew)",
    )
    parser.add_argument("--contrast", type=float, nargs=2, default=(4.0, 6.0), metavar=("LO", "HI"))
    parser.add_argument("--distractors", type=int, nargs=2, default=(2, 6), metavar=("LO", "HI"))
    parser.add_argument("--empty-fraction", type=float, default=0.15)
    parser.add_argument("--channels", type=int, default=1, choices=(1, 2))
    parser.add_argument("--oblique-degrees", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset in OUT")
    parser.add_argument("--preview", type=Path, help="also write a PNG montage of a few training cases")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    path = make_dataset(
        args.out,
        cases=args.cases,
        test_cases=args.test_cases,
        spatial_dims=args.dims,
        shape=args.shape,
        spacing=args.spacing,
        lesion_sizes=args.lesion_sizes,
        lesions_per_case=_pair(args.lesions_per_case),
        lesion_volume=_pair(args.lesion_volume),
        lesion_volume_range=_pair(args.lesion_volume_range),
        lesion_radius=_pair(args.lesion_radius),
        foreground_fraction=args.foreground_fraction,
        contrast=tuple(args.contrast),
        distractors=tuple(args.distractors),
        empty_fraction=args.empty_fraction,
        channels=args.channels,
        oblique_degrees=args.oblique_degrees,
        seed=args.seed,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    stats = json.loads(path.read_text())["stats"]
    requested = stats["requested_foreground_fraction"]
    quartiles = stats["component_voxels_quartiles"]
    print(
        f"wrote {path}: {stats['lesion_sizes']} lesion sizes, lesion fraction {stats['foreground_fraction']:.4%}"
        + ("" if requested is None else f" (requested {requested:.4%})")
        + f", {stats['lesions']} lesions ({stats['lesions_dropped']} dropped)"
        + (
            f", median {quartiles[2]:g} voxels, {stats['components_under_30']:.0%} under 30"
            if quartiles
            else ""
        )
        + f", {stats['seconds']} s"
    )
    if args.preview:
        print(f"wrote {preview(path, args.preview)}")
    return path

"""Lay the BraTS-2015 cases of ``../shared/data/brats2015`` out as an MSD dataset, by symbolic links.

The shared folder keeps each case in its own directory with fixed file names (``Flair_subtrMeanDivStd``,
``T1c_subtrMeanDivStd``, ``OTMultiClass``), which no standard layout reads. This writes
``OUT/imagesTr/brats_000N_0000.nii.gz`` (Flair), ``..._0001.nii.gz`` (T1c), ``OUT/labelsTr/brats_000N.nii.gz``
and the held-back cases under ``imagesTs``/``labelsTs`` as links to the shared files (no voxel data is
copied: the licence forbids redistribution), plus a ``dataset.json``.

    python -m seg.data.brats ../shared/data/brats2015 runs/brats_dataset [--test 2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from seg.io import write_json

MODALITIES = {"0000": "Flair_subtrMeanDivStd.nii.gz", "0001": "T1c_subtrMeanDivStd.nii.gz"}
LABEL_FILE = "OTMultiClass.nii.gz"
LABELS = {"0": "background", "1": "necrosis", "2": "oedema", "3": "non-enhancing", "4": "enhancing"}


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target.resolve())


def write_brats_dataset(source: Path, out: Path, *, test_cases: int = 2) -> Path:
    """Link the cases of ``source`` into an MSD layout under ``out``; returns ``out/dataset.json``.

    The last ``test_cases`` cases (sorted by name) are held back as test cases with labels in ``labelsTs``.
    """
    source, out = Path(source), Path(out)
    cases = sorted(p for p in source.iterdir() if p.is_dir() and (p / LABEL_FILE).is_file())
    if len(cases) <= test_cases:
        raise ValueError(f"'{source}' holds {len(cases)} BraTS case folder(s) with {LABEL_FILE}; "
                         f"need more than --test {test_cases}")
    training, test = [], []
    for i, case in enumerate(cases):
        name = f"brats_{case.name.split('_pat')[-1][:4]}"
        held_back = i >= len(cases) - test_cases
        images_dir, labels_dir = ("imagesTs", "labelsTs") if held_back else ("imagesTr", "labelsTr")
        images = []
        for suffix, file in MODALITIES.items():
            if not (case / file).is_file():
                raise FileNotFoundError(f"BraTS case '{case}' lacks {file}")
            _link(case / file, out / images_dir / f"{name}_{suffix}.nii.gz")
            images.append(f"./{images_dir}/{name}_{suffix}.nii.gz")
        _link(case / LABEL_FILE, out / labels_dir / f"{name}.nii.gz")
        if held_back:
            test.append(images)
        else:
            training.append({"image": images, "label": f"./labelsTr/{name}.nii.gz"})
    content = {"name": "BraTS2015-subset", "description": "links to ../shared/data/brats2015 (CC BY-NC-SA 3.0 CH)",
               "tensorImageSize": "3D", "modality": {"0": "FLAIR", "1": "T1c"}, "labels": LABELS,
               "numTraining": len(training), "numTest": len(test), "training": training, "test": test}
    return write_json(out / "dataset.json", content)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--test", type=int, default=2, help="cases held back for testing")
    args = parser.parse_args(argv)
    print(write_brats_dataset(args.source, args.out, test_cases=args.test))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Cross-validation in seg-compare: every labelled case tested once, splits reused, the report over all cases;
and the Ray executor producing the report the sequential one does (local Ray, 2 CPUs)."""

from __future__ import annotations

import json
import os
import shutil
import time
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from seg.comparison.config import load_config
from seg.comparison.folds import draw_splits, fold_dataset, splits_for
from seg.comparison.render import write_report
from seg.comparison.runner import evaluate_run, pending, plan_runs, run_comparison
from seg.data.layouts import load_dataset
from seg.evaluation.outputs import json_ready

ROOT = Path(__file__).resolve().parents[2]


def fake_runner(argv: list[str], folder: Path, dataset_json: Path, labels: Path, **evaluation) -> dict:
    """'Trains' instantly: each test label with lesions dropped at a rate set by the variant (deterministic)."""
    variant = folder.parts[-3] if folder.name.startswith("fold") else folder.parts[-2]
    seed = int(argv[argv.index("--seed") + 1])
    for label_path in sorted(labels.glob("*.nii.gz")):
        image = nib.load(label_path)
        label = np.asarray(image.dataobj) > 0
        components, n = ndimage.label(label)
        rng = np.random.default_rng(zlib.crc32(f"{variant}{seed}{label_path.name}".encode()))
        drop = {"dice": 0.3, "focal": 0.6}.get(variant, 0.1)
        pred = label & ~np.isin(components, [k for k in range(1, n + 1) if rng.random() < drop])
        (folder / "predictions" / "probabilities").mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(pred.astype(np.uint8), image.affine), folder / "predictions" / label_path.name)
        prob = np.clip(0.8 * pred + 0.1, 0, 1).astype(np.float32)
        nib.save(nib.Nifti1Image(prob, image.affine), folder / "predictions" / "probabilities" / label_path.name)
    return evaluate_run(folder, labels, {"train_seconds": 1.0, "epochs": 1}, start=time.perf_counter(), **evaluation)


@pytest.fixture(scope="module")
def dataset_json(tmp_path_factory) -> Path:
    from seg.data.synthetic import make_dataset

    return make_dataset(tmp_path_factory.mktemp("cv"), cases=5, test_cases=2, shape=(24, 24, 12),
                        lesion_radius=(1.0, 2.5), lesions_per_case=(2, 4), empty_fraction=0.0, seed=4, progress=False)


def _config(tmp_path: Path, dataset_json: Path, **changes) -> Path:
    text = {"base": str(ROOT / "configs" / "compare" / "base3d.yaml"), "dataset": str(dataset_json), "seeds": [0],
            "variants": {"dice": ["--model.loss", "dice"], "focal": ["--model.loss", "focal"]}, "folds": 3,
            **changes}
    path = tmp_path / "cv.yaml"
    path.write_text(json.dumps(text))
    return path


def test_every_case_is_tested_exactly_once_and_the_split_is_fixed() -> None:
    names = [f"case_{i:03d}" for i in range(11)]
    splits = draw_splits(names, 5)
    tested = [n for s in splits for n in s["val"]]
    assert sorted(tested) == names and len(set(tested)) == 11  # each case once
    assert sorted(len(s["val"]) for s in splits) == [2, 2, 2, 2, 3]  # near-equal folds
    assert all(set(s["train"]) | set(s["val"]) == set(names) and not set(s["train"]) & set(s["val"]) for s in splits)
    assert draw_splits(list(reversed(names)), 5) == splits  # independent of the input order


def test_splits_are_written_reused_and_checked(tmp_path: Path) -> None:
    names = [f"c{i}" for i in range(6)]
    first = splits_for(tmp_path, names, 3)
    assert json.loads((tmp_path / "splits.json").read_text()) == first
    handed = [{"train": [n for n in names if n not in names[i:i + 2]], "val": names[i:i + 2]} for i in (0, 2, 4)]
    (tmp_path / "splits.json").write_text(json.dumps(handed))
    with pytest.raises(ValueError, match="3 folds testing 6 cases, but .* over 7 labelled cases"):
        splits_for(tmp_path, [*names, "c6"], 3)
    assert splits_for(tmp_path, names, 3) == handed  # a handed-in split is used as it is


def test_fold_datasets_hold_their_training_cases_and_linked_test_labels(tmp_path: Path, dataset_json: Path) -> None:
    spec = load_dataset(dataset_json)
    split = draw_splits([c.name for c in [*spec.cases, *spec.test_cases]], 3)[0]
    fold = load_dataset(fold_dataset(spec, split, tmp_path / "fold0"))
    assert sorted(c.name for c in fold.cases) == split["train"]
    assert sorted(c.name for c in fold.test_cases) == split["val"]
    assert all(c.label is not None and c.label.is_file() for c in fold.test_cases)


def test_fold_datasets_keep_the_names_of_linked_cases(tmp_path: Path, dataset_json: Path) -> None:
    # the BraTS layout: case files are links named by case, whose targets all have one name (OTMultiClass.nii.gz)
    spec = load_dataset(dataset_json)
    root = tmp_path / "linked"
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True)
    for case in [*spec.cases, *spec.test_cases]:
        if case.label is None:
            continue
        folder = tmp_path / "targets" / case.name
        folder.mkdir(parents=True)
        shutil.copyfile(case.images[0], folder / "image.nii.gz")  # real files, one name in every folder
        shutil.copyfile(case.label, folder / "label.nii.gz")
        (root / "images" / f"{case.name}_0000.nii.gz").symlink_to(folder / "image.nii.gz")
        (root / "labels" / f"{case.name}.nii.gz").symlink_to(folder / "label.nii.gz")
    linked = load_dataset(root)
    names = sorted(c.name for c in linked.cases)
    split = draw_splits(names, 2)[0]
    fold = load_dataset(fold_dataset(linked, split, tmp_path / "fold0"))
    assert sorted(c.name for c in fold.cases) == split["train"]  # not 'label' once per case


def test_a_cross_validated_comparison_reports_over_every_labelled_case(tmp_path: Path, dataset_json: Path) -> None:
    config = load_config(_config(tmp_path, dataset_json))
    runs = plan_runs(config, tmp_path / "out")
    assert [(r.variant, r.fold) for r in runs] == [("dice", 0), ("dice", 1), ("dice", 2), ("focal", 0), ("focal", 1),
                                                   ("focal", 2)]
    statuses = run_comparison(config, tmp_path / "out", runner=fake_runner)
    assert [s for *_, s in statuses] == ["done"] * 6
    report = write_report(tmp_path / "out", list(config.variants), config.seeds, "dice", folds=3)
    assert len(report["cases"]) == 7  # 5 training + 2 labelled test cases, each tested once
    assert report["folds"] == 3 and report["matching"] == "msseg"
    text = (tmp_path / "out" / "report.md").read_text()
    assert "× 3 folds" in text and "rests on 7 test cases" in text
    assert "no paired difference can be significant" not in text  # 7 cases can: the smallest p is 2/2^7 = 0.016
    per_fold = [json.loads((r.folder / "evaluation" / "summary.json").read_text())["n_cases"] for r in runs[:3]]
    assert sum(per_fold) == 7  # the per-fold results are kept


def test_the_ray_executor_writes_the_sequential_report(tmp_path: Path, dataset_json: Path) -> None:
    pytest.importorskip("ray")
    from seg.comparison.ray_executor import run_with_ray

    config = load_config(_config(tmp_path, dataset_json, folds=2))
    sequential, parallel = tmp_path / "sequential", tmp_path / "ray"
    run_comparison(config, sequential, runner=fake_runner)
    _, todo = pending(config, plan_runs(config, parallel), parallel)
    os.environ["PYTHONPATH"] = f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"  # workers import this module
    statuses = run_with_ray(todo, parallel, fake_runner, num_cpus=2)
    assert sorted(s for _, s in statuses) == ["done"] * 4
    a = write_report(sequential, list(config.variants), config.seeds, "dice", folds=2)
    b = write_report(parallel, list(config.variants), config.seeds, "dice", folds=2)
    assert json_ready(a["per_case"]) == json_ready(b["per_case"])  # NaN (an undefined HD95) as null on both sides
    assert json_ready(a["table"]) == json_ready(b["table"])
    _, again = pending(config, plan_runs(config, parallel), parallel)
    assert again == []  # resumable: nothing left to run


def test_too_few_cases_for_any_significant_difference_are_flagged() -> None:
    from seg.comparison.render import _too_few

    assert _too_few(6) == []  # 2 / 2^6 = 0.031 < 0.05
    assert "smallest possible two-sided Wilcoxon p is 0.062" in _too_few(5)[1]
    assert "smallest possible two-sided Wilcoxon p is 0.5" in _too_few(2)[1]

"""seg-compare: run arguments, the resumable run loop (with a fake trainer) and the report's numbers.

Report numbers are checked against SciPy called directly (``scipy.stats.bootstrap``, ``scipy.stats.wilcoxon``) on
per-case values read back from the runs' ``per_case.csv`` with the csv module; the real end-to-end ``--quick``
run is marked slow. Config loading: tests/test_compare_config.py.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import shutil
import time
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage, stats

from seg.comparison.render import write_report
from seg.comparison.report import (
    collect,
    compare_variants,
    holm,
    pool_calibration,
    region_metrics,
    sensitivity_by_size,
)
from seg.comparison.runner import load_config, main, run_comparison, train_argv

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "compare"


# ------------------------------------------------------------------------------------ run arguments
def test_train_argv_order_base_then_shared_then_variant_then_run(tmp_path: Path) -> None:
    config = load_config(CONFIGS / "sparse3d.yaml")
    argv = train_argv(config, "focal", 2, tmp_path / "run", tmp_path / "dataset.json")
    assert argv[:2] == ["--config", str(config.base)]
    assert argv.index(config.train_args[0]) < argv.index(config.variants["focal"][0], 2)  # variant overrides shared
    assert argv[argv.index("--seed") + 1] == "2" and argv[argv.index("--output") + 1] == str(tmp_path / "run")
    assert argv[argv.index("--max-epochs") + 1] == str(config.max_epochs)


# -------------------------------------------------------------------------------- fake runs on real files
def _fake_runner(calls: list[tuple[str, int]], fail: tuple[str, int] | None = None):
    """A runner that 'trains' instantly: predictions are the test labels with lesions dropped and a false
    positive added at random (seeded by variant and seed), then the real evaluation of seg.comparison.runner."""
    from seg.comparison.runner import evaluate_run

    def runner(argv: list[str], folder: Path, dataset_json: Path, labels: Path, **evaluation) -> dict:
        variant, seed = folder.parent.name, int(argv[argv.index("--seed") + 1])
        calls.append((variant, seed))
        if (variant, seed) == fail:
            raise FloatingPointError("non-finite loss at global step 3")
        rng = np.random.default_rng(zlib.crc32(f"{variant}{seed}".encode()))
        drop = {"dice": 0.3, "focal": 0.5}.get(variant, 0.1)
        for label_path in sorted(labels.glob("*.nii.gz")):
            image = nib.load(label_path)
            label = np.asarray(image.dataobj) > 0
            components, n = ndimage.label(label)
            pred = label & ~np.isin(components, [k for k in range(1, n + 1) if rng.random() < drop])
            corner = rng.integers(0, np.array(label.shape) - 2)
            pred[tuple(slice(c, c + 2) for c in corner)] |= rng.random() < 0.5
            prob = np.clip(0.7 * pred + 0.15 + 0.1 * rng.random(label.shape), 0, 1).astype(np.float32)
            (folder / "predictions" / "probabilities").mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(pred.astype(np.uint8), image.affine), folder / "predictions" / label_path.name)
            nib.save(nib.Nifti1Image(prob, image.affine), folder / "predictions" / "probabilities" / label_path.name)
        (folder / "metrics.csv").write_text("epoch,step,val/dice,val/lesion_f1,train/loss_epoch\n" + "".join(
            f"{e},{10 * e},{0.1 * e + 0.05 * seed},{0.12 * e},{1.0 / (e + 1)}\n" for e in range(4)))
        return evaluate_run(folder, labels, {"train_seconds": 1.0, "epochs": 4}, start=time.perf_counter(),
                            **evaluation)

    return runner


@pytest.fixture(scope="module")
def dataset_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from seg.data.synthetic import make_dataset

    return make_dataset(tmp_path_factory.mktemp("data"), cases=2, test_cases=8, shape=(24, 24, 12),
                        lesion_radius=(1.0, 2.5), lesions_per_case=(2, 4), seed=3, progress=False)


def _config(tmp_path: Path, dataset_json: Path, **changes) -> Path:
    text = {"base": str(CONFIGS / "base3d.yaml"), "dataset": str(dataset_json), "seeds": [0, 1],
            "max_epochs": 4, "variants": {"dice": ["--model.loss", "dice"], "focal": ["--model.loss", "focal"],
                                          "focal_dice": ["--model.loss", "focal_dice"]}, **changes}
    path = tmp_path / "compare.yaml"
    path.write_text(json.dumps(text))  # JSON is YAML
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, dataset_json: Path) -> tuple[Path, Path]:
    """(config path, output) of a fake comparison with every run finished: 3 variants x 2 seeds."""
    folder = tmp_path_factory.mktemp("finished")
    path, calls = _config(folder, dataset_json), []
    statuses = run_comparison(load_config(path), folder / "out", runner=_fake_runner(calls))
    assert [s for *_, s in statuses] == ["done"] * 6 and len(calls) == 6
    return path, folder / "out"


def _copy(finished: tuple[Path, Path], tmp_path: Path) -> Path:
    return Path(shutil.copytree(finished[1], tmp_path / "out"))


def test_resume_skips_finished_runs_and_restarts_unfinished_ones(tmp_path: Path, finished) -> None:
    config, out, calls = load_config(finished[0]), _copy(finished, tmp_path), []
    assert [s for *_, s in run_comparison(config, out, runner=_fake_runner(calls))] == ["skipped"] * 6
    assert calls == []
    # an interrupted run: no evaluation yet, a stale file left behind -> trained again from an empty folder
    interrupted = out / "runs" / "focal" / "seed1"
    shutil.rmtree(interrupted / "evaluation")
    (interrupted / "stale.ckpt").write_text("x")
    statuses = run_comparison(config, out, runner=_fake_runner(calls))
    assert calls == [("focal", 1)] and ("focal", 1, "done") in statuses
    assert not (interrupted / "stale.ckpt").exists() and (interrupted / "evaluation" / "summary.json").is_file()


def test_changed_settings_of_a_finished_run_raise(tmp_path: Path, finished) -> None:
    out = _copy(finished, tmp_path)
    changed = dataclasses.replace(load_config(finished[0]), max_epochs=9)
    with pytest.raises(ValueError, match="made with other settings"):
        run_comparison(changed, out, runner=_fake_runner([]))


def test_edited_variant_config_of_a_finished_run_raises(tmp_path: Path, dataset_json: Path) -> None:
    variant_file = tmp_path / "loss.yaml"
    variant_file.write_text("model:\n  loss: dice\n")
    path = _config(tmp_path, dataset_json, seeds=[0], variants={"dice": ["--config", "loss.yaml"]})
    run_comparison(load_config(path), tmp_path / "out", runner=_fake_runner([]))
    assert [s for *_, s in run_comparison(load_config(path), tmp_path / "out", runner=_fake_runner([]))] == ["skipped"]
    variant_file.write_text("model:\n  loss: focal\n")
    with pytest.raises(ValueError, match="made with other settings"):
        run_comparison(load_config(path), tmp_path / "out", runner=_fake_runner([]))


def test_eval_keys_reach_every_evaluation_and_a_change_of_them_raises(tmp_path: Path, dataset_json: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import seg.comparison.runner

    monkeypatch.setattr(seg.comparison.runner, "execute_run", _fake_runner([]))  # the default runner, minus training
    path = _config(tmp_path, dataset_json, seeds=[0, 1], variants={"dice": ["--model.loss", "dice"]},
                   eval_classes=[1], eval_dilation=1, eval_min_lesion_size=4)
    config, out = load_config(path), tmp_path / "out"
    assert [s for *_, s in run_comparison(config, out)] == ["done", "done"]
    for seed in (0, 1):
        settings = json.loads((out / f"runs/dice/seed{seed}/evaluation/summary.json").read_text())["settings"]
        assert (settings["classes"], settings["dilation"], settings["min_lesion_size"]) == ([1], 1, 4)
    assert [s for *_, s in run_comparison(config, out)] == ["skipped", "skipped"]
    with pytest.raises(ValueError, match=r"evaluated with min_lesion_size 4 \(config: 0\)"):
        run_comparison(dataclasses.replace(config, eval_min_lesion_size=0), out)


def test_failed_run_is_recorded_and_the_others_continue(tmp_path: Path, dataset_json: Path) -> None:
    path = _config(tmp_path, dataset_json, seeds=[0, 1], variants={"dice": ["--model.loss", "dice"],
                                                                  "focal": ["--model.loss", "focal"]})
    config, out = load_config(path), tmp_path / "out"
    statuses = run_comparison(config, out, runner=_fake_runner([], fail=("focal", 0)))
    assert ("focal", 0, "failed") in statuses and sum(s == "done" for *_, s in statuses) == 3
    assert "non-finite loss" in json.loads((out / "runs/focal/seed0/failed.json").read_text())["error"]
    report = collect(out, list(config.variants), config.seeds, "dice")
    assert report["runs"]["focal"]["0"]["status"] == "failed"
    # the variant's per-case values come from the one seed that finished
    own = _per_case(out / "runs/focal/seed1/evaluation/per_case.csv", "dice")
    np.testing.assert_allclose(report["per_case"]["focal"]["dice"], own)


def _per_case(path: Path, metric: str) -> np.ndarray:
    with open(path, newline="") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda r: r["case"])
    return np.array([float(r[metric]) if r[metric] not in ("", "nan") else math.nan for r in rows])


def _scipy_ci(values: np.ndarray) -> tuple[float, float, float]:
    result = stats.bootstrap((values,), np.mean, n_resamples=2000, confidence_level=0.95, method="percentile",
                             rng=np.random.default_rng(0))
    return float(values.mean()), float(result.confidence_interval.low), float(result.confidence_interval.high)


def test_report_numbers_match_scipy_on_the_runs_csv_files(tmp_path: Path, finished, dataset_json: Path) -> None:
    config, out = load_config(finished[0]), _copy(finished, tmp_path)
    report = write_report(out, list(config.variants), config.seeds, "dice")
    saved = json.loads((out / "report.json").read_text())
    for metric in ("dice", "lesion_f1", "fp"):
        seed_mean = {v: np.mean([_per_case(out / f"runs/{v}/seed{s}/evaluation/per_case.csv", metric)
                                 for s in (0, 1)], axis=0) for v in config.variants}  # (cases,) per variant
        for variant, values in seed_mean.items():
            cell = saved["table"][variant][metric]
            expected = _scipy_ci(values) if np.ptp(values) > 0 else (values.mean(),) * 3
            np.testing.assert_allclose([cell["mean"], cell["low"], cell["high"]], expected, rtol=1e-12)
            if variant != "dice":
                differences = values - seed_mean["dice"]
                test = saved["paired"][variant][metric]
                if np.any(differences != 0):
                    assert test["pvalue"] == pytest.approx(stats.wilcoxon(differences).pvalue, rel=1e-12)
                assert test["mean_difference"] == pytest.approx(differences.mean(), rel=1e-12)
    assert saved["cases"] == sorted(p.name.removesuffix(".nii.gz") for p in (dataset_json.parent / "labelsTs").iterdir())
    markdown = (out / "report.md").read_text()
    dice = report["table"]["focal_dice"]["dice"]
    assert f"| focal_dice | {dice['mean']:.3f} [{dice['low']:.3f}, {dice['high']:.3f}]" in markdown
    for name in ("metrics_bars", "sensitivity_by_size", "reliability", "training_curves"):
        assert (out / "figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_main_report_only_rebuilds_from_finished_runs(tmp_path: Path, finished) -> None:
    out = _copy(finished, tmp_path)
    assert main(["--config", str(finished[0]), "--output", str(out), "--report-only"]) == 0
    assert set(json.loads((out / "report.json").read_text())["table"]) == {"dice", "focal", "focal_dice"}


# ------------------------------------------------------------------------------------- statistics pieces
def test_compare_variants_against_scipy_and_nan_cases_dropped() -> None:
    rng = np.random.default_rng(1)
    base = rng.random(12)
    other = base + rng.normal(0.05, 0.05, 12)
    other[3] = math.nan  # e.g. HD95 undefined: the pair is dropped from the test and the CI
    table, paired = compare_variants({"dice": {"dice": base}, "focal": {"dice": other}}, "dice")
    keep = ~np.isnan(other)
    assert table["focal"]["dice"]["n"] == 11
    np.testing.assert_allclose([table["focal"]["dice"][k] for k in ("mean", "low", "high")], _scipy_ci(other[keep]))
    result = paired["focal"]["dice"]
    assert result["n"] == 11 and result["pvalue"] == pytest.approx(stats.wilcoxon(other[keep] - base[keep]).pvalue)
    assert result["pvalue_holm"] == result["pvalue"]  # one comparison: nothing to adjust


def test_holm_by_hand() -> None:
    # sorted p: 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> monotone: 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_sensitivity_by_size_averages_detection_over_seeds() -> None:
    seed0 = [{"case": "a", "lesion": "1", "size_voxels": "5", "size_mm3": "10", "detected": "1"},
             {"case": "a", "lesion": "2", "size_voxels": "50", "size_mm3": "100", "detected": "1"},
             {"case": "b", "lesion": "1", "size_voxels": "500", "size_mm3": "1000", "detected": "0"}]
    seed1 = [dict(seed0[0], detected="0"), seed0[1], seed0[2]]
    out = sensitivity_by_size([seed0, seed1], [10, 100], "voxels")
    assert [out[b]["sensitivity"] for b in ("0-10", "10-100", "100-inf")] == [0.5, 1.0, 0.0]
    assert [out[b]["n_lesions"] for b in out] == [1, 1, 1]
    by_mm3 = sensitivity_by_size([seed0, seed1], [10, 100], "mm3")  # bins [0, 10), [10, 100), [100, inf)
    assert [by_mm3[b]["n_lesions"] for b in by_mm3] == [0, 1, 2]
    assert by_mm3["10-100"]["sensitivity"] == 0.5 and by_mm3["100-inf"]["sensitivity"] == 0.5


def test_pool_calibration_equals_ece_of_the_pooled_voxels() -> None:
    edges = [0.0, 0.5, 1.0]
    a = {"bin_edges": edges, "bin_count": [3, 1], "bin_confidence": [0.1, 0.9], "bin_frequency": [0.0, 1.0]}
    b = {"bin_edges": edges, "bin_count": [1, 0], "bin_confidence": [0.3, None], "bin_frequency": [1.0, None]}
    pooled = pool_calibration([a, b])
    # bin 0: 4 voxels, mean p = (3*0.1 + 0.3)/4 = 0.15, frequency 1/4; bin 1: 1 voxel, p 0.9, frequency 1
    assert pooled["bin_count"] == [4, 1]
    assert pooled["ece"] == pytest.approx(4 / 5 * abs(0.15 - 0.25) + 1 / 5 * abs(0.9 - 1.0))


# ------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_quick_comparison_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "quick"
    assert main(["--config", str(CONFIGS / "sparse3d.yaml"), "--quick", "--output", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["table"]) == {"dice", "focal", "focal_dice"}
    assert all(r["status"] == "done" for seeds in report["runs"].values() for r in seeds.values())
    assert set(report["paired"]) == {"focal", "focal_dice"}
    for name in ("metrics_bars", "sensitivity_by_size", "reliability", "training_curves"):
        assert (out / "figures" / f"{name}.png").is_file()


def test_region_columns_are_told_from_metrics_that_look_like_them() -> None:
    # per_case.csv of a region-wise evaluation: WT_dice is a region's; surface_dice (a metric) is not
    columns = ["case", "dice", "surface_dice", "lesion_f1", "WT_dice", "ET_lesion_f1", "TC_lesion_wise_dice", "hd95"]
    assert region_metrics(columns) == ["WT_dice", "ET_lesion_f1", "TC_lesion_wise_dice"]

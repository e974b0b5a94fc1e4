"""seg-evaluate on tiny NIfTI folders written to tmp_path with a non-identity affine."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from seg.evaluation.evaluate import evaluate_folders, main

# 1.5 x 1 x 2 mm voxels, axes flipped (LPS-like) and an offset: nothing may assume an identity affine.
AFFINE = np.array([[-1.5, 0, 0, 30.0], [0, -1.0, 0, 20.0], [0, 0, 2.0, -10.0], [0, 0, 0, 1]])


def _save(array: np.ndarray, path, affine=AFFINE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))


def _case_a() -> tuple[np.ndarray, np.ndarray]:
    """Two GT lesions (one found, one missed) and one false positive, in a (12, 12, 6) volume."""
    label = np.zeros((12, 12, 6), dtype=np.uint8)
    label[1:3, 1:3, 1:3] = 1  # 8 voxels, detected
    label[8:10, 8:10, 3:5] = 1  # 8 voxels, missed
    pred = np.zeros_like(label)
    pred[1:3, 1:3, 2:4] = 1  # overlaps the first lesion on 4 voxels
    pred[6, 1, 5] = 1  # false positive
    return pred, label


@pytest.fixture
def folders(tmp_path):
    pred_a, label_a = _case_a()
    _save(label_a, tmp_path / "labels" / "case_a.nii.gz")
    _save(pred_a, tmp_path / "pred" / "case_a.nii.gz")
    _save(np.zeros((12, 12, 6), np.uint8), tmp_path / "labels" / "case_b.nii.gz")  # empty / empty: perfect
    _save(np.zeros((12, 12, 6), np.uint8), tmp_path / "pred" / "case_b.nii.gz")
    return tmp_path


def test_evaluate_folders_summary_and_files(folders):
    out = folders / "eval"
    summary = evaluate_folders(folders / "pred", folders / "labels", out, progress=False)
    assert summary["n_cases"] == 2
    assert (summary["tp"], summary["fp"], summary["fn"]) == (1, 1, 1)
    assert summary["lesion_f1"] == pytest.approx(0.5)
    assert summary["lesion_sensitivity"] == summary["lesion_precision"] == pytest.approx(0.5)
    assert summary["fp_per_volume"] == pytest.approx(0.5)
    assert summary["small_lesion_sensitivity"] == pytest.approx(0.5)  # both lesions have 8 < 10 voxels
    # Case a: Dice = 2*4 / (16 + 9); case b (both empty) = 1.
    assert summary["dice"] == pytest.approx((8 / 25 + 1.0) / 2)
    for name in ("per_case.csv", "per_lesion.csv", "summary.json", "summary.md"):
        assert (out / name).is_file()
    on_disk = json.loads((out / "summary.json").read_text())
    for key in ("dice", "lesion_f1", "lesion_sensitivity", "lesion_precision", "fp_per_volume",
                "small_lesion_sensitivity"):
        assert key in on_disk
    rows = list(csv.DictReader((out / "per_case.csv").open()))
    assert [r["case"] for r in rows] == ["case_a", "case_b"]
    assert float(rows[0]["dice"]) == pytest.approx(8 / 25)
    lesions = list(csv.DictReader((out / "per_lesion.csv").open()))
    assert [(r["detected"], float(r["size_mm3"])) for r in lesions] == [("1", 24.0), ("0", 24.0)]  # 8 * 3 mm³
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_missing_prediction_names_the_label(folders):
    (folders / "pred" / "case_b.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"no prediction for label '.*case_b\.nii\.gz'"):
        evaluate_folders(folders / "pred", folders / "labels", progress=False)


def test_affine_mismatch_names_both_files(folders):
    shifted = AFFINE.copy()
    shifted[0, 3] += 5.0
    _save(np.zeros((12, 12, 6), np.uint8), folders / "pred" / "case_b.nii.gz", affine=shifted)
    with pytest.raises(ValueError, match=r"pred/case_b\.nii\.gz' and '.*labels/case_b\.nii\.gz' have different affines"):
        evaluate_folders(folders / "pred", folders / "labels", progress=False)


def test_shape_mismatch_names_both_files(folders):
    _save(np.zeros((12, 12, 5), np.uint8), folders / "pred" / "case_b.nii.gz")
    with pytest.raises(ValueError, match=r"pred/case_b\.nii\.gz' has shape \(12, 12, 5\) but '.*labels/case_b"):
        evaluate_folders(folders / "pred", folders / "labels", progress=False)


def test_non_integral_label_is_an_error(folders):
    _save(np.full((12, 12, 6), 0.5, np.float32), folders / "labels" / "case_b.nii.gz")
    with pytest.raises(ValueError, match=r"case_b\.nii\.gz' has non-integral values"):
        evaluate_folders(folders / "pred", folders / "labels", progress=False)


def test_probabilities_give_ece_and_reliability_png(folders):
    _, label_a = _case_a()
    prob_a = np.where(label_a > 0, 0.9, 0.0).astype(np.float32)  # lesions at 0.9 (all positive): gap 0.1
    _save(prob_a, folders / "probs" / "case_a_prob.nii.gz")
    _save(np.zeros((12, 12, 6), np.float32), folders / "probs" / "case_b.nii.gz")  # same-name form
    summary = evaluate_folders(folders / "pred", folders / "labels", folders / "eval",
                               probabilities_dir=folders / "probs", progress=False)
    n = 2 * label_a.size
    assert summary["ece"] == pytest.approx(16 * 0.1 / n)  # only the 16 lesion voxels are miscalibrated
    assert (folders / "eval" / "reliability.png").is_file()


def test_multiclass_dice_per_class_and_chosen_lesion_classes(tmp_path):
    label = np.zeros((10, 10, 4), np.uint8)
    label[1:3, 1:3, 1] = 1
    label[6:8, 6:8, 2] = 2
    pred = label.copy()
    pred[6:8, 6:8, 2] = 1  # class 2 lesion predicted as class 1
    _save(label, tmp_path / "labels" / "c.nii.gz")
    _save(pred, tmp_path / "pred" / "c.nii.gz")
    every = evaluate_folders(tmp_path / "pred", tmp_path / "labels", progress=False)
    assert every["dice_class2"] == 0.0 and every["dice_class1"] == pytest.approx(2 * 4 / (4 + 8))
    assert (every["tp"], every["fn"]) == (2, 0)  # default: every non-zero label is lesion
    only_two = evaluate_folders(tmp_path / "pred", tmp_path / "labels", classes=[2], progress=False)
    assert (only_two["tp"], only_two["fn"], only_two["fp"]) == (0, 1, 0)


def test_class_subset_uses_those_classes_probability_for_ece(tmp_path):
    label = np.zeros((10, 10, 4), np.uint8)
    label[1:3, 1:3, 1] = 1  # 4 voxels of class 1
    label[6:8, 6:8, 2] = 2  # 4 voxels of class 2: the evaluated lesion foreground
    _save(label, tmp_path / "labels" / "c.nii.gz")
    _save(label, tmp_path / "pred" / "c.nii.gz")
    probs = np.zeros((*label.shape, 3), np.float32)  # (*spatial, K): background, class 1, class 2
    probs[..., 0] = 1.0
    probs[label == 1] = [0.0, 1.0, 0.0]  # class 1 certain: not foreground for classes=[2]
    probs[label == 2] = [0.2, 0.0, 0.8]  # class 2 at 0.8: a gap of 0.2 on its 4 voxels
    _save(probs, tmp_path / "probs" / "c_prob.nii.gz")
    summary = evaluate_folders(tmp_path / "pred", tmp_path / "labels", classes=[2],
                               probabilities_dir=tmp_path / "probs", progress=False)
    assert summary["ece"] == pytest.approx(4 * 0.2 / label.size)
    # every non-zero label (1 - p(background)): class 1 voxels at 1.0 are right too, the same gap remains
    every = evaluate_folders(tmp_path / "pred", tmp_path / "labels", probabilities_dir=tmp_path / "probs",
                             progress=False)
    assert every["ece"] == pytest.approx(4 * 0.2 / label.size)
    with pytest.raises(ValueError, match="3 class channels"):
        evaluate_folders(tmp_path / "pred", tmp_path / "labels", classes=[4], probabilities_dir=tmp_path / "probs",
                         progress=False)


def test_cli_writes_outputs_and_prints_summary(folders, capsys):
    assert main(["--pred", str(folders / "pred"), "--label", str(folders / "labels"),
                 "--output", str(folders / "cli"), "--dilation", "1", "--no-progress"]) == 0
    assert "lesion_f1" in capsys.readouterr().out
    assert json.loads((folders / "cli" / "summary.json").read_text())["settings"]["dilation"] == 1


def test_cli_min_lesion_size_reaches_the_counts_and_the_settings(folders, capsys):
    # Case a's GT lesions have 8 voxels each: with --min-lesion-size 9 both are ignored. Its prediction touching
    # the first one is then neither TP nor FP; the far one stays a FP.
    assert main(["--pred", str(folders / "pred"), "--label", str(folders / "labels"), "--output",
                 str(folders / "cli"), "--min-lesion-size", "9", "--no-progress"]) == 0
    assert "2 GT lesion(s) under min_lesion_size ignored" in capsys.readouterr().out
    summary = json.loads((folders / "cli" / "summary.json").read_text())
    assert summary["settings"]["min_lesion_size"] == 9
    assert (summary["tp"], summary["fp"], summary["fn"], summary["n_gt_lesions_ignored"]) == (0, 1, 0, 2)
    assert summary["lesion_sensitivity"] == 1.0 and summary["lesion_precision"] == 0.0  # no counted GT lesion
    assert summary["dice"] == pytest.approx((8 / 25 + 1.0) / 2)  # voxel Dice as without the threshold
    rows = {r["case"]: r for r in csv.DictReader((folders / "cli" / "per_case.csv").open())}
    assert (rows["case_a"]["n_gt_lesions"], rows["case_a"]["n_gt_lesions_ignored"]) == ("0", "2")
    assert rows["case_a"]["n_pred_lesions_ignored"] == "1"
    assert list(csv.DictReader((folders / "cli" / "per_lesion.csv").open())) == []  # only counted lesions


def test_negative_min_lesion_size_is_an_error(folders):
    with pytest.raises(ValueError, match="min_lesion_size must be >= 0 voxels"):
        evaluate_folders(folders / "pred", folders / "labels", min_lesion_size=-1, progress=False)


def test_cli_matching_options_reach_the_counts_the_settings_and_the_report(folders, capsys):
    # Case a's found lesion shares 4 of its 8 voxels with an 8-voxel prediction: IoU 4 / 12 = 1/3.
    assert main(["--pred", str(folders / "pred"), "--label", str(folders / "labels"), "--output",
                 str(folders / "cli"), "--matching", "iou", "--iou-threshold", "0.3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "matching rule `iou` (one-to-one matching at IoU >= 0.3" in out and "lesion-wise Dice" in out
    summary = json.loads((folders / "cli" / "summary.json").read_text())
    assert (summary["matching"], summary["settings"]["matching"], summary["settings"]["iou_threshold"]) == (
        "iou", "iou", 0.3)
    assert (summary["tp"], summary["fp"], summary["fn"], summary["tp_pred"]) == (1, 1, 1, 1)
    assert summary["lesion_wise_dice"] == pytest.approx((2 * 4 / 16) / 3)  # case b adds nothing
    at_half = evaluate_folders(folders / "pred", folders / "labels", matching="iou", progress=False)
    assert (at_half["tp"], at_half["fp"], at_half["fn"]) == (0, 2, 2)
    assert main(["--pred", str(folders / "pred"), "--label", str(folders / "labels"), "--output",
                 str(folders / "cli"), "--msseg-alpha", "0.6", "--no-progress"]) == 0  # a 50 % cover is too little
    summary = json.loads((folders / "cli" / "summary.json").read_text())
    assert (summary["matching"], summary["settings"]["msseg_alpha"], summary["tp"], summary["fn"]) == (
        "msseg", 0.6, 0, 2)
    assert "`msseg` (MSSEG-2016 detection rule: alpha 0.6, beta 0.7, gamma 0.65)" in capsys.readouterr().out
    rows = list(csv.DictReader((folders / "cli" / "per_case.csv").open()))
    assert {"tp_pred", "lesion_wise_dice"} <= set(rows[0])
    with pytest.raises(ValueError, match="did you mean 'overlap'"):
        evaluate_folders(folders / "pred", folders / "labels", matching="overlapp", progress=False)


def test_a_whole_volume_prediction_is_found_by_overlap_only(tmp_path):
    label = np.zeros((12, 12, 6), np.uint8)
    label[1:3, 1:3, 1:3] = 1  # 8 of 864 voxels
    _save(label, tmp_path / "labels" / "c.nii.gz")
    _save(np.ones_like(label), tmp_path / "pred" / "c.nii.gz")
    msseg = evaluate_folders(tmp_path / "pred", tmp_path / "labels", progress=False)
    overlap = evaluate_folders(tmp_path / "pred", tmp_path / "labels", matching="overlap", progress=False)
    assert (msseg["tp"], msseg["fp"], msseg["fn"], msseg["lesion_f1"]) == (0, 1, 1, 0.0)
    assert (overlap["tp"], overlap["fp"], overlap["fn"], overlap["lesion_f1"]) == (1, 0, 0, 1.0)
    assert overlap["lesion_wise_dice"] == pytest.approx(2 * 8 / (8 + 864))


def test_predictions_without_a_label_are_listed_not_evaluated(folders, capsys):
    _save(np.zeros((12, 12, 6), np.uint8), folders / "pred" / "case_z.nii.gz")
    assert main(["--pred", str(folders / "pred"), "--label", str(folders / "labels"), "--output",
                 str(folders / "cli"), "--dilation", "1", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "warning: 1 prediction(s) in" in captured.err and "not evaluated: case_z.nii.gz" in captured.err
    assert "warning: dilation 1 is ignored" in captured.err  # the default msseg rule does not dilate
    assert "Not evaluated, no label: case_z.nii.gz." in captured.out
    summary = json.loads((folders / "cli" / "summary.json").read_text())
    assert summary["unmatched_predictions"] == ["case_z.nii.gz"] and summary["n_cases"] == 2
    assert evaluate_folders(folders / "pred", folders / "labels", progress=False)["n_cases"] == 2
    (folders / "pred" / "case_z.nii.gz").unlink()
    assert evaluate_folders(folders / "pred", folders / "labels", progress=False)["unmatched_predictions"] == []

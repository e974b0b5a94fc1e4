"""Comparison configs (seg.comparison.config): the shipped configs, extends/quick, and the checks of every key."""

from __future__ import annotations

from pathlib import Path

import pytest

from seg.comparison.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "compare"


def test_sparse3d_config_has_the_required_variants_and_resolved_paths() -> None:
    config = load_config(CONFIGS / "sparse3d.yaml")
    assert {"dice", "focal", "focal_dice", "ce", "dice_ce", "focal_dice_alpha_auto",
            "focal_dice_alpha025"} <= set(config.variants)
    assert config.seeds == [0, 1, 2] and config.baseline == "dice"
    assert config.base == (CONFIGS / "base3d.yaml").resolve() and config.base.is_file()
    for args in config.variants.values():  # every --config of a variant is an existing absolute path
        files = [Path(args[i + 1]) for i, a in enumerate(args) if a == "--config"]
        assert files and all(f.is_absolute() and f.is_file() for f in files)
    assert config.variants["focal_dice_alpha025"][-2:] == ["--model.alpha", "0.25"]


def test_quick_selects_variants_and_inherits_the_rest() -> None:
    full, quick = load_config(CONFIGS / "sparse3d.yaml"), load_config(CONFIGS / "sparse3d.yaml", quick=True)
    assert list(quick.variants) == ["dice", "focal", "focal_dice"]
    assert all(quick.variants[v] == full.variants[v] for v in quick.variants)
    assert quick.base == full.base and quick.baseline == "dice" and len(quick.seeds) < len(full.seeds)
    assert quick.output != full.output  # quick runs never mix with (and get skipped as) full runs
    assert quick.max_epochs < full.max_epochs


def test_unknown_key_and_unknown_variant_raise(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: x.yaml\nseed: [0]\n")
    with pytest.raises(ValueError, match="unknown key 'seed'.*did you mean 'seeds'"):
        load_config(bad)
    child = tmp_path / "child.yaml"
    child.write_text(f"extends: {CONFIGS / 'sparse3d.yaml'}\nvariants: [dice, focall]\n")
    with pytest.raises(ValueError, match=r"selects variants \['focall'\]"):
        load_config(child)


def test_eval_classes_are_read_and_checked(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(f"extends: {CONFIGS / 'sparse3d.yaml'}\neval_classes: [4]\n")
    assert load_config(good).eval_classes == [4]
    assert load_config(CONFIGS / "sparse3d.yaml").eval_classes is None  # default: every non-zero label
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"extends: {CONFIGS / 'sparse3d.yaml'}\neval_classes: [0]\n")
    with pytest.raises(ValueError, match="'eval_classes'.*integers > 0"):
        load_config(bad)


def test_eval_dilation_and_min_lesion_size_are_read_and_checked(tmp_path: Path) -> None:
    default = load_config(CONFIGS / "sparse3d.yaml")
    assert (default.eval_dilation, default.eval_min_lesion_size) == (0, 0)
    good = tmp_path / "good.yaml"
    good.write_text(f"extends: {CONFIGS / 'sparse3d.yaml'}\neval_dilation: 3\neval_min_lesion_size: 51\n")
    config = load_config(good)
    assert (config.eval_dilation, config.eval_min_lesion_size) == (3, 51)
    quick = tmp_path / "quick.yaml"  # the keys carry over through extends
    quick.write_text(f"extends: {good}\nvariants: [dice]\n")
    assert load_config(quick).eval_min_lesion_size == 51
    for key, value in [("eval_dilation", "-1"), ("eval_min_lesion_size", "-5"), ("eval_min_lesion_size", "2.5"),
                       ("eval_min_lesion_size", "'50'"), ("eval_dilation", "true")]:
        bad = tmp_path / "bad.yaml"
        bad.write_text(f"extends: {CONFIGS / 'sparse3d.yaml'}\n{key}: {value}\n")
        with pytest.raises(ValueError, match=rf"'{key}' in '.*bad\.yaml' must be a number of voxels"):
            load_config(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text(f"extends: {CONFIGS / 'sparse3d.yaml'}\neval_min_lesion: 5\n")
    with pytest.raises(ValueError, match="unknown key 'eval_min_lesion'.*did you mean 'eval_min_lesion_size'"):
        load_config(typo)

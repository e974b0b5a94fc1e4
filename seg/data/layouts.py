"""Dataset discovery: MSD ``dataset.json``, nnU-Net v2 raw folders, or plain ``images/`` + ``labels/`` folders.

:func:`load_dataset` turns any of the three layouts into one :class:`DatasetSpec`. It checks the *structure*
(JSON syntax, required keys, label declarations, file naming) and lists the files each case should have;
whether those files exist and agree with each other is :func:`seg.data.check.check_dataset`'s job, so that
every problem is reported at once rather than the first one raised.

Layouts (written by hand: MONAI's ``load_decathlon_datalist`` reads only MSD lists and nnU-Net's readers
are internal to its own package):

- ``"msd"``: ``dataset.json`` with ``training: [{"image": path | [paths], "label": path}]``, ``labels``
  (``{"0": "background", ...}``), optional ``modality`` and ``test`` (paths or lists of paths). Paths are
  relative to the JSON's folder. A test case's label is ``labelsTs/<its image's file name>`` when that file
  exists (for multi-modality tests, the first file's name with its ``_0000`` channel suffix removed also works).
  A single image file with several declared modalities is a 4D MSD file (channels on the 4th axis).
- ``"nnunet"``: nnU-Net v2 raw dataset: ``dataset.json`` with ``channel_names``, ``labels`` (name -> int;
  an ``"ignore"`` label becomes :attr:`DatasetSpec.ignore_label`; regions are not supported) and
  ``file_ending``; ``imagesTr/CASE_0000<ending>`` ... and ``labelsTr/CASE<ending>``; optional
  ``imagesTs``/``labelsTs``.
- ``"folders"``: ``images/`` and ``labels/`` matched by file name (``X.nii.gz`` with ``X.nii.gz``, or
  ``X_0000.nii.gz, X_0001.nii.gz ...`` with ``X.nii.gz``). Labels come from an optional ``labels.json``
  (``{"0": "background", "1": "lesion"}``); without it they are inferred as ``range(0, max + 1)`` over all
  label files (one streamed pass), named ``"background"`` and ``"class_k"``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from seg.io import case_name, is_nifti, read_label, split_channel, strip_nifti_suffix
from seg.types import PathLike

LAYOUTS = ("msd", "nnunet", "folders")


@dataclass
class Case:
    """One case: its modality files (channel order) and its label file (None when unlabelled)."""

    name: str
    images: list[Path]
    label: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        """``{"image": [str, ...], "label": str}``, the dict MONAI dictionary transforms consume."""
        item: dict[str, Any] = {"image": [str(p) for p in self.images]}
        if self.label is not None:
            item["label"] = str(self.label)
        return item


@dataclass
class DatasetSpec:
    """A discovered dataset. ``labels`` maps 0..K-1 to names (0 = background)."""

    root: Path
    cases: list[Case]
    test_cases: list[Case]
    labels: dict[int, str]
    channel_names: list[str]
    layout: str
    ignore_label: int | None = field(default=None)

    @property
    def num_classes(self) -> int:
        """K, the number of classes including background (an ignore label is not a class)."""
        return len(self.labels)


def load_dataset(path: PathLike) -> DatasetSpec:
    """Discover a dataset from a ``dataset.json`` path or a dataset folder.

    Args:
        path: an MSD or nnU-Net v2 ``dataset.json``, its folder, or a folder with ``images/`` and ``labels/``.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: no recognisable layout, malformed JSON, missing keys or bad label declarations.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset path '{path}' does not exist")
    if path.is_file():
        return _from_json(path)
    if (path / "dataset.json").is_file():
        return _from_json(path / "dataset.json")
    if (path / "images").is_dir() and (path / "labels").is_dir():
        return _from_folders(path)
    raise ValueError(
        f"'{path}' holds no dataset.json and no images/ + labels/ folders; expected an MSD or nnU-Net v2 "
        "dataset (dataset.json) or two folders images/ and labels/ with matching file names"
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"'{path}' is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}") from err
    if not isinstance(content, dict):
        raise ValueError(f"'{path}' must hold a JSON object, found {type(content).__name__}")
    return content


def _from_json(path: Path) -> DatasetSpec:
    content = _read_json(path)
    if "training" in content:
        return _from_msd(path, content)
    if "channel_names" in content or "file_ending" in content:
        return _from_nnunet(path, content)
    raise ValueError(
        f"'{path}' is neither an MSD dataset.json (needs 'training', 'labels') nor an nnU-Net v2 one "
        f"(needs 'channel_names', 'labels', 'file_ending'); found keys {sorted(content)}"
    )


def _require(content: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in content]
    if missing:
        raise ValueError(f"{where} is missing key(s) {missing}; found {sorted(content)}")


def _index_to_name(mapping: Any, what: str, where: Path) -> dict[int, str]:
    """``{"0": "background", ...}`` -> ``{0: "background", ...}``."""
    if not isinstance(mapping, dict) or not mapping:
        raise ValueError(f"'{where}': '{what}' must be a non-empty object such as {{\"0\": \"background\"}}")
    try:
        return {int(k): str(v) for k, v in mapping.items()}
    except ValueError as err:
        raise ValueError(f"'{where}': '{what}' keys must be integers written as strings, found "
                         f"{list(mapping)}; nnU-Net v2 files map names to integers instead") from err


def _check_labels(labels: dict[int, str], where: Path) -> dict[int, str]:
    expected = list(range(len(labels)))
    if sorted(labels) != expected:
        raise ValueError(f"'{where}': labels must be the consecutive integers {expected} with 0 = background, "
                         f"found {sorted(labels)}")
    return dict(sorted(labels.items()))


def _channel_names(modality: Any, where: Path, key: str) -> list[str]:
    names = _index_to_name(modality, key, where)
    if sorted(names) != list(range(len(names))):
        raise ValueError(f"'{where}': '{key}' keys must be 0..{len(names) - 1}, found {sorted(names)}")
    return [names[i] for i in range(len(names))]


def _as_paths(entry: Any, root: Path, where: str) -> list[Path]:
    if isinstance(entry, str):
        return [root / entry]
    if isinstance(entry, list) and entry and all(isinstance(p, str) for p in entry):
        return [root / p for p in entry]
    raise ValueError(f"{where}: expected a file path or a list of file paths, found {entry!r}")


def _from_msd(path: Path, content: dict[str, Any]) -> DatasetSpec:
    root = path.parent
    _require(content, ("training", "labels"), f"MSD dataset.json '{path}'")
    labels = _check_labels(_index_to_name(content["labels"], "labels", path), path)
    if not isinstance(content["training"], list):
        raise ValueError(f"'{path}': 'training' must be a list of {{\"image\": ..., \"label\": ...}} objects")
    cases = []
    for i, entry in enumerate(content["training"]):
        where = f"'{path}' training[{i}]"
        if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
            raise ValueError(f"{where} must be an object with keys 'image' and 'label', found {entry!r}")
        images = _as_paths(entry["image"], root, f"{where} 'image'")
        label = _as_paths(entry["label"], root, f"{where} 'label'")
        if len(label) != 1:
            raise ValueError(f"{where} 'label' must be one file path, found {entry['label']!r}")
        cases.append(Case(name=case_name(label[0]), images=images, label=label[0]))
    test_cases = []
    for i, entry in enumerate(content.get("test", [])):
        if isinstance(entry, dict):  # some MSD-style files write tests as {"image": ...}
            entry = entry.get("image")
        images = _as_paths(entry, root, f"'{path}' test[{i}]")
        test_cases.append(Case(name=case_name(images[0], channel_suffix=True), images=images,
                               label=_test_label(root, images)))
    if "modality" in content:
        channel_names = _channel_names(content["modality"], path, "modality")
    else:
        channel_names = [f"channel_{c}" for c in range(len(cases[0].images) if cases else 1)]
    return DatasetSpec(root=root, cases=cases, test_cases=test_cases, labels=labels,
                       channel_names=channel_names, layout="msd")


def _test_label(root: Path, images: list[Path]) -> Path | None:
    name = images[0].name
    candidates = [name]
    case, channel = split_channel(strip_nifti_suffix(name))
    if channel is not None:
        candidates.append(case + name[len(strip_nifti_suffix(name)):])
    for candidate in candidates:
        if (root / "labelsTs" / candidate).is_file():
            return root / "labelsTs" / candidate
    return None


def _group_channels(folder: Path, ending: str) -> dict[str, dict[int, Path]]:
    """``folder/CASE_0000<ending>`` ... -> ``{CASE: {0: path, ...}}``; hidden files are skipped."""
    groups: dict[str, dict[int, Path]] = {}
    for file in sorted(folder.iterdir()):
        if file.name.startswith(".") or not file.name.endswith(ending):
            continue
        case, channel = split_channel(file.name[: -len(ending)])
        if channel is None:
            raise ValueError(f"image '{file}' is not named CASE_XXXX{ending} (XXXX = 4-digit channel index, "
                             f"e.g. case_001_0000{ending})")
        groups.setdefault(case, {})[channel] = file
    return groups


def _from_nnunet(path: Path, content: dict[str, Any]) -> DatasetSpec:
    root = path.parent
    _require(content, ("channel_names", "labels", "file_ending"), f"nnU-Net dataset.json '{path}'")
    ending = str(content["file_ending"])
    if ending not in (".nii.gz", ".nii"):
        raise ValueError(f"'{path}': file_ending {ending!r} is not supported; seg reads NIfTI (.nii.gz or .nii)")
    channel_names = _channel_names(content["channel_names"], path, "channel_names")
    raw_labels = content["labels"]
    if not isinstance(raw_labels, dict) or not raw_labels:
        raise ValueError(f"'{path}': 'labels' must map names to integers, e.g. {{\"background\": 0, \"lesion\": 1}}")
    for name, value in raw_labels.items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"'{path}': label {name!r} maps to {value!r}; only integer labels are supported "
                             "(nnU-Net region-based labels, written as lists, are not)")
    ignore_label = raw_labels.get("ignore")
    labels = _check_labels({value: name for name, value in raw_labels.items() if name != "ignore"}, path)
    if ignore_label is not None and ignore_label != len(labels):
        raise ValueError(f"'{path}': the 'ignore' label must be the highest value ({len(labels)}), found {ignore_label}")

    def cases_in(images_dir: str, labels_dir: str, labelled: bool) -> list[Case]:
        folder = root / images_dir
        groups = _group_channels(folder, ending) if folder.is_dir() else {}
        if labelled and (root / labels_dir).is_dir():
            for file in (root / labels_dir).iterdir():  # labels without images are listed too: check reports them
                if file.name.endswith(ending) and not file.name.startswith("."):
                    groups.setdefault(file.name[: -len(ending)], {})
        cases = []
        for name in sorted(groups):
            images = [folder / f"{name}_{c:04d}{ending}" for c in range(len(channel_names))]
            label = root / labels_dir / f"{name}{ending}"
            cases.append(Case(name=name, images=images, label=label if labelled or label.is_file() else None))
        return cases

    if not (root / "imagesTr").is_dir() and not (root / "labelsTr").is_dir():
        raise ValueError(f"nnU-Net dataset '{root}' has no imagesTr/ or labelsTr/ folder next to '{path.name}'")
    return DatasetSpec(root=root, cases=cases_in("imagesTr", "labelsTr", True),
                       test_cases=cases_in("imagesTs", "labelsTs", False), labels=labels,
                       channel_names=channel_names, layout="nnunet", ignore_label=ignore_label)


def _from_folders(root: Path) -> DatasetSpec:
    image_files = [f for f in sorted((root / "images").iterdir()) if is_nifti(f) and not f.name.startswith(".")]
    label_files = [f for f in sorted((root / "labels").iterdir()) if is_nifti(f) and not f.name.startswith(".")]
    label_by_name = {case_name(f): f for f in label_files}
    groups: dict[str, list[Path]] = {}
    for file in image_files:
        name = case_name(file)
        case = case_name(file, channel_suffix=True)
        key = case if case != name and case in label_by_name else name
        groups.setdefault(key, []).append(file)  # sorted listing keeps _0000, _0001 ... in order
    ending = label_files[0].name[len(case_name(label_files[0])):] if label_files else ".nii.gz"
    for name, file in label_by_name.items():  # a label without an image is listed: check reports it
        groups.setdefault(name, [root / "images" / file.name])
    cases = [Case(name=name, images=groups[name], label=label_by_name.get(name, root / "labels" / f"{name}{ending}"))
             for name in sorted(groups)]
    labels_json = root / "labels.json"
    if labels_json.is_file():
        labels = _check_labels(_index_to_name(_read_json(labels_json), "labels", labels_json), labels_json)
    else:
        labels = _infer_labels(label_files)
    num_channels = max((len(c.images) for c in cases), default=1)
    return DatasetSpec(root=root, cases=cases, test_cases=[], labels=labels,
                       channel_names=[f"channel_{c}" for c in range(num_channels)], layout="folders")


def _infer_labels(label_files: list[Path]) -> dict[int, str]:
    """``range(0, max + 1)`` over readable label files (unreadable ones are left to the check); at least 0, 1."""
    highest = 1
    for file in tqdm(label_files, desc="inferring labels", disable=len(label_files) < 20):
        try:
            highest = max(highest, int(np.max(read_label(file).array)))
        except (OSError, ValueError):
            continue
    return {k: "background" if k == 0 else f"class_{k}" for k in range(highest + 1)}

"""Lesion-balanced sampling: components against scipy, centre frequencies per lesion, instance maps move with
the patch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from seg.data.sampling import LESION_SUFFIX, RandCropByLesiond, lesion_components
from seg.data.transforms import INSTANCE_KEY, Preprocessing, train_transforms
from tests.data._pipeline_fixtures import case_arrays

SHAPE = (40, 40, 40)


def _two_lesions() -> np.ndarray:
    label = np.zeros((1, *SHAPE), dtype=np.float32)
    label[0, 5:13, 5:13, 5:13] = 1  # 512 voxels
    label[0, 30:32, 30:32, 30:32] = 1  # 8 voxels
    return label


def test_components_match_scipy_and_keep_every_lesion_under_the_index_cap() -> None:
    label = _two_lesions()
    instances, lesions = lesion_components(label, max_indices_per_lesion=20)
    expected, count = ndimage.label(label[0] > 0, structure=np.ones((3, 3, 3)))
    np.testing.assert_array_equal(instances[0], expected)
    np.testing.assert_array_equal(lesions["sizes"], [512, 8])
    assert np.diff(lesions["offsets"]).tolist() == [20, 8]  # the big one capped, the small one whole
    flat = expected.ravel()
    for k in range(count):
        part = lesions["indices"][lesions["offsets"][k]:lesions["offsets"][k + 1]]
        assert (flat[part] == k + 1).all() and np.unique(part).size == part.size


def _centre_lesions(crop, label: np.ndarray, draws: int) -> np.ndarray:
    """Which lesion (0 none) each of ``draws`` patch centres lies in, read from the cropped instance map."""
    instances, lesions = lesion_components(label)
    data = {"label": torch.from_numpy(label), INSTANCE_KEY: torch.from_numpy(instances).float(),
            f"label{LESION_SUFFIX}": lesions, "fg": np.flatnonzero(label[0] > 0), "bg": np.flatnonzero(label[0] == 0)}
    centres = []
    for _ in range(draws):
        for patch in crop(dict(data)):
            centres.append(int(patch[INSTANCE_KEY][0, 2, 2, 2]))  # the centre of a 5^3 patch
    return np.array(centres)


@pytest.mark.parametrize(("power", "small_share"), [(0.0, 0.5), (1.0, (1 / 8) / (1 / 8 + 1 / 512))])
def test_lesion_sampling_centres_each_lesion_by_its_weight_not_by_its_voxels(power, small_share) -> None:
    label = _two_lesions()
    options = dict(keys=["label", INSTANCE_KEY], label_key="label", spatial_size=(5, 5, 5), pos=1.0, neg=0.0,
                   num_samples=4, fg_indices_key="fg", bg_indices_key="bg")
    lesions = RandCropByLesiond(**options, size_power=power)
    lesions.set_random_state(seed=0)
    by_lesion = _centre_lesions(lesions, label, 150)  # 600 centres
    assert (by_lesion > 0).all()  # pos = 1: always on a lesion
    assert abs(np.mean(by_lesion == 2) - small_share) < 0.06
    from monai.transforms import RandCropByPosNegLabeld

    voxels = RandCropByPosNegLabeld(**options)  # MONAI's: uniform over lesion voxels
    voxels.set_random_state(seed=0)
    by_voxel = _centre_lesions(voxels, label, 150)
    assert np.mean(by_voxel == 2) < 0.04  # 8 of 520 lesion voxels: about 1.5 %


def test_instance_maps_travel_with_the_patch_through_augmentation() -> None:
    image, label = case_arrays(0, SHAPE[:3])
    cfg = Preprocessing(spatial_dims=3, image_dims=3, target_spacing=None, orientation=None)
    transform = train_transforms(cfg, [16, 16, 16], samples_per_volume=4, pos_fraction=1.0, sampling="lesions",
                                 instances=True)
    transform.set_random_state(seed=3)
    from monai.data import MetaTensor

    data = {"image": MetaTensor(torch.from_numpy(image)), "label": MetaTensor(torch.from_numpy(label[None]).float())}
    cached = transform.transforms[:-1]
    for step in cached:  # the deterministic prefix, on in-memory arrays (LoadImaged skipped)
        if type(step).__name__ not in ("LoadImaged",):
            data = step(data)
    for _ in range(10):
        for patch in transform.transforms[-1](dict(data)):
            lesion, ids = patch["label"] > 0, patch[INSTANCE_KEY]
            assert torch.equal(lesion, ids > 0)  # ids exactly on lesion voxels, after flips/turns/affine
            assert ids.shape == patch["image"].shape[1:] or ids.shape[1:] == patch["image"].shape[1:]

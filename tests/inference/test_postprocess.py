"""Hysteresis postprocessing (``peak_threshold``) against scikit-image's labelling and region maxima; keep-largest
against MONAI's ``KeepLargestConnectedComponent``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import KeepLargestConnectedComponent
from scipy import ndimage
from skimage.measure import label as sk_label
from skimage.measure import regionprops

from seg.inference.postprocess import argmax, postprocess
from seg.inference.sliding_window import predict_labels, predict_volume
from tests.inference.test_sliding_window import conv_net, with_air


def _reference(probability: np.ndarray, low: float, high: float) -> np.ndarray:
    """Components of ``probability > low`` (full connectivity, skimage) whose maximum exceeds ``high``."""
    components = sk_label(probability > low, connectivity=probability.ndim)
    keep = np.zeros(components.max() + 1, dtype=bool)
    for region in regionprops(components, intensity_image=probability):
        keep[region.label] = region.intensity_max > high
    return keep[components]


@pytest.mark.parametrize("classes", [2, 3, 5])
def test_argmax_is_torchs_with_ties_to_the_first(classes: int) -> None:
    generator = torch.Generator().manual_seed(classes)
    probabilities = torch.softmax(torch.randn(2, classes, 9, 8, 7, generator=generator), 1)
    # ties: quantised values make equal maxima common; torch's argmax returns the first of them
    tied = torch.randint(0, 3, (2, classes, 9, 8, 7), generator=generator).float()
    for x in (probabilities, tied):
        assert torch.equal(argmax(x), x.argmax(1).to(torch.uint8))
    assert int((tied.max(1).values.unsqueeze(1) == tied).sum(1).gt(1).sum()) > 50  # the ties were there


@pytest.mark.parametrize("shape", [(24, 20, 16), (40, 36)])
def test_peak_threshold_keeps_the_components_that_reach_it(shape) -> None:
    rng = np.random.default_rng(0)
    probability = ndimage.gaussian_filter(rng.random(shape), 1.5)
    probability = (probability - probability.min()) / (probability.max() - probability.min())
    p = torch.from_numpy(probability).float()
    softmax = torch.stack([1 - p, p])[None]  # (1, 2, *spatial)
    for low, high in ((0.5, 0.7), (0.55, 0.8), (0.6, 0.6)):
        expected = _reference(p.numpy(), low, high)
        assert 0 < expected.sum() < (p.numpy() > low).sum() or high == low  # the cut removes some, keeps some
        got = postprocess(softmax, threshold=low, peak_threshold=high)[0].numpy() > 0
        np.testing.assert_array_equal(got, expected)
        sigmoid = postprocess(p[None, None], activation="sigmoid", threshold=low, peak_threshold=high)
        np.testing.assert_array_equal(sigmoid[0, 0].numpy() > 0, expected)
    # with min_size as well: both filters, in either order
    both = postprocess(softmax, threshold=0.5, peak_threshold=0.7, min_size=20)[0].numpy() > 0
    sizes = np.bincount(sk_label(_reference(p.numpy(), 0.5, 0.7), connectivity=len(shape)).ravel())
    assert both.sum() == sizes[1:][sizes[1:] >= 20].sum()


def test_peak_threshold_is_per_class_under_softmax() -> None:
    probabilities = torch.zeros(1, 3, 10, 10)
    probabilities[0, 0] = 1.0
    for value, box, p in ((1, (slice(0, 3), slice(0, 3)), 0.95), (2, (slice(5, 8), slice(5, 8)), 0.6)):
        probabilities[(0, 0, *box)] = 1 - p
        probabilities[(0, value, *box)] = p
    labels = postprocess(probabilities, threshold=0.5, peak_threshold=0.9)[0]
    assert labels[1, 1] == 1 and labels[6, 6] == 0 and int(labels.bool().sum()) == 9


@pytest.mark.parametrize(("spatial_dims", "size", "roi"), [(3, (23, 19, 15), (8, 8, 8)), (2, (41, 33), (12, 16))])
def test_predict_labels_with_a_peak_equals_postprocessed_probabilities(spatial_dims, size, roi) -> None:
    net = conv_net(spatial_dims, out_channels=2)
    image = with_air(torch.randn(2, 2, *size), tuple(slice(2, s - 2) for s in size))
    for activation in ("softmax", "sigmoid"):
        probabilities = predict_volume(net, image, roi, batch_size=3, activation=activation)
        foreground = probabilities[:, 1] if activation == "softmax" else probabilities[:, 0]
        removed = 0
        for q_low, q_high in ((0.6, 0.95), (0.8, 0.98), (0.9, 0.99)):
            low, high = (float(q) for q in torch.quantile(foreground.flatten(), torch.tensor([q_low, q_high])))
            labels = predict_labels(net, image, roi, batch_size=3, activation=activation, threshold=low,
                                    peak_threshold=high, min_size=2)
            expected = postprocess(probabilities, activation=activation, threshold=low, peak_threshold=high,
                                   min_size=2)
            assert torch.equal(labels, expected)
            removed += int(postprocess(probabilities, activation=activation, threshold=low, min_size=2).sum()
                           - expected.sum())
        assert removed > 0  # some cut removed components


@pytest.mark.parametrize("shape", [(24, 20, 16), (40, 36)])
def test_keep_largest_equals_monais_keep_largest_connected_component(shape) -> None:
    rng = np.random.default_rng(1)
    smooth = torch.from_numpy(ndimage.gaussian_filter(rng.random((3, *shape)), 1.2)).float()
    smooth[0] += 0.02  # mostly background
    probabilities = torch.softmax(12 * smooth, 0)[None]  # (1, 3, *spatial): blobs of classes 1 and 2 on background
    labels = postprocess(probabilities)[0]
    assert len(np.unique(sk_label(labels.numpy() > 0, connectivity=len(shape)))) > 10  # many foreground components
    got = postprocess(probabilities, keep_largest=True)[0]
    # MONAI, all foreground classes as one (independent=False), full connectivity, as nnU-Net's foreground step
    expected = KeepLargestConnectedComponent(applied_labels=[1, 2], is_onehot=False, independent=False,
                                             connectivity=len(shape))(labels[None].clone())[0]
    assert torch.equal(got, expected.to(torch.uint8)) and 0 < int(got.bool().sum()) < int(labels.bool().sum())
    # sigmoid: each channel on its own, as MONAI's one-hot independent mode
    masks = (smooth[:2][None] > smooth[:2].mean()).float()
    got = postprocess(masks, activation="sigmoid", threshold=0.5, keep_largest=True)[0]
    expected = KeepLargestConnectedComponent(applied_labels=[0, 1], is_onehot=True, independent=True,
                                             connectivity=len(shape))(masks[0])
    assert torch.equal(got, expected.to(torch.uint8))


def test_predict_labels_keeping_the_largest_equals_postprocessed_probabilities() -> None:
    net = conv_net(3, out_channels=2)
    image = with_air(torch.randn(1, 2, 23, 19, 15), (slice(2, 21), slice(2, 17), slice(2, 13)))
    probabilities = predict_volume(net, image, (8, 8, 8), batch_size=3)
    several = 0
    for q in (0.7, 0.9, 0.97, 0.99):
        low = float(torch.quantile(probabilities[:, 1].flatten(), q))
        labels = predict_labels(net, image, (8, 8, 8), batch_size=3, threshold=low, min_size=2, keep_largest=True)
        assert torch.equal(labels, postprocess(probabilities, threshold=low, min_size=2, keep_largest=True))
        assert sk_label(labels[0].numpy() > 0, connectivity=3).max() == 1
        several += sk_label(postprocess(probabilities, threshold=low, min_size=2)[0].numpy() > 0, connectivity=3).max() > 1
    assert several > 0  # some threshold left several components to choose from

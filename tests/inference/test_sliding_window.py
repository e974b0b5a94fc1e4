"""Sliding-window prediction: exact properties, MONAI as reference, labels, postprocessing."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from torch import nn

from seg.inference.postprocess import postprocess
from seg.inference.sliding_window import _slabs, foreground_box, predict_labels, predict_volume


def plus_one(x: torch.Tensor) -> torch.Tensor:
    return x + 1


def conv_net(spatial_dims: int, in_channels: int = 2, out_channels: int = 3) -> nn.Module:
    conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
    torch.manual_seed(1)
    return nn.Sequential(conv(in_channels, 4, 3, padding=1), nn.ReLU(), conv(4, out_channels, 3, padding=1)).eval()


def with_air(image: torch.Tensor, box: tuple[slice, ...]) -> torch.Tensor:
    """Zero everything outside ``box`` (spatial slices)."""
    out = torch.zeros_like(image)
    out[(slice(None), slice(None), *box)] = image[(slice(None), slice(None), *box)]
    return out


CASES = [  # (spatial size, roi)
    ((37, 41, 29), (16, 20, 12)),
    ((37, 41, 29), (48, 48, 48)),  # ROI larger than the image
    ((37, 41, 29), (40, 8, 29)),  # larger on one axis, equal on another
    ((45, 31), (16, 16)),
    ((45, 31), (64, 20)),
]


@pytest.mark.parametrize(("size", "roi"), CASES)
@pytest.mark.parametrize("overlap", [0.0, 0.5])
@pytest.mark.parametrize("blend", ["gaussian", "constant"])
def test_input_plus_one_comes_back_exactly(size, roi, overlap, blend):
    image = torch.randn(2, 3, *size)  # no zero voxel: the box is the whole image
    out = predict_volume(plus_one, image, roi, overlap=overlap, blend=blend, activation=None)
    assert out.shape == image.shape and out.dtype == torch.float32
    torch.testing.assert_close(out, image + 1, rtol=0, atol=1e-5)


@pytest.mark.parametrize("size", [(23, 19, 17), (33, 27)])
def test_air_outside_the_box_is_documented_background(size):
    image = torch.randn(2, 2, *size)
    box0 = tuple(slice(3, s - 4) for s in size)
    box1 = tuple(slice(s // 2, s - 1) for s in size)
    image[:1] = with_air(image[:1], box0)
    image[1:] = with_air(image[1:], box1)
    image[(1, slice(None), *(slice(s // 2 + 1, s // 2 + 3) for s in size))] = 0  # zeros inside the box stay
    outside = torch.ones(2, *size, dtype=torch.bool)
    outside[(0, *box0)] = False
    outside[(1, *box1)] = False

    raw = predict_volume(plus_one, image, 8, activation=None)
    expected = torch.where(outside[:, None], torch.zeros_like(image), image + 1)
    torch.testing.assert_close(raw, expected, rtol=0, atol=1e-5)

    soft = predict_volume(plus_one, image, 8, activation="softmax")
    background = torch.zeros_like(image)
    background[:, 0] = 1.0
    torch.testing.assert_close(soft, torch.where(outside[:, None], background, torch.softmax(image + 1, 1)),
                               rtol=0, atol=1e-5)

    sig = predict_volume(plus_one, image, 8, activation="sigmoid")
    torch.testing.assert_close(sig, torch.where(outside[:, None], 0.0, torch.sigmoid(image + 1)), rtol=0, atol=1e-5)


def test_foreground_box_spans_nonzero_voxels_of_any_channel():
    image = torch.zeros(2, 10, 12, 8)
    image[0, 2, 5, 1] = 1.0
    image[1, 7, 3, 6] = -2.0
    assert foreground_box(image) == (slice(2, 8), slice(3, 6), slice(1, 7))
    assert foreground_box(torch.zeros(1, 4, 4)) is None


def test_all_air_gives_background_with_k_from_the_network():
    net = conv_net(3, out_channels=4)
    out = predict_volume(net, torch.zeros(1, 2, 9, 9, 9), 8)
    expected = torch.zeros(1, 4, 9, 9, 9)
    expected[:, 0] = 1
    assert torch.equal(out, expected)
    assert torch.equal(predict_labels(net, torch.zeros(1, 2, 9, 9, 9), 8), torch.zeros(1, 9, 9, 9, dtype=torch.uint8))


@pytest.mark.parametrize(("spatial_dims", "size", "roi"), [(3, (21, 17, 13), (10, 8, 8)), (2, (37, 29), (16, 12))])
@pytest.mark.parametrize("blend", ["gaussian", "constant"])
def test_without_crop_matches_monai_even_with_air(spatial_dims, size, roi, blend):
    net = conv_net(spatial_dims)
    image = with_air(torch.randn(2, 2, *size), tuple(slice(2, s - 3) for s in size))
    with torch.no_grad():
        reference = torch.softmax(sliding_window_inference(image, roi, 1, net, overlap=0.5, mode=blend), 1)
    out = predict_volume(net, image, roi, overlap=0.5, blend=blend, batch_size=3, crop=False)
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-5)


def test_cropped_equals_monai_run_on_the_cropped_image():
    net = conv_net(3)
    box = (slice(3, 19), slice(2, 15), slice(1, 12))
    image = with_air(torch.randn(1, 2, 22, 17, 13), box)
    with torch.no_grad():
        reference = torch.softmax(sliding_window_inference(image[(..., *box)], 8, 1, net, overlap=0.5,
                                                           mode="gaussian"), 1)
    out = predict_volume(net, image, 8)
    torch.testing.assert_close(out[(..., *box)], reference, rtol=0, atol=1e-5)


def test_cropped_result_ignores_air_added_around_the_volume():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.InstanceNorm3d(4), nn.Conv3d(4, 3, 1)).eval()
    image = with_air(torch.randn(1, 2, 20, 18, 14), (slice(2, 17), slice(3, 18), slice(1, 12)))
    padded = F.pad(image, (5, 2, 0, 7, 3, 1))  # (W before, W after, H..., D...)
    out = predict_volume(net, image, 8)
    torch.testing.assert_close(predict_volume(net, padded, 8)[..., 3:23, 0:18, 5:19], out, rtol=0, atol=1e-6)


def symmetric_conv(spatial_dims: int) -> nn.Module:
    """A convolution whose kernel is symmetric under every flip: flip-equivariant with zero padding."""
    conv = (nn.Conv3d if spatial_dims == 3 else nn.Conv2d)(2, 3, 3, padding=1)
    dims = tuple(range(2, 2 + spatial_dims))
    with torch.no_grad():
        weight = conv.weight.clone()
        flips = [a for r in range(spatial_dims + 1) for a in itertools.combinations(dims, r)]
        conv.weight.copy_(sum(torch.flip(weight, a) if a else weight for a in flips) / len(flips))
    return conv.eval()


@pytest.mark.parametrize(("spatial_dims", "size"), [(3, (19, 14, 11)), (2, (25, 18))])
def test_tta_leaves_a_flip_equivariant_network_unchanged(spatial_dims, size):
    net = symmetric_conv(spatial_dims)
    image = torch.randn(2, 2, *size)
    plain = predict_volume(net, image, 8, activation=None)
    torch.testing.assert_close(predict_volume(net, image, 8, tta=True, activation=None), plain, rtol=0, atol=1e-5)


def test_tta_averages_logits_over_all_flips():
    net = conv_net(3)
    image = torch.randn(1, 2, 8, 6, 5)
    with torch.no_grad():  # one window covering the image: blending is the identity
        expected = sum(torch.flip(net(torch.flip(image, a)), a) if a else net(image)
                       for r in range(4) for a in itertools.combinations((2, 3, 4), r)) / 8
    out = predict_volume(net, image, (8, 6, 5), tta=True, activation=None)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("spatial_dims", "size", "roi"), [(3, (23, 19, 15), (8, 8, 8)), (2, (41, 33), (12, 16))])
def test_predict_labels_equals_postprocessed_probabilities(spatial_dims, size, roi):
    net = conv_net(spatial_dims)
    image = with_air(torch.randn(2, 2, *size), tuple(slice(2, s - 2) for s in size))
    for activation in ("softmax", "sigmoid"):
        probabilities = predict_volume(net, image, roi, batch_size=3, activation=activation)
        labels = predict_labels(net, image, roi, batch_size=3, activation=activation, min_size=3)
        expected = postprocess(probabilities, activation=activation, min_size=3)
        assert labels.dtype == torch.uint8 and torch.equal(labels, expected)
    argmax = predict_volume(net, image, roi).argmax(1).to(torch.uint8)  # (B, K, *spatial) -> (B, *spatial)
    assert torch.equal(predict_labels(net, image, roi), argmax)


def test_slabs_never_exceed_the_roi_depth_and_tile_the_box():
    net = conv_net(3)
    image = with_air(torch.randn(1, 2, 40, 12, 10), (slice(3, 37), slice(0, 12), slice(0, 10)))
    rows = [(index[0].start, index[0].stop) for _, index, _ in _slabs(net, image, (8, 8, 8), 0.5, "gaussian", 4,
                                                                       False, True)]
    assert rows[0][0] == 3 and rows[-1][1] == 37
    assert all(a[1] == b[0] for a, b in zip(rows, rows[1:], strict=False))  # contiguous, in order, no overlap
    assert max(stop - start for start, stop in rows) <= 8


def test_postprocess_removes_components_under_min_size_per_class():
    labels = torch.zeros(1, 8, 8, 8, dtype=torch.long)
    labels[0, 0, 0, 0] = 1  # class 1, 1 voxel
    labels[0, 4, 4, 4] = labels[0, 5, 5, 5] = 1  # class 1, 2 voxels touching at a corner: one 26-component
    labels[0, 0, 6:8, 6:8] = 2  # class 2, 4 voxels
    labels[0, 7, 0, 0:3] = 2  # class 2, 3 voxels
    labels[0, 7, 1, 0] = 1  # class 1, 1 voxel touching the class-2 bar: a separate class-1 component
    probabilities = F.one_hot(labels, 3).movedim(-1, 1).float()  # (B, *spatial, K) -> (B, K, *spatial)

    assert torch.equal(postprocess(probabilities), labels.to(torch.uint8))
    expected = labels.clone()
    expected[0, 0, 0, 0] = expected[0, 7, 1, 0] = 0  # size 1 < 2; the corner pair (size 2) stays
    assert torch.equal(postprocess(probabilities, min_size=2), expected.to(torch.uint8))
    only_block = torch.zeros_like(labels)
    only_block[0, 0, 6:8, 6:8] = 2  # min_size 4 keeps the 4-voxel block alone
    assert torch.equal(postprocess(probabilities, min_size=4), only_block.to(torch.uint8))

    sigmoid = postprocess(probabilities[:, 1:] * 0.9, activation="sigmoid", threshold=0.5, min_size=2)
    assert sigmoid.shape == (1, 2, 8, 8, 8)
    assert torch.equal(sigmoid[:, 0], ((labels == 1) & (expected == 1)).to(torch.uint8))
    assert torch.equal(sigmoid[:, 1], (labels == 2).to(torch.uint8))


def test_bad_options_raise_with_a_hint():
    image = torch.randn(1, 1, 8, 8)
    with pytest.raises(ValueError, match="did you mean 'gaussian'"):
        predict_volume(plus_one, image, 4, blend="gausian")
    with pytest.raises(ValueError, match=r"image must have shape \(B, C, H, W\)"):
        predict_volume(plus_one, image[0], 4)
    with pytest.raises(ValueError, match="roi_size must be 2 positive sizes"):
        predict_volume(plus_one, image, (4, 4, 4))
    with pytest.raises(ValueError, match=r"overlap must be in \[0, 1\)"):
        predict_volume(plus_one, image, 4, overlap=1.0)
    with pytest.raises(ValueError, match="network must return logits"):
        predict_volume(lambda x: x[..., :2], image, 4)
    with pytest.raises(ValueError, match="did you mean 'sigmoid'"):
        postprocess(image, activation="sigmoidd")

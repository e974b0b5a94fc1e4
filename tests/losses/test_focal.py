"""Focal loss against independent references: torch's CE/BCE, torchvision's formula, a float64 formula, the paper."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from seg.losses import FocalLoss, focal_loss


def torchvision_sigmoid_focal(x: torch.Tensor, t: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """torchvision.ops.sigmoid_focal_loss, written out (reduction="mean")."""
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * ((1 - p_t) ** gamma)
    alpha_t = alpha * t + (1 - alpha) * (1 - t)
    return (alpha_t * loss).mean()


def softmax_focal_float64(x: torch.Tensor, y: torch.Tensor, alpha: list[float] | None, gamma: float) -> torch.Tensor:
    """Direct per-voxel formula in float64: mean of -α_t (1 - p_t)^γ log p_t."""
    log_p = torch.log_softmax(x.double(), dim=1).gather(1, y.unsqueeze(1)).squeeze(1)  # (B, *spatial)
    a = torch.ones(x.shape[1], dtype=torch.float64) if alpha is None else torch.tensor(alpha, dtype=torch.float64)
    return (-a[y] * (1 - log_p.exp()) ** gamma * log_p).mean()


SHAPES = [(2, 3, 5, 6), (2, 3, 3, 4, 5)]  # 2D and 3D, (B, C, *spatial)


@pytest.mark.parametrize("shape", SHAPES)
def test_gamma_zero_is_cross_entropy_in_value_and_gradient(shape):
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, shape[1], (shape[0], *shape[2:]))
    ours = focal_loss(x, y, gamma=0.0)
    reference = F.cross_entropy(x, y)
    (g_ours,), (g_ref,) = torch.autograd.grad(ours, x), torch.autograd.grad(reference, x)
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(g_ours, g_ref)


@pytest.mark.parametrize("shape", SHAPES)
def test_gamma_zero_sigmoid_is_bce_in_value_and_gradient(shape):
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    t = (torch.rand(shape) < 0.3).double()
    ours = focal_loss(x, t, gamma=0.0, activation="sigmoid")
    reference = F.binary_cross_entropy_with_logits(x, t)
    (g_ours,), (g_ref,) = torch.autograd.grad(ours, x), torch.autograd.grad(reference, x)
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(g_ours, g_ref)


def test_float_labels_with_channel_axis_equal_integer_labels():
    x = torch.randn(2, 3, 4, 4)
    y = torch.randint(0, 3, (2, 4, 4))
    torch.testing.assert_close(focal_loss(x, y.unsqueeze(1).float()), focal_loss(x, y))


@pytest.mark.parametrize("alpha", [0.25, 0.75])
@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0, 5.0])
def test_sigmoid_matches_torchvision_formula(alpha, gamma):
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True) * 3
    t = (torch.rand(2, 3, 4, 5) < 0.2).double()
    ours = focal_loss(x, t, gamma=gamma, alpha=alpha, activation="sigmoid")
    reference = torchvision_sigmoid_focal(x, t, alpha, gamma)
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(torch.autograd.grad(ours, x)[0], torch.autograd.grad(reference, x)[0])


@pytest.mark.parametrize("alpha", [None, [0.1, 0.3, 0.6]])
@pytest.mark.parametrize("gamma", [0.5, 2.0, 5.0])
def test_softmax_matches_float64_formula(alpha, gamma):
    x = torch.randn(2, 3, 4, 3, 2) * 2
    y = torch.randint(0, 3, (2, 4, 3, 2))
    ours = focal_loss(x, y, gamma=gamma, alpha=alpha)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), softmax_focal_float64(x, y, alpha, gamma), rtol=1e-5, atol=1e-7)


def test_softmax_scalar_alpha_with_two_classes_means_one_minus_alpha_for_class_zero():
    x, y = torch.randn(2, 2, 6, 6), torch.randint(0, 2, (2, 6, 6))
    torch.testing.assert_close(focal_loss(x, y, alpha=0.8), focal_loss(x, y, alpha=[0.2, 0.8]))


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
@pytest.mark.parametrize("gamma", [0.1, 0.5, 0.9])
def test_gradients_are_finite_for_gamma_below_one_with_saturated_logits(activation, gamma):
    # logits of ±30: p_t rounds to exactly 1 for the right voxels; autograd of (1 - p)^γ gives inf · 0 = NaN
    y = torch.tensor([[[0, 1], [1, 0]]])  # (B=1, 2, 2)
    right = torch.where(y.bool(), 30.0, -30.0)
    x = torch.stack([-right, right], dim=1).requires_grad_(True)  # confident and correct
    x_wrong = torch.stack([right, -right], dim=1).requires_grad_(True)  # confident and wrong
    for logits in (x, x_wrong):
        loss = focal_loss(logits, y, gamma=gamma, alpha=0.25, activation=activation)
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert torch.autograd.grad(focal_loss(x_wrong, y, gamma=gamma), x_wrong)[0].abs().max() > 0.1


def test_paper_figure_focal_is_100x_and_1000x_below_cross_entropy():
    # Lin et al. 2017, §3: with γ = 2, p_t = 0.9 gives 100x lower loss than CE, p_t ≈ 0.968 about 1000x.
    for p_t, factor, tolerance in ((0.9, 100.0, 1e-3), (0.968, 1000.0, 0.03)):
        logits = torch.tensor([[[0.0], [math.log(p_t / (1 - p_t))]]], dtype=torch.float64)  # (1, 2, 1), p_1 = p_t
        y = torch.tensor([[1]])
        ratio = F.cross_entropy(logits, y) / focal_loss(logits, y, gamma=2.0)
        assert ratio.item() == pytest.approx(factor, rel=tolerance)


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_perfect_prediction_gives_almost_zero(activation):
    y = torch.randint(0, 3, (2, 5, 5))
    x = F.one_hot(y, 3).permute(0, 3, 1, 2).float() * 40 - 20  # (B, H, W, C) -> (B, C, H, W)
    assert focal_loss(x, y, activation=activation).item() < 1e-12


def test_ignored_voxels_contribute_nothing_exactly():
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    y = torch.randint(0, 3, (2, 4, 4))
    y[0, :2] = 255
    loss = focal_loss(x, y, ignore_index=255, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    assert grad[0, :, :2].abs().max().item() == 0.0
    kept = y != 255
    per_voxel = focal_loss(x, y.masked_fill(~kept, 0), reduction="none")
    torch.testing.assert_close(loss, per_voxel[kept].sum())
    # the mean divides by the kept voxels only, like F.cross_entropy(ignore_index=...) at γ = 0
    torch.testing.assert_close(focal_loss(x, y, gamma=0.0, ignore_index=255), F.cross_entropy(x, y, ignore_index=255))


def test_include_background_false_drops_class_zero():
    x, y = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    # softmax: voxels of true class 0 contribute nothing, as CE with class weight 0 at γ = 0
    torch.testing.assert_close(focal_loss(x, y, gamma=0.0, include_background=False),
                               F.cross_entropy(x, y, weight=torch.tensor([0.0, 1.0, 1.0])))
    # sigmoid: channel 0's term is dropped; "none" keeps shape (B, C, H, W) with zeros there
    none = focal_loss(x, y, activation="sigmoid", include_background=False, reduction="none")
    full = focal_loss(x, y, activation="sigmoid", reduction="none")
    assert none.shape == (2, 3, 4, 4) and none[:, 0].abs().max().item() == 0.0
    torch.testing.assert_close(none[:, 1:], full[:, 1:])


def test_reductions_and_their_shapes():
    x, y = torch.randn(2, 3, 4, 5, 6), torch.randint(0, 3, (2, 1, 4, 5, 6))
    none = focal_loss(x, y, reduction="none")
    assert none.shape == (2, 4, 5, 6)
    torch.testing.assert_close(focal_loss(x, y, reduction="sum"), none.sum())
    torch.testing.assert_close(focal_loss(x, y, reduction="mean"), none.mean())
    sigmoid_none = focal_loss(x, y, activation="sigmoid", reduction="none")
    assert sigmoid_none.shape == (2, 3, 4, 5, 6)
    torch.testing.assert_close(focal_loss(x, y, activation="sigmoid"), sigmoid_none.mean())


@pytest.mark.parametrize("case", [
    dict(gamma=0.5, alpha=0.3),
    dict(gamma=2.0, alpha=[0.1, 0.2, 0.3, 0.4], ignore_index=2, include_background=False, C=4),
    dict(gamma=1.5, reduction="none", C=4),
    dict(gamma=1.5, activation="sigmoid", alpha=0.25, reduction="none", C=4),
    dict(gamma=2.0, activation="sigmoid", alpha=0.25, include_background=False, reduction="sum", C=4),
])
def test_gradcheck_float64(case):
    case = dict(case)
    channels = case.pop("C", 2)
    x = torch.randn(2, channels, 3, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, channels, (2, 3, 4))
    assert torch.autograd.gradcheck(lambda t: focal_loss(t, y, **case), (x,))


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_second_backward_with_retained_graph_gives_the_same_gradient(activation):
    x = torch.randn(2, 2, 4, 4, requires_grad=True)
    loss = focal_loss(x, torch.randint(0, 2, (2, 4, 4)), alpha=0.25, activation=activation)
    loss.backward(retain_graph=True)
    first = x.grad.clone()
    loss.backward()
    torch.testing.assert_close(x.grad, 2 * first)


def test_half_input_is_computed_in_float32():
    x, y = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    loss = focal_loss(x.half(), y)
    assert loss.dtype == torch.float16
    torch.testing.assert_close(loss.float(), focal_loss(x.half().float(), y), rtol=1e-3, atol=1e-3)


def test_module_matches_function_and_keeps_alpha_as_buffer():
    module = FocalLoss(gamma=1.0, alpha=[0.2, 0.8])
    assert "alpha" in dict(module.named_buffers()) and "alpha" not in module.state_dict()
    x, y = torch.randn(2, 2, 4, 4), torch.randint(0, 2, (2, 4, 4))
    torch.testing.assert_close(module(x, y), focal_loss(x, y, gamma=1.0, alpha=[0.2, 0.8]))
    assert module.alpha.tolist() == [0.2, 0.8]  # unchanged by forward


def test_large_volume_uses_many_chunks_and_matches_direct_formula():
    x = torch.randn(1, 3, 40, 40, 40)  # 192,000 logits: several chunks on several threads
    y = torch.randint(0, 3, (1, 40, 40, 40))
    torch.testing.assert_close(focal_loss(x, y, gamma=2.0).double(), softmax_focal_float64(x, y, None, 2.0),
                               rtol=1e-5, atol=1e-7)


def test_docstring_example_runs():
    import doctest

    import seg.losses.focal

    result = doctest.testmod(seg.losses.focal)
    assert result.attempted >= 2 and result.failed == 0


def _loss_in_child(set_threads: int) -> float:
    if set_threads:
        torch.set_num_threads(set_threads)  # as DataLoader workers do (torch's OpenMP cannot be used after fork)
    return float(focal_loss(torch.ones(1, 2, 40, 40, 40), torch.ones(1, 40, 40, 40, dtype=torch.long)))


def test_works_in_a_forked_dataloader_like_worker_after_the_parent_used_its_threads():
    import multiprocessing

    expected = _loss_in_child(0)  # the parent starts its chunk threads
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.map_async(_loss_in_child, [1]).get(timeout=60) == [pytest.approx(expected)]


@pytest.mark.parametrize("gamma", [0.5, 2.0, 3.0])
@pytest.mark.parametrize("labels", [True, False])
def test_sigmoid_training_path_matches_per_element_path_over_many_chunks(monkeypatch, gamma, labels):
    """Under "mean"/"sum" with γ > 0 the sigmoid loss folds α_t into the focusing term (one dot product per
    chunk); reduction="none" keeps every element. Both must give the same sum and the same gradient, with
    per-channel α, ignore_index, a dropped background channel, extreme logits and many small chunks."""
    import seg.losses._chunks as chunks

    monkeypatch.setattr(chunks, "CHUNK_ELEMENTS", 1000)
    generator = torch.Generator().manual_seed(3)
    x = (torch.randn(2, 3, 9, 10, 11, generator=generator, dtype=torch.float64) * 8).requires_grad_()
    x.data[0, :, 0, 0, :4] = torch.tensor([-300.0, -30.0, 30.0, 300.0], dtype=torch.float64)  # beyond exp's clamp
    y = torch.randint(0, 3, (2, 9, 10, 11), generator=generator)
    y[1, 2:4] = 255
    target = y if labels else F.one_hot(y.clamp(max=2), 3).permute(0, 4, 1, 2, 3).double().masked_fill(
        (y == 255).unsqueeze(1), 255)
    options = dict(gamma=gamma, alpha=[0.2, 0.7, 0.9], activation="sigmoid", include_background=False,
                   ignore_index=255)
    summed = focal_loss(x, target, reduction="sum", **options)
    per_element = focal_loss(x, target, reduction="none", **options)
    (g_summed,) = torch.autograd.grad(summed, x)
    (g_per_element,) = torch.autograd.grad(per_element.sum(), x)
    torch.testing.assert_close(summed, per_element.sum())
    torch.testing.assert_close(g_summed, g_per_element)
    assert per_element[1, :, 2:4].abs().max().item() == 0.0 and per_element[:, 0].abs().max().item() == 0.0
    assert per_element[0, 1:, 0, 0, 3].min().item() > 0  # the loss at a margin of 300 is ~300 α, not capped
    torch.testing.assert_close(focal_loss(x, target, **options), summed / (2 * (2 * 9 * 10 * 11 - 2 * 10 * 11)))  # kept voxels x 2 channels


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_sigmoid_training_path_float32_logits_beyond_exp_range_match_float64(monkeypatch, gamma):
    """The float32 training path skips the clamp: exp overflows for margins above ~88, and such a chunk
    must be redone safely. Reference: the same loss in float64 (exp's range is ~709 there)."""
    import seg.losses._chunks as chunks

    monkeypatch.setattr(chunks, "CHUNK_ELEMENTS", 500)  # several chunks, only some with huge logits
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(2, 2, 8, 8, 8, generator=generator) * 4
    y = (torch.rand(2, 1, 8, 8, 8, generator=generator) < 0.1).long()
    x[0, 0, 0, 0, :4] = torch.tensor([89.0, 100.0, -100.0, 1e4])  # margins well past float32 exp's range
    x[1, 1, 7, 7, -2:] = torch.tensor([-95.0, 95.0])
    target = torch.cat([1 - y, y], dim=1).float()
    options = dict(gamma=gamma, alpha=0.25, activation="sigmoid")
    x32 = x.clone().requires_grad_()
    x64 = x.double().requires_grad_()
    loss32, loss64 = focal_loss(x32, target, **options), focal_loss(x64, target.double(), **options)
    loss32.backward(), loss64.backward()
    assert torch.isfinite(loss32) and torch.isfinite(x32.grad).all()
    torch.testing.assert_close(loss32.double(), loss64.detach(), rtol=1e-5, atol=0)
    torch.testing.assert_close(x32.grad.double(), x64.grad, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_mean_gradient_scales_with_the_incoming_gradient(activation):
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 3, (2, 5, 4))
    options = dict(gamma=2.0, alpha=[0.2, 0.3, 0.5], activation=activation)
    (g_mean,) = torch.autograd.grad(3.0 * focal_loss(x, y, **options), x)
    (g_sum,) = torch.autograd.grad(focal_loss(x, y, reduction="sum", **options), x)
    elements = 2 * 5 * 4 * (3 if activation == "sigmoid" else 1)
    torch.testing.assert_close(g_mean, 3.0 * g_sum / elements)

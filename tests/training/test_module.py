"""SegModule pieces that need no Trainer: loss terms, non-finite stop, α options, checkpoint spec."""

from __future__ import annotations

import pytest
import torch

from seg.inference.checkpoint import InferenceSpec
from seg.losses.focal import focal_loss
from seg.training.module import SegModule


def _module(**kwargs) -> SegModule:
    defaults = dict(channels=[4, 8, 16], spatial_dims=3, in_channels=1, num_classes=2, alpha=None,
                    roi_size=[16, 16, 16])
    return SegModule(**{**defaults, **kwargs})


def _batch(nan: bool = False) -> dict:
    image = torch.randn(2, 1, 16, 16, 16)
    if nan:
        image[0, 0, 3, 3, 3] = float("nan")
    label = torch.zeros(2, 1, 16, 16, 16)
    label[:, :, 5:8, 5:8, 5:8] = 1
    return {"image": image, "label": label}


def test_non_finite_loss_stops_with_step_and_term() -> None:
    module = _module(loss="focal_dice")
    with pytest.raises(FloatingPointError, match=r"non-finite loss at global step 0.*focal=nan"):
        module.training_step(_batch(nan=True), 0)


def test_training_step_returns_the_configured_loss() -> None:
    module = _module(loss="focal", gamma=2.0, alpha=0.75)
    batch = _batch()
    torch.manual_seed(0)
    loss = module.training_step(batch, 0)
    expected = focal_loss(module.network(batch["image"]), batch["label"], gamma=2.0, alpha=[0.25, 0.75])
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("alpha", "message"), [
    (0.25, None),
    ([0.2, 0.8], None),
    ([0.1, 0.2, 0.7], r"alpha \[0.1, 0.2, 0.7\] has 3 value\(s\) but there are C=2 classes"),
    ("sometimes", "alpha must be null, a number, one value per class or .auto., got .sometimes."),
])
def test_alpha_options_are_checked_at_construction(alpha, message) -> None:
    if message is None:
        assert _module(alpha=alpha).alpha_values[1] == pytest.approx(0.25 if alpha == 0.25 else 0.8)
    else:
        with pytest.raises(ValueError, match=message):
            _module(alpha=alpha)


def test_scalar_alpha_with_more_than_two_classes_is_ambiguous() -> None:
    with pytest.raises(ValueError, match=r"scalar alpha \(0.25\) is ambiguous for softmax with C=5"):
        _module(alpha=0.25, num_classes=5)


def test_inference_spec_is_plain_types() -> None:
    spec = _module(alpha=[0.3, 0.7]).inference_spec()
    buffer = __import__("io").BytesIO()
    torch.save({"seg": spec.to_dict()}, buffer)
    buffer.seek(0)
    stored = torch.load(buffer, weights_only=True)["seg"]  # plain types: weights_only reads them back
    assert stored == spec.to_dict() and InferenceSpec.from_dict(stored, "buffer") == spec

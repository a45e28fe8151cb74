"""Knowledge distillation: loss math against hand values, hints, input conversion, training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgeopt.compress.distill import (
    DistillConfig,
    Distiller,
    attention_loss,
    attention_map,
    auto_hint_pairs,
    distill,
    input_converter,
    kd_loss,
)
from edgeopt.data import load_dataset
from edgeopt.errors import EdgeoptError
from edgeopt.model import InputSpec
from edgeopt.models import create_model
from edgeopt.train import FitConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def _softmax(z: list[float], t: float) -> list[float]:
    e = [math.exp(v / t) for v in z]
    return [v / sum(e) for v in e]


def test_kd_loss_matches_hand_computation() -> None:
    s, t, y, temp, alpha = [1.0, 2.0, 0.5], [0.2, 3.0, -1.0], 1, 2.0, 0.7
    ps, pt = _softmax(s, temp), _softmax(t, temp)
    kl = sum(b * math.log(b / a) for a, b in zip(ps, pt, strict=True))
    ce = -math.log(_softmax(s, 1.0)[y])
    expected = alpha * temp**2 * kl + (1 - alpha) * ce
    got = kd_loss(torch.tensor([s]), torch.tensor([t]), torch.tensor([y]), temp, alpha)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # pure soft targets; identical logits give zero; alpha 0 is plain cross-entropy
    assert kd_loss(torch.tensor([s]), torch.tensor([t]), None, temp).item() == pytest.approx(temp**2 * kl, rel=1e-5)
    assert kd_loss(torch.tensor([t]), torch.tensor([t]), None, 3.0).item() == pytest.approx(0.0, abs=1e-6)
    ce_t = F.cross_entropy(torch.tensor([s]), torch.tensor([y])).item()
    assert kd_loss(torch.tensor([s]), torch.tensor([t]), torch.tensor([y]), 4.0, 0.0).item() == pytest.approx(ce_t)


def test_kd_gradient_does_not_reach_the_teacher() -> None:
    s = torch.randn(4, 5, requires_grad=True)
    t = torch.randn(4, 5, requires_grad=True)
    kd_loss(s, t, torch.tensor([0, 1, 2, 3])).backward()
    assert s.grad is not None and t.grad is None


def test_attention_maps_ignore_channel_count() -> None:
    f = torch.randn(2, 8, 4, 4)
    a = attention_map(f)
    assert a.shape == (2, 16) and torch.allclose(a.norm(dim=1), torch.ones(2))
    # the same spatial energy with more channels gives the same normalised map
    assert attention_loss(torch.cat([f, f], 1), f).item() == pytest.approx(0.0, abs=1e-7)
    assert attention_loss(f, torch.randn(2, 3, 8, 8)).item() > 0  # different sizes are pooled


def test_input_converter_maps_between_layouts_and_ranges() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    a = InputSpec((3, 4, 4), "NCHW", (0.0, 1.0), mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.3))
    b = InputSpec((4, 4, 3), "NHWC", (0.0, 255.0))
    conv = input_converter(a, b)
    got = conv(torch.from_numpy(a.to_model_input(images)))
    torch.testing.assert_close(got, torch.from_numpy(b.to_model_input(images)), rtol=1e-5, atol=1e-3)
    with pytest.raises(EdgeoptError, match="different image shapes"):
        input_converter(a, InputSpec((8, 8, 3), "NHWC"))


def test_distiller_is_a_fit_loss_with_hints() -> None:
    torch.manual_seed(0)
    teacher = create_model("resnet8", input_shape=(1, 8, 8))
    student = create_model("resnet8", input_shape=(1, 8, 8), width=8)
    pairs = auto_hint_pairs(student, teacher)
    assert [p[0] for p in pairs] == [p[1] for p in pairs] and len(pairs) == 3  # one per resolution
    x = student.example_input(4)
    y = torch.tensor([0, 1, 2, 3])
    with Distiller(student, teacher, DistillConfig(hint_weight=1.0)) as d:
        logits = student.module(x)
        with_hint = d(logits, y, x)
    plain = kd_loss(logits, teacher.module(x), y, 4.0, 0.9)
    assert with_hint.item() > plain.item()
    assert not student.module.stack1.conv2._forward_hooks  # hooks removed on exit


def test_distill_trains_the_student() -> None:
    torch.manual_seed(0)
    data = load_dataset("digits").take(300)
    teacher = create_model("mlp", input_shape=(1, 8, 8), num_classes=10)
    student = create_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=(16,))
    out, hist = distill(student, teacher, data, FitConfig(epochs=2, optimizer="adam"), DistillConfig(alpha=0.5))
    assert len(hist.epochs) == 2 and hist.epochs[-1]["loss"] < hist.epochs[0]["loss"]
    assert out.meta.lineage[-1]["pass"] == "distill"
    with pytest.raises(EdgeoptError, match="classes"):
        distill(student, create_model("mlp", input_shape=(1, 8, 8), num_classes=3), data)


def test_distiller_leaves_the_teacher_trainable() -> None:
    from edgeopt.compress.distill import Distiller

    teacher = create_model("mlp", input_shape=(1, 8, 8), num_classes=10)
    student = create_model("mlp", input_shape=(1, 8, 8), num_classes=10)
    with Distiller(student, teacher) as loss_fn:
        assert not any(p.requires_grad for p in teacher.module.parameters())  # frozen while it teaches
        x = student.example_input(4)
        loss_fn(student.module(x), torch.zeros(4, dtype=torch.long), x).backward()
    assert all(p.requires_grad for p in teacher.module.parameters())

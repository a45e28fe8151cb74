"""Unstructured and N:M sparsity: mask properties, schedule values, gradual pruning during fit."""

from __future__ import annotations

import pytest
import torch

from edgeopt.compress.prune import (
    GradualPruner,
    apply_masks,
    channel_macs,
    check_nm,
    group_sizes,
    magnitude_masks,
    nm_masks,
    polynomial_sparsity,
    sparsity_of,
)
from edgeopt.compress.workflows import TuneSettings, prune_model
from edgeopt.data import load_dataset
from edgeopt.errors import EdgeoptError
from edgeopt.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_two_four_masks_keep_the_two_largest_of_every_four() -> None:
    torch.manual_seed(0)
    m = create_model("resnet8")
    masks = nm_masks(m.module, 2, 4)
    assert "stem.0" not in masks  # 3 input channels: not a multiple of 4, left dense
    assert "stack1.conv1" in masks and "fc" in masks
    for name, mask in masks.items():
        assert check_nm(mask, 2, 4), name
        assert mask.float().mean().item() == pytest.approx(0.5)
        w = m.module.get_submodule(name).weight.detach()
        wl = (w.permute(0, 2, 3, 1) if w.dim() == 4 else w).abs().reshape(-1, 4)
        ml = (mask.permute(0, 2, 3, 1) if mask.dim() == 4 else mask).reshape(-1, 4)
        # every kept weight is at least as large as every dropped one in its group of four
        kept_min = torch.where(ml, wl, torch.full_like(wl, float("inf"))).min(1).values
        dropped_max = torch.where(~ml, wl, torch.full_like(wl, -1.0)).max(1).values
        assert (kept_min >= dropped_max).all()
    assert not check_nm(torch.ones(4, 8, dtype=torch.bool))


def test_magnitude_masks_layer_and_global() -> None:
    torch.manual_seed(0)
    m = create_model("resnet8")
    layer = magnitude_masks(m.module, 0.7, "layer")
    for name, mask in layer.items():
        n = mask.numel()
        assert (~mask).sum().item() == int(0.7 * n), name
    glob = magnitude_masks(m.module, 0.7, "global")
    total = sum(mk.numel() for mk in glob.values())
    assert abs(sum((~mk).sum().item() for mk in glob.values()) / total - 0.7) < 0.01
    per = [(~mk).float().mean().item() for mk in glob.values()]
    assert max(per) - min(per) > 0.05  # one threshold: layers differ
    apply_masks(m.module, glob)
    assert sparsity_of(m.module)["sparsity"] == pytest.approx(0.7, abs=0.01)
    with pytest.raises(EdgeoptError, match="not in"):
        magnitude_masks(m.module, 1.0)


def test_polynomial_schedule_values() -> None:
    assert polynomial_sparsity(0, 0, 100, 0.8) == 0.0
    assert polynomial_sparsity(50, 0, 100, 0.8) == pytest.approx(0.8 - 0.8 * 0.5**3)
    assert polynomial_sparsity(100, 0, 100, 0.8) == 0.8
    assert polynomial_sparsity(500, 0, 100, 0.8) == 0.8
    vals = [polynomial_sparsity(t, 10, 90, 0.9) for t in range(0, 100, 5)]
    assert vals == sorted(vals)


def test_gradual_pruning_during_fit_keeps_zeros() -> None:
    torch.manual_seed(0)
    data = load_dataset("digits").take(256)
    m = create_model("mlp", input_shape=(1, 8, 8), num_classes=10)
    res = prune_model(m, data, "magnitude", ratio=0.8, settings=TuneSettings(epochs=2, optimizer="adam"))
    assert res.metrics["sparsity"] == pytest.approx(0.8, abs=0.01)
    assert "not skipped" in res.metrics["note"]
    assert res.metrics["macs_after"] == res.metrics["macs_before"]  # dense MAC count: honest


def test_gradual_pruner_schedule_reaches_target() -> None:
    torch.manual_seed(0)
    m = create_model("mlp", input_shape=(1, 8, 8), num_classes=10)
    gp = GradualPruner(0.6, total_steps=20, frequency=5).attach(m.module)
    m.module.train()
    seen = []
    for _ in range(20):
        m.module(torch.randn(4, 1, 8, 8))
        seen.append(sparsity_of(m.module)["sparsity"])
    gp.detach()
    assert seen == sorted(seen) and seen[0] < 0.05
    assert sparsity_of(m.module)["sparsity"] == pytest.approx(0.6, abs=0.01)


def test_nm_and_magnitude_refuse_latency_targets() -> None:
    data = load_dataset("digits").take(64)
    m = create_model("mlp", input_shape=(1, 8, 8), num_classes=10)
    with pytest.raises(EdgeoptError, match="dense runtimes"):
        prune_model(m, data, "nm", target_latency_ms=1.0)
    res = prune_model(m, data, "nm")
    layers = [mod for mod in res.model.module.modules() if isinstance(mod, torch.nn.Linear)]
    for layer in layers:  # every linear layer (in features a multiple of 4) is exactly 2:4
        assert check_nm(layer.weight != 0, 2, 4)
    total = sum(layer.weight.numel() for layer in layers)
    assert res.metrics["sparsity"] == pytest.approx(sum((layer.weight == 0).sum().item() for layer in layers) / total)
    assert res.metrics["sparsity"] == pytest.approx(0.5, abs=0.01)


def test_iterative_channel_pruning_reaches_the_target_in_steps() -> None:
    data = load_dataset("digits", "train").take(256)
    torch.manual_seed(0)
    m = create_model("resnet8", input_shape=(1, 8, 8), num_classes=10)
    before = channel_macs(m)
    lines: list[str] = []
    res = prune_model(m, data, "channel", ratio=0.5, allocation="global", settings=TuneSettings(epochs=3),
                      steps=2, log=lines.append)  # fmt: skip
    assert res.metrics["steps"] == 2 and len(res.metrics["fine_tune"]["history"]) == 3
    step_macs = [int(s.split(": ")[1].split(" MACs")[0].replace(",", "")) for s in lines if s.startswith("prune step")]
    assert len(step_macs) == 2 and step_macs[0] > step_macs[1]  # half way first, then the target
    assert step_macs[0] <= 0.75 * before and step_macs[1] <= 0.5 * before
    # explicit widths, in two steps: half way first
    res = prune_model(m, data, "channel", widths=[16, 8, 16, 16, 32, 32], settings=TuneSettings(epochs=2), steps=2)
    assert group_sizes(res.model) == [16, 8, 16, 16, 32, 32]
    with pytest.raises(EdgeoptError, match="6 channel groups"):
        prune_model(m, data, "channel", widths=[8, 8], settings=TuneSettings(epochs=2), steps=2)
    with pytest.raises(EdgeoptError, match="width 99"):
        prune_model(m, data, "channel", widths=[99, 8, 16, 16, 32, 32])
    with pytest.raises(EdgeoptError, match="exactly one target"):
        prune_model(m, data, "channel", ratio=0.5, widths=[16, 8, 16, 16, 32, 32])
    with pytest.raises(EdgeoptError, match="need at least 3"):
        prune_model(m, data, "channel", ratio=0.5, settings=TuneSettings(epochs=2), steps=3)
    with pytest.raises(EdgeoptError, match="channel pruning to a MAC target"):
        prune_model(m, data, "magnitude", ratio=0.5, settings=TuneSettings(epochs=2), steps=2)


def test_gradual_magnitude_pruning_of_a_conv_model() -> None:
    """Conv weights train channels-last; their masks must still index them (regression)."""
    data = load_dataset("digits", "train").take(256)
    torch.manual_seed(0)
    m = create_model("resnet8", input_shape=(1, 8, 8), num_classes=10)
    res = prune_model(m, data, "magnitude", ratio=0.7, settings=TuneSettings(epochs=1))
    assert res.metrics["sparsity"] == pytest.approx(0.7, abs=0.02)

"""Structured channel pruning: dependency groups, physically smaller models, export parity, targets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgeopt.compress.common import strip_output_softmax
from edgeopt.compress.prune import (
    apply_channel_plan,
    build_dependency_graph,
    mac_model,
    prune_channels,
    prune_to_latency,
    sample_batches,
    select_channels,
)
from edgeopt.compress.prune.channel import channel_units, saving_rates
from edgeopt.data import load_dataset
from edgeopt.errors import EdgeoptError
from edgeopt.interop.export import export_model
from edgeopt.interop.graph import GraphBuilder, GraphModule
from edgeopt.model import EdgeModel, InputSpec, ModelMeta, load_model, save_model
from edgeopt.models import create_model
from edgeopt.profile import count_macs, export_for_profile

pytestmark = pytest.mark.usefixtures("one_thread")


def macs(model: EdgeModel) -> int:
    return count_macs(export_for_profile(model).graph)


def params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def tiny_imported(seed: int = 0) -> EdgeModel:
    """A small graph shaped like the imported MLPerf ResNet-8: NHWC input, residual adds, asymmetric
    pad before a strided conv, 1x1 shortcut, pooling, permute + reshape into a linear head, softmax."""
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return rng.normal(0, 0.3, shape).astype(np.float32)

    b = GraphBuilder()
    x = b.input([None, 8, 8, 3])
    x = b.permute(x, [0, 3, 1, 2])
    a = b.activation(b.conv2d(x, w(8, 3, 3, 3), w(8), (1, 1), (1, 1, 1, 1)), "relu")
    y = b.activation(b.conv2d(a, w(8, 8, 3, 3), w(8), (1, 1), (1, 1, 1, 1)), "relu")
    y = b.conv2d(y, w(8, 8, 3, 3), w(8), (1, 1), (1, 1, 1, 1))
    r = b.activation(b.add("add", [a, y]), "relu")
    p = b.add("pad", [r], {"pads": [0, 1, 0, 1], "value": 0.0})
    y = b.activation(b.conv2d(p, w(16, 8, 3, 3), w(16), (2, 2), (0, 0, 0, 0)), "relu")
    y = b.conv2d(y, w(16, 16, 3, 3), w(16), (1, 1), (1, 1, 1, 1))
    s = b.conv2d(r, w(16, 8, 1, 1), w(16), (2, 2), (0, 0, 0, 0))
    r = b.activation(b.add("add", [s, y]), "relu")
    pool = b.add("avg_pool2d", [r], {"kernel_size": [4, 4], "stride": [4, 4], "pads": [0, 0, 0, 0],
                                     "ceil_mode": False, "count_include_pad": False})  # fmt: skip
    f = b.reshape(b.permute(pool, [0, 2, 3, 1]), [-1, 16], [1, 1, 1, 16])
    out = b.add("softmax", [b.linear(f, w(10, 16), w(10))], {"dim": 1, "beta": 1.0})
    ir = b.finish([out])
    gm = GraphModule(ir)
    gm.load_state_dict(b.weights)
    meta = ModelMeta(InputSpec((8, 8, 3), "NHWC", (0.0, 255.0)), 10, {"kind": "graph", "ir": gm.ir})
    return EdgeModel(gm.eval(), meta)


class ConcatNet(nn.Module):
    """Depthwise conv, concat along channels, flatten (with spatial size > 1) into a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(3, 6, 1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(14 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.dw(self.a(x)), self.b(x)], dim=1)
        return self.fc(torch.flatten(self.pool(y), 1))


def test_residual_block_couples_producers() -> None:
    m = create_model("resnet8")
    dep = build_dependency_graph(m.module, m.example_input(1))
    by_producers = {tuple(sorted(mod for mod, r in g.slots if r == "out")): g for g in dep.groups}
    chain = by_producers[("stack1.conv2", "stem.0")]  # identity shortcut: stem and stack1 output share channels
    assert chain.size == 16
    assert {("stack2.conv1", "in"), ("stack2.shortcut", "in"), ("stem.1", "bn"), ("stack1.bn2", "bn")} <= set(
        chain.slots
    )
    assert by_producers[("stack3.conv2", "stack3.shortcut")].slots.count(("fc", "in")) == 1
    assert by_producers[("stack1.conv1",)].size == 16  # inside a block: free
    assert len(dep.groups) == 6
    # the model's input channels and the classifier outputs are never prunable
    assert all(mod != "fc" or role != "out" for g in dep.groups for mod, role in g.slots)


def test_pruned_zoo_resnet8_is_smaller_runs_reloads_and_exports(tmp_path: Path) -> None:
    torch.manual_seed(0)
    m = create_model("resnet8")
    pruned, rep = prune_channels(m, ratio=0.5)
    assert rep.macs_after <= 0.5 * rep.macs_before
    assert macs(pruned) == rep.macs_after  # the arithmetic MAC model agrees with the profiler
    assert params(pruned.module) < 0.6 * params(m.module)
    assert not any(isinstance(b, torch.Tensor) and "mask" in n for n, b in pruned.module.named_buffers())
    assert pruned.module.stack3.conv2.out_channels < 64 and pruned.module.fc.in_features < 64
    x = m.example_input(4)
    assert pruned.module(x).shape == (4, 10)
    path = save_model(pruned, tmp_path / "p")
    again = load_model(path)
    torch.testing.assert_close(again.module(x), pruned.module(x))
    res = export_model(pruned, "onnx", tmp_path / "p.onnx")
    assert res.parity.rel_diff < 1e-4


def test_pruned_imported_graph_is_smaller_and_exports(tmp_path: Path) -> None:
    m = tiny_imported()
    dep = build_dependency_graph(m.module, m.example_input(1))
    assert sorted(g.size for g in dep.groups) == [8, 8, 16, 16]
    pruned, rep = prune_channels(m, ratio=0.5, allocation="global")
    assert rep.macs_after <= rep.macs_before / 2 and macs(pruned) == rep.macs_after
    assert params(pruned.module) < params(m.module)
    lin = next(n for n in pruned.module.ir["nodes"] if n["op"] == "linear")
    reshape = next(n for n in pruned.module.ir["nodes"] if n["op"] == "reshape")
    assert reshape["attrs"]["shape"][1] == lin["attrs"]["in_features"] < 16
    x = m.example_input(3)
    assert pruned.module(x).shape == (3, 10)
    again = load_model(save_model(pruned, tmp_path / "g"))
    torch.testing.assert_close(again.module(x), pruned.module(x))
    assert export_model(pruned, "onnx", tmp_path / "g.onnx").parity.rel_diff < 1e-4


def test_removing_nothing_changes_nothing() -> None:
    m = tiny_imported()
    dep = build_dependency_graph(m.module, m.example_input(1))
    same, sizes = apply_channel_plan(m.module, dep, set())
    assert sizes == {}
    x = m.example_input(2)
    torch.testing.assert_close(same(x), m.module(x))


def test_concat_depthwise_and_flatten_head() -> None:
    torch.manual_seed(0)
    net = ConcatNet().eval()
    x = torch.randn(2, 3, 8, 8)
    dep = build_dependency_graph(net, x[:1])
    sizes = sorted(g.size for g in dep.groups)
    assert sizes == [6, 8]  # conv a + depthwise + BNs share 8 channels; branch b has 6
    group_a = next(g for g in dep.groups if g.size == 8)
    assert {("dw.0", "dw"), ("a.1", "bn"), ("dw.1", "bn"), ("fc", "in")} <= set(group_a.slots)
    removed = {group_a.classes[0], group_a.classes[3], next(g for g in dep.groups if g.size == 6).classes[1]}
    small, _ = apply_channel_plan(net, dep, removed)
    assert small.dw[0].groups == small.dw[0].out_channels == 6
    assert small.fc.in_features == (6 + 5) * 4
    assert small(x).shape == (2, 5)
    # the result equals the original network with those channels' contributions removed
    keep_a = [i for i in range(8) if i not in (0, 3)]
    with torch.no_grad():
        ref = net.a(x)[:, keep_a]
        torch.testing.assert_close(small.a(x), ref)
    assert mac_model(net, dep).macs(removed) < mac_model(net, dep).macs(set())


@pytest.mark.parametrize("criterion", ["l1", "bn", "taylor"])
def test_criteria_and_global_allocation(criterion: str) -> None:
    torch.manual_seed(1)
    m = create_model("resnet8", input_shape=(1, 8, 8))
    data = load_dataset("digits").take(128)
    batches = sample_batches(m, data, n=2, batch=32) if criterion == "taylor" else None
    pruned, rep = prune_channels(m, target_macs=300_000, criterion=criterion, allocation="global", batches=batches)
    assert rep.macs_after <= 300_000 < rep.macs_before
    assert pruned.module(m.example_input(2)).shape == (2, 10)


def test_round_to_keeps_simd_friendly_widths() -> None:
    m = create_model("resnet8")
    _, rep = prune_channels(m, ratio=0.4, round_to=8, min_keep=8, allocation="global")
    assert all(g["after"] % 8 == 0 for g in rep.groups)


def test_saving_rates_look_ahead_over_simd_padding() -> None:
    # cutting 8 of 16 channels saves nothing until the next cut crosses the block: both get half
    assert saving_rates([0.0, 30.0, 8.0]) == pytest.approx([15.0, 30.0, 8.0])
    assert saving_rates([-2.0, 10.0]) == pytest.approx([5.0, 10.0])  # noise counts as zero
    assert saving_rates([]) == []


def test_latency_allocation_spends_the_budget_where_the_runtime_saves_time() -> None:
    m = create_model("resnet8")
    dep = build_dependency_graph(m.module, m.example_input(1))
    macs_model = mac_model(m.module, dep)
    scores = {c: 1.0 for g in dep.groups for c in g.classes}  # equal importance: latency decides
    units = channel_units(dep, scores, round_to=8, min_keep=8)
    target = int(0.7 * macs_model.macs(set()))
    fast = dep.groups[-1].index  # pretend only the last group's channels cost time
    savings = {g.index: [10.0 if g.index == fast else 0.01] * len(units[g.index]) for g in dep.groups}
    removed = select_channels(dep, macs_model, scores, target, "latency", 8, 8, unit_savings=savings)
    assert macs_model.macs(removed) <= target
    cut = {g.index: len(set(g.classes) & removed) for g in dep.groups}
    assert cut[fast] == max(cut.values()) > 0
    with pytest.raises(EdgeoptError, match="latency allocation needs"):
        select_channels(dep, macs_model, scores, target, "latency", 8, 8)


def test_units_cut_past_the_target_come_back() -> None:
    from edgeopt.compress.prune.channel import _give_back

    m = create_model("resnet8")
    dep = build_dependency_graph(m.module, m.example_input(1))
    mm = mac_model(m.module, dep)
    full = mm.macs(set())
    small, large = dep.groups[-1].classes[:8], dep.groups[0].classes[:8]  # 8x8 stage vs 32x32 stage
    saved_small, saved_large = full - mm.macs(set(small)), full - mm.macs(set(large))
    assert saved_large > saved_small
    # the weakest unit (small) did not reach the target, the next (large) overshot it: small comes back
    assert _give_back([small, large], dep, mm, full - saved_small - 1) == set(large)
    assert _give_back([small, large], dep, mm, full - saved_small - saved_large) == set(small) | set(large)


def test_several_runtimes_count_relative_savings_alike() -> None:
    from edgeopt.compress.prune.netadapt import combine_runtimes, runtime_latency

    # runtime A: the second model is 50% faster; runtime B (ten times slower overall): 10% faster
    combined = combine_runtimes([[0.2, 0.1, 0.2], [2.0, 1.8, 1.0]])
    assert combined == pytest.approx([1.1, 1.1 * 0.7, 1.1 * 0.75])
    mlp = create_model("mlp", input_shape=(1, 8, 8), num_classes=10)
    timed = runtime_latency("onnxruntime,torch", rounds=2, runs=5)([mlp, mlp])  # fresh sessions each round
    assert len(timed) == 2 and all(t > 0 for t in timed)
    with pytest.raises(EdgeoptError, match="cannot time latency in 'tensorrt'"):
        runtime_latency("onnxruntime,tensorrt")
    m = create_model("mlp", input_shape=(1, 8, 8), num_classes=10)
    with pytest.raises(EdgeoptError, match="needs one runtime"):
        prune_to_latency(m, 1.0, load_dataset("digits").take(32), "onnxruntime,executorch")


def test_unreachable_or_bad_targets_are_clear() -> None:
    m = create_model("resnet8")
    with pytest.raises(EdgeoptError, match="cannot reach"):
        prune_channels(m, target_macs=1000)
    with pytest.raises(EdgeoptError, match="exactly one"):
        prune_channels(m)
    with pytest.raises(EdgeoptError, match="not in"):
        prune_channels(m, ratio=1.2)


def hook_macs(model: EdgeModel) -> int:
    """MACs by forward hooks (fast; the profiler's torch.export is too slow to call per candidate)."""
    total = 0

    def count(mod: nn.Module, _i: object, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            total += out.numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        else:
            total += out.numel() * mod.in_features

    hooks = [x.register_forward_hook(count) for x in model.module.modules() if isinstance(x, nn.Conv2d | nn.Linear)]
    with torch.no_grad():
        model.module(model.example_input(1))
    for h in hooks:
        h.remove()
    return total


def test_latency_target_with_a_latency_model() -> None:
    """NetAdapt loop with a deterministic latency function (MAC-proportional + fixed overhead)."""
    torch.manual_seed(0)
    m = create_model("resnet8", input_shape=(1, 8, 8))
    assert hook_macs(m) == macs(m)
    full = hook_macs(m)

    def latency(models: list[EdgeModel]) -> list[float]:
        return [0.05 + 0.2 * hook_macs(x) / full for x in models]

    data = load_dataset("digits").take(64)
    target = 0.15
    out, rep = prune_to_latency(m, target, data, latency_fn=latency, step_fraction=0.2)
    assert abs(rep.final_ms - target) / target <= 0.1
    assert latency([out])[0] == pytest.approx(rep.final_ms)
    assert rep.steps and rep.macs_after < rep.macs_before
    with pytest.raises(EdgeoptError, match="cannot reach"):
        prune_to_latency(m, 0.04, data, latency_fn=latency, step_fraction=0.5)

    # a predictor that underrates small models (no fixed overhead): the model it lands on is timed, misses,
    # and the search goes on from the timed figure until a timing meets the target
    def predicted(models: list[EdgeModel]) -> list[float]:
        return [0.25 * hook_macs(x) / full for x in models]

    out, rep = prune_to_latency(m, target, data, latency_fn=predicted, step_fraction=0.2, confirm=latency)
    first, last = rep.confirmations[0], rep.confirmations[-1]
    assert first["measured_ms"] > target * 1.05 and last["measured_ms"] <= target * 1.05
    assert latency([out])[0] == pytest.approx(last["measured_ms"]) == pytest.approx(rep.final_ms)


def test_least_squares_reconstruction_brings_outputs_back() -> None:
    m = strip_output_softmax(tiny_imported(seed=3))  # compare logits: a saturated softmax hides errors
    calib = torch.from_numpy(m.meta.input.to_model_input(np.random.default_rng(0).integers(0, 256, (64, 8, 8, 3),
                                                                                          dtype=np.uint8)))  # fmt: skip
    plain, _ = prune_channels(m, ratio=0.4)
    fitted, _ = prune_channels(m, ratio=0.4, calibration=calib)
    with torch.no_grad():
        ref = m.module(calib)
        err_plain = (plain.module(calib) - ref).pow(2).mean().item()
        err_fit = (fitted.module(calib) - ref).pow(2).mean().item()
    assert err_fit < 0.5 * err_plain
    assert fitted.meta.lineage[-1]["reconstructed"] is True


def test_a_residual_branch_goes_whole_at_width_zero(tmp_path: Path) -> None:
    """Width 0 on a branch's inner group deletes both its convs; what is left is the shortcut plus a
    constant, exactly the original block with the branch's first conv zeroed (no calibration)."""
    from edgeopt.compress.prune.branches import branch_groups

    m = strip_output_softmax(tiny_imported(seed=4))
    dep = build_dependency_graph(m.module, m.example_input(1))
    sizes = [g.size for g in dep.groups]
    assert branch_groups(dep) == {1, 2} and sizes == [8, 8, 16, 16]  # the two blocks' inner channels
    pruned, rep = prune_channels(m, widths=[8, 0, 16, 16])
    convs = [n["name"] for n in pruned.module.ir["nodes"] if n["op"] == "conv2d"]
    assert convs == ["conv2d_0", "conv2d_3", "conv2d_4", "conv2d_5"]
    assert macs(pruned) == rep.macs_after < rep.macs_before
    ref = GraphModule(m.module.ir)
    ref.load_state_dict(m.module.state_dict())
    with torch.no_grad():
        ref.mods["conv2d_1"].weight.zero_()
        ref.mods["conv2d_1"].bias.zero_()
    x = m.example_input(3)
    torch.testing.assert_close(pruned.module(x), ref(x))
    again = load_model(save_model(pruned, tmp_path / "b"))
    torch.testing.assert_close(again.module(x), pruned.module(x))
    assert export_model(pruned, "onnx", tmp_path / "b.onnx").parity.rel_diff < 1e-4
    both, _ = prune_channels(m, widths=[8, 0, 0, 16])  # the second block's branch too (its shortcut stays)
    assert [n["name"] for n in both.module.ir["nodes"] if n["op"] == "conv2d"] == ["conv2d_0", "conv2d_5"]


def test_a_removed_branch_is_replaced_by_its_mean_output_with_calibration() -> None:
    m = strip_output_softmax(tiny_imported(seed=5))
    calib = torch.from_numpy(m.meta.input.to_model_input(np.random.default_rng(1).integers(0, 256, (64, 8, 8, 3),
                                                                                          dtype=np.uint8)))  # fmt: skip
    plain, _ = prune_channels(m, widths=[8, 0, 16, 16])
    fitted, _ = prune_channels(m, widths=[8, 0, 16, 16], calibration=calib)
    with torch.no_grad():
        ref = m.module(calib)
        err_plain = (plain.module(calib) - ref).pow(2).mean().item()
        err_fit = (fitted.module(calib) - ref).pow(2).mean().item()
    assert err_fit < 0.5 * err_plain


def test_width_zero_only_where_a_branch_can_go() -> None:
    m = tiny_imported()
    with pytest.raises(EdgeoptError, match="width 0 for group 0") as e:
        prune_channels(m, widths=[0, 8, 16, 16])  # the residual chain: the model would lose its input
    assert "between 1 and 8" in str(e.value.fix)
    zoo = create_model("resnet8", input_shape=(1, 8, 8))
    with pytest.raises(EdgeoptError, match="imported graph"):
        prune_channels(zoo, widths=[16, 0, 32, 32, 64, 64])


def test_a_model_without_a_branch_prunes_again() -> None:
    """The constant left where a branch was is sliced with the channels it is added to."""
    m = strip_output_softmax(tiny_imported(seed=6))
    once, _ = prune_channels(m, widths=[8, 0, 16, 16])
    dep = build_dependency_graph(once.module, once.example_input(1))
    assert sorted(g.size for g in dep.groups) == [8, 16, 16]  # the chain the constant joins stays prunable
    twice, rep = prune_channels(once, widths=[4, 16, 16])
    const = next(n for n in twice.module.ir["nodes"] if n["op"] == "const" and n["name"].startswith("branch"))
    assert const["attrs"]["shape"] == [1, 4, 1, 1] and rep.macs_after < rep.macs_before
    x = m.example_input(2)
    assert twice.module(x).shape == (2, 10)


def test_latency_allocation_may_remove_a_whole_branch() -> None:
    """Where the runtime saves time only when a branch goes entirely, the allocation takes it whole;
    without that option the same budget is spread as channel cuts."""
    from edgeopt.compress.prune.branches import branch_groups

    m = tiny_imported()
    dep = build_dependency_graph(m.module, m.example_input(1))
    mm = mac_model(m.module, dep)
    scores = {c: 1.0 for g in dep.groups for c in g.classes}
    whole = branch_groups(dep)
    units = channel_units(dep, scores, round_to=4, min_keep=4, whole=whole)
    assert [len(u) for u in units[1]] == [4, 4]  # 8 -> 4 -> 0
    # the runtime saves time only when block 1's branch goes whole (its last unit)
    savings = {g.index: [0.01] * len(units[g.index]) for g in dep.groups}
    savings[1][-1] = 50.0
    target = mm.macs(set(dep.groups[1].classes))
    removed = select_channels(dep, mm, scores, target, "latency", 4, 4, unit_savings=savings, whole=whole)
    assert set(dep.groups[1].classes) <= removed and mm.macs(removed) <= target
    partial = {g: v[: len(channel_units(dep, scores, 4, 4)[g])] for g, v in savings.items()}  # no whole units
    kept = select_channels(dep, mm, scores, target, "latency", 4, 4, unit_savings=partial)
    assert not set(dep.groups[1].classes) <= kept
    # measured accuracy costs replace the scores: a branch that costs 30 points per 50 ms goes last
    # when other cuts cost 0.1 point per 5 ms
    costs = {g.index: [0.001] * len(units[g.index]) for g in dep.groups}
    costs[1][-1] = 0.3
    even = {g: [5.0] * len(v) for g, v in savings.items()}
    even[1][-1] = 50.0
    costly = select_channels(dep, mm, scores, target, "latency", 4, 4, unit_savings=even, whole=whole,
                             unit_costs=costs)  # fmt: skip
    assert not set(dep.groups[1].classes) <= costly and mm.macs(costly) <= target


def test_latency_target_may_remove_a_branch() -> None:
    """NetAdapt on an imported graph proposes a residual branch's removal once its group is narrow;
    with a runtime that charges per convolution, that is the only way to the target."""
    from edgeopt.data import ImageDataset

    m = strip_output_softmax(tiny_imported(seed=7))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 8, 8, 3), dtype=np.uint8)
    data = ImageDataset(images, rng.integers(0, 10, 64), list("0123456789"))

    def per_conv(models: list[EdgeModel]) -> list[float]:
        return [float(sum(n["op"] == "conv2d" for n in x.module.ir["nodes"])) for x in models]

    out, rep = prune_to_latency(m, 4.0, data, latency_fn=per_conv, step_fraction=0.5, tolerance=0.01)
    assert rep.final_ms <= 4.0 and per_conv([out]) == [rep.final_ms]
    assert any(n["op"] == "const" and n["name"].startswith("branch_const") for n in out.module.ir["nodes"])


def test_a_branch_and_the_chain_it_joins_cut_together_with_calibration() -> None:
    """The mean constant keeps only the chain channels that stay; a second pruning leaves the
    constants of earlier ones to the slicing."""
    m = strip_output_softmax(tiny_imported(seed=8))
    calib = torch.from_numpy(m.meta.input.to_model_input(np.random.default_rng(2).integers(0, 256, (32, 8, 8, 3),
                                                                                          dtype=np.uint8)))  # fmt: skip
    both, _ = prune_channels(m, widths=[4, 0, 16, 16], calibration=calib)
    const = next(n for n in both.module.ir["nodes"] if n["op"] == "const" and n["name"].startswith("branch"))
    assert const["attrs"]["shape"] == [1, 4, 1, 1] and const["attrs"]["channels_of"] == "conv2d_2"
    again, _ = prune_channels(both, widths=[4, 8, 16], calibration=calib)
    assert again.module(m.example_input(2)).shape == (2, 10)


def test_widths_from_a_latency_allocation_rebuild_the_same_model() -> None:
    """optimize's best.yaml pins a latency allocation to the widths it landed on (confirm.landed_passes):
    pruning to those widths must remove the same channels, so the recipe rebuilds the same model."""
    torch.manual_seed(0)
    m = create_model("resnet8", input_shape=(1, 8, 8))
    full = hook_macs(m)

    def latency(models: list[EdgeModel]) -> list[float]:  # uneven: early convolutions' channels cost most
        convs = [[c.out_channels for c in x.module.modules() if isinstance(c, nn.Conv2d)] for x in models]
        return [0.05 + 0.2 * hook_macs(x) / full + 0.01 * sum(c / (i + 1) for i, c in enumerate(cs))
                for x, cs in zip(models, convs, strict=True)]  # fmt: skip

    first, rep = prune_channels(m, ratio=0.5, allocation="latency", round_to=4, latency_fn=latency)
    assert len(set(rep.widths)) > 2  # not a uniform cut
    again, rep2 = prune_channels(m, widths=rep.widths)
    assert rep2.widths == rep.widths and rep2.macs_after == rep.macs_after
    x = m.example_input(8)
    torch.testing.assert_close(first.module(x), again.module(x))


def test_size_weight_moves_a_latency_allocation_to_the_weight_heavy_layers() -> None:
    """With a latency that the early, high-resolution convolutions dominate, a latency allocation cuts them and keeps
    the late, weight-heavy ones; counting the weights saved beside the time (``size_weight``) cuts the late ones too,
    to a model with fewer parameters at the same MAC target."""
    torch.manual_seed(0)
    m = create_model("resnet8", input_shape=(1, 16, 16))

    def latency(models: list[EdgeModel]) -> list[float]:  # the first convolutions' channels cost most
        convs = [[c.out_channels for c in x.module.modules() if isinstance(c, nn.Conv2d)] for x in models]
        return [0.05 + sum(c / 4**i for i, c in enumerate(cs)) for cs in convs]

    params = {}
    for w in (0.0, 1.0):
        _, rep = prune_channels(m, ratio=0.5, allocation="latency", round_to=4, latency_fn=latency, size_weight=w)
        assert rep.mac_ratio <= 0.5 + 1e-9
        params[w] = rep.params_after
    assert params[1.0] < params[0.0]


def _branch_removed(widths: list[int], sign: float) -> tuple[EdgeModel, GraphModule]:
    """tiny_imported with block 1's branch removed (and more by ``widths``); the constant that replaces
    it, which a relu precedes and follows, made all negative (-1) or all positive (+1)."""
    m = strip_output_softmax(tiny_imported(seed=8))
    gm = prune_channels(m, widths=widths)[0].module
    const = next(n["name"] for n in gm.ir["nodes"] if n["op"] == "const" and n["attrs"]["shape"][1] == 8)
    c = getattr(gm.consts, const)
    c.copy_(sign * (c.abs() + 0.1))
    return m, gm


@pytest.mark.parametrize("sign", [-1.0, 1.0])
def test_removed_branch_constants_fold_into_biases(sign: float) -> None:
    """``s + c`` (block 2, both branches gone but the shortcut) folds into the shortcut's bias;
    ``relu(relu(a) + c)`` (block 1) is ``relu(a + c-) + c+``, the ``c+`` going to the 1x1 conv that
    reads it: no add left, and the same function."""
    from edgeopt.compress.prune.branches import fold_branch_constants

    m, gm = _branch_removed([8, 0, 0, 16], sign)
    out = fold_branch_constants(gm)
    assert sum(n["op"] in ("const", "add") for n in out.ir["nodes"]) == 0
    x = m.example_input(8)
    assert torch.allclose(out(x), gm(x), rtol=1e-4, atol=1e-4)
    assert fold_branch_constants(out) is out  # nothing left to fold


def test_positive_branch_constant_read_through_padding_is_off_only_at_the_border() -> None:
    """A conv reading the block through a zero pad gets ``c+`` in its bias: exact inside, off only at
    the outputs whose window covers the pad (the last row and column for pads [0, 1, 0, 1])."""
    from edgeopt.compress.prune.branches import fold_branch_constants
    from edgeopt.models.layers import capture_layers

    m, gm = _branch_removed([8, 0, 16, 16], 1.0)
    out = fold_branch_constants(gm)
    assert sum(n["op"] == "const" for n in out.ir["nodes"]) == 0
    x = m.example_input(8)
    paths = ["mods.conv2d_3", "mods.conv2d_5"]  # the 3x3 conv after the pad, the 1x1 shortcut
    want, got = capture_layers(gm, paths, x), capture_layers(out, paths, x)
    assert torch.allclose(got["mods.conv2d_5"], want["mods.conv2d_5"], rtol=1e-4, atol=1e-3)
    assert torch.allclose(
        got["mods.conv2d_3"][..., :-1, :-1], want["mods.conv2d_3"][..., :-1, :-1], rtol=1e-4, atol=1e-3
    )
    assert not torch.allclose(got["mods.conv2d_3"], want["mods.conv2d_3"], atol=1e-3)


def test_prune_pass_leaves_no_constant_add_where_it_removes_branches() -> None:
    """The prune workflow folds removed branches' constants before recovery: the model it returns
    (and the architecture it records) has no add of a constant."""
    from edgeopt.compress.workflows import TuneSettings, prune_model
    from edgeopt.data import ImageDataset
    from edgeopt.model import build_module

    m = strip_output_softmax(tiny_imported(seed=8))
    rng = np.random.default_rng(0)
    data = ImageDataset(rng.integers(0, 256, (32, 8, 8, 3), dtype=np.uint8), rng.integers(0, 10, 32),
                        list("0123456789"))  # fmt: skip
    out = prune_model(m, data, widths=[8, 0, 0, 16], settings=TuneSettings(epochs=0)).model
    assert [n["op"] for n in out.module.ir["nodes"] if n["op"] in ("const", "add")] == []
    assert [n["op"] for n in out.meta.arch["ir"]["nodes"]] == [n["op"] for n in out.module.ir["nodes"]]
    rebuilt = build_module(out.meta.arch)
    rebuilt.load_state_dict(out.module.state_dict())


def test_timing_beside_the_input_model_uses_its_usual_time_not_one_slow_timing(monkeypatch) -> None:
    """The input model timed 0.267 ms once when the search began and 0.195 ms in every round after: times beside
    it are its ratio in the same round times its median time so far, not times the one slow timing (which put a
    cut at 0.50x of it at 0.69x of the target's base: ONNX Runtime, 0.5x, 2026-12-05)."""
    from edgeopt.compress.prune import netadapt

    model, cut = create_model("mlp", seed=0), create_model("mlp", seed=1)

    def timer(models: list) -> list[float]:  # the input model in 0.195 ms, the cut at half of it
        return [0.195 if m is model else 0.0975 for m in models]

    monkeypatch.setattr(netadapt, "runtime_latency", lambda runtime, threads=1: timer)
    timed = netadapt.timed_beside(model, 0.267, "onnxruntime")
    timed([cut])  # the median of two timings is their mean
    assert timed([cut])[0] == pytest.approx(0.0975)  # the median of 0.267, 0.195, 0.195

"""The latency table's fast paths: one shared pass for the cuts' accuracies, one forward per re-fit."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from test_prune_channel import tiny_imported
from torch import nn

from edgeopt.compress.common import strip_output_softmax
from edgeopt.compress.prune import build_dependency_graph, pruned_model
from edgeopt.compress.prune.branches import branch_groups
from edgeopt.compress.prune.channel import apply_channel_plan, channel_scores, channel_units
from edgeopt.compress.prune.netadapt import measure_units
from edgeopt.compress.prune.probe_eval import cut_accuracies, first_difference
from edgeopt.compress.prune.reconstruct import _rows, original_outputs, reconstruct
from edgeopt.data import ImageDataset
from edgeopt.train import evaluate

pytestmark = pytest.mark.usefixtures("one_thread")


def _setup(n: int = 300):
    """The tiny imported ResNet, its cuts (every unit of every group, residual branches whole) re-fitted
    on 64 images, and ``n`` images labelled by the model itself (so it scores 100% and cuts lose)."""
    m = strip_output_softmax(tiny_imported(seed=5))
    images = np.random.default_rng(0).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    with torch.no_grad():
        labels = m.module(torch.from_numpy(m.meta.input.to_model_input(images))).argmax(1).numpy()
    data = ImageDataset(images, labels.astype(np.int64), [str(i) for i in range(10)], "self-labelled")
    cal = torch.from_numpy(m.meta.input.to_model_input(images[:64]))
    dep = build_dependency_graph(m.module, m.example_input(1))
    units = channel_units(dep, channel_scores(m, dep, "l2"), 4, 4, branch_groups(dep))
    return m, data, cal, dep, units


def test_shared_pass_scores_every_cut_as_evaluate_does() -> None:
    m, data, cal, dep, units = _setup()
    targets = original_outputs(m.module, dep, cal)
    cuts = []
    for g in dep.groups:
        removed: set[int] = set()
        for u in units[g.index]:
            removed |= set(u)
            cuts.append(pruned_model(m, dep, set(removed), {"pass": "prune"}, cal, targets))
    starts = [first_difference(m.module, c.module) for c in cuts]
    assert len(set(starts)) > 1 and max(starts) > 2  # later groups really skip a prefix
    ticks: list[float] = []
    base, accs = cut_accuracies(m, cuts, data, ticks.append)
    assert base == evaluate(m, data).accuracy == 1.0
    assert accs == [evaluate(c, data).accuracy for c in cuts]
    assert min(accs) < 1.0  # the cuts change predictions: a wrong start would show
    assert ticks[-1] == 1.0 and len(ticks) == 2  # one tick per batch of 256
    assert first_difference(m.module, copy.deepcopy(m.module)) == len(m.module.ir["nodes"])


def test_measure_units_costs_are_the_accuracy_each_cut_loses() -> None:
    m, data, cal, dep, units = _setup(120)
    table = measure_units(m, dep, units, lambda models: [float(i) for i, _ in enumerate(models)], data, cal)
    # rebuild the same variants and score them whole
    accs, prev = [], {}
    for g in dep.groups:
        removed: set[int] = set()
        prev[g.index] = evaluate(m, data).accuracy
        for u in units[g.index]:
            removed |= set(u)
            acc = evaluate(pruned_model(m, dep, set(removed), {"pass": "prune"}, cal), data).accuracy
            accs.append(prev[g.index] - acc)
            prev[g.index] = acc
    got = [c for g in dep.groups for c in table.costs[g.index]]  # type: ignore[index]
    assert got == pytest.approx(accs, abs=1e-12)


def test_refit_with_captured_targets_is_the_fresh_refit() -> None:
    m, _data, cal, dep, units = _setup(64)
    removed = set(units[0][0])
    cut, _ = apply_channel_plan(m.module, dep, removed)
    fresh, reused = copy.deepcopy(cut), copy.deepcopy(cut)
    reconstruct(m.module, fresh, dep, removed, cal, max_rows=500)
    reconstruct(m.module, reused, dep, removed, cal, max_rows=500, targets=original_outputs(m.module, dep, cal))
    for (name, a), b in zip(fresh.state_dict().items(), reused.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    plain = cut.state_dict()
    assert any(not torch.equal(v, plain[k]) for k, v in fresh.state_dict().items())  # the re-fit did change weights


@pytest.mark.parametrize(("stride", "padding", "dilation"), [(1, 1, 1), (2, 0, 1), (2, 1, 2), (1, 2, 2)])
def test_sampled_rows_are_those_of_the_full_im2col(stride: int, padding: int, dilation: int) -> None:
    layer = nn.Conv2d(3, 4, 3, stride, padding, dilation)
    x = torch.randn(5, 3, 9, 11)
    full = _rows(layer, x, None)
    assert full.shape[0] == 5 * layer(x)[0, 0].numel()
    rows = torch.from_numpy(np.random.default_rng(1).choice(len(full), 37, replace=False))
    torch.testing.assert_close(_rows(layer, x, rows), full[rows], rtol=0, atol=0)

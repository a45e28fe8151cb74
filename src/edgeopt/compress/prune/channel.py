"""Structured channel pruning: score channel classes, pick which to remove, cut the layers.

``prune_channels(model, ratio=0.5)`` removes half the MACs: it builds the dependency graph
(:mod:`.depgraph`), scores each channel class (L1 / L2 norm of every weight slice it owns,
batch-norm scale, or first-order Taylor ``(sum g*w)^2`` over a few batches), picks classes
uniformly (the same fraction of every group) or globally (lowest group-normalised score
first) until the MAC target is met, and returns a physically smaller model: new
Conv2d / Linear / BatchNorm layers with the kept slices copied, no masks. Zoo models record
the new layer sizes in ``arch["layers"]``; imported graphs get a rewritten IR.

Cost: one trace, one scoring pass (Taylor: ``batches`` forward+backward passes), a MAC
search that is pure arithmetic, one module rebuild.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeopt.compress.prune.branches import BRANCH_CONST, branch_constants, branch_groups, drop_branch_nodes
from edgeopt.compress.prune.depgraph import ChannelGroup, DepGraph, build_dependency_graph
from edgeopt.data import ImageDataset
from edgeopt.errors import EdgeoptError
from edgeopt.interop.graph import GraphModule
from edgeopt.model import EdgeModel
from edgeopt.models.resize import layer_sizes, set_submodule

CRITERIA = ("l1", "l2", "bn", "taylor")
ALLOCATIONS = ("uniform", "global", "latency")

# ----------------------------------------------------------------------------- slices of a slot


def _slot_tensors(layer: nn.Module, role: str) -> list[tuple[str, int]]:
    """(tensor attribute, dim) pairs that a channel of this slot indexes."""
    if role == "in":
        return [("weight", 1)]
    if role in ("out", "dw"):
        return [("weight", 0)] + ([("bias", 0)] if getattr(layer, "bias", None) is not None else [])
    if role == "bn":
        names = ["weight", "bias"] if layer.affine else []
        return [(n, 0) for n in names + (["running_mean", "running_var"] if layer.track_running_stats else [])]
    return []


def _per_position(t: torch.Tensor, dim: int, fn: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
    moved = t.detach().movedim(dim, 0).reshape(t.shape[dim], -1)
    return fn(moved).double().numpy()


def _class_sum(dep: DepGraph, per_slot: dict[tuple[str, str], np.ndarray]) -> dict[int, float]:
    out: dict[int, float] = {}
    for key, values in per_slot.items():
        for cls, v in zip(dep.slots[key].elems.tolist(), values.tolist(), strict=True):
            out[cls] = out.get(cls, 0.0) + float(v)
    return out


def norm_scores(module: nn.Module, dep: DepGraph, p: int = 2) -> dict[int, float]:
    """Lp norm of all weights a channel class owns (producer filters, consumer columns, BN affine)."""
    per_slot = {}
    for key in dep.slots:
        path, role = key
        if role not in ("out", "in", "dw"):
            continue
        layer = module.get_submodule(path)
        w = layer.weight
        fn = (lambda r: r.abs().sum(1)) if p == 1 else (lambda r: r.pow(2).sum(1))
        per_slot[key] = _per_position(w, 1 if role == "in" else 0, fn)
    sums = _class_sum(dep, per_slot)
    return {c: (v if p == 1 else math.sqrt(v)) for c, v in sums.items()}


def bn_scores(module: nn.Module, dep: DepGraph) -> dict[int, float]:
    """Sum of |gamma| over the batch norms of each class; classes with no BN fall back to the L2 norm."""
    per_slot = {}
    for key in dep.slots:
        if key[1] == "bn":
            per_slot[key] = module.get_submodule(key[0]).weight.detach().abs().double().numpy()
    bn = _class_sum(dep, per_slot)
    l2 = norm_scores(module, dep, 2)
    return {c: bn.get(c, l2[c]) for c in l2} if bn else l2


def taylor_scores(
    module: nn.Module, dep: DepGraph, batches: list[tuple[torch.Tensor, torch.Tensor]], loss_fn: Callable | None = None
) -> dict[int, float]:
    """First-order Taylor importance (Molchanov et al. 2019): mean over batches of (sum over the class's
    weights of gradient x weight)^2 -- the estimated loss change when the class is removed.

    Cost: one forward+backward pass per batch.
    """
    loss_fn = loss_fn or (lambda out, y: nn.functional.cross_entropy(out, y))
    was = module.training
    module.eval()  # BN in eval: scores must not depend on the tiny batches' statistics
    totals: dict[int, float] = {}
    try:
        for x, y in batches:
            module.zero_grad(set_to_none=True)
            loss_fn(module(x), y).backward()
            per_slot = {}
            for key in dep.slots:
                path, role = key
                if role in ("reshape", "const"):
                    continue
                layer = module.get_submodule(path)
                acc = None
                for name, dim in _slot_tensors(layer, role):
                    t = getattr(layer, name)
                    if not isinstance(t, nn.Parameter) or t.grad is None:
                        continue
                    v = _per_position(t * t.grad, dim, lambda r: r.sum(1))
                    acc = v if acc is None else acc + v
                if acc is not None:
                    per_slot[key] = acc
            for c, v in _class_sum(dep, per_slot).items():
                totals[c] = totals.get(c, 0.0) + v * v
    finally:
        module.zero_grad(set_to_none=True)
        module.train(was)
    return {c: v / max(1, len(batches)) for c, v in totals.items()}


def normalised(scores: dict[int, float], groups: list[ChannelGroup]) -> dict[int, float]:
    """Scores divided by their group's mean, so groups of different scale compare (global allocation)."""
    out = {}
    for g in groups:
        mean = float(np.mean([scores.get(c, 0.0) for c in g.classes])) or 1.0
        for c in g.classes:
            out[c] = scores.get(c, 0.0) / mean
    return out


# ----------------------------------------------------------------------------- MACs of a plan


@dataclass
class MacModel:
    """MACs of the model for any set of removed classes, as arithmetic on the dependency graph."""

    layers: list[tuple[str, str, dict[str, Any]]]  # (path, kind, fixed factors)
    counts: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]  # slot -> (classes, positions of each)

    def macs(self, removed: set[int]) -> int:
        rem = np.fromiter(removed, np.int64, len(removed))

        def kept(slot: tuple[str, str], full: int) -> int:
            c = self.counts.get(slot)
            if c is None:
                return full
            return full - int(c[1][np.isin(c[0], rem)].sum())

        total = 0
        for path, kind, f in self.layers:
            if kind == "conv":
                cout = kept((path, "out"), f["out"])
                cin = kept((path, "in"), f["in"])
                total += cout * cin * f["k"]
            elif kind == "dw":
                total += kept((path, "dw"), f["out"]) * f["k"]
            elif kind == "grouped":
                total += f["macs"]
            elif kind == "linear":
                total += kept((path, "out"), f["out"]) * kept((path, "in"), f["in"]) * f["rows"]
        return total


def mac_model(module: nn.Module, dep: DepGraph) -> MacModel:
    """Build the MAC calculator for ``module``'s layers (conv: Cout*Cin/groups*kh*kw*Hout*Wout; linear)."""
    layers = []
    for path, (_x, out) in dep.layer_io.items():
        layer = module.get_submodule(path)
        oshape = dep.shapes[out]
        if isinstance(layer, nn.Conv1d | nn.Conv2d):  # kernel positions x output positions
            k = int(np.prod(layer.kernel_size)) * int(np.prod(oshape[2:]))
            if layer.groups == 1:
                layers.append((path, "conv", {"out": layer.out_channels, "in": layer.in_channels, "k": k}))
            elif (path, "dw") in dep.slots:
                layers.append((path, "dw", {"out": layer.out_channels, "k": k}))
            else:
                macs = layer.out_channels * layer.in_channels // layer.groups * k
                layers.append((path, "grouped", {"macs": macs}))
        elif isinstance(layer, nn.Linear):
            rows = int(np.prod(oshape[:-1])) // max(1, oshape[0])
            layers.append((path, "linear", {"out": layer.out_features, "in": layer.in_features, "rows": rows}))
    counts = {key: np.unique(slot.elems, return_counts=True) for key, slot in dep.slots.items()}
    return MacModel(layers, counts)


# ----------------------------------------------------------------------------- selection


def _units(
    group: ChannelGroup, scores: dict[int, float], round_to: int, min_keep: int = 1, whole: bool = False
) -> list[list[int]]:
    """The group's classes, weakest first, chunked so that removing whole chunks leaves an allowed width:
    the current width, multiples of ``round_to`` (SIMD-friendly for XNNPACK / ONNX Runtime kernels),
    ``min_keep`` itself when that is below ``round_to``, and 0 when the group may go ``whole``."""
    order = sorted(group.classes, key=lambda c: (scores.get(c, 0.0), c))
    size = len(order)
    allowed = {size, *range(round_to, size + 1, round_to)} | ({0} if whole else set())
    if min_keep < round_to:
        allowed.add(min_keep)
    widths = sorted((w for w in allowed if (0 if whole else 1) <= w <= size), reverse=True)
    return [order[size - a : size - b] for a, b in zip(widths, widths[1:], strict=False)]


def channel_units(
    dep: DepGraph, scores: dict[int, float], round_to: int, min_keep: int = 1, whole: set[int] | None = None
) -> dict[int, list[list[int]]]:
    """Every group's removable units, weakest first (see ``_units``), keyed by group index; groups in
    ``whole`` (residual branches, :func:`.branches.branch_groups`) end with a unit that removes the rest."""
    return {g.index: _units(g, scores, round_to, min_keep, g.index in (whole or ())) for g in dep.groups}


def saving_rates(savings: list[float]) -> list[float]:
    """Per unit, the best average saving per unit over this unit and any run of units after it.

    Runtimes pad channels to SIMD blocks, so a cut can save nothing until the next one crosses a
    block; looking ahead credits the whole run. Negative (noise) savings count as zero. Pure.
    """
    cum = np.maximum.accumulate(np.cumsum(np.maximum(np.asarray(savings, dtype=float), 0.0))) if savings else []
    prev = np.concatenate([[0.0], cum[:-1]]) if len(cum) else []
    return [max((cum[j] - prev[i]) / (j - i + 1) for j in range(i, len(cum))) for i in range(len(cum))]


def select_channels(
    dep: DepGraph,
    macs: MacModel,
    scores: dict[int, float],
    target_macs: int,
    allocation: str = "uniform",
    round_to: int = 1,
    min_keep: int = 1,
    max_fraction: float = 0.9,
    unit_savings: dict[int, list[float]] | None = None,
    whole: set[int] | None = None,
    unit_costs: dict[int, list[float]] | None = None,
) -> set[int]:
    """Classes to remove so that the model needs at most ``target_macs`` MACs.

    ``uniform``: the same fraction of every group (binary search on the fraction); ``global``:
    lowest group-normalised score first; ``latency``: lowest score per measured latency saved first
    (``unit_savings``: per group, the latency each successive unit of :func:`channel_units` saves;
    ``unit_costs``, when measured: the accuracy each loses, which then replaces the score).
    Every group keeps ``max(min_keep, (1-max_fraction)*size)`` channels, or none for groups in
    ``whole`` (residual branches that may go entirely). Raises when even that cannot reach the
    target. Pure: no model is touched.
    """
    if allocation not in ALLOCATIONS:
        raise EdgeoptError(f"unknown allocation '{allocation}'", f"use {', '.join(ALLOCATIONS)}")
    if allocation == "latency" and unit_savings is None:
        raise EdgeoptError("latency allocation needs measured latencies", "give a runtime to measure in")
    if macs.macs(set()) <= target_macs:
        return set()
    whole = whole or set()
    units = channel_units(dep, scores, round_to, min_keep, whole)
    floors = {g.index: 0 if g.index in whole else max(min_keep, math.ceil((1 - max_fraction) * g.size))
              for g in dep.groups}  # fmt: skip

    if allocation == "uniform":

        def plan_units(frac: float) -> list[list[int]]:
            out: list[list[int]] = []
            for g in dep.groups:
                want = int(frac * g.size)
                taken = 0
                for u in units[g.index]:
                    if taken + len(u) > want or g.size - taken - len(u) < floors[g.index]:
                        break
                    taken += len(u)
                    out.append(u)
            return out

        def plan(frac: float) -> set[int]:
            return {c for u in plan_units(frac) for c in u}

        lo, hi = 0.0, 1.0
        if macs.macs(plan(hi)) > target_macs:
            _unreachable(macs.macs(plan(hi)), target_macs)
        for _ in range(40):
            mid = (lo + hi) / 2
            if macs.macs(plan(mid)) <= target_macs:
                hi = mid
            else:
                lo = mid
        # coarse units (a few channels are half a narrow group) can overshoot the target: give back
        return _give_back(plan_units(hi), dep, macs, target_macs)
    # global / latency: merge every group's units by score (per latency saved)
    norm = normalised(scores, dep.groups)
    rates = {gi: saving_rates(v) for gi, v in (unit_savings or {}).items()}
    cands = []
    for g in dep.groups:
        for i, u in enumerate(units[g.index]):
            key = float(np.mean([norm[c] for c in u]))
            if allocation == "latency":
                if unit_costs is not None:  # measured accuracy lost (noise below 0.1 pt counts as 0.1 pt)
                    key = max(unit_costs[g.index][i], 1e-3)
                key /= max(rates[g.index][i] if i < len(rates[g.index]) else 0.0, 1e-6)
            cands.append((key, g.index, i, u))
    cands.sort(key=lambda t: (t[0], t[1], t[2]))
    order: list[list[int]] = []  # units in the order they are removed
    left = {g.index: g.size for g in dep.groups}
    done = {g.index: 0 for g in dep.groups}
    pending: dict[int, list[tuple[int, list[int]]]] = {g.index: [] for g in dep.groups}
    for _score, gi, i, u in cands:
        pending[gi].append((i, u))
        pending[gi].sort()  # a group's units go weakest first, whatever their global rank
        while pending[gi] and pending[gi][0][0] == done[gi]:
            _, unit = pending[gi].pop(0)
            if left[gi] - len(unit) < floors[gi]:
                pending[gi], done[gi] = [], -1
                break
            order.append(unit)
            left[gi] -= len(unit)
            done[gi] += 1

    def prefix(k: int) -> set[int]:
        return {c for u in order[:k] for c in u}

    if macs.macs(prefix(len(order))) > target_macs:
        _unreachable(macs.macs(prefix(len(order))), target_macs)
    lo, hi = 0, len(order)  # smallest prefix that meets the target (MACs fall as the prefix grows)
    while lo < hi:
        mid = (lo + hi) // 2
        if macs.macs(prefix(mid)) <= target_macs:
            hi = mid
        else:
            lo = mid + 1
    return _give_back(order[:lo], dep, macs, target_macs)


def weakest_beyond(dep: DepGraph, scores: dict[int, float], widths: list[int]) -> set[int]:
    """Classes to remove so that each group keeps ``widths[i]`` channels: its weakest go.

    Width 0 removes a residual branch whole (:func:`.branches.branch_groups` says which groups may). Pure.
    """
    if len(widths) != len(dep.groups):
        raise EdgeoptError(f"{len(widths)} widths for {len(dep.groups)} channel groups",
                           "give one width per group: " + ", ".join(str(g.size) for g in dep.groups))  # fmt: skip
    removed: set[int] = set()
    whole = branch_groups(dep) if 0 in widths else set()
    for g, w in zip(dep.groups, widths, strict=True):
        if not (1 if g.index not in whole else 0) <= w <= g.size:
            hint = "0 (the whole residual branch) or " if g.index in whole else ""
            raise EdgeoptError(f"width {w} for {g.describe()}", f"keep {hint}between 1 and {g.size} channels")
        removed |= set(sorted(g.classes, key=lambda c: (scores.get(c, 0.0), c))[: g.size - w])
    return removed


def _give_back(removed_units: list[list[int]], dep: DepGraph, macs: MacModel, target_macs: int) -> set[int]:
    """Restore units cut past the target: the unit that crossed it may be large (a wide group at a
    high resolution), so the strongest removed units that still fit under the target come back, each
    group's last-removed unit first (a group's cuts stay weakest-first). Pure."""
    group_of = {c: g.index for g in dep.groups for c in g.classes}
    kept = list(removed_units)
    for unit in reversed(removed_units):
        last_of_group = [u for u in kept if group_of[u[0]] == group_of[unit[0]]][-1]
        trial = [u for u in kept if u is not unit]
        if last_of_group is unit and macs.macs({c for u in trial for c in u}) <= target_macs:
            kept = trial
    return {c for u in kept for c in u}


def _unreachable(best: int, target: int) -> None:
    raise EdgeoptError(
        f"cannot reach {target:,} MACs by channel pruning (the most it can remove leaves {best:,})",
        "ask for a smaller reduction, or let groups keep fewer channels (a lower --min-keep or --round-to)",
    )


# ----------------------------------------------------------------------------- physical pruning


def apply_channel_plan(module: nn.Module, dep: DepGraph, removed: set[int]) -> tuple[nn.Module, dict[str, Any]]:
    """A physically smaller copy of ``module`` without the ``removed`` channel classes.

    Returns the new module and the new sizes of every resized layer (``{path: sizes}``). For an
    imported ``GraphModule`` the IR's shape attributes are rewritten and the module rebuilt from it.
    """
    new = copy.deepcopy(module)
    removed_arr = np.fromiter(removed, np.int64, len(removed))

    def keep(key: tuple[str, str], n: int) -> torch.Tensor:
        return torch.from_numpy(dep.kept(key, removed, n))

    sizes: dict[str, Any] = {}
    dead: set[str] = set()  # layers left with no output channel (a removed residual branch)
    const: dict[str, torch.Tensor] = {}  # layers left with no input channel -> their constant output
    for path in dep.layer_io:
        layer = module.get_submodule(path)
        with torch.no_grad():
            if isinstance(layer, nn.Conv1d | nn.Conv2d | nn.Linear):
                conv = isinstance(layer, nn.Conv1d | nn.Conv2d)
                n_out, n_in = layer.weight.shape[0], layer.weight.shape[1] * getattr(layer, "groups", 1)
                dw = (path, "dw") in dep.slots
                ko = keep((path, "dw" if dw else "out"), n_out)
                ki = ko if dw else keep((path, "in"), n_in)
                if len(ko) == n_out and len(ki) == n_in:
                    continue
                if len(ko) == 0:  # a removed residual branch: its first layer goes...
                    dead.add(path)
                    continue
                if len(ki) == 0:  # ...and the one that consumed it outputs a constant
                    const[path] = _constant_output(layer, ko)
                    continue
                nl = _cut_conv(layer, ko, ki, dw) if conv else _cut_linear(layer, ko, ki)
            elif isinstance(layer, nn.BatchNorm2d | nn.BatchNorm1d):
                k = keep((path, "bn"), layer.num_features)
                if len(k) == layer.num_features:
                    continue
                if len(k) == 0:
                    dead.add(path)
                    continue
                nl = type(layer)(len(k), layer.eps, layer.momentum, layer.affine, layer.track_running_stats)
                if layer.affine:
                    nl.weight.copy_(layer.weight[k])
                    nl.bias.copy_(layer.bias[k])
                if layer.track_running_stats:
                    nl.running_mean.copy_(layer.running_mean[k])
                    nl.running_var.copy_(layer.running_var[k])
                    nl.num_batches_tracked.copy_(layer.num_batches_tracked)
            else:
                continue
        nl.train(layer.training)
        set_submodule(new, path, nl)
        sizes[path] = layer_sizes(nl)
    if (dead or const) and not isinstance(module, GraphModule):
        raise EdgeoptError("removing a whole residual branch needs an imported graph model",
                           "export the model to .onnx and import it, or keep at least 1 channel")  # fmt: skip
    if isinstance(module, GraphModule):
        consts = {path: module.get_buffer(path) for path, role in dep.slots if role == "const"}
        cut = {path: c[:, keep((path, "const"), c.shape[1])].clone() for path, c in consts.items()}
        new = _rebuild_graph(new, dep, removed_arr, sizes, dead, const, cut)
    return new, sizes


def _cut_conv(layer: nn.Conv1d | nn.Conv2d, ko: torch.Tensor, ki: torch.Tensor, depthwise: bool) -> nn.Module:
    nl = type(layer)(len(ki), len(ko), layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                   len(ko) if depthwise else layer.groups, layer.bias is not None, layer.padding_mode)  # fmt: skip
    w = layer.weight[ko]
    nl.weight.copy_(w if depthwise else w[:, ki])
    if layer.bias is not None:
        nl.bias.copy_(layer.bias[ko])
    return nl


def _cut_linear(layer: nn.Linear, ko: torch.Tensor, ki: torch.Tensor) -> nn.Linear:
    nl = nn.Linear(len(ki), len(ko), layer.bias is not None)
    nl.weight.copy_(layer.weight[ko][:, ki])
    if layer.bias is not None:
        nl.bias.copy_(layer.bias[ko])
    return nl


def _constant_output(layer: nn.Module, ko: torch.Tensor) -> torch.Tensor:
    """What a Conv2d / Linear left with no input channel outputs: its bias (kept rows), broadcastable."""
    b = layer.bias[ko] if layer.bias is not None else torch.zeros(len(ko))
    spatial = layer.weight.dim() - 2 if isinstance(layer, nn.Conv1d | nn.Conv2d) else 0
    return b.detach().reshape([1, -1] + [1] * spatial).clone()


def _rebuild_graph(
    pruned: GraphModule,
    dep: DepGraph,
    removed: np.ndarray,
    sizes: dict[str, Any],
    dead: set[str],
    const: dict[str, torch.Tensor],
    cut_consts: dict[str, torch.Tensor],
) -> GraphModule:
    """``pruned``'s graph with the new layer sizes, per-channel constants and removed branches."""
    state = pruned.state_dict()
    if dead or const:
        mod = len("mods.")
        ir, consts = drop_branch_nodes(pruned, {p[mod:] for p in dead}, {p[mod:]: c for p, c in const.items()})
        gone = tuple(f"{p}." for p in dead | set(const))
        state = {k: v for k, v in state.items() if not k.startswith(gone)}
        state.update({f"consts.{n}": c for n, c in consts.items()})
    else:
        ir = copy.deepcopy(pruned.ir)
    state.update(cut_consts)
    for node in ir["nodes"]:
        path = f"mods.{node['name']}"
        a = node["attrs"]
        if f"consts.{node['name']}" in cut_consts:
            a["shape"] = list(cut_consts[f"consts.{node['name']}"].shape)
        if path in sizes:
            s = sizes[path]
            if s["type"] in ("conv2d", "conv1d"):
                a.update(in_channels=s["in_channels"], out_channels=s["out_channels"], groups=s["groups"])
            elif s["type"] == "linear":
                a.update(in_features=s["in_features"], out_features=s["out_features"])
            else:
                a.update(num_features=s["num_features"])
        key = (node["name"], "reshape")
        if node["op"] == "reshape" and key in dep.slots:
            elems = dep.slots[key].elems
            n_keep = int((~np.isin(elems, removed)).sum())
            out_shape = dep.shapes[node["outputs"][0]]
            axis = next(i for i, s in enumerate(out_shape) if s == len(elems) and i > 0)
            if a["shape"][axis] not in (-1, 0):
                a["shape"][axis] = n_keep
    gm = GraphModule(ir)
    gm.load_state_dict(state)
    return gm.train(pruned.training)


# ----------------------------------------------------------------------------- the model-level API


@dataclass
class ChannelPruneReport:
    """What channel pruning did: MACs and parameters before/after, per-group channel counts."""

    criterion: str
    allocation: str
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    groups: list[dict[str, Any]] = field(default_factory=list)

    @property
    def mac_ratio(self) -> float:
        return self.macs_after / max(1, self.macs_before)

    @property
    def widths(self) -> list[int]:
        """Channels each group keeps, in group order (what ``--widths`` takes)."""
        return [g["after"] for g in self.groups]

    def widths_text(self) -> str:
        """The groups' channel counts as "before->after" where cut, e.g. "16, 32->16, 64->32"."""
        return ", ".join(f"{g['before']}" if g["after"] == g["before"] else f"{g['before']}->{g['after']}"
                         for g in self.groups)  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {
            "criterion": self.criterion, "allocation": self.allocation, "macs_before": self.macs_before,
            "macs_after": self.macs_after, "mac_ratio": self.mac_ratio, "params_before": self.params_before,
            "params_after": self.params_after, "groups": self.groups,
        }  # fmt: skip


def channel_scores(
    model: EdgeModel,
    dep: DepGraph,
    criterion: str = "l2",
    batches: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> dict[int, float]:
    """Importance of every channel class of ``model`` under ``criterion`` (l1, l2, bn, taylor)."""
    if criterion not in CRITERIA:
        raise EdgeoptError(f"unknown importance criterion '{criterion}'", f"use one of: {', '.join(CRITERIA)}")
    if criterion == "l1":
        return norm_scores(model.module, dep, 1)
    if criterion == "l2":
        return norm_scores(model.module, dep, 2)
    if criterion == "bn":
        return bn_scores(model.module, dep)
    if not batches:
        raise EdgeoptError("Taylor importance needs data", "give --data, or use --criterion l2")
    from edgeopt.compress.common import as_logits

    return taylor_scores(model.module, dep, batches, lambda out, y: nn.functional.cross_entropy(as_logits(out), y))


def pruned_model(
    model: EdgeModel,
    dep: DepGraph,
    removed: set[int],
    step: dict[str, Any],
    calibration: torch.Tensor | None = None,
    targets: dict[str, torch.Tensor] | None = None,
) -> EdgeModel:
    """The EdgeModel with ``removed`` classes cut out; its ``arch`` rebuilds it (checked by reloading).

    With ``calibration`` inputs, the kept weights are re-fitted by least squares to reproduce the
    original layers' outputs (:func:`edgeopt.compress.prune.reconstruct.reconstruct`); ``targets``:
    those outputs when a search already captured them (``reconstruct.original_outputs``).
    """
    from edgeopt.model import build_module

    new_module, sizes = apply_channel_plan(model.module, dep, removed)
    if calibration is not None and isinstance(new_module, GraphModule):
        # a branch removed now is best replaced by its mean output (least squares), not its bias
        before = {n["name"] for n in model.module.ir["nodes"]}  # type: ignore[union-attr]
        nodes = [n for n in new_module.ir["nodes"]
                 if n["op"] == "const" and n["source"] == BRANCH_CONST and n["name"] not in before]  # fmt: skip
        means = branch_constants(model.module, [n["outputs"][0] for n in nodes], calibration) if nodes else []
        for node, mean in zip(nodes, means, strict=True):
            kept = dep.kept((f"mods.{node['attrs']['channels_of']}", "out"), removed, mean.shape[1])
            getattr(new_module.consts, node["name"]).copy_(mean[:, torch.from_numpy(kept)])
    if calibration is not None and removed:
        from edgeopt.compress.prune.reconstruct import reconstruct

        reconstruct(model.module, new_module, dep, removed, calibration, targets=targets)
    out = model.with_lineage(step, new_module.eval())
    if isinstance(new_module, GraphModule):
        out.meta.arch = {"kind": "graph", "ir": new_module.ir}
    elif out.meta.arch.get("kind") == "zoo":
        layers = dict(out.meta.arch.get("layers", {}))
        layers.update(sizes)
        out.meta.arch = {**out.meta.arch, "layers": layers}
    else:
        raise EdgeoptError(f"cannot record a pruned '{out.meta.arch.get('kind')}' architecture", "save as .pt2")
    # the record must rebuild exactly this module
    rebuilt = build_module(out.meta.arch)
    rebuilt.load_state_dict(new_module.state_dict())
    return out


def prune_channels(
    model: EdgeModel,
    ratio: float | None = None,
    target_macs: int | None = None,
    criterion: str = "l2",
    allocation: str = "uniform",
    round_to: int = 1,
    min_keep: int = 1,
    max_fraction: float = 0.9,
    batches: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    calibration: torch.Tensor | None = None,
    runtime: str = "onnxruntime",
    threads: int = 1,
    widths: list[int] | None = None,
    eval_data: ImageDataset | None = None,
    latency_fn: Any = None,
    size_weight: float = 0.0,
) -> tuple[EdgeModel, ChannelPruneReport]:
    """Remove channels until the model needs ``(1 - ratio)`` of its MACs (or ``target_macs``).

    ``ratio`` is the fraction of MACs to remove (0.5 halves them). ``criterion``: l1, l2, bn,
    taylor (needs ``batches`` of (input, label)). ``allocation``: uniform, global, or latency
    (global ranking by importance per latency saved, measured in ``runtime`` at ``threads``:
    the MAC budget is spent where the runtime is fastest; with ``eval_data``, an ImageDataset of a
    few hundred held-out images, importance is the accuracy each cut measurably loses, and
    residual branches of imported graphs may go whole). Kept channel counts are multiples of
    ``round_to`` where the group allows. ``calibration`` (a batch of inputs) turns on
    least-squares reconstruction of the kept weights. ``widths`` instead of a target: the channels
    each group keeps, in group order (an allocation found elsewhere, e.g. by a latency survey); the
    weakest go. ``latency_fn`` (``netadapt.LatencyFn``, e.g. a device profile's predictor from
    ``netadapt.latency_source``) replaces timing in ``runtime``. ``size_weight`` > 0 (latency allocation): a cut's
    weights saved count beside its time saved, both as fractions of the whole (``UnitTable.weighed_savings``), for a
    flash limit as well as a latency one. Cost: see module doc; ``latency``
    adds one export and timing (or one prediction) per removable unit, and with ``eval_data`` one
    re-fit per unit and one shared pass over ``eval_data`` (:func:`.netadapt.measure_units`).
    """
    if sum(t is not None for t in (ratio, target_macs, widths)) != 1:
        raise EdgeoptError("give exactly one of a pruning ratio, a MAC target or widths",
                           "--ratio R, --target-macs M or --widths W1,W2,...")  # fmt: skip
    if ratio is not None and not 0.0 <= ratio < 1.0:
        raise EdgeoptError(f"pruning ratio {ratio} is not in [0, 1)", "e.g. --ratio 0.5 removes half the MACs")
    dep = build_dependency_graph(model.module, model.example_input(1))
    if not dep.groups:
        raise EdgeoptError("the model has no prunable channels", "channel pruning needs conv or linear layers")
    macs = mac_model(model.module, dep)
    before = macs.macs(set())
    target = int(round(before * (1 - ratio))) if ratio is not None else int(target_macs or 0)
    scores = channel_scores(model, dep, criterion, batches)
    if widths is not None:
        allocation = "widths"
        removed = weakest_beyond(dep, scores, widths)
        target = macs.macs(removed)
    else:
        table, whole = None, set()
        if allocation == "latency":
            from edgeopt.compress.prune.netadapt import measure_units, runtime_latency

            # measured time and accuracy are what can tell whether a whole residual branch is worth it
            whole = branch_groups(dep) if eval_data is not None and isinstance(model.module, GraphModule) else set()
            units = channel_units(dep, scores, round_to, min_keep, whole)
            timer = latency_fn or runtime_latency(runtime, threads)
            table = measure_units(model, dep, units, timer, eval_data, calibration)
        savings = table.weighed_savings(size_weight) if table else None
        removed = select_channels(dep, macs, scores, target, allocation, round_to, min_keep, max_fraction,
                                  savings, whole, table and table.costs)  # fmt: skip
    step = {"pass": "prune", "method": "channel", "criterion": criterion, "allocation": allocation,
            "target_macs": target, "macs_before": before, "macs_after": macs.macs(removed)}  # fmt: skip
    step["reconstructed"] = calibration is not None
    out = pruned_model(model, dep, removed, step, calibration)
    report = ChannelPruneReport(
        criterion, allocation, before, macs.macs(removed), _params(model.module), _params(out.module),
        [{"producers": [m for m, r in g.slots if r in ("out", "dw")], "before": g.size,
          "after": g.size - len(set(g.classes) & removed)} for g in dep.groups],
    )  # fmt: skip
    return out, report


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def group_sizes(model: EdgeModel) -> list[int]:
    """Channels in each of ``model``'s channel groups, in the order ``widths`` are given."""
    return [g.size for g in build_dependency_graph(model.module, model.example_input(1)).groups]


def channel_macs(model: EdgeModel) -> int:
    """The MACs that channel pruning's targets are counted in (convolutions and linear layers)."""
    return mac_model(model.module, build_dependency_graph(model.module, model.example_input(1))).macs(set())


def calibration_inputs(model: EdgeModel, data: Any, n: int = 512, seed: int = 0) -> torch.Tensor:
    """``n`` images drawn reproducibly from an ImageDataset, as one input batch (for reconstruction)."""
    idx = np.sort(np.random.default_rng(seed).choice(len(data), size=min(n, len(data)), replace=False))
    return torch.from_numpy(model.meta.input.to_model_input(data.images[idx]))


def sample_batches(model: EdgeModel, data: Any, n: int = 4, batch: int = 64, seed: int = 0) -> list:
    """``n`` (input, label) batches drawn reproducibly from an ImageDataset, for Taylor scoring."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        idx = rng.choice(len(data), size=min(batch, len(data)), replace=False)
        x = torch.from_numpy(model.meta.input.to_model_input(data.images[idx]))
        out.append((x, torch.from_numpy(data.labels[idx])))
    return out

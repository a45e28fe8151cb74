"""Removing a whole residual branch: channel pruning down to zero width.

A residual block computes ``x + f(x)``. When every inner channel of ``f`` goes (the group that
its first convolution produces and its last one consumes), the first convolution disappears and
the last one has no input left: its output is a per-channel constant (its bias, or better the
mean output of the removed branch on calibration images). The block becomes ``x + c`` -- two
convolutions fewer, which runtimes turn into real time saved (no SIMD blocking or per-op overhead
left behind, unlike a narrow layer). This is depth pruning expressed in the channel dependency
graph, so it composes with the channel cuts of the other groups.

Only imported graphs (``GraphModule``) are rewritten: their IR can drop nodes and take a constant;
a zoo module's Python class cannot lose a layer.

Cost: pure graph arithmetic, plus one forward over the calibration images for the constants.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import torch

from edgeopt.compress.prune.depgraph import ChannelGroup, DepGraph
from edgeopt.errors import EdgeoptError
from edgeopt.interop.graph import OPS, GraphModule

# ops that act on each channel alone: a removed (dead) input leaves a dead output, a constant one a constant
_PER_CHANNEL = {
    "relu", "relu6", "clamp", "leaky_relu", "sigmoid", "tanh", "hardswish", "hardsigmoid", "identity", "batchnorm",
}  # fmt: skip
_CARRY_DEAD = _PER_CHANNEL | {"pad", "avg_pool2d", "max_pool2d"}
_TAKES_CONST = {"add", "sub", "mul", "div"}
BRANCH_CONST = "removed residual branch"  # the source tag of the constants that replace a branch


def branch_groups(dep: DepGraph) -> set[int]:
    """Indices of the groups that may lose every channel: the inner channels of residual branches.

    A group qualifies when each layer consuming it takes nothing else as input (so it becomes a
    constant) and adds its output to a tensor produced by a layer outside the branch (so the
    model still depends on its input). Pure.
    """
    return {g.index for g in dep.groups if _is_branch(dep, g)}


def _is_branch(dep: DepGraph, g: ChannelGroup) -> bool:
    classes = set(g.classes)
    producers = {m for m, r in g.slots if r == "out"}
    consumers = {m for m, r in g.slots if r == "in"}
    if not consumers or any(r == "reshape" for _, r in g.slots):
        return False

    def added_to_a_live_tensor(c: str) -> bool:
        outs = dep.slots.get((c, "out"))
        if outs is None or not set(dep.slots[(c, "in")].elems.tolist()) <= classes:
            return False
        shared = set(outs.elems.tolist())  # the add joins these with the other operand's producer
        return any(r == "out" and m not in consumers | producers and shared <= set(s.elems.tolist())
                   for (m, r), s in dep.slots.items())  # fmt: skip

    return all(added_to_a_live_tensor(c) for c in consumers)


def drop_branch_nodes(
    pruned: GraphModule, dead_layers: set[str], const_layers: dict[str, torch.Tensor]
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The IR of ``pruned`` without its removed branches, and the constants that replace them.

    ``dead_layers``: node names of layers left with no output channel; ``const_layers``: node name
    of each layer left with no input channel -> its constant output (``[1, C, 1, 1]`` for a conv).
    Per-channel ops after a constant are evaluated now; the constant enters the graph where it
    meets a live tensor (an ``add``) as a ``const`` node (source ``BRANCH_CONST``, attribute
    ``channels_of``: the layer whose kept output channels it has) producing the value it replaces.
    Returns (ir, {const node name: tensor}). Raises when a removed value reaches an op that needs
    it (the group was not a residual branch).
    """
    ir = copy.deepcopy(pruned.ir)
    taken = {n["name"] for n in ir["nodes"]}
    dead: set[str] = set()
    consts: dict[str, torch.Tensor] = {}  # value -> constant
    origin: dict[str, str] = {}  # value -> the layer whose (kept) output channels the constant has
    emitted: dict[str, torch.Tensor] = {}  # const node -> constant
    nodes: list[dict[str, Any]] = []
    for node in ir["nodes"]:
        name, op, ins, out = node["name"], node["op"], node["inputs"], node["outputs"][0]
        if name in dead_layers:
            dead.add(out)
            continue
        if name in const_layers:
            consts[out], origin[out] = const_layers[name], name
            continue
        if any(v in dead for v in ins):
            if op not in _CARRY_DEAD or len(ins) != 1:
                raise _not_a_branch(name, op)
            dead.add(out)
            continue
        if any(v in consts for v in ins):
            if op in _PER_CHANNEL and len(ins) == 1:
                with torch.no_grad():
                    consts[out] = OPS[op].run(pruned, name, node.get("attrs", {}), [consts[ins[0]]])
                origin[out] = origin[ins[0]]
                continue
            if op not in _TAKES_CONST or all(v in consts for v in ins):
                raise _not_a_branch(name, op)
            for v in ins:
                if v in consts:
                    cname = next(f"branch_const_{i}" for i in itertools.count() if f"branch_const_{i}" not in taken)
                    taken.add(cname)
                    emitted[cname] = consts.pop(v).detach().clone()
                    nodes.append({"name": cname, "op": "const", "inputs": [], "outputs": [v], "source": BRANCH_CONST,
                                  "attrs": {"shape": list(emitted[cname].shape), "dtype": "float32",
                                            "channels_of": origin[v]}})  # fmt: skip
        nodes.append(node)
    if any(v in dead or v in consts for v in ir["outputs"]):
        raise EdgeoptError("removing those channels leaves the model output constant", "keep at least 1 channel")
    ir["nodes"] = nodes
    return ir, emitted


def branch_constants(original: GraphModule, values: list[str], x: torch.Tensor) -> list[torch.Tensor]:
    """Per-channel mean of each named value of ``original`` over the inputs ``x`` (keeping dims)."""
    env = {original.input_names[0]: x}
    was = original.training
    original.eval()
    try:
        with torch.no_grad():
            for run, name, attrs, ins, out, _frees in original._plan:
                env[out] = run(original, name, attrs, [env[v] for v in ins])
    finally:
        original.train(was)
    return [env[v].mean(dim=[0, *range(2, env[v].dim())], keepdim=True) for v in values]


def _not_a_branch(name: str, op: str) -> EdgeoptError:
    return EdgeoptError(
        f"cannot remove every channel there: node '{name}' ({op}) needs them",
        "width 0 is only for the inner channels of a residual branch; keep at least 1 channel",
    )

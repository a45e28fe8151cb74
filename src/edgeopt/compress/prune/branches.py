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

Once training is done, :func:`fold_branch_constants` moves each constant into the bias of the layer
before its add where that is exact, so no add of a constant is left for a runtime to run (in int8
ONNX Runtime such an add stays a float op between dequantize and quantize).

Cost: pure graph arithmetic, plus one forward over the calibration images for the constants.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import torch

from edgeopt.compress.prune.depgraph import ChannelGroup, DepGraph
from edgeopt.errors import EdgeoptError
from edgeopt.interop.graph import OPS, GraphModule, is_quantized_ir

# ops that act on each channel alone: a removed (dead) input leaves a dead output, a constant one a constant
_PER_CHANNEL = {
    "relu", "relu6", "clamp", "leaky_relu", "sigmoid", "tanh", "hardswish", "hardsigmoid", "identity", "batchnorm",
}  # fmt: skip
_CARRY_DEAD = _PER_CHANNEL | {"pad", "avg_pool2d", "max_pool2d"}
_TAKES_CONST = {"add", "sub", "mul", "div"}
_BIASED = {"conv2d", "conv1d", "linear"}  # layers whose bias can absorb a per-channel constant
_CLAMP_AT_ZERO = {"relu", "relu6"}  # f(relu(a) + c) == f(a + c-) + c+ for these f (fold_branch_constants)
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


def fold_branch_constants(module: GraphModule) -> GraphModule:
    """``module`` with each removed branch's constant folded into biases, so no add of a constant is left.

    Per constant ``c`` (``[1, C, 1, ...]``) added to the output of a conv/linear layer ``L``:

    - ``L(x) + c`` becomes ``L'(x)`` with bias ``b + c``: exact.
    - ``f(relu(L(x)) + c)``, ``f`` relu or relu6, equals ``f(L(x) + c-) + c+`` (``c-``/``c+``: the
      negative/positive parts). ``c-`` goes into ``L``'s bias and the inner relu goes; ``c+`` goes into
      the biases of the layers reading ``f``'s output (``W`` summed over the kernel, times ``c+``),
      which must all be conv/linear layers, directly or through a zero pad. Exact when ``c+`` is 0;
      otherwise wrong only at output positions whose window covers zero padding, which the recovery
      training that follows pruning absorbs (MLPerf ResNet-8, 0.85 of the MACs cut: 75.09% -> 73.62%
      before training).

    Why: a runtime runs the add of a constant as a kernel of its own; in int8 ExecuTorch that one add
    cost a pruned ResNet-8 26% of its latency (0.061 -> 0.045 ms), and ONNX Runtime runs it in float
    between dequantize and quantize. Returns ``module`` itself when nothing folds (or the graph is
    quantized). Cost: pure graph arithmetic.
    """
    if is_quantized_ir(module.ir):
        return module
    ir = copy.deepcopy(module.ir)
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    folded = 0
    while (site := _foldable_constant(ir, state)) is not None:
        const, add, layer, inner_relu, readers = site
        c = state.pop(f"consts.{const['name']}").reshape(-1)
        _add_to_bias(layer, state, c if inner_relu is None else c.clamp(max=0))
        if inner_relu is None:  # L(x) + c: the layer now writes the add's value
            layer["outputs"] = list(add["outputs"])
            gone = {const["name"], add["name"]}
        else:  # f(relu(L(x)) + c): f reads the layer's value, its readers get c+
            f = next(n for n in ir["nodes"] if add["outputs"][0] in n["inputs"])
            f["inputs"] = [layer["outputs"][0]]
            gone = {const["name"], add["name"], inner_relu["name"]}
            for r in readers:
                w = state[f"mods.{r['name']}.weight"]
                _add_to_bias(r, state, w.reshape(w.shape[0], w.shape[1], -1).sum(-1) @ c.clamp(min=0))
        ir["nodes"] = [n for n in ir["nodes"] if n["name"] not in gone]
        folded += 1
    if not folded:
        return module
    out = GraphModule(ir)
    out.load_state_dict(state)
    return out.train(module.training)


def _add_to_bias(layer: dict[str, Any], state: dict[str, torch.Tensor], delta: torch.Tensor) -> None:
    key = f"mods.{layer['name']}.bias"
    if not layer["attrs"].get("bias", True):
        layer["attrs"]["bias"] = True
        state[key] = torch.zeros_like(delta)
    state[key] = state[key] + delta


def _foldable_constant(ir: dict[str, Any], state: dict[str, torch.Tensor]) -> tuple[Any, ...] | None:
    """The first (const, add, layer, inner relu or None, readers of the block) that
    :func:`fold_branch_constants` can fold."""
    producer = {n["outputs"][0]: n for n in ir["nodes"]}
    users: dict[str, list[dict[str, Any]]] = {}
    for n in ir["nodes"]:
        for v in n["inputs"]:
            users.setdefault(v, []).append(n)
    outputs = set(ir["outputs"])

    def only_user(v: str) -> dict[str, Any] | None:
        us = users.get(v, [])
        return us[0] if len(us) == 1 and v not in outputs else None

    def dense_readers(v: str) -> list[dict[str, Any]] | None:
        """The conv/linear layers reading ``v`` (directly or through a zero pad), or None if anything else does."""
        found = []
        for u in users.get(v, []) if v not in outputs else [None]:
            if u is not None and u["op"] == "pad" and not u["attrs"].get("value", 0.0):
                u = None if u["outputs"][0] in outputs else users.get(u["outputs"][0], [])
            for r in u if isinstance(u, list) else [u]:
                if r is None or r["op"] not in _BIASED or r["attrs"].get("groups", 1) != 1:
                    return None
                found.append(r)
        return found

    for const in ir["nodes"]:
        if const["op"] != "const" or const.get("source") != BRANCH_CONST:
            continue
        add = only_user(const["outputs"][0])
        if add is None or add["op"] != "add" or len(add["inputs"]) != 2:
            continue
        other = next(v for v in add["inputs"] if v != const["outputs"][0])
        c = state[f"consts.{const['name']}"]
        p, inner, readers = producer.get(other), None, []
        if only_user(other) is not add:
            continue
        if p is not None and p["op"] == "relu":
            f = only_user(add["outputs"][0])
            if f is None or f["op"] not in _CLAMP_AT_ZERO:
                continue
            if bool((c > 0).any()):  # c+ goes to the readers (relu only: relu6 saturates)
                readers = dense_readers(f["outputs"][0]) if f["op"] == "relu" else None
                if readers is None:
                    continue
            inner, p = p, producer.get(p["inputs"][0])
            if p is not None and only_user(p["outputs"][0]) is not inner:
                continue
        if p is None or p["op"] not in _BIASED:
            continue
        channels = p["attrs"].get("out_channels", p["attrs"].get("out_features"))
        if c.dim() < 2 or c.shape[0] != 1 or c.shape[1] != channels or c.numel() != channels:
            continue
        return const, add, p, inner, readers
    return None


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

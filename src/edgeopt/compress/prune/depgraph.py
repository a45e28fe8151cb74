"""Channel dependency graph: which channels of which layers must be removed together.

Every channel of every tensor in the model becomes an *element*; operations say which
elements are the same channel (a union-find joins them):

* a convolution (groups=1) or linear layer consumes its input channels and creates new
  output channels; a depthwise convolution and a batch norm carry their input channels through;
* an element-wise op with equal shapes (the residual ``add``) joins its inputs' channels:
  that couples the producers of both branches, so they are pruned together;
* ``concat`` along the channel axis lays its inputs' channels side by side;
* ``flatten``/``reshape`` into a linear head maps feature ``j`` back to the channel it came
  from (``H*W`` features per channel), ``permute`` moves the channel axis, reductions over
  other axes keep it;
* a per-channel constant added to a tensor (an imported graph's ``const``, e.g. where a residual
  branch was removed) is sliced with the channels it meets;
* the model's inputs and outputs, grouped (non-depthwise) convolutions, other broadcasts against
  per-channel values and any op this module does not know are *fixed*: nothing joined to
  them is ever pruned.

A *channel class* is one union-find set: removing it removes one output filter of each
producer, one input column of each consumer, one BN entry and so on, and leaves a valid
model. Classes touching the same layers form a *group* (DepGraph's term): e.g. the 16
channels that a ResNet's residual chain shares.

Two front ends build the op list: the JSON IR of imported models (``GraphModule``), and
``torch.fx`` symbolic tracing for ordinary modules (the zoo). Cost: one trace plus one
batch-1 forward for shapes (milliseconds for ResNet-8).
"""

from __future__ import annotations

import operator
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeopt.errors import EdgeoptError
from edgeopt.interop.graph import GraphModule

# ----------------------------------------------------------------------------- neutral op list


@dataclass
class Op:
    """One operation in the neutral form both front ends produce."""

    name: str
    kind: str  # layer | eltwise | pass | reduce | permute | reshape | concat | softmax | opaque
    inputs: list[str]  # tensor value names
    output: str
    module: str | None = None  # layer path (kind == "layer")
    attrs: dict[str, Any] = field(default_factory=dict)


_PASS_MODULES = (
    nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.GELU, nn.LeakyReLU,
    nn.Dropout, nn.Identity, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
)  # fmt: skip
_PASS_FUNCS = {
    F.relu, torch.relu, F.relu6, F.hardswish, F.hardsigmoid, F.silu, F.gelu, torch.sigmoid, torch.tanh,
    F.leaky_relu, F.dropout, F.avg_pool2d, F.max_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d,
    torch.clamp, torch.nn.functional.relu_,
}  # fmt: skip
_PASS_METHODS = {"relu", "sigmoid", "tanh", "clamp", "contiguous", "relu_", "clone", "float"}
_ELTWISE = {operator.add, operator.sub, operator.mul, operator.truediv, torch.add, torch.sub, torch.mul, torch.div}
_ELTWISE_METHODS = {"add", "sub", "mul", "div", "add_", "mul_"}
_RESHAPE_FUNCS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze}
_RESHAPE_METHODS = {"view", "reshape", "flatten", "squeeze", "unsqueeze"}
CONV_TYPES = (nn.Conv1d, nn.Conv2d)  # 1-D convs (sequences) prune like 2-D ones: channels on axis 1
LAYER_TYPES = (*CONV_TYPES, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d)


def _trace_fx(module: nn.Module, example: torch.Tensor) -> tuple[list[Op], dict[str, tuple[int, ...]], list[str]]:
    from torch.fx.passes.shape_prop import ShapeProp

    try:
        gm = torch.fx.symbolic_trace(module)
    except Exception as e:  # fx raises TraceError, TypeError, ...
        raise EdgeoptError(
            f"cannot trace the model to find channel dependencies ({type(e).__name__}: {str(e)[:120]})",
            "use a model without data-dependent control flow, or import it from .onnx/.tflite",
        ) from e
    was = module.training
    module.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(example)
    finally:
        module.train(was)
    shapes: dict[str, tuple[int, ...]] = {}
    for n in gm.graph.nodes:
        tm = n.meta.get("tensor_meta")
        if tm is not None and hasattr(tm, "shape"):
            shapes[n.name] = tuple(int(s) for s in tm.shape)
    ops: list[Op] = []
    outputs: list[str] = []
    for n in gm.graph.nodes:
        tensor_in = [a.name for a in n.all_input_nodes if a.name in shapes]
        if n.op == "placeholder":
            ops.append(Op(n.name, "input", [], n.name))
            continue
        if n.op == "output":
            outputs = [a.name for a in n.all_input_nodes if a.name in shapes]
            continue
        if n.name not in shapes:
            harmless = (n.op == "call_method" and n.target in ("size", "dim")) or (
                n.op == "call_function" and n.target in (getattr, operator.getitem, len)
            )
            if tensor_in and not harmless:
                # a tensor turned into something we do not follow (e.g. a tuple from chunk): freeze it
                ops.append(Op(n.name, "opaque", tensor_in, n.name, attrs={"no_output": True}))
            continue
        kind, mod_path, attrs = "opaque", None, {}
        if n.op == "get_attr":
            kind = "input"
        elif n.op == "call_module":
            sub = module.get_submodule(str(n.target))
            if isinstance(sub, LAYER_TYPES):
                kind, mod_path = "layer", str(n.target)
            elif isinstance(sub, _PASS_MODULES):
                kind = "pass"
            elif isinstance(sub, nn.Flatten):
                kind = "reshape"
            elif isinstance(sub, nn.Softmax):
                kind, attrs = "softmax", {"dim": sub.dim}
        elif n.op == "call_function":
            if n.target in _ELTWISE:
                kind = "eltwise"
            elif n.target in _PASS_FUNCS:
                kind = "pass"
            elif n.target in _RESHAPE_FUNCS:
                kind = "reshape"
            elif n.target in (torch.cat, torch.concat):
                kind, attrs = "concat", {"dim": n.kwargs.get("dim", n.args[1] if len(n.args) > 1 else 0)}
            elif n.target is torch.mean:
                kind = "reduce"
            elif n.target is torch.permute:
                kind, attrs = "permute", {"dims": list(n.args[1])}
            elif n.target in (F.softmax, torch.softmax):
                kind, attrs = "softmax", {"dim": n.kwargs.get("dim", n.args[1] if len(n.args) > 1 else None)}
        elif n.op == "call_method":
            if n.target in _ELTWISE_METHODS:
                kind = "eltwise"
            elif n.target in _PASS_METHODS:
                kind = "pass"
            elif n.target in _RESHAPE_METHODS:
                kind = "reshape"
            elif n.target == "mean":
                kind = "reduce"
            elif n.target == "permute":
                dims = n.args[1:] if not isinstance(n.args[1], list | tuple) else n.args[1]
                kind, attrs = "permute", {"dims": [int(d) for d in dims]}
            elif n.target == "softmax":
                kind, attrs = "softmax", {"dim": n.kwargs.get("dim", n.args[1] if len(n.args) > 1 else None)}
        ops.append(Op(n.name, kind, tensor_in, n.name, mod_path, attrs))
    return ops, shapes, outputs


_IR_PASS = {
    "relu", "relu6", "clamp", "leaky_relu", "sigmoid", "tanh", "hardswish", "hardsigmoid", "identity",
    "avg_pool2d", "max_pool2d", "avg_pool1d", "max_pool1d",
}  # fmt: skip


def _trace_ir(gm: GraphModule, example: torch.Tensor) -> tuple[list[Op], dict[str, tuple[int, ...]], list[str]]:
    shapes: dict[str, tuple[int, ...]] = {}
    env = {gm.input_names[0]: example}
    shapes[gm.input_names[0]] = tuple(example.shape)
    with torch.no_grad():
        for run, name, attrs, ins, out, _frees in gm._plan:
            env[out] = run(gm, name, attrs, [env[v] for v in ins])
            shapes[out] = tuple(int(s) for s in env[out].shape)
    ops = [Op(v, "input", [], v) for v in gm.input_names]
    for node in gm.ir["nodes"]:
        op, a, out = node["op"], node.get("attrs", {}), node["outputs"][0]
        ins = list(node["inputs"])
        if op in ("conv2d", "conv1d", "linear", "batchnorm"):
            ops.append(Op(node["name"], "layer", ins, out, f"mods.{node['name']}"))
        elif op == "const":
            ops.append(Op(node["name"], "input", [], out, attrs={"const": f"consts.{node['name']}"}))
        elif op in ("add", "sub", "mul", "div"):
            ops.append(Op(node["name"], "eltwise", ins, out))
        elif op in _IR_PASS:
            ops.append(Op(node["name"], "pass", ins, out))
        elif op == "pad":
            ops.append(Op(node["name"], "pad", ins, out, attrs={"pads": list(a["pads"])}))
        elif op == "mean":
            ops.append(Op(node["name"], "reduce", ins, out))
        elif op == "permute":
            ops.append(Op(node["name"], "permute", ins, out, attrs={"dims": list(a["dims"])}))
        elif op in ("reshape", "flatten", "squeeze", "unsqueeze"):
            ops.append(Op(node["name"], "reshape", ins, out, attrs={"ir_reshape": op == "reshape"}))
        elif op == "concat":
            ops.append(Op(node["name"], "concat", ins, out, attrs={"dim": a["dim"]}))
        elif op == "softmax":
            ops.append(Op(node["name"], "softmax", ins, out, attrs={"dim": a["dim"]}))
        else:
            ops.append(Op(node["name"], "opaque", ins, out))
    return ops, shapes, list(gm.output_names)


# ----------------------------------------------------------------------------- element graph


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def new(self, n: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return np.arange(start, start + n)

    def find(self, a: int) -> int:
        p = self.parent
        root = a
        while p[root] != root:
            root = p[root]
        while p[a] != root:
            p[a], a = root, p[a]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(int(a)), self.find(int(b))
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


@dataclass
class Slot:
    """One prunable axis of one layer: ``role`` out (filters / rows), in (columns), dw, bn, reshape, or
    const (a per-channel constant of an imported graph, ``module`` = its buffer path)."""

    module: str
    role: str
    elems: np.ndarray  # element id per position along that axis (roots after finalisation)


@dataclass
class ChannelGroup:
    """Channel classes that touch the same layer axes (e.g. a residual chain's shared channels)."""

    index: int
    classes: list[int]  # class roots, in position order of the group's first slot
    slots: list[tuple[str, str]]  # (module, role) the group touches
    size: int  # channels a group member axis has now

    def describe(self) -> str:
        outs = [m for m, r in self.slots if r == "out"]
        return f"group {self.index}: {self.size} ch, producers {outs}"


@dataclass
class DepGraph:
    """The channel dependency graph of one model at one input shape."""

    slots: dict[tuple[str, str], Slot]
    shapes: dict[str, tuple[int, ...]]  # value -> shape (batch 1)
    layer_io: dict[str, tuple[str, str]]  # module path -> (input value, output value)
    groups: list[ChannelGroup]
    fixed_roots: set[int]
    is_graph_module: bool

    @property
    def prunable_channels(self) -> int:
        return sum(len(g.classes) for g in self.groups)

    def kept(self, slot: tuple[str, str], removed: set[int], size: int) -> np.ndarray:
        """Positions along ``slot``'s axis (``size`` long) whose channel class is not in ``removed``;
        all of them when the axis has no slot (nothing there is prunable)."""
        if slot not in self.slots:
            return np.arange(size)
        return np.flatnonzero(~np.isin(self.slots[slot].elems, np.fromiter(removed, np.int64, len(removed))))


def build_dependency_graph(module: nn.Module, example: torch.Tensor) -> DepGraph:
    """Trace ``module`` at ``example`` (batch 1) and return its channel classes and groups.

    Cost: one symbolic trace (or IR walk) and one forward pass.
    """
    is_gm = isinstance(module, GraphModule)
    ops, shapes, outputs = _trace_ir(module, example) if is_gm else _trace_fx(module, example)
    uf = _UnionFind()
    axis: dict[str, int] = {}
    elems: dict[str, np.ndarray] = {}
    fixed: list[int] = []
    slots: dict[tuple[str, str], np.ndarray] = {}
    layer_io: dict[str, tuple[str, str]] = {}
    const_of: dict[str, str] = {}  # value -> buffer path, for IR constants

    def fresh(v: str, ax: int = 1, fix: bool = False) -> None:
        shp = shapes.get(v, ())
        if len(shp) < 2:
            ax = 0 if shp else -1
        axis[v] = ax
        e = uf.new(shp[ax] if ax >= 0 and shp else 1)
        elems[v] = e
        if fix:
            fixed.extend(e.tolist())

    def freeze(v: str) -> None:
        if v in elems:
            fixed.extend(elems[v].tolist())

    def same(out: str, v: str) -> None:
        axis[out], elems[out] = axis[v], elems[v]

    def add_slot(key: tuple[str, str], e: np.ndarray) -> None:
        if key in slots:  # a module called twice: both calls must prune alike
            if len(slots[key]) != len(e):
                fixed.extend(e.tolist())
                fixed.extend(slots[key].tolist())
                return
            for a, b in zip(slots[key], e, strict=True):
                uf.union(a, b)
        else:
            slots[key] = e

    for op in ops:
        out, ins = op.output, op.inputs
        if op.kind == "input":
            fresh(out, fix=True)
            if "const" in op.attrs:
                const_of[out] = op.attrs["const"]
            continue
        if op.attrs.get("no_output"):
            for v in ins:
                freeze(v)
            continue
        if any(v not in elems for v in ins):
            for v in ins:
                freeze(v)
            fresh(out, fix=True)
            continue
        x = ins[0] if ins else None
        oshape = shapes[out]
        if op.kind == "layer":
            layer = module.get_submodule(op.module)
            layer_io[op.module] = (x, out)
            if axis[x] != (1 if not isinstance(layer, nn.Linear) else len(shapes[x]) - 1):
                # the tracked axis is not this layer's channel axis (e.g. right after an NHWC input):
                # its input stays whole; a conv or linear still starts fresh, prunable channels
                freeze(x)
                if isinstance(layer, nn.Linear) or (isinstance(layer, CONV_TYPES) and layer.groups == 1):
                    fresh(out, ax=len(oshape) - 1 if isinstance(layer, nn.Linear) else 1)
                    add_slot((op.module, "out"), elems[out])
                else:
                    fresh(out, fix=True)
                continue
            if isinstance(layer, CONV_TYPES):
                if layer.groups == 1:
                    add_slot((op.module, "in"), elems[x])
                    fresh(out)
                    add_slot((op.module, "out"), elems[out])
                elif layer.groups == layer.in_channels == layer.out_channels:
                    same(out, x)
                    add_slot((op.module, "dw"), elems[out])
                else:  # grouped: channel counts must stay divisible; left alone
                    freeze(x)
                    fresh(out, fix=True)
            elif isinstance(layer, nn.Linear):
                add_slot((op.module, "in"), elems[x])
                fresh(out, ax=len(oshape) - 1)
                add_slot((op.module, "out"), elems[out])
            else:  # batch norm
                same(out, x)
                add_slot((op.module, "bn"), elems[out])
        elif op.kind in ("pass", "pad"):
            ok = shapes[x][axis[x]] == oshape[axis[x]] if len(oshape) == len(shapes[x]) else False
            if op.kind == "pad":
                touched = range(len(oshape) - len(op.attrs["pads"]) // 2, len(oshape))
                ok = ok and axis[x] not in touched
            if ok:
                same(out, x)
            else:
                freeze(x)
                fresh(out, fix=True)
        elif op.kind == "eltwise":
            full = [v for v in ins if shapes[v] == oshape]
            rest = [v for v in ins if shapes[v] != oshape]
            ax = axis[full[0]] if full else -1
            bad = not full or any(axis[v] != ax for v in full)
            per_channel: list[str] = []  # constants with one value per channel: sliced with the channels
            for v in rest:  # broadcast: fine if constant along the channel axis, or a per-channel constant
                s, off = shapes[v], len(oshape) - len(shapes[v])
                if ax >= 0 and ax - off >= 0 and s[ax - off] != 1:
                    if v in const_of and off == 0 and sum(d != 1 for d in s) == 1 and s[ax] == oshape[ax]:
                        per_channel.append(v)
                    else:
                        bad = True
            if bad:
                for v in ins:
                    freeze(v)
                fresh(out, fix=True)
                continue
            same(out, full[0])
            for v in full[1:]:
                for a, b in zip(elems[full[0]], elems[v], strict=True):
                    uf.union(a, b)
            for v in per_channel:
                add_slot((const_of[v], "const"), elems[out])
        elif op.kind == "permute":
            dims = [d % len(oshape) for d in op.attrs["dims"]]
            axis[out], elems[out] = dims.index(axis[x]), elems[x]
        elif op.kind == "reduce":
            if len(oshape) == len(shapes[x]) and oshape[axis[x]] == shapes[x][axis[x]]:
                same(out, x)  # keepdim, channel axis kept
            else:
                mapped = _map_reshape_axis(shapes[x], axis[x], oshape, reduce=True)
                if mapped is None:
                    freeze(x)
                    fresh(out, fix=True)
                else:
                    axis[out], elems[out] = mapped[0], elems[x][mapped[1]]
        elif op.kind == "reshape":
            mapped = _map_reshape_axis(shapes[x], axis[x], oshape)
            if mapped is None:
                freeze(x)
                fresh(out, fix=True)
            else:
                axis[out], elems[out] = mapped[0], elems[x][mapped[1]]
                if op.attrs.get("ir_reshape"):
                    add_slot((op.name, "reshape"), elems[out])
        elif op.kind == "concat":
            dim = int(op.attrs["dim"]) % len(oshape)
            axes = {axis[v] for v in ins}
            if len(axes) != 1:
                for v in ins:
                    freeze(v)
                fresh(out, fix=True)
            elif dim == axes.pop():
                axis[out], elems[out] = dim, np.concatenate([elems[v] for v in ins])
            else:
                same(out, ins[0])
                for v in ins[1:]:
                    for a, b in zip(elems[ins[0]], elems[v], strict=True):
                        uf.union(a, b)
        elif op.kind == "softmax" and op.attrs.get("dim") is not None:
            if int(op.attrs["dim"]) % len(oshape) == axis[x]:
                freeze(x)
                fresh(out, fix=True)
            else:
                same(out, x)
        else:
            for v in ins:
                freeze(v)
            fresh(out, fix=True)
    for v in outputs:
        freeze(v)
    fixed_roots = {uf.find(e) for e in fixed}
    final = {k: np.array([uf.find(int(e)) for e in v], dtype=np.int64) for k, v in slots.items()}
    groups = _make_groups(final, fixed_roots)
    return DepGraph(
        slots={k: Slot(k[0], k[1], v) for k, v in final.items()},
        shapes=shapes,
        layer_io=layer_io,
        groups=groups,
        fixed_roots=fixed_roots,
        is_graph_module=is_gm,
    )


def _map_reshape_axis(
    src: tuple[int, ...], ax: int, dst: tuple[int, ...], reduce: bool = False
) -> tuple[int, np.ndarray] | None:
    """Where channel axis ``ax`` of shape ``src`` lands in ``dst``: (axis, channel index per position).

    Found by labelling every element with its channel and reshaping the labels; None when channels
    end up mixed along more than one output axis.
    """
    if reduce:  # reduction without keepdim: the channel axis survives, later axes shift down
        dropped = len(src) - len(dst)
        if dropped < 0 or src[ax] == 1:
            return None
        cand = [d for d in range(len(dst)) if dst[d] == src[ax]]
        return (cand[0], np.arange(src[ax])) if len(cand) == 1 else None
    if int(np.prod(src)) != int(np.prod(dst)) or src[ax] == 1:
        return None
    shape = [1] * len(src)
    shape[ax] = src[ax]
    labels = np.broadcast_to(np.arange(src[ax]).reshape(shape), src).reshape(dst)
    for b in range(len(dst)):
        if dst[b] == 1:
            continue
        idx: list[int | slice] = [0] * len(dst)
        idx[b] = slice(None)
        line = labels[tuple(idx)]
        shape_b = [1] * len(dst)
        shape_b[b] = dst[b]
        if np.array_equal(np.broadcast_to(line.reshape(shape_b), dst), labels):  # varies only along b
            return b, line.astype(np.int64)
    return None


def _make_groups(slots: dict[tuple[str, str], np.ndarray], fixed_roots: set[int]) -> list[ChannelGroup]:
    touches: dict[int, set[tuple[str, str]]] = defaultdict(set)
    order: dict[int, int] = {}
    for key, elems in slots.items():
        for e in elems.tolist():
            if e not in fixed_roots:
                touches[e].add(key)
                order.setdefault(e, len(order))
    by_sig: dict[tuple[tuple[str, str], ...], list[int]] = defaultdict(list)
    for cls in sorted(touches, key=order.__getitem__):
        # a class must own at least one producer axis (out/dw) to remove anything real
        sig = tuple(sorted(touches[cls]))
        if any(r in ("out", "dw") for _, r in sig):
            by_sig[sig].append(cls)
    groups = []
    for i, (sig, classes) in enumerate(by_sig.items()):
        groups.append(ChannelGroup(i, classes, list(sig), len(classes)))
    return groups

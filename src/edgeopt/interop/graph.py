"""A small JSON graph IR and the PyTorch module that runs it.

Imported models (.tflite, .onnx) have no Python class behind them, yet edgeopt must save
them without pickling code and hand them to every later pass as an ordinary ``nn.Module``.
So an importer emits a *graph IR*: a JSON-serialisable dict listing nodes in topological
order. ``GraphModule(ir)`` turns it back into a module: weight-bearing nodes become real
torch layers (``nn.Conv2d`` -- depthwise via ``groups`` --, ``nn.Linear``, ``nn.BatchNorm*``)
in an ``nn.ModuleDict`` so quantizers, pruners and profiling hooks see the layers they know;
constant tensors become buffers; ``forward`` walks the nodes in a plain Python loop, which
``torch.export`` traces into a flat graph. Weights never live in the IR: they are the
module's ``state_dict`` (``mods.<node>.weight``, ``consts.<node>``).

IR format (version 1)::

    {"format": "edgeopt-graph", "version": 1,
     "inputs":  [{"name": "x", "shape": [1, 32, 32, 3]}],   # shape with batch, in the source layout
     "outputs": ["v12"],
     "nodes": [{"name": "conv2d_0", "op": "conv2d", "inputs": ["v1"], "outputs": ["v2"],
                "attrs": {...}, "source": "<node/tensor name in the source file>"}, ...]}

Node names are identifiers (they key the ModuleDict and buffers); value names are free
strings. ``OPS`` below lists every op and its attributes. ``GraphBuilder`` is what the
importers use to emit nodes and weights, with the helpers both share (SAME padding,
asymmetric padding, activations, batch-generic reshape, permutation algebra).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeopt.errors import EdgeoptError
from edgeopt.model import register_kind
from edgeopt.models.layers import same_padding

IR_FORMAT = "edgeopt-graph"
IR_VERSION = 1

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DTYPES = {"float32": torch.float32, "int64": torch.int64, "int32": torch.int32, "bool": torch.bool}

__all__ = ["GraphBuilder", "GraphModule", "ImportedGraph", "QuantInfo", "same_padding", "validate_ir"]

Attrs = dict[str, Any]
Tensors = list[torch.Tensor]


# ----------------------------------------------------------------------------- op table
# Each op: an optional layer factory (attrs -> nn.Module, kept in GraphModule.mods) and a
# forward function (module, node name, attrs, input tensors) -> output tensor.


def _conv_layer(classes: Sequence[type[nn.Module]]) -> Callable[[Attrs], nn.Module]:
    """Layer factory for a convolution whose class is ``classes[spatial dims - 1]`` (1-D or 2-D)."""

    def build(a: Attrs) -> nn.Module:
        extra = {"output_padding": tuple(a["output_padding"])} if "output_padding" in a else {}
        return classes[len(a["kernel_size"]) - 1](
            a["in_channels"],
            a["out_channels"],
            tuple(a["kernel_size"]),
            stride=tuple(a["stride"]),
            padding=tuple(a["padding"]),
            dilation=tuple(a["dilation"]),
            groups=a["groups"],
            bias=a["bias"],
            **extra,
        )

    return build


def _rnn_layer(a: Attrs) -> nn.Module:
    cls = nn.LSTM if a["cell"] == "lstm" else nn.GRU
    return cls(a["input_size"], a["hidden_size"], batch_first=a["batch_first"], bidirectional=a["directions"] == 2)


def _linear_layer(a: Attrs) -> nn.Module:
    return nn.Linear(a["in_features"], a["out_features"], bias=a["bias"])


def _batchnorm_layer(a: Attrs) -> nn.Module:
    cls = nn.BatchNorm2d if a.get("rank", 4) == 4 else nn.BatchNorm1d
    return cls(a["num_features"], eps=a["eps"], momentum=a["momentum"])


def _call_layer(gm: GraphModule, name: str, a: Attrs, xs: Tensors) -> torch.Tensor:
    wq = a.get("weight_quant")
    if wq is None:
        return gm.mods[name](xs[0])
    from edgeopt.interop.quant_ops import quantized_weight

    layer = gm.mods[name]
    if wq.get("dynamic"):  # a hybrid op: int8 weights, activations quantized on the fly
        from edgeopt.interop.quant_ops import hybrid_layer

        return hybrid_layer(gm, name, layer, xs[0], wq)
    w = quantized_weight(gm, name, layer.weight, wq)
    if isinstance(layer, nn.Conv1d | nn.Conv2d):
        return layer._conv_forward(xs[0], w, layer.bias)
    return F.linear(xs[0], w, layer.bias)


def _quant(gm: GraphModule, name: str, a: Attrs, xs: Tensors) -> torch.Tensor:
    from edgeopt.interop.quant_ops import fake_quant

    return fake_quant(xs[0], a, gm.qdq_mode)


def _dynamic_quant(gm: GraphModule, name: str, a: Attrs, xs: Tensors) -> torch.Tensor:
    from edgeopt.interop.quant_ops import dynamic_fake_quant

    return dynamic_fake_quant(xs[0], a)


def _const(gm: GraphModule, name: str, a: Attrs, xs: Tensors) -> torch.Tensor:
    return getattr(gm.consts, name)


def _reshape(gm: GraphModule, name: str, a: Attrs, xs: Tensors) -> torch.Tensor:
    x = xs[0]
    shape = list(a["shape"])
    if a.get("copy_zeros"):  # ONNX: a 0 in the target shape copies that input dim
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    if a.get("keep_batch"):  # batch-generic: the first dim follows the input's batch
        shape[0] = x.shape[0]
    return x.reshape(shape)


def _flatten(gm: GraphModule, name: str, a: Attrs, xs: Tensors) -> torch.Tensor:
    # ONNX Flatten semantics: 2-D result [prod(dims < axis), prod(dims >= axis)]
    axis = a["axis"]
    x = xs[0]
    if axis == 0:
        return x.reshape(1, -1)
    return x.flatten(axis).flatten(0, axis - 1)


def _pool_pads_symmetric(a: Attrs) -> bool:
    left, right, top, bottom = a["pads"]
    kh, kw = a["kernel_size"]
    return left == right and top == bottom and 2 * top <= kh and 2 * left <= kw


def _avg_pool2d(gm: GraphModule, name: str, a: Attrs, xs: Tensors) -> torch.Tensor:
    x = xs[0]
    k, s, ceil, include = tuple(a["kernel_size"]), tuple(a["stride"]), a["ceil_mode"], a["count_include_pad"]
    left, right, top, bottom = a["pads"]
    if a.get("summation") == "xnnpack" and not (ceil or include):  # hybrid .tflite: LiteRT's order
        from edgeopt.interop.quant_ops import exact_inference, xnnpack_avg_pool2d

        if exact_inference(x):
            return xnnpack_avg_pool2d(x, k, s, (left, right, top, bottom))
    if _pool_pads_symmetric(a):
        return F.avg_pool2d(x, k, s, (top, left), ceil, include)
    # Asymmetric padding (TFLite SAME, stride 2): pad explicitly; when padded cells must not
    # count (TFLite, ONNX default) divide the window sums by the number of real cells.
    pads = [left, right, top, bottom]
    y = F.avg_pool2d(F.pad(x, pads), k, s, 0, ceil, True)
    if include:
        return y
    ones = F.pad(torch.ones_like(x[:1, :1]), pads)
    return y / F.avg_pool2d(ones, k, s, 0, ceil, True)


def _mean(gm: GraphModule, name: str, a: Attrs, xs: Tensors) -> torch.Tensor:
    x, dims = xs[0], list(a["dims"])
    if a.get("summation") == "xnnpack":  # hybrid .tflite: LiteRT's order
        from edgeopt.interop.quant_ops import exact_inference, xnnpack_mean

        if exact_inference(x):
            return xnnpack_mean(x, dims, a["keepdim"])
    return x.mean(dim=dims, keepdim=a["keepdim"])


def _pool1d(pool2d: Callable[[GraphModule, str, Attrs, Tensors], torch.Tensor]) -> Callable[..., torch.Tensor]:
    """A 1-D pool (``kernel_size`` [k], ``stride`` [s], ``pads`` [left, right]) run as its 2-D op over (N, C, 1, L)."""

    def run(gm: GraphModule, name: str, a: Attrs, xs: Tensors) -> torch.Tensor:
        left, right = a["pads"]
        a2 = {
            **a,
            "kernel_size": [1, a["kernel_size"][0]],
            "stride": [1, a["stride"][0]],
            "pads": [left, right, 0, 0],
            "dilation": [1, a.get("dilation", [1])[0]],
        }
        return pool2d(gm, name, a2, [xs[0].unsqueeze(2)]).squeeze(2)

    return run


def _rnn(gm: GraphModule, name: str, a: Attrs, xs: Tensors) -> torch.Tensor:
    """ONNX LSTM/GRU: ``Y`` as ONNX lays it out, [seq, dirs, batch, hidden] (``batch_first``: [batch, seq, dirs,
    hidden]); ``reverse`` runs one direction backwards in time (nn.LSTM has no reverse-only mode)."""
    x = xs[0]
    seq_dim = 1 if a["batch_first"] else 0
    if a.get("reverse"):
        x = x.flip(seq_dim)
    y, _ = gm.mods[name](x)
    if a.get("reverse"):
        y = y.flip(seq_dim)
    y = y.unflatten(2, (a["directions"], a["hidden_size"]))  # [seq, batch, dirs, hidden] or [batch, seq, ...]
    return y if a["batch_first"] else y.transpose(1, 2)


def _slice(gm: GraphModule, name: str, a: Attrs, xs: Tensors) -> torch.Tensor:
    index = [slice(None)] * a["dim"] + [slice(a["start"], a["end"], a.get("step", 1))]
    return xs[0][tuple(index)]


def _gather(gm: GraphModule, name: str, a: Attrs, xs: Tensors) -> torch.Tensor:
    """ONNX Gather with constant, non-negative ``indices`` (second input) along ``axis``."""
    x, idx, axis = xs[0], xs[1], a["axis"]
    picked = torch.index_select(x, axis, idx.reshape(-1))
    return picked.reshape(*x.shape[:axis], *idx.shape, *x.shape[axis + 1 :])


def _resize(gm: GraphModule, name: str, a: Attrs, xs: Tensors) -> torch.Tensor:
    size = a.get("size")
    scale = a.get("scale_factor")
    align = a.get("align_corners")
    return F.interpolate(
        xs[0],
        size=tuple(size) if size else None,
        scale_factor=tuple(scale) if scale else None,
        mode=a["mode"],
        align_corners=align,
    )


def _max_pool2d(gm: GraphModule, name: str, a: Attrs, xs: Tensors) -> torch.Tensor:
    x = xs[0]
    k, s, d, ceil = tuple(a["kernel_size"]), tuple(a["stride"]), tuple(a.get("dilation", (1, 1))), a["ceil_mode"]
    left, right, top, bottom = a["pads"]
    if _pool_pads_symmetric(a):
        return F.max_pool2d(x, k, s, (top, left), d, ceil)
    return F.max_pool2d(F.pad(x, [left, right, top, bottom], value=float("-inf")), k, s, 0, d, ceil)


def _softmax(gm: GraphModule, name: str, a: Attrs, xs: Tensors) -> torch.Tensor:
    x = xs[0]
    beta = a.get("beta", 1.0)
    return F.softmax(x * beta if beta != 1.0 else x, dim=a["dim"])


def _unary(fn: Callable[..., torch.Tensor]) -> Callable[[GraphModule, str, Attrs, Tensors], torch.Tensor]:
    return lambda gm, name, a, xs: fn(xs[0])


def _binary(fn: Callable[..., torch.Tensor]) -> Callable[[GraphModule, str, Attrs, Tensors], torch.Tensor]:
    return lambda gm, name, a, xs: fn(xs[0], xs[1])


@dataclass(frozen=True)
class OpDef:
    """One IR op: how it runs, which attributes it needs, and its layer if it has weights."""

    run: Callable[[GraphModule, str, Attrs, Tensors], torch.Tensor]
    attrs: tuple[str, ...] = ()
    layer: Callable[[Attrs], nn.Module] | None = None
    arity: int = 1  # number of inputs; -1 for variadic (concat)


_CONV_ATTRS = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias")

OPS: dict[str, OpDef] = {
    "const": OpDef(_const, ("shape", "dtype"), arity=0),
    "conv2d": OpDef(_call_layer, _CONV_ATTRS, _conv_layer([nn.Conv1d, nn.Conv2d])),
    "conv1d": OpDef(_call_layer, _CONV_ATTRS, _conv_layer([nn.Conv1d, nn.Conv2d])),
    "conv_transpose": OpDef(
        _call_layer, (*_CONV_ATTRS, "output_padding"), _conv_layer([nn.ConvTranspose1d, nn.ConvTranspose2d])
    ),
    "rnn": OpDef(_rnn, ("cell", "input_size", "hidden_size", "directions", "batch_first"), _rnn_layer),
    "linear": OpDef(_call_layer, ("in_features", "out_features", "bias"), _linear_layer),
    "batchnorm": OpDef(_call_layer, ("num_features", "eps", "momentum"), _batchnorm_layer),
    "add": OpDef(_binary(torch.add), arity=2),
    "sub": OpDef(_binary(torch.sub), arity=2),
    "mul": OpDef(_binary(torch.mul), arity=2),
    "div": OpDef(_binary(torch.div), arity=2),
    "matmul": OpDef(_binary(torch.matmul), arity=2),
    "gather": OpDef(_gather, ("axis",), arity=2),
    "slice": OpDef(_slice, ("dim", "start", "end")),
    "resize": OpDef(_resize, ("mode",)),
    "identity": OpDef(_unary(lambda x: x)),
    "relu": OpDef(_unary(F.relu)),
    "relu6": OpDef(_unary(F.relu6)),
    "clamp": OpDef(lambda gm, n, a, xs: torch.clamp(xs[0], a["min"], a["max"]), ("min", "max")),
    "leaky_relu": OpDef(lambda gm, n, a, xs: F.leaky_relu(xs[0], a["slope"]), ("slope",)),
    "sigmoid": OpDef(_unary(torch.sigmoid)),
    "tanh": OpDef(_unary(torch.tanh)),
    "hardswish": OpDef(_unary(F.hardswish)),
    "hardsigmoid": OpDef(lambda gm, n, a, xs: torch.clamp(xs[0] * a["alpha"] + a["beta"], 0.0, 1.0), ("alpha", "beta")),
    "avg_pool2d": OpDef(_avg_pool2d, ("kernel_size", "stride", "pads", "ceil_mode", "count_include_pad")),
    "max_pool2d": OpDef(_max_pool2d, ("kernel_size", "stride", "pads", "ceil_mode")),
    "avg_pool1d": OpDef(_pool1d(_avg_pool2d), ("kernel_size", "stride", "pads", "ceil_mode", "count_include_pad")),
    "max_pool1d": OpDef(_pool1d(_max_pool2d), ("kernel_size", "stride", "pads", "ceil_mode")),
    "sum": OpDef(lambda gm, n, a, xs: xs[0].sum(dim=list(a["dims"]), keepdim=a["keepdim"]), ("dims", "keepdim")),
    "amax": OpDef(lambda gm, n, a, xs: xs[0].amax(dim=list(a["dims"]), keepdim=a["keepdim"]), ("dims", "keepdim")),
    "mean": OpDef(_mean, ("dims", "keepdim")),
    "permute": OpDef(lambda gm, n, a, xs: xs[0].permute(list(a["dims"])), ("dims",)),
    "reshape": OpDef(_reshape, ("shape",)),
    "flatten": OpDef(_flatten, ("axis",)),
    "squeeze": OpDef(lambda gm, n, a, xs: xs[0].squeeze(list(a["dims"])), ("dims",)),
    "unsqueeze": OpDef(lambda gm, n, a, xs: _unsqueeze(xs[0], a["dims"]), ("dims",)),
    "concat": OpDef(lambda gm, n, a, xs: torch.cat(xs, dim=a["dim"]), ("dim",), arity=-1),
    "pad": OpDef(lambda gm, n, a, xs: F.pad(xs[0], list(a["pads"]), value=a.get("value", 0.0)), ("pads",)),
    "softmax": OpDef(_softmax, ("dim",)),
    # quantized graphs (interop.quant_ops): static per-tensor int8 and LiteRT's dynamic (hybrid) quantization
    "quant": OpDef(_quant, ("scale", "zero_point", "qmin", "qmax")),
    "dynamic_quant": OpDef(_dynamic_quant, ("scheme",)),
}


def _unsqueeze(x: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    for d in sorted(dims):
        x = x.unsqueeze(d)
    return x


# ----------------------------------------------------------------------------- the module


def validate_ir(ir: dict[str, Any]) -> None:
    """Raise EdgeoptError unless ``ir`` is a well-formed graph IR (every value defined before use)."""

    def bad(why: str) -> EdgeoptError:
        return EdgeoptError(f"model graph is malformed ({why})", "re-import the source model")

    if not isinstance(ir, dict) or ir.get("format") != IR_FORMAT:
        raise bad("not an edgeopt graph")
    if ir.get("version") != IR_VERSION:
        raise bad(f"graph version {ir.get('version')} is not {IR_VERSION}; upgrade edgeopt")
    if not all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in ir.get("inputs", [])):
        raise bad("graph inputs must be named")
    defined = {i["name"] for i in ir.get("inputs", [])}
    names: set[str] = set()
    for node in ir.get("nodes", []):
        name, op = node.get("name", ""), node.get("op")
        if not isinstance(name, str) or not _NAME_RE.match(name) or name in names:
            raise bad(f"bad or duplicate node name '{name}'")
        names.add(name)
        if op not in OPS:
            raise bad(f"unknown op '{op}' at node '{name}'")
        if len(node.get("outputs", [])) != 1:
            raise bad(f"node '{name}' must have exactly one output")
        missing = [k for k in OPS[op].attrs if k not in node.get("attrs", {})]
        if missing:
            raise bad(f"node '{name}' lacks attributes {missing}")
        if not isinstance(node.get("inputs"), list):
            raise bad(f"node '{name}' has no input list")
        arity = OPS[op].arity
        if arity >= 0 and len(node["inputs"]) != arity:
            raise bad(f"node '{name}' ({op}) takes {arity} inputs, has {len(node['inputs'])}")
        undefined = [v for v in node["inputs"] if v not in defined]
        if undefined:
            raise bad(f"node '{name}' uses undefined values {undefined}")
        defined.update(node["outputs"])
    undefined = [v for v in ir.get("outputs", []) if v not in defined]
    if not ir.get("outputs") or undefined:
        raise bad(f"graph outputs {undefined or '[]'} are not produced")


def is_quantized_ir(ir: Any) -> bool:
    """True when ``ir`` holds static int8 quantization (``quant`` nodes): an integer program. Pure."""
    return isinstance(ir, dict) and any(n.get("op") == "quant" for n in ir.get("nodes", []) if isinstance(n, dict))


class GraphModule(nn.Module):
    """Runs a graph IR; weights are its state_dict (load them with ``load_state_dict``).

    A graph with ``quant`` nodes (an imported full-integer .tflite) is built as
    ``interop.quant_ops.QuantGraphModule``: same IR and weights, plus integer export.
    """

    qdq_mode = "sim"  # how quant nodes run: "sim" (simulation, trainable) or "qdq"/"fold" (export)

    def __new__(cls, ir: dict[str, Any] | None = None, *args: Any, **kwargs: Any) -> GraphModule:
        if cls is GraphModule and is_quantized_ir(ir):
            from edgeopt.interop.quant_ops import QuantGraphModule

            cls = QuantGraphModule
        return super().__new__(cls)

    def __init__(self, ir: dict[str, Any]) -> None:
        super().__init__()
        validate_ir(ir)
        self.ir: dict[str, Any] = json.loads(json.dumps(ir))  # private copy; proves it is JSON
        self.mods = nn.ModuleDict()
        self.consts = nn.Module()
        for node in self.ir["nodes"]:
            opdef, a = OPS[node["op"]], node.get("attrs", {})
            if opdef.layer is not None:
                self.mods[node["name"]] = opdef.layer(a)
            if node["op"] == "const":
                if a["dtype"] not in _DTYPES:
                    raise EdgeoptError(f"model graph is malformed (const dtype '{a['dtype']}')", "re-import")
                self.consts.register_buffer(node["name"], torch.zeros(a["shape"], dtype=_DTYPES[a["dtype"]]))
        self.input_names = [i["name"] for i in self.ir["inputs"]]
        self.output_names = list(self.ir["outputs"])
        # Free each value after its last use so inference does not hold every activation.
        last_use: dict[str, int] = {}
        for i, node in enumerate(self.ir["nodes"]):
            for v in node["inputs"]:
                last_use[v] = i
        keep = set(self.output_names)
        self._plan = []
        for i, node in enumerate(self.ir["nodes"]):
            frees = sorted({v for v in node["inputs"] if last_use[v] == i and v not in keep})
            run = OPS[node["op"]].run
            self._plan.append((run, node["name"], node.get("attrs", {}), node["inputs"], node["outputs"][0], frees))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if len(inputs) != len(self.input_names):
            raise TypeError(f"graph takes {len(self.input_names)} inputs, got {len(inputs)}")
        env: dict[str, torch.Tensor] = dict(zip(self.input_names, inputs, strict=True))
        for run, name, attrs, ins, out, frees in self._plan:
            env[out] = run(self, name, attrs, [env[v] for v in ins])
            for v in frees:
                del env[v]
        outs = tuple(env[v] for v in self.output_names)
        return outs[0] if len(outs) == 1 else outs


# ----------------------------------------------------------------------------- helpers for importers


def invert_perm(perm: Sequence[int]) -> tuple[int, ...]:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


def identity_perm(rank: int) -> tuple[int, ...]:
    return tuple(range(rank))


def torch_pad_list(pairs: Sequence[Sequence[int]]) -> list[int]:
    """Per-dim (before, after) pairs, first dim first -> F.pad's list (last dim first, leading zeros trimmed)."""
    flat: list[int] = []
    for before, after in reversed(pairs):
        flat += [int(before), int(after)]
    while len(flat) > 2 and flat[-1] == 0 and flat[-2] == 0:
        flat = flat[:-2]
    return flat


# activation name -> (IR op, attrs); shared by TFLite fused activations and ONNX activation ops
ACTIVATIONS: dict[str, tuple[str, Attrs]] = {
    "relu": ("relu", {}),
    "relu6": ("relu6", {}),
    "relu_n1_to_1": ("clamp", {"min": -1.0, "max": 1.0}),
    "tanh": ("tanh", {}),
    "sigmoid": ("sigmoid", {}),
    "hardswish": ("hardswish", {}),
}


@dataclass
class QuantInfo:
    """What quantization an imported file held and what the import kept of it (``tflite_int8``)."""

    kind: str = "float"  # float | int8 (full-integer) | hybrid (int8 weights, float activations)
    activation_tensors: int = 0  # int8 activation tensors in the file
    weight_tensors: int = 0  # int8 weight tensors in the file
    hybrid_ops: int = 0  # conv / fully-connected ops with int8 weights and float activations
    dequantized: bool = False  # True: all of it dropped (a plain float model)
    input_quant: tuple[float, int] | None = None  # (scale, zero point) of an int8 input
    hybrid_scheme: str | None = None  # asymmetric (XNNPACK) or symmetric

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, 0) or k in ("kind", "dequantized")}


@dataclass
class ImportedGraph:
    """What an importer returns: the IR, its weights, and the layout of the model's input."""

    ir: dict[str, Any]
    weights: dict[str, torch.Tensor]
    layout: str  # "NHWC" or "NCHW": the interface layout of the (single, image) input
    quant: QuantInfo = field(default_factory=QuantInfo)


@dataclass
class GraphBuilder:
    """Collects IR nodes and weights while an importer walks a source graph (in topological order)."""

    nodes: list[dict[str, Any]] = field(default_factory=list)
    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    _counts: dict[str, int] = field(default_factory=dict)

    def _unique(self, stem: str) -> str:
        n = self._counts.get(stem, 0)
        self._counts[stem] = n + 1
        return f"{stem}_{n}"

    def input(self, shape: Sequence[int | None], source: str = "") -> str:
        name = f"input_{len(self.inputs)}"
        self.inputs.append({"name": name, "shape": [None if s is None else int(s) for s in shape], "source": source})
        return name

    def add(
        self,
        op: str,
        inputs: Sequence[str],
        attrs: Attrs | None = None,
        source: str = "",
        weights: dict[str, torch.Tensor] | None = None,
    ) -> str:
        """Append one node; returns the name of the value it produces."""
        name = self._unique(op)
        out = f"v_{name}"
        self.nodes.append(
            {
                "name": name,
                "op": op,
                "inputs": list(inputs),
                "outputs": [out],
                "attrs": _jsonable(attrs or {}),
                "source": source,
            }
        )
        for key, t in (weights or {}).items():
            self.weights[f"mods.{name}.{key}"] = t.detach().contiguous()
        return out

    def const(self, array: np.ndarray, source: str = "") -> str:
        """A constant tensor the graph uses at run time (a buffer, not a trainable weight)."""
        arr = np.asarray(array)
        dtype = "float32" if arr.dtype.kind == "f" else "bool" if arr.dtype == np.bool_ else "int64"
        name = self._unique("const")
        self.nodes.append(
            {
                "name": name,
                "op": "const",
                "inputs": [],
                "outputs": [f"v_{name}"],
                "attrs": {"shape": list(arr.shape), "dtype": dtype},
                "source": source,
            }
        )
        self.weights[f"consts.{name}"] = torch.from_numpy(np.ascontiguousarray(arr).astype(dtype))
        return f"v_{name}"

    def conv2d(
        self,
        x: str,
        weight: np.ndarray,
        bias: np.ndarray | None,
        stride: Sequence[int],
        pads: Sequence[int],
        dilation: Sequence[int] = (1, 1),
        groups: int = 1,
        source: str = "",
    ) -> str:
        """nn.Conv2d with OIHW ``weight``; ``pads`` = (left, right, top, bottom), may be asymmetric."""
        left, right, top, bottom = (int(p) for p in pads)
        padding = (top, left)
        if left != right or top != bottom:  # nn.Conv2d pads symmetrically: pad explicitly first
            x = self.add("pad", [x], {"pads": [left, right, top, bottom], "value": 0.0}, source)
            padding = (0, 0)
        out_c, in_per_group, kh, kw = weight.shape
        attrs = {
            "in_channels": in_per_group * groups,
            "out_channels": out_c,
            "kernel_size": [kh, kw],
            "stride": list(stride),
            "padding": list(padding),
            "dilation": list(dilation),
            "groups": groups,
            "bias": bias is not None,
        }
        return self.add("conv2d", [x], attrs, source, layer_weights(weight, bias))

    def conv1d(
        self,
        x: str,
        weight: np.ndarray,
        bias: np.ndarray | None,
        stride: int,
        pads: Sequence[int],
        dilation: int = 1,
        groups: int = 1,
        source: str = "",
    ) -> str:
        """nn.Conv1d with OIL ``weight``; ``pads`` = (left, right), may be asymmetric."""
        left, right = (int(p) for p in pads)
        padding = left
        if left != right:  # nn.Conv1d pads symmetrically: pad explicitly first
            x = self.add("pad", [x], {"pads": [left, right], "value": 0.0}, source)
            padding = 0
        out_c, in_per_group, k = weight.shape
        attrs = {
            "in_channels": in_per_group * groups,
            "out_channels": out_c,
            "kernel_size": [k],
            "stride": [int(stride)],
            "padding": [padding],
            "dilation": [int(dilation)],
            "groups": groups,
            "bias": bias is not None,
        }
        return self.add("conv1d", [x], attrs, source, layer_weights(weight, bias))

    def linear(self, x: str, weight: np.ndarray, bias: np.ndarray | None, source: str = "") -> str:
        """nn.Linear with ``weight`` [out, in]."""
        out_f, in_f = weight.shape
        attrs = {"in_features": in_f, "out_features": out_f, "bias": bias is not None}
        return self.add("linear", [x], attrs, source, layer_weights(weight, bias))

    def activation(self, x: str, kind: str, source: str = "") -> str:
        """Apply a named activation (see ACTIVATIONS); 'none' returns ``x`` unchanged."""
        if kind == "none":
            return x
        op, attrs = ACTIVATIONS[kind]
        return self.add(op, [x], attrs, source)

    def reshape(
        self,
        x: str,
        shape: Sequence[int],
        in_shape: Sequence[int | None] | None,
        source: str = "",
        copy_zeros: bool = False,
    ) -> str:
        """Reshape; when the target keeps the input's leading (batch) dim, it follows the batch at run time."""
        shape = [int(s) for s in shape]
        keep_batch = (
            in_shape is not None
            and len(in_shape) >= 2
            and len(shape) >= 2
            and ((shape[0] == 0 and copy_zeros) or (in_shape[0] is not None and shape[0] == in_shape[0]))
        )
        return self.add("reshape", [x], {"shape": shape, "keep_batch": keep_batch, "copy_zeros": copy_zeros}, source)

    def permute(self, x: str, dims: Sequence[int], source: str = "") -> str:
        if tuple(dims) == identity_perm(len(dims)):
            return x
        return self.add("permute", [x], {"dims": [int(d) for d in dims]}, source)

    def finish(self, outputs: Sequence[str]) -> dict[str, Any]:
        """The IR dict (dead nodes removed)."""
        live = set(outputs)
        kept: list[dict[str, Any]] = []
        for node in reversed(self.nodes):
            if any(o in live for o in node["outputs"]):
                kept.append(node)
                live.update(node["inputs"])
        kept.reverse()
        kept_names = {n["name"] for n in kept}
        self.weights = {k: v for k, v in self.weights.items() if k.split(".")[1] in kept_names}
        return {
            "format": IR_FORMAT,
            "version": IR_VERSION,
            "inputs": self.inputs,
            "outputs": list(outputs),
            "nodes": kept,
        }


def layer_weights(weight: np.ndarray, bias: np.ndarray | None) -> dict[str, torch.Tensor]:
    """A layer's ``weight`` (and ``bias``, flattened) as float32 state-dict tensors."""
    w = {"weight": torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32))}
    if bias is not None:
        w["bias"] = torch.from_numpy(np.ascontiguousarray(bias, dtype=np.float32).reshape(-1))
    return w


def _jsonable(obj: Any) -> Any:
    """Tuples, numpy scalars and arrays -> plain JSON types."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.bool_ | bool):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    return obj


def _rebuild_graph(arch: dict[str, Any]) -> GraphModule:
    """The ``graph`` architecture kind (an imported .onnx/.tflite): the IR stored in the record."""
    return GraphModule(arch["ir"])


register_kind("graph", _rebuild_graph)

"""Read an .onnx model into edgeopt's graph IR plus weights (see ``graph.py``).

Why hand-written: onnx2torch, the usual converter, imports torchvision, which has no CPU
build compatible with the pinned torch here; and edgeopt needs its own serialisable IR
anyway (saved models must rebuild without pickled code). Parsing uses the ``onnx`` package
(protobuf; never unpickles). ONNX is NCHW like PyTorch, so no layout tracking is needed.

Initializers become layer weights (Conv, Gemm/MatMul, BatchNormalization) or buffers (other
constants). Sub-graphs whose inputs are all constants (shape arithmetic, Constant chains,
casts) are folded at import with ONNX's own reference evaluator, so the op table below only
has to cover ops that run on activations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from google.protobuf.message import DecodeError
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from edgeopt.errors import EdgeoptError, UnsupportedOpError
from edgeopt.interop.graph import GraphBuilder, ImportedGraph, QuantInfo, layer_weights, same_padding, torch_pad_list


@dataclass
class _Node:
    index: int
    op: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any]
    proto: onnx.NodeProto

    def input(self, i: int) -> str:
        """Name of optional input ``i`` ('' when absent)."""
        return self.inputs[i] if i < len(self.inputs) else ""


def _corrupt(path: Path, why: str) -> EdgeoptError:
    return EdgeoptError(f"{path} is not a valid .onnx file ({why})", "re-export the model")


class _Importer:
    """Walks the ONNX nodes in order, emitting IR nodes."""

    def __init__(self, path: Path, model: onnx.ModelProto) -> None:
        self.path = path
        self.graph = model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
        self.b = GraphBuilder()
        self.consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in self.graph.initializer}
        self.values: dict[str, str] = {}
        self.shapes: dict[str, list[int | None]] = {}
        try:
            inferred = onnx.shape_inference.infer_shapes(model).graph
            infos = list(inferred.value_info) + list(inferred.input) + list(inferred.output)
        except Exception:  # shape inference is a help, not a requirement
            infos = list(self.graph.input) + list(self.graph.output)
        for vi in infos:
            if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
                self.shapes[vi.name] = [
                    d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim
                ]
        self.nodes = [
            _Node(
                i,
                n.op_type,
                n.name or f"{n.op_type}_{i}",
                list(n.input),
                list(n.output),
                {a.name: helper.get_attribute_value(a) for a in n.attribute},
                n,
            )
            for i, n in enumerate(self.graph.node)
        ]
        self.users: dict[str, list[_Node]] = {}
        for n in self.nodes:
            for v in n.inputs:
                self.users.setdefault(v, []).append(n)
        self.done: set[int] = set()  # nodes already absorbed by an earlier one (MatMul + Add)
        # values computed from a dynamic size (Shape of a dynamic-batch tensor): the error their use raises, and
        # whether the value is known to be all zeros (TorchScript's initial state of an RNN: ConstantOfShape(0))
        self.pending: dict[str, tuple[UnsupportedOpError, bool]] = {}
        # QDQ graphs: per-channel scales of int8 weights folded from DequantizeLinear (symmetric, zero point 0),
        # and the (scale, int8 zero point) of each activation a QuantizeLinear produced
        self.weight_grids: dict[str, tuple[np.ndarray, int]] = {}
        self.qparams: dict[str, tuple[float, int]] = {}
        self.quant = QuantInfo()

    # -- values
    def const(self, name: str) -> np.ndarray | None:
        return self.consts.get(name) if name else None

    def value(self, name: str) -> str:
        """IR value for ONNX tensor ``name`` (constants become float32 buffers on first use)."""
        if name not in self.values:
            c = self.const(name)
            if c is None:
                raise _corrupt(self.path, f"tensor '{name}' is used before it is computed")
            self.values[name] = self.b.const(c.astype(np.float32), name)
        return self.values[name]

    def weight(self, name: str, node: _Node) -> np.ndarray:
        c = self.const(name)
        if c is None:
            raise UnsupportedOpError(f"{node.op} with a run-time weight '{name}'", node.name, "ONNX")
        return c.astype(np.float32)

    def ints(self, node: _Node, attr: str, input_index: int) -> list[int] | None:
        """An int list given as attribute (older opsets) or constant input (newer); None when absent."""
        if attr in node.attrs:
            return [int(v) for v in node.attrs[attr]]
        name = node.input(input_index)
        if not name:
            return None
        c = self.const(name)
        if c is None:
            raise UnsupportedOpError(f"{node.op} with run-time '{attr}'", node.name, "ONNX")
        return [int(v) for v in c.reshape(-1)]

    def rank(self, name: str, node: _Node) -> int:
        shape = self.shapes.get(name)
        if shape is None:
            raise UnsupportedOpError(f"{node.op} on a tensor of unknown rank", node.name, "ONNX")
        return len(shape)

    def pads(self, node: _Node, kernel: list[int], strides: list[int], dilations: list[int]) -> list[tuple[int, int]]:
        """(begin, end) padding per spatial dim from ``pads`` [begins..., ends...] or ``auto_pad``."""
        n = len(kernel)
        auto = node.attrs.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            shape = self.shapes.get(node.inputs[0])
            if shape is None or len(shape) != n + 2 or None in shape[2:]:
                raise UnsupportedOpError(f"{node.op} auto_pad={auto} on unknown spatial size", node.name, "ONNX")
            pairs = [same_padding(shape[2 + i], kernel[i], strides[i], dilations[i]) for i in range(n)]
            return [(e, b) for b, e in pairs] if auto == "SAME_LOWER" else pairs
        if auto == "VALID":
            return [(0, 0)] * n
        pads = list(node.attrs.get("pads", [0] * (2 * n)))
        return [(int(pads[i]), int(pads[i + n])) for i in range(n)]

    def used(self, name: str) -> bool:
        """Whether ONNX tensor ``name`` feeds a node or is a graph output."""
        return bool(name) and (bool(self.users.get(name)) or name in {o.name for o in self.graph.output})

    def alias(self, out: str, src: str) -> None:
        if src in self.values:
            self.values[out] = self.values[src]
        elif src in self.consts:
            self.consts[out] = self.consts[src]
        else:
            raise _corrupt(self.path, f"tensor '{src}' is used before it is computed")

    # -- the walk
    def try_fold(self, node: _Node) -> bool:
        """Evaluate a node whose inputs are all constants at import time (ONNX reference evaluator)."""
        present = [v for v in node.inputs if v]
        if not present or not all(v in self.consts for v in present) or node.proto.domain not in ("", "ai.onnx"):
            return False
        try:
            outs = ReferenceEvaluator(node.proto, opsets={"": self.opset}).run(
                None, {v: self.consts[v] for v in present}
            )
        except Exception:  # not evaluable here: leave it to the op table
            return False
        for name, arr in zip(node.outputs, outs, strict=False):
            if name:
                self.consts[name] = np.asarray(arr)
        if node.op == "DequantizeLinear":
            self.note_weight_grid(node)
        return True

    def note_weight_grid(self, node: _Node) -> None:
        """Remember the int8 grid of a weight a folded DequantizeLinear produced (symmetric int8 only)."""
        q, zero = self.consts[node.inputs[0]], self.const(node.input(2))
        if q.dtype != np.int8 or (zero is not None and np.any(zero)) or q.ndim < 2:
            return
        scale = self.consts[node.inputs[1]].astype(np.float32).reshape(-1)
        axis = int(node.attrs.get("axis", 1)) % q.ndim if scale.size > 1 else 0
        self.weight_grids[node.outputs[0]] = (np.broadcast_to(scale, (q.shape[axis],)).copy(), axis)
        self.quant.weight_tensors += 1

    def grid_layer(self, weight: str, out_axis: int) -> None:
        """Put the file's int8 grid on the layer just emitted when ``weight`` came from int8 codes along
        ``out_axis`` (its output channels): the layer then computes with ``round(w / s) * s``."""
        grid = self.weight_grids.get(weight)
        if grid is not None and grid[1] == out_axis:
            self.b.nodes[-1]["attrs"]["weight_quant"] = {"scale": [float(v) for v in grid[0]], "qmax": 127}

    def run(self) -> ImportedGraph:
        for inp in self.graph.input:
            if inp.name in self.consts:
                continue  # old IR versions list initializers as inputs too
            if inp.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
                raise EdgeoptError(f"model input '{inp.name}' is not float32", "import a float32 model")
            shape = [
                d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                for d in inp.type.tensor_type.shape.dim
            ]
            self.values[inp.name] = self.b.input(shape, inp.name)
            self.shapes.setdefault(inp.name, shape)
        for node in self.nodes:
            if node.index in self.done or (node.op != "Constant" and self.try_fold(node)) or self.defer(node):
                continue
            translate = TRANSLATORS.get(node.op) if node.proto.domain in ("", "ai.onnx") else None
            if translate is None:
                op = node.op if node.proto.domain in ("", "ai.onnx") else f"{node.proto.domain}.{node.op}"
                raise UnsupportedOpError(op, node.name, "ONNX")
            translate(self, node)
        outputs = [self.value(o.name) for o in self.graph.output]
        return ImportedGraph(self.b.finish(outputs), self.b.weights, "NCHW", self.quant)

    def defer(self, node: _Node) -> bool:
        """Shape arithmetic on a dynamic size waits for its consumer (True: ``node`` deferred).

        Its result is usable only as an RNN's zero initial state; any other consumer raises the deferred error.
        """
        waiting = [v for v in node.inputs if v in self.pending]
        if not waiting or node.op in ("LSTM", "GRU"):
            return False
        error = self.pending[waiting[0]][0]
        if any(v and v not in self.pending and v not in self.consts for v in node.inputs):
            raise error  # an activation meets a dynamic size (a Reshape to the batch, ...)
        value = node.attrs.get("value")
        zero = node.op == "ConstantOfShape" and (value is None or not numpy_helper.to_array(value).any())
        for out in node.outputs:
            self.pending[out] = (error, zero)
        return True

    def emit(self, node: _Node, op: str, inputs: list[str], attrs: dict[str, Any] | None = None) -> None:
        self.values[node.outputs[0]] = self.b.add(op, [self.value(v) for v in inputs], attrs, node.name)


# ----------------------------------------------------------------------------- translators


def _conv(imp: _Importer, node: _Node) -> None:
    w = imp.weight(node.inputs[1], node)
    if w.ndim not in (3, 4):
        raise UnsupportedOpError(f"Conv{w.ndim - 2}D", node.name, "ONNX")
    n = w.ndim - 2
    bias = imp.weight(node.input(2), node) if node.input(2) else None
    strides = list(node.attrs.get("strides", [1] * n))
    dilations = list(node.attrs.get("dilations", [1] * n))
    group = int(node.attrs.get("group", 1))
    x = imp.value(node.inputs[0])
    pairs = imp.pads(node, list(w.shape[2:]), strides, dilations)
    if n == 1:
        y = imp.b.conv1d(x, w, bias, strides[0], pairs[0], dilations[0], group, node.name)
    else:
        (top, bottom), (left, right) = pairs
        y = imp.b.conv2d(x, w, bias, strides, (left, right, top, bottom), dilations, group, node.name)
    imp.grid_layer(node.inputs[1], 0)
    imp.values[node.outputs[0]] = y


def _conv_transpose(imp: _Importer, node: _Node) -> None:
    """ConvTranspose (1-D or 2-D) as nn.ConvTranspose*d; asymmetric pads crop the output with ``slice``."""
    w = imp.weight(node.inputs[1], node)  # [C_in, C_out / group, k...], PyTorch's layout too
    n = w.ndim - 2
    if n not in (1, 2):
        raise UnsupportedOpError(f"ConvTranspose{n}D", node.name, "ONNX")
    a = node.attrs
    if "output_shape" in a or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise UnsupportedOpError("ConvTranspose with output_shape or auto_pad (give pads)", node.name, "ONNX")
    group = int(a.get("group", 1))
    bias = imp.weight(node.input(2), node) if node.input(2) else None
    pads = list(a.get("pads", [0] * (2 * n)))
    begins, ends = pads[:n], pads[n:]
    common = [min(b, e) for b, e in zip(begins, ends, strict=True)]
    attrs = {
        "in_channels": int(w.shape[0]),
        "out_channels": int(w.shape[1]) * group,
        "kernel_size": list(w.shape[2:]),
        "stride": list(a.get("strides", [1] * n)),
        "padding": common,
        "output_padding": list(a.get("output_padding", [0] * n)),
        "dilation": list(a.get("dilations", [1] * n)),
        "groups": group,
        "bias": bias is not None,
    }
    y = imp.b.add("conv_transpose", [imp.value(node.inputs[0])], attrs, node.name, layer_weights(w, bias))
    for i, (b, e, c) in enumerate(zip(begins, ends, common, strict=True)):
        if b != e:  # nn.ConvTranspose crops symmetrically: crop the rest here
            y = imp.b.add("slice", [y], {"dim": 2 + i, "start": b - c, "end": -(e - c) or None}, node.name)
    imp.values[node.outputs[0]] = y


def _bias_vector(c: np.ndarray, out: int) -> np.ndarray | None:
    """``c`` as a length-``out`` bias if it broadcasts as one along the last dim, else None."""
    if c.size == 1:
        return np.full(out, c.reshape(-1)[0], np.float32)
    if c.size == out and c.shape[-1] == out:
        return c.reshape(out).astype(np.float32)
    return None


def _gemm(imp: _Importer, node: _Node) -> None:
    a = node.attrs
    w = imp.weight(node.inputs[1], node)
    w = (w if a.get("transB", 0) else w.T) * np.float32(a.get("alpha", 1.0))  # -> [out, in]
    x = imp.value(node.inputs[0])
    if a.get("transA", 0):
        x = imp.b.permute(x, [1, 0], node.name)
    bias = None
    if node.input(2):
        bias = _bias_vector(imp.weight(node.input(2), node) * np.float32(a.get("beta", 1.0)), w.shape[0])
        if bias is None:
            raise UnsupportedOpError("Gemm with a per-row C", node.name, "ONNX")
    imp.values[node.outputs[0]] = imp.b.linear(x, w, bias, node.name)
    imp.grid_layer(node.inputs[1], 0 if a.get("transB", 0) else 1)


def _matmul(imp: _Importer, node: _Node) -> None:
    w = imp.const(node.inputs[1])
    if w is None or w.ndim != 2 or imp.const(node.inputs[0]) is not None:  # activations on both sides (attention)
        imp.emit(node, "matmul", node.inputs[:2])
        return
    weight = w.T.astype(np.float32)
    out = node.outputs[0]
    bias = None
    users = imp.users.get(out, [])
    if len(users) == 1 and users[0].op == "Add" and out not in {o.name for o in imp.graph.output}:
        add = users[0]
        other = add.inputs[1] if add.inputs[0] == out else add.inputs[0]
        c = imp.const(other)
        bias = _bias_vector(c, weight.shape[0]) if c is not None and c.ndim <= 2 else None
        if bias is not None:  # MatMul + Add(bias) is one linear layer
            imp.done.add(add.index)
            out = add.outputs[0]
    imp.values[out] = imp.b.linear(imp.value(node.inputs[0]), weight, bias, node.name)
    imp.grid_layer(node.inputs[1], 1)


def _binary(ir_op: str) -> Callable[[_Importer, _Node], None]:
    return lambda imp, node: imp.emit(node, ir_op, node.inputs[:2])


def _activation(kind: str) -> Callable[[_Importer, _Node], None]:
    def translate(imp: _Importer, node: _Node) -> None:
        imp.values[node.outputs[0]] = imp.b.activation(imp.value(node.inputs[0]), kind, node.name)

    return translate


def _clip(imp: _Importer, node: _Node) -> None:
    def bound(i: int, attr: str) -> float | None:
        if imp.opset < 11:
            v = node.attrs.get(attr)
        else:
            name = node.input(i)
            c = imp.const(name) if name else None
            if name and c is None:
                raise UnsupportedOpError("Clip with run-time bounds", node.name, "ONNX")
            v = None if c is None else float(c.reshape(-1)[0])
        return None if v is None or not np.isfinite(v) else float(v)

    lo, hi = bound(1, "min"), bound(2, "max")
    x = node.inputs[0]
    if lo == 0.0 and hi == 6.0:
        imp.emit(node, "relu6", [x])
    elif lo == 0.0 and hi is None:
        imp.emit(node, "relu", [x])
    elif lo is None and hi is None:
        imp.alias(node.outputs[0], x)
    else:
        imp.emit(node, "clamp", [x], {"min": lo, "max": hi})


def _hardsigmoid(imp: _Importer, node: _Node) -> None:
    attrs = {"alpha": float(node.attrs.get("alpha", 0.2)), "beta": float(node.attrs.get("beta", 0.5))}
    imp.emit(node, "hardsigmoid", [node.inputs[0]], attrs)


def _leaky_relu(imp: _Importer, node: _Node) -> None:
    imp.emit(node, "leaky_relu", [node.inputs[0]], {"slope": float(node.attrs.get("alpha", 0.01))})


def _pool(kind: str) -> Callable[[_Importer, _Node], None]:
    """AveragePool / MaxPool over 1 or 2 spatial dims (``kind`` avg or max)."""

    def translate(imp: _Importer, node: _Node) -> None:
        k = list(node.attrs["kernel_shape"])
        n = len(k)
        if n not in (1, 2):
            raise UnsupportedOpError(f"{node.op} over {n}-D", node.name, "ONNX")
        if len(node.outputs) > 1 and imp.used(node.outputs[1]):
            raise UnsupportedOpError(f"{node.op} with indices output", node.name, "ONNX")
        strides = list(node.attrs.get("strides", [1] * n))
        dilations = list(node.attrs.get("dilations", [1] * n))
        pairs = imp.pads(node, k, strides, dilations)
        attrs: dict[str, Any] = {
            "kernel_size": k,
            "stride": strides,
            "pads": [p for pair in reversed(pairs) for p in pair],  # (left, right[, top, bottom])
            "ceil_mode": bool(node.attrs.get("ceil_mode", 0)),
        }
        if kind == "avg":
            attrs["count_include_pad"] = bool(node.attrs.get("count_include_pad", 0))
        else:
            attrs["dilation"] = dilations
        imp.emit(node, f"{kind}_pool{n}d", [node.inputs[0]], attrs)

    return translate


def _global_pool(ir_op: str) -> Callable[[_Importer, _Node], None]:
    """GlobalAveragePool / GlobalMaxPool: a reduction over every dim after N, C."""

    def translate(imp: _Importer, node: _Node) -> None:
        shape = imp.shapes.get(node.inputs[0])
        rank = len(shape) if shape else 4
        imp.emit(node, ir_op, [node.inputs[0]], {"dims": list(range(2, rank)), "keepdim": True})

    return translate


def _reduce(ir_op: str) -> Callable[[_Importer, _Node], None]:
    """ReduceMean / ReduceSum / ReduceMax: axes as attribute (older opsets) or input."""

    def translate(imp: _Importer, node: _Node) -> None:
        axes = imp.ints(node, "axes", 1)
        if not axes:
            if node.attrs.get("noop_with_empty_axes", 0):
                imp.alias(node.outputs[0], node.inputs[0])
                return
            axes = list(range(imp.rank(node.inputs[0], node)))
        imp.emit(node, ir_op, [node.inputs[0]], {"dims": axes, "keepdim": bool(node.attrs.get("keepdims", 1))})

    return translate


def _reshape(imp: _Importer, node: _Node) -> None:
    shape = imp.ints(node, "shape", 1)
    if shape is None:
        raise UnsupportedOpError("Reshape without a shape", node.name, "ONNX")
    copy_zeros = not node.attrs.get("allowzero", 0) and 0 in shape
    x = node.inputs[0]
    imp.values[node.outputs[0]] = imp.b.reshape(imp.value(x), shape, imp.shapes.get(x), node.name, copy_zeros)


def _flatten(imp: _Importer, node: _Node) -> None:
    axis = int(node.attrs.get("axis", 1))
    if axis < 0:
        axis += imp.rank(node.inputs[0], node)
    imp.emit(node, "flatten", [node.inputs[0]], {"axis": axis})


def _concat(imp: _Importer, node: _Node) -> None:
    imp.emit(node, "concat", [v for v in node.inputs if v], {"dim": int(node.attrs["axis"])})


def _pad(imp: _Importer, node: _Node) -> None:
    mode = node.attrs.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode != "constant":
        raise UnsupportedOpError(f"Pad(mode={mode})", node.name, "ONNX")
    pads = imp.ints(node, "pads", 1)
    if pads is None:
        raise UnsupportedOpError("Pad without pads", node.name, "ONNX")
    value = float(node.attrs.get("value", 0.0))
    if imp.opset >= 11 and node.input(2):
        c = imp.const(node.input(2))
        if c is None:
            raise UnsupportedOpError("Pad with a run-time value", node.name, "ONNX")
        value = float(c.reshape(-1)[0]) if c.size else 0.0
    n = len(pads) // 2
    axes = imp.ints(node, "axes", 3)  # opset 18+: optional 4th input
    if axes is None:
        pairs = [(pads[i], pads[i + n]) for i in range(n)]
    else:
        rank = imp.rank(node.inputs[0], node)
        pairs = [(0, 0)] * rank
        for i, ax in enumerate(axes):
            pairs[ax % rank] = (pads[i], pads[i + n])
    imp.emit(node, "pad", [node.inputs[0]], {"pads": torch_pad_list(pairs), "value": value})


def _softmax(imp: _Importer, node: _Node) -> None:
    axis = int(node.attrs.get("axis", -1 if imp.opset >= 13 else 1))
    if imp.opset < 13:  # older opsets flatten dims >= axis; same thing only when axis is the last dim
        rank = imp.rank(node.inputs[0], node)
        if axis % rank != rank - 1:
            raise UnsupportedOpError(f"Softmax(axis={axis}) over flattened dims (opset {imp.opset})", node.name, "ONNX")
    imp.emit(node, "softmax", [node.inputs[0]], {"dim": axis, "beta": 1.0})


def _batch_norm(imp: _Importer, node: _Node) -> None:
    if node.attrs.get("training_mode", 0):
        raise UnsupportedOpError("BatchNormalization(training_mode=1)", node.name, "ONNX")
    scale, bias, mean, var = (imp.weight(v, node) for v in node.inputs[1:5])
    shape = imp.shapes.get(node.inputs[0])
    rank = len(shape) if shape else 4
    attrs = {
        "num_features": int(scale.size),
        "eps": float(node.attrs.get("epsilon", 1e-5)),
        "momentum": 1.0 - float(node.attrs.get("momentum", 0.9)),
        "rank": rank,
    }  # torch: weight of the new batch
    weights = {"weight": scale, "bias": bias, "running_mean": mean, "running_var": var}
    w = {k: torch.from_numpy(np.ascontiguousarray(v.reshape(-1))) for k, v in weights.items()}
    w["num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    imp.values[node.outputs[0]] = imp.b.add("batchnorm", [imp.value(node.inputs[0])], attrs, node.name, w)


def _identity(imp: _Importer, node: _Node) -> None:
    imp.alias(node.outputs[0], node.inputs[0])


def _transpose(imp: _Importer, node: _Node) -> None:
    perm = node.attrs.get("perm")
    if perm is None:
        perm = list(reversed(range(imp.rank(node.inputs[0], node))))
    imp.values[node.outputs[0]] = imp.b.permute(imp.value(node.inputs[0]), list(perm), node.name)


def _squeeze(imp: _Importer, node: _Node) -> None:
    axes = imp.ints(node, "axes", 1)
    if axes is None:
        shape = imp.shapes.get(node.inputs[0])
        if shape is None or None in shape:
            raise UnsupportedOpError("Squeeze without axes on an unknown shape", node.name, "ONNX")
        axes = [i for i, s in enumerate(shape) if s == 1]
    imp.emit(node, "squeeze", [node.inputs[0]], {"dims": axes})


def _unsqueeze(imp: _Importer, node: _Node) -> None:
    axes = imp.ints(node, "axes", 1)
    if axes is None:
        raise UnsupportedOpError("Unsqueeze without axes", node.name, "ONNX")
    if any(a < 0 for a in axes):
        out_rank = imp.rank(node.inputs[0], node) + len(axes)
        axes = [a % out_rank for a in axes]
    imp.emit(node, "unsqueeze", [node.inputs[0]], {"dims": sorted(axes)})


def _gather(imp: _Importer, node: _Node) -> None:
    idx = imp.const(node.inputs[1])
    if idx is None:
        raise UnsupportedOpError("Gather with run-time indices", node.name, "ONNX")
    rank = imp.rank(node.inputs[0], node)
    axis = int(node.attrs.get("axis", 0)) % rank
    if (idx < 0).any():  # negative indices count from the end: needs the axis' size
        size = imp.shapes[node.inputs[0]][axis]
        if size is None:
            raise UnsupportedOpError("Gather with negative indices on a dynamic axis", node.name, "ONNX")
        idx = np.where(idx < 0, idx + size, idx)
    x = imp.value(node.inputs[0])
    if idx.ndim == 0:  # a scalar index drops the axis
        y = imp.b.add("slice", [x], {"dim": axis, "start": int(idx), "end": int(idx) + 1}, node.name)
        imp.values[node.outputs[0]] = imp.b.add("squeeze", [y], {"dims": [axis]}, node.name)
        return
    indices = imp.b.const(idx.astype(np.int64), node.input(1))
    imp.values[node.outputs[0]] = imp.b.add("gather", [x, indices], {"axis": axis}, node.name)


def _slice(imp: _Importer, node: _Node) -> None:
    if imp.opset < 10:
        starts, ends = node.attrs["starts"], node.attrs["ends"]
        axes, steps = node.attrs.get("axes"), None
    else:
        starts, ends = imp.ints(node, "starts", 1), imp.ints(node, "ends", 2)
        axes, steps = imp.ints(node, "axes", 3), imp.ints(node, "steps", 4)
    if starts is None or ends is None:
        raise UnsupportedOpError("Slice without starts/ends", node.name, "ONNX")
    axes = list(axes) if axes is not None else list(range(len(starts)))
    steps = list(steps) if steps is not None else [1] * len(starts)
    if any(st < 1 for st in steps):
        raise UnsupportedOpError("Slice with a negative step", node.name, "ONNX")
    rank = imp.rank(node.inputs[0], node)
    y = imp.value(node.inputs[0])
    big = 2**62  # ONNX writes "to the end" as INT64_MAX; Python's slicing clamps the same way
    for ax, start, end, step in zip(axes, starts, ends, steps, strict=True):
        attrs = {"dim": int(ax) % rank, "start": int(start), "end": None if end >= big else int(end), "step": int(step)}
        y = imp.b.add("slice", [y], attrs, node.name)
    imp.values[node.outputs[0]] = y


def _split(imp: _Importer, node: _Node) -> None:
    """Split: one ``slice`` node per output (the IR's nodes have one output each)."""
    shape = imp.shapes.get(node.inputs[0])
    rank = imp.rank(node.inputs[0], node)
    axis = int(node.attrs.get("axis", 0)) % rank
    sizes = imp.ints(node, "split", 1)
    if sizes is None:
        total = shape[axis] if shape else None
        if total is None:
            raise UnsupportedOpError("Split into equal parts of a dynamic axis", node.name, "ONNX")
        parts = int(node.attrs.get("num_outputs", len(node.outputs)))
        step = -(-total // parts)  # ceil: the last part may be smaller (opset 18)
        sizes = [min(step, total - i * step) for i in range(parts)]
    x = imp.value(node.inputs[0])
    start = 0
    for out, size in zip(node.outputs, sizes, strict=True):
        if out:
            imp.values[out] = imp.b.add("slice", [x], {"dim": axis, "start": start, "end": start + size}, node.name)
        start += size


def _resize(imp: _Importer, node: _Node) -> None:
    """Resize of the spatial dims as F.interpolate: nearest and (bi)linear, in the transforms PyTorch has."""
    a = {k: v.decode() if isinstance(v, bytes) else v for k, v in node.attrs.items()}
    mode = a.get("mode", "nearest")
    old = imp.opset < 11  # opset 10's Resize maps coordinates like Upsample: asymmetric, nearest rounds down
    transform = a.get("coordinate_transformation_mode", "asymmetric" if old else "half_pixel")
    rank = imp.rank(node.inputs[0], node)
    if a.get("antialias") or a.get("axes") or a.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise UnsupportedOpError("Resize with antialias, axes or an aspect-ratio policy", node.name, "ONNX")
    scales = imp.const(node.input(1)) if old else imp.const(node.input(2))
    sizes = None if old else imp.const(node.input(3))
    attrs: dict[str, Any] = {}
    if sizes is not None and sizes.size:
        attrs["size"] = [int(v) for v in sizes.reshape(-1)[2:]]
    elif scales is not None and scales.size:
        if list(scales.reshape(-1)[:2]) != [1.0, 1.0]:
            raise UnsupportedOpError("Resize of the batch or channel dims", node.name, "ONNX")
        attrs["scale_factor"] = [float(v) for v in scales.reshape(-1)[2:]]
    else:
        raise UnsupportedOpError("Resize with run-time scales or sizes", node.name, "ONNX")
    if old and min(attrs["scale_factor"]) < 1:  # ONNX Runtime rounds opset 10's down-scaling its own way
        raise UnsupportedOpError(f"Resize (opset {imp.opset}) down-scaling", node.name, "ONNX")
    integer_up = "scale_factor" in attrs and all(float(v).is_integer() and v >= 1 for v in attrs["scale_factor"])
    if mode == "nearest":
        rounding = a.get("nearest_mode", "floor" if old else "round_prefer_floor")
        if (transform, rounding) == ("asymmetric", "floor") or (transform == "half_pixel" and integer_up):
            attrs["mode"] = "nearest"  # the same source pixels (no ties at integer up-scales)
        elif transform in ("half_pixel", "pytorch_half_pixel") and rounding == "round_prefer_ceil":
            attrs["mode"] = "nearest-exact"
        else:
            raise UnsupportedOpError(f"Resize(nearest, {transform}, {rounding})", node.name, "ONNX")
    elif mode == "linear" and transform in ("half_pixel", "pytorch_half_pixel", "align_corners"):
        attrs["mode"] = {3: "linear", 4: "bilinear", 5: "trilinear"}.get(rank, "")
        attrs["align_corners"] = transform == "align_corners"
        if not attrs["mode"]:
            raise UnsupportedOpError(f"Resize(linear) of a rank-{rank} tensor", node.name, "ONNX")
    else:
        raise UnsupportedOpError(f"Resize({mode}, {transform})", node.name, "ONNX")
    imp.emit(node, "resize", [node.inputs[0]], attrs)


# ONNX gate order -> PyTorch's: LSTM i,o,f,c -> i,f,c(g),o; GRU z,r,h -> r,z,n
_GATES = {"LSTM": [0, 2, 3, 1], "GRU": [1, 0, 2]}


def _rnn(imp: _Importer, node: _Node) -> None:
    """LSTM / GRU as nn.LSTM / nn.GRU (zero initial state, default activations, full sequences).

    ``Y`` is the layer's output; ``Y_h`` (the last step of each direction) is sliced from it; ``Y_c`` and
    ``sequence_lens`` are refused."""
    a = {k: v.decode() if isinstance(v, bytes) else v for k, v in node.attrs.items()}
    op = node.op
    for attr in ("activations", "clip", "activation_alpha", "activation_beta"):
        if attr in a:
            raise UnsupportedOpError(f"{op} with {attr}", node.name, "ONNX")
    if a.get("input_forget"):
        raise UnsupportedOpError(f"{op}(input_forget=1)", node.name, "ONNX")
    if op == "GRU" and not a.get("linear_before_reset", 0):
        raise UnsupportedOpError("GRU(linear_before_reset=0) (PyTorch's GRU resets after)", node.name, "ONNX")
    if node.input(4) or node.input(7):
        raise UnsupportedOpError(f"{op} with sequence_lens or peepholes", node.name, "ONNX")
    for i in (5, 6):  # initial_h, initial_c: only zeros (PyTorch's default state)
        if node.input(i) in imp.pending:  # zeros of the batch's size, or a dynamic-shape error
            error, zero = imp.pending[node.input(i)]
            if not zero:
                raise error
            continue
        init = imp.const(node.input(i)) if node.input(i) else np.zeros(1)
        if init is None or np.any(init):
            raise UnsupportedOpError(f"{op} with a non-zero initial state", node.name, "ONNX")
    if len(node.outputs) > 2 and imp.used(node.outputs[2]):
        raise UnsupportedOpError(f"{op} whose cell state Y_c is used", node.name, "ONNX")
    w, r = imp.weight(node.inputs[1], node), imp.weight(node.inputs[2], node)
    dirs, gates_h, input_size = w.shape
    hidden = int(a.get("hidden_size", r.shape[-1]))
    gates = len(_GATES[op])
    b = imp.weight(node.input(3), node) if node.input(3) else np.zeros((dirs, 2 * gates * hidden), np.float32)
    direction = a.get("direction", "forward")
    batch_first = bool(a.get("layout", 0))

    def torch_order(m: np.ndarray) -> np.ndarray:
        return np.concatenate([m[g * hidden : (g + 1) * hidden] for g in _GATES[op]])

    weights = {}
    for d in range(dirs):
        suffix = "_reverse" if d == 1 else ""
        weights[f"weight_ih_l0{suffix}"] = torch_order(w[d])
        weights[f"weight_hh_l0{suffix}"] = torch_order(r[d])
        weights[f"bias_ih_l0{suffix}"] = torch_order(b[d, : gates * hidden])
        weights[f"bias_hh_l0{suffix}"] = torch_order(b[d, gates * hidden :])
    attrs = {"cell": op.lower(), "input_size": int(input_size), "hidden_size": hidden, "directions": int(dirs),
             "batch_first": batch_first, "reverse": direction == "reverse"}  # fmt: skip
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()}
    y = imp.b.add("rnn", [imp.value(node.inputs[0])], attrs, node.name, tensors)
    if node.outputs[0]:
        imp.values[node.outputs[0]] = y
    if len(node.outputs) > 1 and node.outputs[1]:  # Y_h: each direction's last step, Y without its seq dim
        seq = 1 if batch_first else 0
        lasts = []
        for d in range(dirs):
            backwards = direction == "reverse" or d == 1
            step = {"dim": seq, "start": 0, "end": 1} if backwards else {"dim": seq, "start": -1, "end": None}
            one = imp.b.add("slice", [y], step, node.name)
            lasts.append(imp.b.add("slice", [one], {"dim": seq + 1, "start": d, "end": d + 1}, node.name))
        h = lasts[0] if dirs == 1 else imp.b.add("concat", lasts, {"dim": seq + 1}, node.name)
        imp.values[node.outputs[1]] = imp.b.add("squeeze", [h], {"dims": [seq]}, node.name)


def _quantize_linear(imp: _Importer, node: _Node) -> None:
    """QuantizeLinear on an activation: a ``quant`` node (the value flowing on is the real value of its int8
    code); uint8 becomes the same grid in int8 (codes and zero point shifted by 128: exact)."""
    scale, zero = imp.const(node.inputs[1]), imp.const(node.input(2))
    if scale is None or scale.size != 1 or (zero is not None and zero.size != 1):
        raise UnsupportedOpError("QuantizeLinear with run-time or per-channel activation parameters", node.name, "ONNX")
    dtype = np.dtype(np.uint8) if zero is None else zero.dtype
    if dtype not in (np.int8, np.uint8):
        raise UnsupportedOpError(f"QuantizeLinear to {dtype} (int8 and uint8 import)", node.name, "ONNX")
    z = (0 if zero is None else int(zero.reshape(-1)[0])) - (128 if dtype == np.uint8 else 0)
    params = (float(scale.reshape(-1)[0]), z)
    attrs = {"scale": params[0], "zero_point": z, "qmin": -128, "qmax": 127}
    imp.emit(node, "quant", [node.inputs[0]], attrs)
    imp.qparams[node.outputs[0]] = params
    imp.quant.kind = "int8"
    imp.quant.activation_tensors += 1
    if node.inputs[0] in {i.name for i in imp.graph.input}:
        imp.quant.input_quant = params


def _dequantize_linear(imp: _Importer, node: _Node) -> None:
    """DequantizeLinear of a QuantizeLinear's output: the real value is already flowing (an alias)."""
    params = imp.qparams.get(node.inputs[0])
    scale, zero = imp.const(node.inputs[1]), imp.const(node.input(2))
    if params is None or scale is None:
        raise UnsupportedOpError("DequantizeLinear of a run-time tensor no QuantizeLinear produced", node.name, "ONNX")
    z = 0 if zero is None else int(zero.reshape(-1)[0]) - (128 if zero.dtype == np.uint8 else 0)
    if scale.size != 1 or (float(scale.reshape(-1)[0]), z) != params:
        raise UnsupportedOpError("DequantizeLinear with other parameters than its QuantizeLinear", node.name, "ONNX")
    imp.alias(node.outputs[0], node.inputs[0])


def _constant(imp: _Importer, node: _Node) -> None:
    a = node.attrs
    if "value" in a:
        arr = numpy_helper.to_array(a["value"])
    elif "value_float" in a or "value_floats" in a:
        arr = np.asarray(a.get("value_float", a.get("value_floats")), np.float32)
    elif "value_int" in a or "value_ints" in a:
        arr = np.asarray(a.get("value_int", a.get("value_ints")), np.int64)
    else:
        raise UnsupportedOpError(f"Constant({', '.join(a)})", node.name, "ONNX")
    imp.consts[node.outputs[0]] = arr


def _shape(imp: _Importer, node: _Node) -> None:
    shape = imp.shapes.get(node.inputs[0])
    if shape is None or None in shape or node.attrs.get("start") is not None or node.attrs.get("end") is not None:
        imp.pending[node.outputs[0]] = (UnsupportedOpError("Shape of a dynamic tensor", node.name, "ONNX"), False)
        return
    imp.consts[node.outputs[0]] = np.asarray(shape, np.int64)


TRANSLATORS: dict[str, Callable[[_Importer, _Node], None]] = {
    "Conv": _conv,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Add": _binary("add"),
    "Sub": _binary("sub"),
    "Mul": _binary("mul"),
    "Div": _binary("div"),
    "Relu": _activation("relu"),
    "Sigmoid": _activation("sigmoid"),
    "Tanh": _activation("tanh"),
    "HardSwish": _activation("hardswish"),
    "HardSigmoid": _hardsigmoid,
    "LeakyRelu": _leaky_relu,
    "Clip": _clip,
    "AveragePool": _pool("avg"),
    "MaxPool": _pool("max"),
    "GlobalAveragePool": _global_pool("mean"),
    "GlobalMaxPool": _global_pool("amax"),
    "ReduceMean": _reduce("mean"),
    "ReduceSum": _reduce("sum"),
    "ReduceMax": _reduce("amax"),
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Concat": _concat,
    "Pad": _pad,
    "Softmax": _softmax,
    "BatchNormalization": _batch_norm,
    "Identity": _identity,
    "Dropout": _identity,
    "Transpose": _transpose,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Constant": _constant,
    "Shape": _shape,
    "Gather": _gather,
    "Slice": _slice,
    "Split": _split,
    "Resize": _resize,
    "ConvTranspose": _conv_transpose,
    "QuantizeLinear": _quantize_linear,
    "DequantizeLinear": _dequantize_linear,
    "LSTM": _rnn,
    "GRU": _rnn,
}


def read_onnx(path: str | Path) -> ImportedGraph:
    """Parse an .onnx file into graph IR, weights (state_dict entries) and input layout ("NCHW")."""
    path = Path(path)
    try:
        model = onnx.load(str(path))
    except DecodeError as e:
        raise _corrupt(path, f"protobuf decode failed: {e}") from e
    except (OSError, ValueError) as e:  # unreadable file, missing external data
        raise _corrupt(path, str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__) from e
    if not model.graph.node or not model.graph.output:
        raise _corrupt(path, "no graph in the file")
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as e:
        raise _corrupt(path, str(e).strip().splitlines()[0]) from e
    return _Importer(path, model).run()

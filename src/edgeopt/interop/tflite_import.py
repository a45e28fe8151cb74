"""Read a float .tflite model into edgeopt's graph IR plus weights (see ``graph.py``).

Why hand-written: no maintained TFLite -> PyTorch importer exists. The file is parsed with
the ``tflite`` package (the flatbuffer schema, generated code): the interpreter is never
run and nothing in the file is executed or unpickled.

Layout. TFLite is NHWC; PyTorch layers are NCHW. The imported module keeps the .tflite's
*interface* (an NHWC input stays NHWC) but computes in NCHW. Every TFLite tensor is tracked
with a permutation ``perm`` such that ``torch value == tflite tensor.permute(perm)``:
conv/pool outputs live as NCHW (``perm = (0, 3, 1, 2)``), the graph input and reshape
results as-is (identity). A consumer asks for the layout it needs and a permute node is
emitted only when the held layout differs (so an NHWC model gets one permute at the input;
a litert-torch model, whose NCHW input is followed by TRANSPOSE ops, gets none: TRANSPOSE is
absorbed into ``perm``). Layout-sensitive ops (concat axis, pad, mean axes, softmax axis,
squeeze, broadcast constants) remap their axes through ``perm``; reshape and fully-connected
ask for the TFLite layout so element order matches exactly, and 4-D outputs are permuted back.
"""

from __future__ import annotations

import importlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np
from tflite.Model import Model
from tflite.utils import BUILTIN_OPCODE2NAME

from edgeopt.errors import EdgeoptError, UnsupportedOpError
from edgeopt.interop.graph import (
    GraphBuilder,
    ImportedGraph,
    QuantInfo,
    identity_perm,
    invert_perm,
    same_padding,
    torch_pad_list,
)

NCHW = (0, 3, 1, 2)  # perm taking an NHWC tensor to NCHW

# tflite.TensorType values -> numpy dtypes (the ones a float model's constants use)
_NP_TYPES: dict[int, Any] = {
    0: np.float32,
    1: np.float16,
    2: np.int32,
    3: np.uint8,
    4: np.int64,
    6: np.bool_,
    7: np.int16,
    9: np.int8,
    10: np.float64,
}
_QUANTIZED_TYPES = {3, 7, 9}  # UINT8, INT16, INT8 activations mean a full-integer model
_INT8, _INT32 = 9, 2
_WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
MODES = ("auto", "dequantize")  # auto: keep int8 / hybrid quantization as LiteRT runs it
# Fused activation codes -> activation. LiteRT's kernels turn the fused activation into a clamp
# range (CalculateActivationRange), which exists only for RELU, RELU_N1_TO_1 and RELU6: a fused
# TANH is never applied (conv, depthwise, add, mul, sub, pools ignore it; FC and concat reject it),
# checked against the interpreter. We reproduce the runtime, so TANH maps to no activation.
_FUSED_ACTIVATIONS = {0: "none", 1: "relu", 2: "relu_n1_to_1", 3: "relu6", 4: "none"}
_CUSTOM = 32

_TYPE_NAMES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 7: "int16", 9: "int8", 10: "float64"}


@dataclass
class _Tensor:
    name: str
    shape: tuple[int, ...]
    batch_dynamic: bool
    type: int
    data: bytes | None  # raw constant data, None for run-time tensors
    scale: np.ndarray | None
    zero_point: np.ndarray | None
    quantized_dim: int


@dataclass
class _Op:
    index: int
    code: str
    inputs: list[int]
    outputs: list[int]
    source: str  # the first output tensor's name: how tools (Netron, the interpreter) identify an op
    _options: Any  # flatbuffers Table of the builtin options, or None

    def options(self, cls_name: str) -> Any:
        """The op's options table as ``tflite.<cls_name>`` (schema defaults when the file has none)."""
        cls = getattr(importlib.import_module(f"tflite.{cls_name}"), cls_name)
        obj = cls()
        if self._options is not None:
            obj.Init(self._options.Bytes, self._options.Pos)
        else:
            buf, pos = _empty_table()
            obj.Init(buf, pos)
        return obj

    @property
    def node(self) -> str:
        return f"#{self.index} {self.source.split(';')[0]}"


@cache
def _empty_table() -> tuple[bytes, int]:
    b = flatbuffers.Builder(16)
    b.StartObject(0)
    b.Finish(b.EndObject())
    buf = bytes(b.Output())
    return buf, flatbuffers.encode.Get(flatbuffers.packer.uoffset, buf, 0)


def _corrupt(path: Path, why: str) -> EdgeoptError:
    return EdgeoptError(f"{path} is not a valid .tflite file ({why})", "re-export or re-download the model")


def _parse(path: Path, data: bytes) -> tuple[list[_Tensor], list[_Op], list[int], list[int]]:
    """Flatbuffer -> plain Python records (all reads happen here, so corruption surfaces here)."""
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise _corrupt(path, "no TFL3 file identifier")
    model = Model.GetRootAs(data, 0)
    if model.SubgraphsLength() < 1:
        raise _corrupt(path, "no subgraph")
    graph = model.Subgraphs(0)
    codes = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        if code == _CUSTOM:
            codes.append(f"CUSTOM:{(oc.CustomCode() or b'?').decode(errors='replace')}")
        else:
            codes.append(BUILTIN_OPCODE2NAME.get(code, f"BUILTIN_{code}"))
    tensors = []
    for i in range(graph.TensorsLength()):
        t = graph.Tensors(i)
        shape = tuple(int(s) for s in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        sig = tuple(int(s) for s in t.ShapeSignatureAsNumpy()) if t.ShapeSignatureLength() else shape
        name = (t.Name() or b"").decode(errors="replace") or f"tensor_{i}"
        if t.Sparsity() is not None:
            raise EdgeoptError(
                f"tensor '{name}' is sparse; sparse .tflite import is not supported", "import the dense float model"
            )
        data_bytes = _buffer_bytes(path, model, data, t.Buffer(), shape, t.Type(), name)
        q = t.Quantization()
        scale = zp = None
        qdim = 0
        if q is not None and q.ScaleLength():
            scale = q.ScaleAsNumpy().astype(np.float32)
            zp = q.ZeroPointAsNumpy().astype(np.int64) if q.ZeroPointLength() else np.zeros_like(scale, np.int64)
            qdim = q.QuantizedDimension()
        tensors.append(_Tensor(name, shape, bool(sig) and sig[0] == -1, t.Type(), data_bytes, scale, zp, qdim))
    ops = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        if op.OpcodeIndex() >= len(codes):
            raise _corrupt(path, f"op {i} has opcode index {op.OpcodeIndex()}")
        ins = [int(v) for v in op.InputsAsNumpy()] if op.InputsLength() else []
        outs = [int(v) for v in op.OutputsAsNumpy()] if op.OutputsLength() else []
        for v in ins + outs:
            if v >= len(tensors):
                raise _corrupt(path, f"op {i} refers to tensor {v}")
        source = tensors[outs[0]].name if outs else f"op_{i}"
        ops.append(_Op(i, codes[op.OpcodeIndex()], ins, outs, source, op.BuiltinOptions()))
    inputs = [int(v) for v in graph.InputsAsNumpy()] if graph.InputsLength() else []
    outputs = [int(v) for v in graph.OutputsAsNumpy()] if graph.OutputsLength() else []
    if not inputs or not outputs:
        raise _corrupt(path, "the graph has no inputs or no outputs")
    return tensors, ops, inputs, outputs


def _buffer_bytes(
    path: Path, model: Model, data: bytes, index: int, shape: tuple[int, ...], ttype: int, name: str
) -> bytes | None:
    if index <= 0:  # buffer 0 is the empty sentinel
        return None
    if index >= model.BuffersLength():
        raise _corrupt(path, f"tensor '{name}' refers to buffer {index}")
    buf = model.Buffers(index)
    if buf.Offset() > 1:  # large models keep buffers after the flatbuffer
        raw = data[buf.Offset() : buf.Offset() + buf.Size()]
        if len(raw) != buf.Size():
            raise _corrupt(path, f"buffer of '{name}' runs past the end of the file")
    elif buf.DataLength():
        raw = buf.DataAsNumpy().tobytes()
    else:
        return None
    if ttype in _NP_TYPES:
        expect = int(np.prod(shape, dtype=np.int64)) * np.dtype(_NP_TYPES[ttype]).itemsize
        if len(raw) != expect:
            raise _corrupt(path, f"tensor '{name}' holds {len(raw)} bytes, its shape needs {expect}")
    return raw


class _Importer:
    """Walks the TFLite ops in order, emitting IR nodes; holds each tensor's value and layout."""

    def __init__(
        self,
        path: Path,
        tensors: list[_Tensor],
        ops: list[_Op],
        inputs: list[int],
        outputs: list[int],
        dequantize: bool = False,
    ) -> None:
        self.path, self.tensors, self.ops = path, tensors, ops
        self.dequantize = dequantize
        self.quant = QuantInfo()
        self.graph_inputs, self.graph_outputs = inputs, outputs
        self.b = GraphBuilder()
        self.values: dict[int, tuple[str, tuple[int, ...]]] = {}  # tensor -> (IR value, perm)
        self.folded: dict[int, np.ndarray] = {}  # tensors computed at import time (DEQUANTIZE of weights...)
        self._views: dict[tuple[int, tuple[int, ...]], str] = {}

    # -- tensors
    def shape(self, t: int) -> tuple[int, ...]:
        return self.tensors[t].shape

    def rank(self, t: int) -> int:
        return len(self.tensors[t].shape)

    def const(self, t: int) -> np.ndarray | None:
        """The constant value of tensor ``t`` in TFLite layout (raw dtype), or None if computed at run time."""
        if t in self.folded:
            return self.folded[t]
        info = self.tensors[t]
        if info.data is None or info.type not in _NP_TYPES:
            return None
        return np.frombuffer(info.data, dtype=_NP_TYPES[info.type]).reshape(info.shape)

    def float_const(self, t: int) -> np.ndarray | None:
        """Constant as float32; float16 is widened and int8/uint8 weights dequantized (scale, zero point)."""
        arr = self.const(t)
        if arr is None or t in self.folded:
            return arr
        info = self.tensors[t]
        if (info.type in _QUANTIZED_TYPES or info.type == _INT32) and info.scale is not None:  # int32: biases
            bshape = [1] * arr.ndim
            if info.scale.size > 1:
                bshape[info.quantized_dim] = -1
            scale, zp = info.scale.reshape(bshape), info.zero_point.reshape(bshape)
            return ((arr.astype(np.float32) - zp) * scale).astype(np.float32)
        return arr.astype(np.float32)

    def weight(self, t: int, op: _Op) -> np.ndarray:
        arr = self.float_const(t)
        if arr is None:
            raise UnsupportedOpError(f"{op.code} with run-time weights", op.node, "TFLite")
        return arr

    def int_list(self, t: int, op: _Op) -> list[int]:
        arr = self.const(t)
        if arr is None:
            raise UnsupportedOpError(f"{op.code} with a run-time '{self.tensors[t].name}'", op.node, "TFLite")
        return [int(v) for v in np.asarray(arr).reshape(-1)]

    def get_any(self, t: int) -> tuple[str, tuple[int, ...]]:
        """IR value of tensor ``t`` in whatever layout it is held."""
        if t in self.values:
            return self.values[t]
        arr = self.float_const(t)
        if arr is None:
            raise _corrupt(self.path, f"tensor '{self.tensors[t].name}' is used before it is computed")
        perm = identity_perm(arr.ndim)
        self.values[t] = (self.b.const(arr, self.tensors[t].name), perm)
        return self.values[t]

    def get(self, t: int, perm: tuple[int, ...]) -> str:
        """IR value of tensor ``t`` laid out as ``tflite tensor.permute(perm)``."""
        if t not in self.values and self.float_const(t) is not None:
            key = (t, perm)
            if key not in self._views:
                self._views[key] = self.b.const(self.float_const(t).transpose(perm), self.tensors[t].name)
            return self._views[key]
        value, held = self.get_any(t)
        if held == perm:
            return value
        key = (t, perm)
        if key not in self._views:
            inv = invert_perm(held)
            self._views[key] = self.b.permute(value, [inv[p] for p in perm], self.tensors[t].name)
        return self._views[key]

    def set(self, t: int, value: str, perm: tuple[int, ...]) -> None:
        self.values[t] = (value, tuple(perm))

    # -- the walk
    def run(self) -> ImportedGraph:
        from edgeopt.interop.tflite_int8 import after_op, quantize_input

        for t in self.graph_inputs:
            info = self.tensors[t]
            if info.type not in (0, _INT8) and not (info.type in _QUANTIZED_TYPES and self.dequantize):
                raise EdgeoptError(
                    f"model input '{info.name}' is {_TYPE_NAMES.get(info.type, info.type)}",
                    "edgeopt imports float32 and int8 models",
                )
            if info.type in _QUANTIZED_TYPES and info.scale is None:
                raise _corrupt(self.path, f"integer input '{info.name}' has no quantization parameters")
            shape = [None if i == 0 and info.batch_dynamic else s for i, s in enumerate(info.shape)]
            value = self.b.input(shape, info.name)
            self.set(t, quantize_input(self, t, value), identity_perm(len(info.shape)))
        for op in self.ops:
            translate = TRANSLATORS.get(op.code)
            if translate is None:
                raise UnsupportedOpError(op.code, op.node, "TFLite")
            before = len(self.b.nodes)
            translate(self, op)
            after_op(self, op, before)
        # a hybrid layer's dynamic quantization turns a 1-ulp difference in its input into a code: in a
        # hybrid model (no int8 activations) float average pools and row-wise means sum in XNNPACK's
        # order (quant_ops.xnnpack_avg_pool2d, xnnpack_mean); other models keep PyTorch's own ops
        hybrid = self.quant.kind == "hybrid" and self.quant.hybrid_scheme is not None
        for node in self.b.nodes:
            if node["op"] == "avg_pool2d" and hybrid:
                node["attrs"]["summation"] = "xnnpack"
            elif node.get("attrs", {}).get("summation") == "rows":
                if hybrid:
                    node["attrs"]["summation"] = "xnnpack"
                else:
                    del node["attrs"]["summation"]
        outputs = [self.get(t, identity_perm(self.rank(t))) for t in self.graph_outputs]
        graph = ImportedGraph(self.b.finish(outputs), self.b.weights, self.input_layout())
        graph.quant = self.quant
        return graph

    def input_layout(self) -> str:
        """NCHW when the 4-D input only feeds TRANSPOSE-to-NHWC ops (litert-torch output), else NHWC."""
        t = self.graph_inputs[0]
        if self.rank(t) != 4:
            return "NHWC"
        users = [op for op in self.ops if t in op.inputs]
        shape = self.shape(t)

        def to_nhwc(op: _Op) -> bool:
            if op.inputs[0] != t:
                return False
            if op.code == "TRANSPOSE":
                perm = self.const(op.inputs[1])
                return perm is not None and tuple(int(v) for v in perm) == (0, 2, 3, 1)
            # one channel: litert-torch moves NCHW -> NHWC with a RESHAPE (same element order)
            out = self.shape(op.outputs[0])
            return op.code == "RESHAPE" and shape[1] == 1 and len(out) == 4 and tuple(out[1:]) == (*shape[2:], 1)

        return "NCHW" if users and all(to_nhwc(op) for op in users) else "NHWC"

    # -- shared pieces of translators
    def pads_2d(
        self, padding: int, x: int, kh: int, kw: int, sh: int, sw: int, dh: int = 1, dw: int = 1
    ) -> tuple[int, int, int, int]:
        """(left, right, top, bottom) for TFLite SAME (0, may be asymmetric) or VALID (1)."""
        if padding == 1:
            return 0, 0, 0, 0
        _, h, w, _ = self.shape(x)
        top, bottom = same_padding(h, kh, sh, dh)
        left, right = same_padding(w, kw, sw, dw)
        return left, right, top, bottom

    def fused(self, value: str, opts: Any, op: _Op) -> str:
        code = opts.FusedActivationFunction()
        if code not in _FUSED_ACTIVATIONS:
            raise UnsupportedOpError(f"{op.code} with fused activation {code}", op.node, "TFLite")
        return self.b.activation(value, _FUSED_ACTIVATIONS[code], op.source)


# ----------------------------------------------------------------------------- translators


def _conv_2d(imp: _Importer, op: _Op) -> None:
    o = op.options("Conv2DOptions")
    x = op.inputs[0]
    w = imp.weight(op.inputs[1], op)  # OHWI
    bias = imp.weight(op.inputs[2], op) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
    out_c, kh, kw, in_per_group = w.shape
    channels = imp.shape(x)[3]
    if channels % in_per_group:
        raise _corrupt(imp.path, f"conv {op.node} has {channels} input channels but filters of depth {in_per_group}")
    s, d = (o.StrideH(), o.StrideW()), (o.DilationHFactor(), o.DilationWFactor())
    pads = imp.pads_2d(o.Padding(), x, kh, kw, *s, *d)
    y = imp.b.conv2d(imp.get(x, NCHW), w.transpose(0, 3, 1, 2), bias, s, pads, d, channels // in_per_group, op.source)
    imp.set(op.outputs[0], imp.fused(y, o, op), NCHW)


def _depthwise_conv_2d(imp: _Importer, op: _Op) -> None:
    o = op.options("DepthwiseConv2DOptions")
    x = op.inputs[0]
    w = imp.weight(op.inputs[1], op)  # 1, H, W, C*multiplier
    bias = imp.weight(op.inputs[2], op) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
    _, kh, kw, out_c = w.shape
    channels = imp.shape(x)[3]
    s, d = (o.StrideH(), o.StrideW()), (o.DilationHFactor(), o.DilationWFactor())
    pads = imp.pads_2d(o.Padding(), x, kh, kw, *s, *d)
    # output channel c*m + k reads input channel c: exactly torch's groups=C layout, weight [C*m, 1, kh, kw]
    weight = w[0].transpose(2, 0, 1)[:, None]
    y = imp.b.conv2d(imp.get(x, NCHW), weight, bias, s, pads, d, channels, op.source)
    imp.set(op.outputs[0], imp.fused(y, o, op), NCHW)


def _fully_connected(imp: _Importer, op: _Op) -> None:
    o = op.options("FullyConnectedOptions")
    if o.WeightsFormat() != 0:
        raise UnsupportedOpError("FULLY_CONNECTED with shuffled weights", op.node, "TFLite")
    x = op.inputs[0]
    w = imp.weight(op.inputs[1], op)  # [out, in]
    bias = imp.weight(op.inputs[2], op) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
    in_shape = imp.shape(x)
    value = imp.get(x, identity_perm(len(in_shape)))
    if not (o.KeepNumDims() or (len(in_shape) == 2 and in_shape[-1] == w.shape[1])):
        value = imp.b.reshape(value, [-1, w.shape[1]], None, op.source)
    y = imp.b.linear(value, w, bias, op.source)
    imp.set(op.outputs[0], imp.fused(y, o, op), identity_perm(imp.rank(op.outputs[0])))


_NP_BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide}
_NP_ACT: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": lambda v: v,
    "relu": lambda v: np.maximum(v, 0),
    "relu6": lambda v: np.clip(v, 0, 6),
    "relu_n1_to_1": lambda v: np.clip(v, -1, 1),
}


def _binary(ir_op: str, options: str) -> Callable[[_Importer, _Op], None]:
    def translate(imp: _Importer, op: _Op) -> None:
        o = op.options(options)
        a, b = op.inputs[:2]
        ca, cb = imp.float_const(a), imp.float_const(b)
        if ca is not None and cb is not None:  # constant subexpression: fold it
            act = _FUSED_ACTIVATIONS.get(o.FusedActivationFunction(), "none")
            imp.folded[op.outputs[0]] = _NP_ACT[act](_NP_BINARY[ir_op](ca, cb)).astype(np.float32)
            return
        rank = imp.rank(op.outputs[0])
        # Run in the layout of the (first) run-time operand; constants are broadcast to full rank and
        # permuted to match. Operands of different rank fall back to the TFLite layout.
        lead = a if ca is None else b
        _, perm = imp.get_any(lead)
        if len(perm) != rank or any(imp.rank(t) != rank and imp.const(t) is None for t in (a, b)):
            perm = identity_perm(rank)
        args = []
        for t, c in ((a, ca), (b, cb)):
            if c is None:
                args.append(imp.get(t, perm) if imp.rank(t) == rank else imp.get(t, identity_perm(imp.rank(t))))
            else:
                full = c.reshape((1,) * (rank - c.ndim) + c.shape).transpose(perm)
                args.append(imp.b.const(full, imp.tensors[t].name))
        y = imp.b.add(ir_op, args, None, op.source)
        imp.set(op.outputs[0], imp.fused(y, o, op), perm)

    return translate


def _unary(kind: str) -> Callable[[_Importer, _Op], None]:
    def translate(imp: _Importer, op: _Op) -> None:
        value, perm = imp.get_any(op.inputs[0])
        imp.set(op.outputs[0], imp.b.activation(value, kind, op.source), perm)

    return translate


def _leaky_relu(imp: _Importer, op: _Op) -> None:
    value, perm = imp.get_any(op.inputs[0])
    alpha = float(op.options("LeakyReluOptions").Alpha())
    imp.set(op.outputs[0], imp.b.add("leaky_relu", [value], {"slope": alpha}, op.source), perm)


def _pool(ir_op: str) -> Callable[[_Importer, _Op], None]:
    def translate(imp: _Importer, op: _Op) -> None:
        o = op.options("Pool2DOptions")
        x = op.inputs[0]
        k, s = (o.FilterHeight(), o.FilterWidth()), (o.StrideH(), o.StrideW())
        attrs = {
            "kernel_size": k,
            "stride": s,
            "pads": imp.pads_2d(o.Padding(), x, *k, *s),
            "ceil_mode": False,
            "count_include_pad": False,
        }  # TFLite averages over the real cells only
        y = imp.b.add(ir_op, [imp.get(x, NCHW)], attrs, op.source)
        imp.set(op.outputs[0], imp.fused(y, o, op), NCHW)

    return translate


def _remaining_perm(perm: tuple[int, ...], removed: set[int]) -> tuple[int, ...]:
    """Layout of a tensor after the TFLite dims ``removed`` are dropped from one held as ``perm``."""
    kept = [d for d in perm if d not in removed]
    order = sorted(kept)
    return tuple(order.index(d) for d in kept)


def _mean(imp: _Importer, op: _Op) -> None:
    x = op.inputs[0]
    rank = imp.rank(x)
    axes = sorted({a % rank for a in imp.int_list(op.inputs[1], op)})
    keep = bool(op.options("ReducerOptions").KeepDims())
    value, perm = imp.get_any(x)
    dims = sorted(perm.index(a) for a in axes)
    attrs: dict[str, Any] = {"dims": dims, "keepdim": keep}
    # rows of the innermost axis summed in order: what a hybrid import reproduces (quant_ops.xnnpack_mean)
    in_order = [perm.index(a) for a in axes]
    if (
        axes
        and axes[-1] < rank - 1
        and axes == list(range(axes[0], axes[-1] + 1))
        and dims == in_order == list(range(dims[0], dims[-1] + 1))
    ):
        attrs["summation"] = "rows"  # kept by hybrid imports only (_Importer.run)
    y = imp.b.add("mean", [value], attrs, op.source)
    imp.set(op.outputs[0], y, perm if keep else _remaining_perm(perm, set(axes)))


def _reshape(imp: _Importer, op: _Op) -> None:
    x, out = op.inputs[0], op.outputs[0]
    if len(op.inputs) > 1 and op.inputs[1] >= 0 and imp.const(op.inputs[1]) is not None:
        shape = imp.int_list(op.inputs[1], op)
    else:
        opts = op.options("ReshapeOptions")
        shape = [int(v) for v in opts.NewShapeAsNumpy()] if opts.NewShapeLength() else list(imp.shape(out))
    c = imp.float_const(x)
    if c is not None:
        imp.folded[out] = c.reshape(imp.shape(out))
        return
    in_shape = imp.shape(x)
    value = imp.get(x, identity_perm(len(in_shape)))  # element order must be TFLite's
    imp.set(out, imp.b.reshape(value, shape, in_shape, op.source), identity_perm(imp.rank(out)))


def _squeeze(imp: _Importer, op: _Op) -> None:
    x = op.inputs[0]
    shape = imp.shape(x)
    o = op.options("SqueezeOptions")
    dims = [int(d) % len(shape) for d in o.SqueezeDimsAsNumpy()] if o.SqueezeDimsLength() else []
    if not dims:
        dims = [i for i, s in enumerate(shape) if s == 1]
    value, perm = imp.get_any(x)
    y = imp.b.add("squeeze", [value], {"dims": sorted(perm.index(d) for d in dims)}, op.source)
    imp.set(op.outputs[0], y, _remaining_perm(perm, set(dims)))


def _concatenation(imp: _Importer, op: _Op) -> None:
    o = op.options("ConcatenationOptions")
    rank = imp.rank(op.outputs[0])
    axis = o.Axis() % rank
    runtime = [t for t in op.inputs if imp.float_const(t) is None]
    perm = imp.get_any(runtime[0])[1] if runtime else identity_perm(rank)
    values = [imp.get(t, perm) for t in op.inputs]
    y = imp.b.add("concat", values, {"dim": perm.index(axis)}, op.source)
    imp.set(op.outputs[0], imp.fused(y, o, op), perm)


def _pad(imp: _Importer, op: _Op) -> None:
    x = op.inputs[0]
    rank = imp.rank(x)
    pairs = np.asarray(imp.int_list(op.inputs[1], op)).reshape(rank, 2)
    value = 0.0
    if op.code == "PADV2" and len(op.inputs) > 2:
        value = float(imp.float_const(op.inputs[2]).reshape(-1)[0])
    held, perm = imp.get_any(x)
    pads = torch_pad_list([pairs[p] for p in perm])
    imp.set(op.outputs[0], imp.b.add("pad", [held], {"pads": pads, "value": value}, op.source), perm)


def _slice(imp: _Importer, op: _Op) -> None:
    """SLICE with constant begin/size (a size of -1 runs to the end): one ``slice`` node per cut dimension."""
    x = op.inputs[0]
    shape = imp.shape(x)
    begin, size = imp.int_list(op.inputs[1], op), imp.int_list(op.inputs[2], op)
    value, perm = imp.get_any(x)
    for d, (b, s) in enumerate(zip(begin, size, strict=True)):
        end = None if s == -1 or b + s == shape[d] else int(b + s)
        if b != 0 or end is not None:
            value = imp.b.add("slice", [value], {"dim": perm.index(d), "start": int(b), "end": end}, op.source)
    imp.set(op.outputs[0], value, perm)


def _softmax(imp: _Importer, op: _Op) -> None:
    value, perm = imp.get_any(op.inputs[0])
    beta = float(op.options("SoftmaxOptions").Beta())
    y = imp.b.add("softmax", [value], {"dim": perm.index(len(perm) - 1), "beta": beta}, op.source)
    imp.set(op.outputs[0], y, perm)


def _transpose(imp: _Importer, op: _Op) -> None:
    x, out = op.inputs[0], op.outputs[0]
    perm_op = tuple(imp.int_list(op.inputs[1], op))
    c = imp.float_const(x)
    if c is not None:
        imp.folded[out] = c.transpose(perm_op)
        return
    # No data movement: the output is the same torch value, held under a new perm.
    value, held = imp.get_any(x)
    inv = invert_perm(held)
    imp.set(out, value, invert_perm([inv[p] for p in perm_op]))


def _dequantize(imp: _Importer, op: _Op) -> None:
    c = imp.float_const(op.inputs[0])
    if c is None:  # a run-time int8 tensor: its value is already the real one (see tflite_int8)
        value, perm = imp.get_any(op.inputs[0])
        imp.set(op.outputs[0], value, perm)
        return
    imp.folded[op.outputs[0]] = c


def _quantize(imp: _Importer, op: _Op) -> None:
    """QUANTIZE (float -> int8, or int8 -> int8 requantization): the output's quant node does it."""
    value, perm = imp.get_any(op.inputs[0])
    imp.set(op.outputs[0], value, perm)


TRANSLATORS: dict[str, Callable[[_Importer, _Op], None]] = {
    "CONV_2D": _conv_2d,
    "DEPTHWISE_CONV_2D": _depthwise_conv_2d,
    "FULLY_CONNECTED": _fully_connected,
    "ADD": _binary("add", "AddOptions"),
    "SUB": _binary("sub", "SubOptions"),
    "MUL": _binary("mul", "MulOptions"),
    "DIV": _binary("div", "DivOptions"),
    "RELU": _unary("relu"),
    "RELU6": _unary("relu6"),
    "RELU_N1_TO_1": _unary("relu_n1_to_1"),
    "LOGISTIC": _unary("sigmoid"),
    "TANH": _unary("tanh"),
    "HARD_SWISH": _unary("hardswish"),
    "LEAKY_RELU": _leaky_relu,
    "AVERAGE_POOL_2D": _pool("avg_pool2d"),
    "MAX_POOL_2D": _pool("max_pool2d"),
    "MEAN": _mean,
    "RESHAPE": _reshape,
    "SQUEEZE": _squeeze,
    "CONCATENATION": _concatenation,
    "PAD": _pad,
    "PADV2": _pad,
    "SOFTMAX": _softmax,
    "SLICE": _slice,
    "TRANSPOSE": _transpose,
    "DEQUANTIZE": _dequantize,
    "QUANTIZE": _quantize,
}


def read_tflite(path: str | Path, dequantize: bool = False) -> ImportedGraph:
    """Parse a .tflite file into graph IR, weights (state_dict entries) and input layout.

    Float, full-integer int8 and hybrid (int8 weights, float activations) models are read as
    LiteRT runs them (``tflite_int8``); ``dequantize=True`` drops every quantization (a float model).
    ``graph.quant`` says what the file held. Cost: milliseconds for edge models.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise EdgeoptError(f"cannot read {path} ({e.strerror})", "check the path and permissions") from e
    try:
        parsed = _parse(path, data)
    except (IndexError, struct.error, ValueError, TypeError, UnicodeDecodeError) as e:
        raise _corrupt(path, f"{type(e).__name__}: {e}") from e
    return _Importer(path, *parsed, dequantize=dequantize).run()

"""Small quantized .tflite files written with the TFLite flatbuffer schema (no converter, milliseconds).

``int8_model``: int8 input (scale 1, zero point -128: pixels 0..255) -> CONV_2D (per-channel int8
weights, int32 bias, SAME, fused ReLU) -> ADD (with the conv's input through a 1x1 conv) ->
AVERAGE_POOL_2D (global) -> RESHAPE -> FULLY_CONNECTED -> SOFTMAX (int8, 1/256, -128).
``hybrid_model``: the same layers with float activations and int8 weights (dynamic-range quantization).
``nchw_one_channel_model``: a float model whose [1, 1, 8, 8] input feeds a RESHAPE to NHWC, as
litert-torch writes 1-channel models.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ai_edge_litert import schema_py_generated as fb
from ai_edge_litert.tools import flatbuffer_utils as fbu

FLOAT32, INT32, UINT8, INT8 = 0, 2, 3, 9
CONV, AVG, RESHAPE, FC, SOFTMAX, ADD = 3, 1, 22, 9, 25, 0


class _Builder:
    def __init__(self) -> None:
        self.m = fb.ModelT()
        self.m.version = 3
        self.m.buffers = [fb.BufferT()]
        self.m.operatorCodes = []
        self.g = fb.SubGraphT()
        self.g.tensors, self.g.operators = [], []

    def tensor(self, name: str, shape: list[int], ttype: int, data: np.ndarray | None = None,
               scale: list[float] | None = None, zp: list[int] | None = None, qdim: int = 0) -> int:  # fmt: skip
        t = fb.TensorT()
        t.name, t.shape, t.type = name, list(shape), ttype
        t.buffer = 0
        if data is not None:
            b = fb.BufferT()
            b.data = np.ascontiguousarray(data).tobytes()
            self.m.buffers.append(b)
            t.buffer = len(self.m.buffers) - 1
        if scale is not None:
            q = fb.QuantizationParametersT()
            q.scale, q.zeroPoint, q.quantizedDimension = list(scale), list(zp or [0] * len(scale)), qdim
            t.quantization = q
        self.g.tensors.append(t)
        return len(self.g.tensors) - 1

    def op(self, code: int, ins: list[int], outs: list[int], opt_type: int = 0, opts: object = None) -> None:
        codes = [c.builtinCode for c in self.m.operatorCodes]
        if code not in codes:
            c = fb.OperatorCodeT()
            c.builtinCode, c.deprecatedBuiltinCode, c.version = code, min(code, 127), 1
            self.m.operatorCodes.append(c)
            codes.append(code)
        o = fb.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = codes.index(code), ins, outs
        o.builtinOptionsType, o.builtinOptions = opt_type, opts
        self.g.operators.append(o)

    def write(self, path: Path, inputs: list[int], outputs: list[int]) -> Path:
        self.g.inputs, self.g.outputs = inputs, outputs
        self.m.subgraphs = [self.g]
        fbu.write_model(self.m, str(path))
        return path


def _conv_opts(relu: bool) -> fb.Conv2DOptionsT:
    o = fb.Conv2DOptionsT()
    o.padding, o.strideH, o.strideW, o.dilationHFactor, o.dilationWFactor = 0, 1, 1, 1, 1
    o.fusedActivationFunction = 1 if relu else 0
    return o


def _weights(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    w = rng.normal(0, 0.3, shape).astype(np.float32)
    scale = np.abs(w.reshape(shape[0], -1)).max(1) / 127
    return np.clip(np.round(w / scale.reshape((-1,) + (1,) * (len(shape) - 1))), -127, 127).astype(np.int8), scale


def int8_model(path: Path, seed: int = 0, act_scale: float = 0.05) -> Path:
    """The full-integer model of the module doc, 8x8x2 input, 3 classes; ``act_scale`` of the conv output."""
    rng = np.random.default_rng(seed)
    b = _Builder()
    x = b.tensor("input_int8", [1, 8, 8, 2], INT8, scale=[1.0], zp=[-128])
    w1, s1 = _weights(rng, (4, 3, 3, 2))
    bias1 = rng.integers(-2000, 2000, 4).astype(np.int32)
    wt1 = b.tensor("conv/w", [4, 3, 3, 2], INT8, w1, list(s1 * 0 + s1), [0] * 4)
    bt1 = b.tensor("conv/b", [4], INT32, bias1, list(s1 * 1.0), [0] * 4)
    c1 = b.tensor("conv/relu", [1, 8, 8, 4], INT8, scale=[act_scale * 20], zp=[-128])
    b.op(CONV, [x, wt1, bt1], [c1], fb.BuiltinOptions.Conv2DOptions, _conv_opts(True))
    w2, s2 = _weights(rng, (4, 1, 1, 2))
    wt2 = b.tensor("short/w", [4, 1, 1, 2], INT8, w2, list(s2), [0] * 4)
    bt2 = b.tensor("short/b", [4], INT32, np.zeros(4, np.int32), list(s2 * 1.0), [0] * 4)
    c2 = b.tensor("short/out", [1, 8, 8, 4], INT8, scale=[act_scale * 30], zp=[3])
    b.op(CONV, [x, wt2, bt2], [c2], fb.BuiltinOptions.Conv2DOptions, _conv_opts(False))
    a = b.tensor("add/relu", [1, 8, 8, 4], INT8, scale=[act_scale * 40], zp=[-128])
    ao = fb.AddOptionsT()
    ao.fusedActivationFunction = 1
    b.op(ADD, [c1, c2], [a], fb.BuiltinOptions.AddOptions, ao)
    p = b.tensor("pool", [1, 1, 1, 4], INT8, scale=[act_scale * 40], zp=[-128])
    po = fb.Pool2DOptionsT()
    po.padding, po.strideW, po.strideH, po.filterWidth, po.filterHeight = 1, 8, 8, 8, 8
    b.op(AVG, [a], [p], fb.BuiltinOptions.Pool2DOptions, po)
    shape = b.tensor("shape", [2], INT32, np.array([-1, 4], np.int32))
    r = b.tensor("flat", [1, 4], INT8, scale=[act_scale * 40], zp=[-128])
    b.op(RESHAPE, [p, shape], [r])
    w3, _ = _weights(rng, (3, 4))
    s3 = float(np.float32(0.0005))
    wt3 = b.tensor("fc/w", [3, 4], INT8, w3, [s3], [0])
    bt3 = b.tensor("fc/b", [3], INT32, rng.integers(-50, 50, 3).astype(np.int32), [act_scale * 40 * s3], [0])
    f = b.tensor("fc/out", [1, 3], INT8, scale=[0.1], zp=[0])
    b.op(FC, [r, wt3, bt3], [f], fb.BuiltinOptions.FullyConnectedOptions, fb.FullyConnectedOptionsT())
    out = b.tensor("probs", [1, 3], INT8, scale=[1 / 256], zp=[-128])
    so = fb.SoftmaxOptionsT()
    so.beta = 1.0
    b.op(SOFTMAX, [f], [out], fb.BuiltinOptions.SoftmaxOptions, so)
    for i in (x, r):  # a dynamic batch, as converters write it
        b.g.tensors[i].shapeSignature = [-1, *b.g.tensors[i].shape[1:]]
    return b.write(path, [x], [out])


def hybrid_model(path: Path, seed: int = 0, kernel: int = 3) -> Path:
    """Float input 8x8x2 -> CONV_2D (int8 weights, ``kernel`` x ``kernel``, float bias, ReLU) -> RESHAPE ->
    FULLY_CONNECTED (int8 weights). ``kernel=1``: a pointwise conv, which XNNPACK runs per pixel."""
    rng = np.random.default_rng(seed)
    b = _Builder()
    x = b.tensor("input", [1, 8, 8, 2], FLOAT32)
    w1, s1 = _weights(rng, (4, kernel, kernel, 2))
    wt1 = b.tensor("conv/w", [4, kernel, kernel, 2], INT8, w1, list(s1), [0] * 4)
    bt1 = b.tensor("conv/b", [4], FLOAT32, rng.normal(0, 0.1, 4).astype(np.float32))
    c1 = b.tensor("conv/relu", [1, 8, 8, 4], FLOAT32)
    b.op(CONV, [x, wt1, bt1], [c1], fb.BuiltinOptions.Conv2DOptions, _conv_opts(True))
    return b.write(path, [x], [hybrid_fc_head(b, rng, c1, 256, 5)])


def hybrid_fc_head(b: _Builder, rng: np.random.Generator, features: int, width: int, classes: int) -> int:
    """RESHAPE tensor ``features`` to [1, width], then a hybrid FULLY_CONNECTED (int8 per-row weights, float
    bias) to ``classes`` logits; returns the logits tensor."""
    shape = b.tensor("shape", [2], INT32, np.array([1, width], np.int32))
    r = b.tensor("flat", [1, width], FLOAT32)
    b.op(RESHAPE, [features, shape], [r])
    w, s = _weights(rng, (classes, width))
    wt = b.tensor("fc/w", [classes, width], INT8, w, list(s), [0] * classes)
    bt = b.tensor("fc/b", [classes], FLOAT32, rng.normal(0, 0.1, classes).astype(np.float32))
    out = b.tensor("logits", [1, classes], FLOAT32)
    b.op(FC, [r, wt, bt], [out], fb.BuiltinOptions.FullyConnectedOptions, fb.FullyConnectedOptionsT())
    return out


def nchw_one_channel_model(path: Path) -> Path:
    """Float [1, 1, 8, 8] input -> RESHAPE to NHWC -> CONV_2D -> RESHAPE -> FC (litert-torch, 1 channel)."""
    rng = np.random.default_rng(0)
    b = _Builder()
    x = b.tensor("input", [1, 1, 8, 8], FLOAT32)
    s = b.tensor("nhwc_shape", [4], INT32, np.array([1, 8, 8, 1], np.int32))
    h = b.tensor("nhwc", [1, 8, 8, 1], FLOAT32)
    b.op(RESHAPE, [x, s], [h])
    wt = b.tensor("conv/w", [2, 3, 3, 1], FLOAT32, rng.normal(0, 0.3, (2, 3, 3, 1)).astype(np.float32))
    c = b.tensor("conv/out", [1, 8, 8, 2], FLOAT32)
    b.op(CONV, [h, wt, -1], [c], fb.BuiltinOptions.Conv2DOptions, _conv_opts(False))
    s2 = b.tensor("flat_shape", [2], INT32, np.array([1, 128], np.int32))
    r = b.tensor("flat", [1, 128], FLOAT32)
    b.op(RESHAPE, [c, s2], [r])
    w = b.tensor("fc/w", [10, 128], FLOAT32, rng.normal(0, 0.1, (10, 128)).astype(np.float32))
    out = b.tensor("logits", [1, 10], FLOAT32)
    b.op(FC, [r, w, -1], [out], fb.BuiltinOptions.FullyConnectedOptions, fb.FullyConnectedOptionsT())
    return b.write(path, [x], [out])


def with_activation_type(src: Path, dst: Path, tensor: str, ttype: int) -> Path:
    """A copy of ``src`` whose tensor named ``tensor`` has type ``ttype`` (e.g. UINT8: unsupported)."""
    m = fbu.read_model(str(src))
    for t in m.subgraphs[0].tensors:
        if (t.name.decode() if isinstance(t.name, bytes) else t.name) == tensor:
            t.type = ttype
    fbu.write_model(m, str(dst))
    return dst


def with_scale(src: Path, dst: Path, tensor: str, factor: float) -> Path:
    """A copy of ``src`` whose activation ``tensor`` has its scale multiplied by ``factor`` (a broken export)."""
    m = fbu.read_model(str(src))
    for t in m.subgraphs[0].tensors:
        if (t.name.decode() if isinstance(t.name, bytes) else t.name) == tensor:
            t.quantization.scale = [float(s) * factor for s in t.quantization.scale]
    fbu.write_model(m, str(dst))
    return dst

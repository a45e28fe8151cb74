"""Quantized .tflite import: full-integer int8 and hybrid models, as LiteRT runs them.

``tflite_import`` walks the file's ops emitting float graph IR (weights dequantized with the file's
scales). For a quantized file this module adds, after each op (``after_op``), what LiteRT does on
top of the float math (the IR ops are in ``quant_ops``):

- **Full-integer int8.** The model input gets a ``quant`` node with the input tensor's scale and zero
  point (the module takes real values; LiteRT's runner quantizes them the same way), every int8
  output tensor a ``quant`` node with its own parameters (an average pool's rounds half away from
  zero, as TFLite's integer kernel does), every conv/linear with int8 weights a ``weight_quant``
  record, and every layout op in between (pad, permute, reshape) re-quantizes with its input's
  parameters (exact: it moves integer codes) so the exported program has PT2E's shape.
  ``QUANTIZE``/``DEQUANTIZE`` are identities on real values. uint8/int16 activations are refused.
- **Hybrid ops** (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED with float input and int8 weights;
  LiteRT's dynamic-range quantization): the layer's ``weight_quant`` says ``dynamic``: it quantizes
  its input per batch element, asymmetrically, with LiteRT's own parameter choice and rounding, and
  accumulates in integers (``quant_ops.hybrid_layer``).
- ``dequantize=True``: none of that; the counts of what was dropped are kept in ``QuantInfo``.

Cost: a handful of IR nodes per op; import stays milliseconds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from edgeopt.errors import UnsupportedOpError

if TYPE_CHECKING:
    from edgeopt.interop.tflite_import import _Importer, _Op

_INT8, _FLOAT32 = 9, 0
_QUANTIZED = {3, 7, 9}
_WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
_LAYERS = ("conv2d", "linear")
_MOVES = ("pad", "permute", "reshape", "squeeze", "unsqueeze", "flatten")  # ops that only move int8 codes
_ROUND_AWAY = ("AVERAGE_POOL_2D",)  # TFLite's integer average pool rounds its code half away from zero
HYBRID_SCHEME = "asymmetric"  # LiteRT's hybrid kernels: per batch element, asymmetric
DEPTHWISE_HYBRID_SCHEME = "builtin_asymmetric"  # hybrid depthwise convs: TFLite's kernel (quant_ops.dynamic_codes)


def _qattrs(scale: float, zero_point: int, rounding: str = "even") -> dict[str, Any]:
    return {"scale": float(scale), "zero_point": int(zero_point), "qmin": -128, "qmax": 127, "rounding": rounding}


def _params(imp: _Importer, t: int, op: _Op | None = None) -> tuple[float, int]:
    info = imp.tensors[t]
    where = op.node if op is not None else "input"
    if info.type != _INT8:
        kind = {3: "uint8", 7: "int16"}.get(info.type, str(info.type))
        raise UnsupportedOpError(f"{kind}-quantized activations ('{info.name}')", where, "TFLite")
    if info.scale is None or info.scale.size != 1:
        raise UnsupportedOpError(f"int8 activation '{info.name}' without one per-tensor scale", where, "TFLite")
    return float(info.scale[0]), int(info.zero_point[0])


def quantize_input(imp: _Importer, t: int, value: str) -> str:
    """The graph input's IR value: a ``quant`` node for an int8 input (the module takes real values)."""
    info = imp.tensors[t]
    if info.type not in _QUANTIZED:
        return value
    imp.quant.kind = "int8"
    imp.quant.activation_tensors += 1
    if info.type == _INT8 and info.scale is not None and info.scale.size == 1:
        imp.quant.input_quant = (float(info.scale[0]), int(info.zero_point[0]))
    if imp.dequantize:
        imp.quant.dequantized = True
        return value
    scale, zp = _params(imp, t)
    out = imp.b.add("quant", [value], _qattrs(scale, zp, "away"), info.name)
    _value_params(imp)[out] = _qattrs(scale, zp)
    return out


def _value_params(imp: _Importer) -> dict[str, dict[str, Any]]:
    """IR value -> the quant attrs of the int8 codes it carries (built lazily on the importer)."""
    if not hasattr(imp, "_qparams"):
        imp._qparams = {}
    return imp._qparams


def after_op(imp: _Importer, op: _Op, before: int) -> None:
    """Add LiteRT's quantization to the IR nodes ``op`` just emitted (``imp.b.nodes[before:]``)."""
    new = imp.b.nodes[before:]
    layer = next((n for n in new if n["op"] in _LAYERS), None)
    if op.code in _WEIGHTED and len(op.inputs) > 1 and layer is not None:
        _weights(imp, op, layer)
    outs = [t for t in op.outputs if imp.tensors[t].type in _QUANTIZED and t in imp.values]
    imp.quant.activation_tensors += len(outs)
    if outs:
        imp.quant.kind = "int8"
    if imp.dequantize:
        imp.quant.dequantized = imp.quant.dequantized or bool(outs) or imp.quant.weight_tensors > 0
        return
    _requantize_moves(imp, before)
    for t in outs:
        scale, zp = _params(imp, t, op)
        value, perm = imp.values[t]
        rounding = "pool" if op.code in _ROUND_AWAY else "even"
        if value in _value_params(imp) and _value_params(imp)[value] == _qattrs(scale, zp):
            continue  # a layout op already re-quantized it with these very parameters
        q = imp.b.add("quant", [value], _qattrs(scale, zp, rounding), op.source)
        _value_params(imp)[q] = _qattrs(scale, zp)
        imp.set(t, q, perm)


def _weights(imp: _Importer, op: _Op, layer: dict[str, Any]) -> None:
    w = imp.tensors[op.inputs[1]]
    if w.type != _INT8 or w.scale is None or w.data is None:
        return
    imp.quant.weight_tensors += 1
    if np.any(w.zero_point != 0):
        raise UnsupportedOpError(f"{op.code} with asymmetric int8 weights", op.node, "TFLite")
    out_channels = int(np.prod(layer["attrs"].get("out_features", layer["attrs"].get("out_channels", 1))))
    expected_dim = 3 if op.code == "DEPTHWISE_CONV_2D" else 0
    if w.scale.size not in (1, out_channels) or (w.scale.size > 1 and w.quantized_dim != expected_dim):
        raise UnsupportedOpError(f"{op.code} with weights quantized along dim {w.quantized_dim}", op.node, "TFLite")
    hybrid = imp.tensors[op.inputs[0]].type == _FLOAT32
    if hybrid:
        imp.quant.hybrid_ops += 1
        if imp.quant.kind == "float":
            imp.quant.kind = "hybrid"
    if imp.dequantize:
        imp.quant.dequantized = True
        return
    scales = np.broadcast_to(w.scale.astype(np.float32), (out_channels,))
    layer["attrs"]["weight_quant"] = {"scale": [float(s) for s in scales], "qmax": 127}
    if hybrid:  # the layer quantizes its float input on the fly (quant_ops.hybrid_layer)
        imp.quant.hybrid_scheme = HYBRID_SCHEME
        # LiteRT's XNNPACK delegate leaves hybrid depthwise convs to TFLite's own kernel (its outputs
        # equal BUILTIN_WITHOUT_DEFAULT_DELEGATES'), which quantizes and rescales its own way
        scheme = DEPTHWISE_HYBRID_SCHEME if op.code == "DEPTHWISE_CONV_2D" else HYBRID_SCHEME
        layer["attrs"]["weight_quant"]["dynamic"] = scheme


def _requantize_moves(imp: _Importer, before: int) -> None:
    """After each new layout op on int8 codes, a ``quant`` with the same parameters (exact; PT2E's shape)."""
    params = _value_params(imp)
    i = before
    while i < len(imp.b.nodes):
        node = imp.b.nodes[i]
        src = node["inputs"][0] if node["inputs"] else None
        if node["op"] not in _MOVES or src not in params:
            i += 1
            continue
        old = node["outputs"][0]
        name = imp.b._unique("quant")
        q = {"name": name, "op": "quant", "inputs": [old], "outputs": [f"v_{name}"],
             "attrs": dict(params[src]), "source": node.get("source", "")}  # fmt: skip
        imp.b.nodes.insert(i + 1, q)
        new = q["outputs"][0]
        params[new] = dict(params[src])
        for later in imp.b.nodes[i + 2 :]:
            later["inputs"] = [new if v == old else v for v in later["inputs"]]
        for t, (value, perm) in list(imp.values.items()):
            if value == old:
                imp.values[t] = (new, perm)
        for key, value in list(imp._views.items()):
            if value == old:
                imp._views[key] = new
        i += 2


def describe(info: Any) -> str:
    """One line saying what an import kept or dropped of the file's quantization. Pure."""
    if info.kind == "float":
        return "float model"
    if info.dequantized:
        parts = []
        if info.activation_tensors:
            parts.append(f"{info.activation_tensors} int8 activation tensors now computed in float32")
        if info.hybrid_ops:
            parts.append(f"{info.hybrid_ops} hybrid ops no longer quantize their inputs on the fly")
        if info.weight_tensors:
            parts.append(f"{info.weight_tensors} int8 weight tensors dequantized to float32 (same values)")
        return "dequantized: " + "; ".join(parts) + "; outputs will differ slightly from LiteRT's"
    if info.kind == "int8":
        return (f"full-integer int8: {info.activation_tensors} activation and {info.weight_tensors} weight tensors"
                " keep the file's scales and zero points")  # fmt: skip
    return (f"hybrid: {info.hybrid_ops} ops with int8 weights quantize their float inputs on the fly"
            f" ({info.hybrid_scheme}, per image or per row as LiteRT's XNNPACK delegate does)")  # fmt: skip

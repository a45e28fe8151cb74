"""Per-target quantization presets: quantize only into what the target executes, then check the artifact.

A *target* fixes the quantization scheme to the kernels of the hardware that will run the model:

- ``xnnpack`` (default; the behaviour before targets existed): XNNPACK / CPU runtimes (ExecuTorch,
  LiteRT, ONNX Runtime). int8 symmetric weights per output channel, int8 per-tensor affine
  activations; layers may stay float (``QuantRecipe.layer_bits`` 0), since these runtimes mix.
- ``npu-int8``: NPU-style integer-only accelerators (Edge TPU / Hexagon style). Weights per-tensor
  symmetric int8, int8 activations everywhere, no float fallback: every compute op must have an
  integer kernel, because the first op an NPU cannot run splits the graph and everything after it
  runs on the CPU (Coral, "TensorFlow models on the Edge TPU": models must be "fully 8-bit
  quantized"; https://coral.ai/docs/edgetpu/models-intro). A model with an op that cannot be
  integer is refused (``require_integer``), naming the op.
- ``mcu-int8``: TensorFlow Lite Micro with CMSIS-NN kernels (Cortex-M). The TFLite int8
  quantization spec (https://www.tensorflow.org/lite/performance/quantization_spec): CONV_2D and
  DEPTHWISE_CONV_2D weights int8 symmetric per-axis with zero point 0, activations int8 asymmetric
  per-tensor, biases int32 with scale ``input_scale * weight_scale`` and zero point 0; FULLY_CONNECTED
  weights *per-tensor*. CMSIS-NN's fully-connected kernel as TFLite Micro calls it takes one
  multiplier/shift for the layer (``arm_fully_connected_s8`` with ``cmsis_nn_per_tensor_quant_params``
  in tflite-micro ``tensorflow/lite/micro/kernels/cmsis_nn/fully_connected.cc``), so linear layers
  get one weight scale. Integer-only as well (no float fallback on an MCU).

The int8 biases are not chosen here: PT2E keeps them float and each exporter rounds them to int32
with scale ``input_scale * weight_scale`` (LiteRT's converter; ``deploy.quantize_onnx_biases`` for
ONNX), which is what the spec asks.

Checking: ``tflite_ops(path)`` lists a ``.tflite``'s operators with their input/output dtypes (read
with LiteRT's interpreter, default delegates off so the file's own ops are listed), the weight
granularity and the bias scale check of conv/dense ops; ``float_ops`` keeps the ones that compute in
float between the model's input and output (a QUANTIZE of the input and a DEQUANTIZE of the output
are the only conversions allowed). Cost: milliseconds (the interpreter parses the flatbuffer).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import EdgeoptError


@dataclass(frozen=True)
class TargetSpec:
    """What a target executes: weight granularity per layer kind and whether float layers may remain."""

    name: str
    conv_per_channel: bool
    linear_per_channel: bool
    float_fallback: bool
    summary: str

    @property
    def all_per_channel(self) -> bool:
        return self.conv_per_channel and self.linear_per_channel


TARGETS: dict[str, TargetSpec] = {
    "xnnpack": TargetSpec("xnnpack", True, True, True,
                          "per-channel symmetric int8 weights, int8 activations, float layers allowed"),
    "npu-int8": TargetSpec("npu-int8", False, False, False,
                           "per-tensor symmetric int8 weights, int8 activations everywhere, no float op"),
    "mcu-int8": TargetSpec("mcu-int8", True, False, False,
                           "TFLite Micro / CMSIS-NN: per-channel conv and per-tensor dense int8 weights "
                           "(zero point 0), int8 activations, int32 biases, no float op"),
}  # fmt: skip
DEFAULT_TARGET = "xnnpack"


def target_spec(name: str) -> TargetSpec:
    """The preset called ``name``; a one-line error listing the choices otherwise."""
    if name not in TARGETS:
        raise EdgeoptError(f"unknown quantization target '{name}'", f"use {', '.join(TARGETS)}")
    return TARGETS[name]


def check_target_options(target: str, weights: str = "int8", method: str = "ptq", float_layers: bool = False) -> None:
    """Refuse option combinations that ``target`` cannot execute (one line each). Pure."""
    spec = target_spec(target)
    if spec.float_fallback:
        return
    if weights != "int8":
        raise EdgeoptError(f"target {target} executes int8 weights only, not --weights {weights}", "use --weights int8")
    if float_layers:
        raise EdgeoptError(
            f"target {target} has no float fallback: no layer can be kept float",
            "drop --max-drop / --mix-runtime, or use --target xnnpack",
        )
    if method == "qat" and not spec.all_per_channel:
        raise EdgeoptError(
            f"QAT learns per-channel weight steps; target {target} needs per-tensor weights",
            "use --method ptq with this target",
        )


# --- the PT2E graph: which compute ops would stay float ------------------------------------------


_Q_KEY = "quantization_annotation"


def _annotation(node: Any) -> Any:
    a = node.meta.get(_Q_KEY)
    return a if a is not None and getattr(a, "_annotated", False) else None


def float_nodes(prepared: Any) -> list[Any]:
    """Compute nodes of a prepared PT2E graph (``prepare_pt2e``) that would stay float after convert.

    A node is integer when the quantizer annotated it and its output is either quantized itself or
    consumed only by annotated nodes (a conv fused with the ReLU after it hands its int32 result to
    the ReLU, whose output is quantized). Anything else (an op the quantizer has no pattern for)
    runs in float between a dequantize and a quantize. Nodes that are not float tensors (sizes,
    shapes, tuple items) and shape-only ops on the model input (``_input_layout_op``) are not counted;
    ``export_for_target`` checks the artifact itself.
    """
    import torch

    from edgeopt.compress.quantize.observers import SHAPE_OPS

    found = []
    for n in prepared.graph.nodes:
        if n.op != "call_function" or n.target is operator.getitem or "quantized_decomposed" in str(n.target):
            continue
        if _input_layout_op(n, SHAPE_OPS):
            continue
        val = n.meta.get("val")
        if val is not None and not (isinstance(val, torch.Tensor) and val.is_floating_point()):
            continue
        ann = _annotation(n)
        if ann is not None and (ann.output_qspec is not None or all(_annotation(u) is not None for u in n.users)):
            continue
        found.append(n)
    return found


def _input_layout_op(node: Any, shape_ops: tuple[Any, ...]) -> bool:
    """A shape-only op (permute, reshape...) on the model input, directly or through other such ops.

    Quantization commutes with moving values, so the quantize of the input lands after it in the
    PT2E graph but the converter folds the pair into an int8 model input (an imported NHWC graph
    starts with such a permute): no float op reaches the artifact.
    """
    while node.op == "call_function" and node.target in shape_ops:
        node = node.args[0]
    return node.op == "placeholder"


def op_label(node: Any) -> str:
    """``aten.sigmoid`` for ``aten.sigmoid.default``: the op name a user recognises."""
    name = str(node.target)
    return name[: -len(".default")] if name.endswith(".default") else name


def float_op_names(prepared: Any) -> list[str]:
    """``op (layer)`` of each compute op of a prepared PT2E graph that stays float (``float_nodes``), in
    graph order: what a quantized model's report lists as left in float (empty: full integer)."""
    out = []
    for n in float_nodes(prepared):
        stack = list((n.meta.get("nn_module_stack") or {}).values())
        out.append(f"{op_label(n)} ({stack[-1][0]})" if stack and stack[-1][0] else op_label(n))
    return out


def require_integer(gm: Any, target: str) -> None:
    """Raise (one line, naming the op and its layer) when ``target`` has no float fallback and ``gm``
    (a prepared PT2E graph) has a compute op that would stay float (``float_nodes``)."""
    if target_spec(target).float_fallback:
        return
    bad = float_nodes(gm)
    if bad:
        n = bad[0]
        stack = list((n.meta.get("nn_module_stack") or {}).values())
        where = f" in layer '{stack[-1][0]}'" if stack and stack[-1][0] else ""
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise EdgeoptError(
            f"target {target} runs integer ops only, but op '{op_label(n)}'{where} has no int8 kernel "
            f"and would run in float{more}",
            "replace the op (e.g. with ReLU/ReLU6/pooling/add) or use --target xnnpack, which keeps it float",
        )


# --- the .tflite: ops and dtypes ------------------------------------------------------------------

_WEIGHTED = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "FULLY_CONNECTED": 1, "TRANSPOSE_CONV": 1}


def _dtype_name(dtype: Any) -> str:
    return np.dtype(dtype).name


def _is_float(dtype: Any) -> bool:
    return np.dtype(dtype).kind == "f"


def tflite_ops(path: str | Path) -> list[dict[str, Any]]:
    """Operators of a ``.tflite`` in execution order, each with its input/output dtypes and ``float``.

    Each entry: ``{"index", "op", "inputs": [dtype...], "outputs": [dtype...], "float": bool,
    "boundary": bool}`` plus, for CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED, ``"weight":
    {"dtype", "scales", "zero_points_zero"}`` (``scales`` 1 = per-tensor) and ``"bias": {"dtype",
    "scale_is_input_times_weight"}``. ``float`` means the op reads or writes a float tensor;
    ``boundary`` marks a QUANTIZE of a model input or a DEQUANTIZE into a model output (the allowed
    float<->int conversions). The file's own ops are listed: LiteRT's default XNNPACK delegate,
    which would fold them into DELEGATE nodes, is not applied.
    """
    return _read_tflite(path)[0]


def _read_tflite(path: str | Path) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """(``tflite_ops`` entries, the model's input and output dtypes)."""
    from edgeopt.runtimes.litert_runner import graph_interpreter

    path = Path(path)
    if not path.is_file():
        raise EdgeoptError(f"{path} does not exist", "give the path of a .tflite file")
    try:
        it = graph_interpreter(path)
    except Exception as e:  # a corrupt file: ValueError/RuntimeError from the flatbuffer reader
        raise EdgeoptError(f"LiteRT cannot read {path}: {e}", "re-export the model") from e
    tensors = {int(t["index"]): t for t in it.get_tensor_details()}
    model_in = {int(d["index"]) for d in it.get_input_details()}
    model_out = {int(d["index"]) for d in it.get_output_details()}
    ops = []
    for op in it._get_ops_details():
        ins = [int(i) for i in op["inputs"] if int(i) >= 0]
        outs = [int(i) for i in op["outputs"] if int(i) >= 0]
        name = str(op["op_name"])
        entry: dict[str, Any] = {
            "index": int(op["index"]),
            "op": name,
            "inputs": [_dtype_name(tensors[i]["dtype"]) for i in ins],
            "outputs": [_dtype_name(tensors[i]["dtype"]) for i in outs],
        }
        entry["float"] = any(_is_float(tensors[i]["dtype"]) for i in ins + outs)
        entry["boundary"] = (name == "QUANTIZE" and bool(ins) and ins[0] in model_in) or (
            name == "DEQUANTIZE" and bool(outs) and outs[0] in model_out
        )
        if name in _WEIGHTED and len(ins) > 1:
            entry.update(_weight_info(tensors, [int(i) for i in op["inputs"]]))
        ops.append(entry)
    io = {"input": _dtype_name(it.get_input_details()[0]["dtype"]),
          "output": _dtype_name(it.get_output_details()[0]["dtype"])}  # fmt: skip
    return ops, io


def _scales(t: dict[str, Any]) -> np.ndarray:
    return np.asarray(t.get("quantization_parameters", {}).get("scales", []), np.float64)


def _weight_info(tensors: dict[int, dict[str, Any]], ins: list[int]) -> dict[str, Any]:
    """Weight granularity and zero points; whether the int32 bias scale is input scale x weight scale."""
    x, w = tensors[ins[0]], tensors[ins[1]]
    ws = _scales(w)
    zps = np.asarray(w.get("quantization_parameters", {}).get("zero_points", []))
    info: dict[str, Any] = {"weight": {"dtype": _dtype_name(w["dtype"]), "scales": int(ws.size),
                                       "zero_points_zero": bool(zps.size == 0 or np.all(zps == 0))}}  # fmt: skip
    if len(ins) > 2 and ins[2] >= 0:
        b = tensors[ins[2]]
        bs, xs = _scales(b), _scales(x)
        ok = None
        if bs.size and xs.size == 1 and ws.size in (1, bs.size):
            ok = bool(np.allclose(bs, xs[0] * np.broadcast_to(ws, bs.shape), rtol=1e-5, atol=0))
        info["bias"] = {"dtype": _dtype_name(b["dtype"]), "scale_is_input_times_weight": ok}
    return info


def float_ops(ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``tflite_ops`` entries that compute in float between input and output (not the boundary ones). Pure."""
    return [o for o in ops if o["float"] and not o["boundary"]]


def tflite_report(path: str | Path) -> dict[str, Any]:
    """``{"ops": [name...], "float_ops": [name...], "integer_only": bool, "io_dtypes", "weights"}`` for a ``.tflite``.

    ``weights`` counts the conv/dense weights by granularity (``per-channel`` / ``per-tensor``) and
    says whether every zero point is 0 and every bias scale is input x weight scale.
    """
    ops, io = _read_tflite(path)
    fl = float_ops(ops)
    weighted = [o for o in ops if "weight" in o]
    gran: dict[str, int] = {}
    for o in weighted:
        key = f"{o['op']} {'per-channel' if o['weight']['scales'] > 1 else 'per-tensor'} {o['weight']['dtype']}"
        gran[key] = gran.get(key, 0) + 1
    return {
        "ops": [o["op"] for o in ops],
        "float_ops": [o["op"] for o in fl],
        "integer_only": not fl,
        "io_dtypes": io,
        "weights": {
            "layers": gran,
            "zero_points_zero": all(o["weight"]["zero_points_zero"] for o in weighted),
            "bias_scale_is_input_times_weight": all(
                o.get("bias", {}).get("scale_is_input_times_weight") in (True, None) for o in weighted
            ),
        },
    }


def export_for_target(model: Any, path: str | Path) -> dict[str, Any]:
    """Export a quantized model to ``path`` (.tflite, parity-checked) and report its ops (``tflite_report``).

    For an integer-only target (``npu-int8``, ``mcu-int8``) a float op between input and output is an
    error: the artifact would not run as the target runs it. Cost: one LiteRT conversion (seconds).
    """
    from edgeopt.interop.export import export_model

    res = export_model(model, "tflite", path)
    report = {"path": str(res.path), **tflite_report(res.path)}
    target = getattr(getattr(model.module, "recipe", None), "target", DEFAULT_TARGET)
    if not target_spec(target).float_fallback and not report["integer_only"]:
        raise EdgeoptError(
            f"the .tflite for target {target} has float ops between input and output: {', '.join(report['float_ops'])}",
            "report this model: its quantized graph should have been refused",
        )
    return report

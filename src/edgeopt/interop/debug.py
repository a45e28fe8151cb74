"""Per-layer numeric debugger: where does a runtime start computing something else than PyTorch?

``debug_artifact(model, "m.tflite")`` runs one input through the PyTorch model and through the
artifact in its runtime, collects every intermediate tensor on both sides and pairs them, op by op:

- **PyTorch**: the model is traced with ``torch.export`` and run node by node (``torch.fx.Interpreter``);
  the output of every compute op (conv, linear, add, activations, pools, softmax...) is kept, and for a
  quantized model the dequantized value after each quantize/dequantize pair (what an int8 runtime holds).
- **LiteRT**: the interpreter with ``experimental_preserve_all_tensors=True`` (it then runs the builtin
  kernels, not the XNNPACK delegate); every op output, int8 tensors dequantized with their own parameters.
- **ONNX Runtime**: every intermediate value of float type is added as a graph output (after ONNX shape
  inference) and the session run once.
- **ExecuTorch**: not available here: the program is lowered into XNNPACK delegates, whose
  intermediates exist only in an ETDump from a runtime built with event tracing; the report says so.

Pairing is by value, not by name (exporters rename everything): each PyTorch tensor is matched to the
runtime tensor of the same size (any layout permutation; NCHW against NHWC) with the smallest relative
error ``max|Δ| / max|torch|``. The first op whose error exceeds ``tol`` is named as where the divergence
starts. Cost: one export of the model (~1-2 s), one run in each, and ``T_torch x T_runtime`` array
comparisons (milliseconds for edge models).
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeopt.errors import EdgeoptError
from edgeopt.model import EdgeModel, refuse_multi_input

FLOAT_TOL = 1e-3  # a float artifact agrees with PyTorch to float rounding
QUANT_TOL = 0.05  # an int8 artifact: a few quantization steps of the tensor's range
_COMPUTE = ("conv", "linear", "addmm", "mm", "add", "sub", "mul", "div", "relu", "hardtanh", "clamp", "pool",
            "mean", "softmax", "cat", "sigmoid", "tanh", "hardswish", "gelu", "leaky_relu", "pad")  # fmt: skip
# activations a runtime fuses into the op before them: their row is that op's
_ACTIVATIONS = ("relu", "relu6", "hardtanh", "clamp", "leaky_relu", "sigmoid", "tanh", "hardswish")


@dataclass
class DebugRow:
    """One PyTorch op and the runtime tensor that matches it best."""

    index: int
    op: str  # the traced op (and the module it belongs to)
    shape: list[int]
    runtime_tensor: str | None
    max_abs_diff: float | None
    rel_diff: float | None
    diverged: bool


@dataclass
class DebugReport:
    """The op-by-op table and where it starts to diverge (``first_divergent`` is None when nowhere)."""

    artifact: str
    runtime: str
    available: bool
    note: str
    tol: float
    rows: list[DebugRow] = field(default_factory=list)
    first_divergent: str | None = None
    output_rel_diff: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "rows": [asdict(r) for r in self.rows]}


# --- PyTorch side ---------------------------------------------------------------------------------


def _op_label(node: torch.fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    path = list(stack.values())[-1][0] if stack else ""
    name = str(node.target).split(".")[-2] if "." in str(node.target) else str(node.target)
    return f"{node.name} ({name}{' in ' + path if path else ''})"


def _graph_intermediates(gm: Any, x: torch.Tensor) -> list[tuple[str, np.ndarray]]:
    """Per-node values of an imported graph (``interop.graph``): a ``quant`` node's value replaces its
    producer's (that is the int8 tensor the runtime holds). Labels carry the source file's tensor name."""
    out: dict[str, tuple[str, np.ndarray]] = {}
    producer: dict[str, str] = {}
    env = {gm.input_names[0]: x}
    for node, (run, name, attrs, ins, value_name, _frees) in zip(gm.ir["nodes"], gm._plan, strict=True):
        value = run(gm, name, attrs, [env[v] for v in ins])
        env[value_name] = value
        op = node["op"]
        if (op == "quant" or op in _ACTIVATIONS) and ins[0] in producer:  # fused into its producer
            key = producer[ins[0]]
            label = out[key][0] if op == "quant" else out[key][0].replace(")", f" + {op})", 1)
            out[key] = (label, value.detach().numpy().copy())
            producer[value_name] = key
        elif op in ("permute", "reshape", "squeeze", "unsqueeze", "flatten", "identity") and ins[0] in producer:
            producer[value_name] = producer[ins[0]]  # a layout op: the same tensor, moved
        elif op not in ("const", "quant") and value.is_floating_point():
            src = (node.get("source") or "").split(";")[0]
            out[name] = (f"{name} ({op}{', ' + src if src else ''})", value.detach().numpy().copy())
            producer[value_name] = name
    return list(out.values())


def torch_intermediates(model: EdgeModel, x: torch.Tensor) -> list[tuple[str, np.ndarray]]:
    """(label, value) for each compute op of ``model`` on ``x``, in execution order. Cost: one export + run.

    An imported graph runs node by node; a PT2E-quantized model's integer program keeps only the
    dequantized int8 tensors (what the runtime computes); anything else is traced with ``torch.export``.
    """
    from edgeopt.interop.graph import GraphModule

    module = model.module.eval()
    with torch.no_grad():
        if isinstance(module, GraphModule):
            return _graph_intermediates(module, x)
        program = getattr(module, "program", None)
        quantized = getattr(module, "quantized", False) and callable(program)
        gm = program(True) if quantized else torch.export.export(module, (x,)).module()
    out: list[tuple[str, np.ndarray]] = []

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n: torch.fx.Node) -> Any:
            value = super().run_node(n)
            if n.op == "call_function" and isinstance(value, torch.Tensor) and value.is_floating_point():
                target = str(n.target)
                if "dequantize_per_tensor" in target:  # an int8 tensor as the runtime holds it
                    src = n.args[0].args[0] if isinstance(n.args[0], torch.fx.Node) and n.args[0].args else None
                    if isinstance(src, torch.fx.Node) and src.op == "call_function":
                        out.append((_op_label(src), value.detach().numpy().copy()))
                elif not quantized and "quantize" not in target and any(k in target for k in _COMPUTE):
                    src = n.args[0] if n.args else None
                    fused = any(a in target for a in _ACTIVATIONS) and isinstance(src, torch.fx.Node)
                    if fused and out and out[-1][0] == _op_label(src) and len(src.users) == 1:
                        out[-1] = (out[-1][0].replace(")", f" + {n.name})", 1), value.detach().numpy().copy())
                    else:
                        out.append((_op_label(n), value.detach().numpy().copy()))
            return value

    with torch.no_grad():
        Recorder(gm).run(x)
    last: dict[str, int] = {}  # one row per op (a tensor dequantized for several users counts once)
    for i, (label, _) in enumerate(out):
        last[label] = i
    return [item for i, item in enumerate(out) if last[item[0]] == i]


# --- runtime side ---------------------------------------------------------------------------------


def _dequantized(value: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    if value.dtype.kind not in "iu":
        return value.astype(np.float32)
    qp = detail.get("quantization_parameters", {})
    scales, zps = np.asarray(qp.get("scales", [])), np.asarray(qp.get("zero_points", []))
    if scales.size != 1:
        return np.array([], np.float32)  # an index or per-channel tensor: not an activation
    return ((value.astype(np.float32) - float(zps.reshape(-1)[0])) * float(scales.reshape(-1)[0])).astype(np.float32)


def litert_intermediates(path: Path, x: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Every op output of a .tflite on ``x`` (builtin kernels, all tensors preserved), dequantized."""
    from ai_edge_litert.interpreter import Interpreter

    from edgeopt.runtimes.base import quiet_output
    from edgeopt.runtimes.litert_runner import quantize

    with quiet_output():
        it = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True, num_threads=1)
        inp = it.get_input_details()[0]
        if list(inp["shape"]) != list(x.shape):
            it.resize_tensor_input(inp["index"], list(x.shape))
        it.allocate_tensors()
        inp = it.get_input_details()[0]
        xr = x.astype(np.float32)
        if np.dtype(inp["dtype"]).kind in "iu":
            scale, zp = inp["quantization"]
            xr = quantize(xr, scale, zp, np.dtype(inp["dtype"]))
        it.set_tensor(inp["index"], xr)
        it.invoke()
    details = {d["index"]: d for d in it.get_tensor_details()}
    out = []
    for op in it._get_ops_details():
        for t in op["outputs"]:
            if t < 0 or t not in details:
                continue
            try:
                value = _dequantized(np.array(it.get_tensor(t)), details[t])
            except ValueError:
                continue
            if value.size:
                out.append((details[t]["name"], value))
    return out


def onnx_intermediates(path: Path, x: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Every float intermediate value of an .onnx on ``x`` (exposed as extra graph outputs), labelled with its
    node's name and op (edgeopt's exports give the tensors short ids, the nodes keep their names)."""
    import onnx
    import onnxruntime as ort

    proto = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    known = {v.name: v for v in list(proto.graph.value_info) + list(proto.graph.output)}
    outputs = {o.name for o in proto.graph.output}
    for node in proto.graph.node:
        for name in node.output:
            info = known.get(name)
            if name and name not in outputs and info is not None and info.type.tensor_type.elem_type == 1:
                proto.graph.output.append(info)
                outputs.add(name)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every value computed
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    values = sess.run(names, {sess.get_inputs()[0].name: x.astype(np.float32)})
    order = {n: i for i, node in enumerate(proto.graph.node) for n in node.output}
    label = {n: f"{node.name or n} ({node.op_type})" for node in proto.graph.node for n in node.output}
    pairs = sorted(zip(names, values, strict=True), key=lambda p: order.get(p[0], len(order)))
    return [(label.get(n, n), np.asarray(v, np.float32)) for n, v in pairs]


# --- pairing ----------------------------------------------------------------------------------------


def _views(value: np.ndarray, shape: tuple[int, ...]) -> list[np.ndarray]:
    """``value`` rearranged into ``shape`` by every axis permutation that fits (rank <= 4). Pure."""
    if value.size != int(np.prod(shape)):
        return []
    if sorted(value.shape) != sorted(shape) or value.ndim > 4:
        return [value.reshape(shape)]
    return [value.transpose(p) for p in itertools.permutations(range(value.ndim))
            if tuple(value.transpose(p).shape) == tuple(shape)]  # fmt: skip


def rel_error(ref: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    """(max|got - ref|, that over max|ref|) of two same-shaped arrays; NaN counts as infinite. Pure."""
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    max_diff = float(diff.max()) if np.isfinite(diff).all() else float("inf")
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    return max_diff, (max_diff / scale if scale > 0 else (0.0 if max_diff == 0 else float("inf")))


def pair_tensors(
    ours: list[tuple[str, np.ndarray]], theirs: list[tuple[str, np.ndarray]], tol: float
) -> list[DebugRow]:
    """Match each PyTorch tensor to the runtime tensor of the same size nearest in value. Pure."""
    rows = []
    for i, (label, ref) in enumerate(ours):
        best: tuple[float, float, str] | None = None
        for name, value in theirs:
            for view in _views(value, ref.shape):
                d, r = rel_error(ref, view)
                if best is None or r < best[1]:
                    best = (d, r, name)
        if best is None:
            rows.append(DebugRow(i, label, list(ref.shape), None, None, None, False))
        else:
            rows.append(DebugRow(i, label, list(ref.shape), best[2], best[0], best[1], bool(best[1] > tol)))
    return rows


def debug_artifact(
    model: EdgeModel,
    artifact: str | Path,
    x: np.ndarray | None = None,
    tol: float | None = None,
    fmt: str | None = None,
) -> DebugReport:
    """Op-by-op error between ``model`` in PyTorch and ``artifact`` in its runtime on one input ``x``.

    ``x`` is one batch in the model's interface (default: its deterministic example input);
    ``tol`` defaults to ``FLOAT_TOL`` (``QUANT_TOL`` for a quantized model); ``fmt`` (tflite, onnx,
    pte) overrides the artifact's suffix. See the module doc.
    """
    refuse_multi_input(model, "debug")
    path = Path(artifact)
    if not path.is_file():
        raise EdgeoptError(f"artifact not found: {path}", "check the path")
    suffix = f".{fmt}" if fmt else path.suffix.lower()
    quantized = bool(getattr(model.module, "quantized", False))
    tol = tol if tol is not None else (QUANT_TOL if quantized else FLOAT_TOL)
    if x is None:
        x = model.example_input(1).numpy()
    x = np.ascontiguousarray(x, dtype=np.float32)
    if tuple(x.shape[1:]) != tuple(model.meta.input.shape):
        want = "x".join(str(s) for s in model.meta.input.shape)
        raise EdgeoptError(f"inputs have shape {tuple(x.shape)}, the model takes N x {want}", "give matching inputs")
    x = x[:1]
    if suffix == ".pte":
        return DebugReport(str(path), "executorch", False,
                           "ExecuTorch intermediates are not available: the program runs as XNNPACK delegates, whose "
                           "tensors only an ETDump from a runtime built with event tracing records; debug the .tflite "
                           "or .onnx export of the same model instead", tol)  # fmt: skip
    if suffix == ".tflite":
        runtime, theirs = "litert", litert_intermediates(path, x)
    elif suffix == ".onnx":
        runtime, theirs = "onnxruntime", onnx_intermediates(path, x)
    else:
        raise EdgeoptError(f"cannot debug '{path.suffix or path.name}' artifacts", "give a .tflite, .onnx or .pte file")
    ours = torch_intermediates(model, torch.from_numpy(x))
    rows = pair_tensors(ours, theirs, tol)
    first = next((r for r in rows if r.diverged), None)
    out_rel = rows[-1].rel_diff if rows else None
    note = (f"first divergent op: {first.op} (relative error {first.rel_diff:.3g} > {tol:g})" if first
            else f"every op within relative error {tol:g}")  # fmt: skip
    if runtime == "litert":
        note += "; LiteRT ran its builtin kernels (all tensors preserved), not the XNNPACK delegate"
    return DebugReport(str(path), runtime, True, note, tol, rows, first.op if first else None, out_rel)


def divergence_hint(model: EdgeModel, artifact: Path, x: np.ndarray, fmt: str) -> str:
    """One sentence naming the first op where ``artifact`` departs from ``model`` ('' when none is found).

    Used by a failed export parity check; never raises (the parity failure is the error to report).
    """
    try:
        report = debug_artifact(model, artifact, x[:1], fmt=fmt)
    except Exception:  # the hint is a courtesy: the parity failure itself is what gets reported
        return ""
    if not report.available or report.first_divergent is None:
        return ""
    row = next(r for r in report.rows if r.op == report.first_divergent)
    return f"; it first diverges at {row.op} (relative error {row.rel_diff:.3g}; see `edgeopt debug`)"

"""Memory an artifact needs on a device: activation arena and weight bytes, from the runtime's own plan.

``memory_plan(path)`` reads an artifact and says where each figure comes from (``MemoryPlan.source``):

* ``.pte`` (``executorch_memory_plan``): ExecuTorch plans memory ahead of time and stores the plan in
  the program. ``arena_bytes`` is the sum of the execution plan's non-constant buffer sizes (index 0
  is reserved for constants), read with ExecuTorch's own deserializer; ``weights_bytes`` is the
  program's constant data: the constant buffer, the named data (where the XNNPACK delegate keeps its
  weights) and constants inlined in XNNPACK delegate blobs. An XNNPACK delegate also allocates a
  workspace of its own at load for the tensors *inside* the delegate, outside ExecuTorch's plan and
  not stored in the .pte: ``detail["xnnpack_workspace_bytes_estimate"]`` is edgeopt's liveness over
  the delegate's serialized XNNPACK graph (a lower bound of XNNPACK's own planner), and
  ``detail["arena_plus_workspace_bytes_estimate"]`` the two together.
* ``.tflite`` / ``.onnx`` (``edgeopt_liveness_tflite_graph`` / ``edgeopt_liveness_onnx_graph``):
  neither runtime exposes its arena plan in Python. Checked with ai-edge-litert 2.3: the LiteRT
  ``Interpreter`` offers tensor and op details, ``allocate_tensors`` and ``invoke`` but no arena size;
  ONNX Runtime 1.32's ``InferenceSession`` / ``SessionOptions`` only switch the CPU arena and memory
  patterns on or off, with no size query. These figures are therefore edgeopt's estimate, not the
  runtime's plan: the liveness walk of ``profile.memory`` over the artifact's own graph (op order as
  stored, tensor sizes from their shapes and types, reshape-like ops aliasing; see
  ``profile.graph_memory``); weights are the constant tensors (.tflite buffers, .onnx initializers
  and Constant nodes).
* ``.edgeopt`` / ``.pt2`` / ``.eoz`` or an ``EdgeModel`` (``edgeopt_liveness_torch_export``): the
  liveness of ``profile.activation_memory`` on the ``torch.export`` graph and the stored weight bytes.

File reading stays in ``memory_plan`` and the ``read_*`` helpers; turning a parsed graph into
``GraphOp``s is pure. Cost: parsing the file (milliseconds for these models; the XNNPACK delegate
graph is decompiled with ExecuTorch's bundled ``flatc``, one subprocess per delegate); the torch
estimate costs one ``torch.export`` (0.1-1 s).
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from edgeopt.errors import EdgeoptError
from edgeopt.model import EdgeModel
from edgeopt.profile.graph_memory import GraphOp, graph_records
from edgeopt.profile.memory import LIVENESS_SOURCE, activation_timeline

SOURCE_EXECUTORCH = "executorch_memory_plan"
SOURCE_TFLITE = "edgeopt_liveness_tflite_graph"
SOURCE_ONNX = "edgeopt_liveness_onnx_graph"
SOURCE_TORCH = LIVENESS_SOURCE
SOURCE_XNNPACK = "edgeopt_liveness_xnnpack_delegate_graph"

# ops that write nothing new: the output is the input's storage in another shape
TFLITE_VIEWS = frozenset({"RESHAPE", "SQUEEZE", "EXPAND_DIMS"})
ONNX_VIEWS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"})
XNNPACK_VIEWS = frozenset({"XNNStaticReshape"})
ONNX_QDQ = {"dequantize_kinds": ("DequantizeLinear",), "quantize_kinds": ("QuantizeLinear",),
            "fusable_kinds": ("Relu", "Clip")}  # fmt: skip

# element bytes of tflite.TensorType values (INT4 counted as a byte: only weights use it)
_TFLITE_ITEMSIZE = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 6: 1, 7: 2, 8: 8, 9: 1, 10: 8, 11: 16, 12: 8, 15: 4, 16: 2,
                    17: 1, 18: 2}  # fmt: skip
_XNN_ITEMSIZE = {"fp32": 4, "fp16": 2, "bf16": 2, "qint8": 1, "quint8": 1, "qint32": 4, "qcint8": 1, "qcint32": 4,
                 "qcint4": 1, "qdint8": 1, "qbint4": 1, "qpint8": 1, "int32": 4, "pfp32": 4}  # fmt: skip
_XNN_INVALID_ID = 0xFFFFFFFF


@dataclass(frozen=True)
class MemoryPlan:
    """Activation arena and weight bytes of one artifact, where they come from, and how they were counted."""

    arena_bytes: int
    weights_bytes: int
    source: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The plan as a JSON-ready dict (``detail`` holds only JSON types)."""
        return asdict(self)


@dataclass(frozen=True)
class ArtifactGraph:
    """A runtime graph reduced to what liveness needs: ops in order, tensor bytes, inputs, outputs, weights."""

    ops: tuple[GraphOp, ...]
    tensor_bytes: Mapping[str, int]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    weights_bytes: int
    notes: Mapping[str, Any] = field(default_factory=dict)


def graph_liveness(graph: ArtifactGraph, view_kinds: Sequence[str], **qdq: Sequence[str]) -> tuple[int, str | None]:
    """Peak live activation bytes of ``graph`` and the op where it happens (``profile.memory`` rules). Pure."""
    records, outputs = graph_records(graph.ops, graph.tensor_bytes, graph.inputs, graph.outputs, view_kinds, **qdq)
    mem = activation_timeline(records, outputs)
    return mem.peak_bytes, mem.peak_node


# --- entry points ---------------------------------------------------------------------------------


def memory_plan(path: str | Path) -> MemoryPlan:
    """The ``MemoryPlan`` of a model file, by suffix (.pte, .tflite, .onnx; .edgeopt/.pt2/.eoz: torch).

    Cost: reading and parsing the file; a torch model adds one ``torch.export``.
    """
    path = Path(path)
    if not path.is_file():
        raise EdgeoptError(f"model file not found: {path}", "check the path")
    suffix = path.suffix.lower()
    if suffix == ".pte":
        return pte_memory_plan(path.read_bytes(), str(path))
    if suffix == ".tflite":
        graph = read_tflite_graph(path.read_bytes())
        peak, node = graph_liveness(graph, sorted(TFLITE_VIEWS))
        weights = "constant buffers (quantization scales and zero points are tensor metadata: not counted)"
        return _liveness_plan(graph, peak, node, SOURCE_TFLITE, weights)
    if suffix == ".onnx":
        graph = read_onnx_graph(path)
        peak, node = graph_liveness(graph, sorted(ONNX_VIEWS), **ONNX_QDQ)
        return _liveness_plan(graph, peak, node, SOURCE_ONNX, "initializers and Constant nodes")
    from edgeopt.model import load_model

    return model_memory_plan(load_model(path))  # raises the usual clear error for other suffixes


def model_memory_plan(model: EdgeModel) -> MemoryPlan:
    """edgeopt's liveness estimate on the ``torch.export`` graph of ``model`` and its stored weight bytes.

    ``detail`` also gives the figure with fused element-wise ops (BN/activation writing over their
    input, as fused runtime kernels do). Cost: one ``torch.export`` at batch 1.
    """
    from edgeopt.profile import activation_memory, export_for_profile, stored_module, weight_bytes

    ep = export_for_profile(model)
    mem = activation_memory(ep)
    fused = activation_memory(ep, fuse_elementwise=True)
    detail = {
        "peak_node": mem.peak_node,
        "fused_elementwise_arena_bytes": fused.peak_bytes,
        "counted": "arena: live activations of the torch.export graph, input included, no in-place reuse; "
        "weights: stored tensors (int8 weights one byte each)",
    }
    return MemoryPlan(mem.peak_bytes, weight_bytes(stored_module(model)), SOURCE_TORCH, detail)


def _liveness_plan(graph: ArtifactGraph, peak: int, node: str | None, source: str, weights: str) -> MemoryPlan:
    detail = {
        "estimate": "edgeopt's liveness over the artifact's graph, not the runtime's own plan",
        "peak_op": node,
        "ops": len(graph.ops),
        "counted": f"arena: live activations, input included, reshape-like ops aliasing; weights: {weights}",
        **graph.notes,
    }
    return MemoryPlan(peak, graph.weights_bytes, source, detail)


# --- ExecuTorch -----------------------------------------------------------------------------------

_ET_ITEMSIZE = {"BYTE": 1, "CHAR": 1, "SHORT": 2, "INT": 4, "LONG": 8, "HALF": 2, "FLOAT": 4, "DOUBLE": 8, "BOOL": 1,
                "QINT8": 1, "QUINT8": 1, "QINT32": 4, "BFLOAT16": 2, "QUINT4x2": 1, "QUINT2x4": 1, "BITS16": 2,
                "UINT16": 2, "UINT32": 4, "UINT64": 8}  # fmt: skip


def pte_memory_plan(data: bytes, name: str = "the program") -> MemoryPlan:
    """ExecuTorch's memory plan stored in a .pte program (see the module docstring).

    Cost: deserializing the program, plus one ``flatc`` run per XNNPACK delegate for the workspace estimate.
    """
    from edgeopt.runtimes.base import quiet_output

    with quiet_output():  # importing executorch prints torchao's chatter
        from executorch.exir._serialize._program import deserialize_pte_binary
    try:
        pte = deserialize_pte_binary(data)
    except Exception as e:  # the flatbuffer reader raises many types on corrupt data
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise EdgeoptError(f"{name} is not a readable ExecuTorch program ({why})", "re-export the .pte") from e
    program = pte.program
    if not program.execution_plan:
        raise EdgeoptError("the ExecuTorch program has no method", "re-export the .pte")
    plans = {p.name: p for p in program.execution_plan}
    plan = plans.get("forward", program.execution_plan[0])
    arena = int(sum(plan.non_const_buffer_sizes[1:]))
    planned = [v.val for v in plan.values if getattr(v.val, "allocation_info", None) is not None]
    planned_bytes = sum(_et_tensor_bytes(t) for t in planned)
    calls = [type(i.instr_args).__name__ for chain in plan.chains for i in chain.instructions]

    constant_bytes = sum(len(b.storage) for b in program.constant_buffer[1:])  # buffer 0 is reserved
    named = pte.named_data
    named_bytes = sum(len(b) for b in named.buffers) if named is not None else 0
    delegates = [_delegate_detail(program, d) for d in plan.delegates]
    inline_bytes = sum(d.get("inline_constant_bytes", 0) for d in delegates)
    opaque = sum(d.get("payload_bytes", 0) for d in delegates if d["id"] != "XnnpackBackend")
    detail: dict[str, Any] = {
        "method": plan.name,
        "methods": sorted(plans),
        "non_const_buffer_sizes": [int(s) for s in plan.non_const_buffer_sizes],
        "planned_tensors": len(planned),
        "planned_tensor_bytes": planned_bytes,
        "kernel_calls": calls.count("KernelCall"),
        "delegate_calls": calls.count("DelegateCall"),
        "constant_buffer_bytes": constant_bytes,
        "named_data_bytes": named_bytes,
        "delegate_inline_constant_bytes": inline_bytes,
        "counted": "arena: sum of non_const_buffer_sizes[1:] (alignment included); weights: constant buffer "
        "(padding included) + named data (XNNPACK weights) + constants inlined in XNNPACK delegate blobs",
        "delegates": delegates,
    }
    if opaque:
        detail["other_delegate_payload_bytes"] = opaque  # not counted: their content is not known here
    if pte.mutable_data:
        detail["mutable_data_bytes"] = sum(len(b.storage) for b in pte.mutable_data)
    xnn = [d for d in delegates if d["id"] == "XnnpackBackend"]
    if xnn:
        estimates = [d.get("workspace_bytes_estimate") for d in xnn]
        known = [int(e) for e in estimates if e is not None]
        detail["xnnpack_workspace_bytes_estimate"] = sum(known) if len(known) == len(xnn) else None
        detail["xnnpack_workspace_source"] = SOURCE_XNNPACK
        detail["xnnpack_workspace_note"] = (
            "XNNPACK allocates a workspace for the delegate's internal tensors at load, outside ExecuTorch's "
            "plan and not stored in the .pte; this is edgeopt's liveness over the delegate graph (summed over "
            "delegates: one workspace each unless the backend's workspace sharing is on), a lower bound of "
            "XNNPACK's own planner. XNNPACK also packs the weights into buffers of its own at load."
        )
        ws = detail["xnnpack_workspace_bytes_estimate"]
        detail["arena_plus_workspace_bytes_estimate"] = None if ws is None else arena + ws
    return MemoryPlan(arena, constant_bytes + named_bytes + inline_bytes, SOURCE_EXECUTORCH, detail)


def _et_tensor_bytes(t: Any) -> int:
    n = 1
    for s in t.sizes:
        n *= int(s)
    return n * _ET_ITEMSIZE.get(getattr(t.scalar_type, "name", ""), 4)


def _delegate_detail(program: Any, delegate: Any) -> dict[str, Any]:
    """Id and payload size of one delegate; for XNNPACK also its graph's constants and workspace estimate."""
    ref = delegate.processed
    payload = program.backend_delegate_data[ref.index].data if ref.index < len(program.backend_delegate_data) else b""
    out: dict[str, Any] = {"id": delegate.id, "payload_bytes": len(payload)}
    if delegate.id != "XnnpackBackend":
        return out
    try:
        graph_json, inline = read_xnnpack_delegate(payload)
        graph = xnnpack_graph(graph_json)
        peak, node = graph_liveness(graph, sorted(XNNPACK_VIEWS))
    except (EdgeoptError, ValueError, KeyError, OSError) as e:
        out["workspace_error"] = str(e)[:200]
        return out
    kinds: dict[str, int] = {}
    for op in graph.ops:
        kinds[op.kind] = kinds.get(op.kind, 0) + 1
    out.update(
        nodes=len(graph.ops),
        node_kinds=dict(sorted(kinds.items())),
        inline_constant_bytes=inline,
        constant_bytes=graph.weights_bytes,
        workspace_bytes_estimate=peak,
        workspace_peak_node=node,
    )
    return out


_BARE_FLOAT = re.compile(rb"(?<=[:\[,\s])(-?inf|-?nan)(?=[\s,\]}])")


def read_xnnpack_delegate(payload: bytes) -> tuple[dict[str, Any], int]:
    """An XNNPACK delegate blob's graph (as JSON, via ExecuTorch's bundled flatc) and its inline constant bytes.

    Cost: one ``flatc`` subprocess and two small temporary files.
    """
    import executorch.backends.xnnpack.serialization as xnn_serialization
    from executorch.backends.xnnpack.serialization.xnnpack_graph_serialize import XNNHeader
    from executorch.exir._serialize._flatbuffer import _flatc_decompile

    header = XNNHeader.from_bytes(payload[: XNNHeader.EXPECTED_LENGTH])
    if not header.is_valid():
        raise EdgeoptError("the XNNPACK delegate header is invalid")
    fb = payload[header.flatbuffer_offset : header.flatbuffer_offset + header.flatbuffer_size]
    schema = Path(next(iter(xnn_serialization.__path__))) / "schema.fbs"
    with tempfile.TemporaryDirectory(prefix="edgeopt-xnn-") as tmp:
        binary = Path(tmp) / "graph.bin"
        binary.write_bytes(fb)
        _flatc_decompile(tmp, str(schema), str(binary), ["--raw-binary"])
        text = (Path(tmp) / "graph.json").read_bytes()
    return json.loads(_BARE_FLOAT.sub(rb'"\1"', text)), int(header.constant_data_size)


def xnnpack_graph(graph: Mapping[str, Any]) -> ArtifactGraph:
    """An XNNPACK graph (the delegate's JSON) as an ``ArtifactGraph``. Pure.

    External values (the delegate's inputs and outputs) live in ExecuTorch's planned arena, so they
    count 0 bytes here: the liveness is that of the workspace alone. Constant values (a constant
    buffer index other than 0) are weights: their bytes are the sizes listed in ``constant_data``.
    """
    tensor_bytes: dict[str, int] = {}
    constants: set[str] = set()
    for v in graph.get("xvalues", []):
        union = v.get("xvalue_union", {})
        tv = union.get("tensor_value", union)  # XNNQuantizedTensorValue wraps an XNNTensorValue
        vid = str(tv.get("id_out", 0))
        if int(tv.get("constant_buffer_idx", 0)) != 0:
            constants.add(vid)
            continue
        external = int(tv.get("external_id", _XNN_INVALID_ID)) != _XNN_INVALID_ID
        n = 1
        for d in tv.get("dims", []):
            n *= int(d)
        itemsize = _XNN_ITEMSIZE.get(str(tv.get("datatype", "")).removeprefix("xnn_datatype_"), 4)
        tensor_bytes[vid] = 0 if external else n * itemsize
    ops = []
    for i, node in enumerate(graph.get("xnodes", [])):
        kind = str(node.get("xnode_union_type", "?"))
        ins: list[str] = []
        outs: list[str] = []
        for key, value in node.get("xnode_union", {}).items():
            if not (key.endswith("_id") or key.endswith("_ids")):
                continue
            ids = value if isinstance(value, list) else [value]
            (outs if key.startswith("output") else ins).extend(str(int(x)) for x in ids if int(x) != _XNN_INVALID_ID)
        ops.append(GraphOp(f"#{i} {kind}", kind, tuple(ins), tuple(outs)))
    weights = sum(int(c.get("size", 0)) for c in graph.get("constant_data", [])[1:])  # entry 0 is reserved
    return ArtifactGraph(
        tuple(ops),
        tensor_bytes,
        tuple(str(int(x)) for x in graph.get("input_ids", [])),
        tuple(str(int(x)) for x in graph.get("output_ids", [])),
        weights,
        {"constant_values": len(constants)},
    )


# --- LiteRT ---------------------------------------------------------------------------------------


def read_tflite_graph(data: bytes) -> ArtifactGraph:
    """The first subgraph of a .tflite flatbuffer as an ``ArtifactGraph`` (parsed with the ``tflite`` package).

    Ops are in the stored order, which the interpreter executes; a tensor with a non-empty buffer
    is a weight (each buffer counted once). Cost: one pass over the flatbuffer; nothing is run.
    """
    from tflite.Model import Model
    from tflite.utils import BUILTIN_OPCODE2NAME

    if len(data) < 8 or data[4:8] != b"TFL3":
        raise EdgeoptError("not a valid .tflite file (no TFL3 file identifier)", "re-export the model")
    model = Model.GetRootAs(data, 0)
    if model.SubgraphsLength() < 1:
        raise EdgeoptError("not a valid .tflite file (no subgraph)", "re-export the model")
    sub = model.Subgraphs(0)
    codes = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        codes.append(BUILTIN_OPCODE2NAME.get(code, f"BUILTIN_{code}"))
    tensor_bytes: dict[str, int] = {}
    weight_buffers: dict[int, int] = {}
    unknown_types = 0
    for i in range(sub.TensorsLength()):
        t = sub.Tensors(i)
        buf_size = _tflite_buffer_size(model, t.Buffer())
        if buf_size:
            weight_buffers[t.Buffer()] = buf_size
            continue
        n = 1
        for s in t.ShapeAsNumpy() if t.ShapeLength() else ():
            n *= max(int(s), 1)  # a dynamic (-1) batch counts as 1
        if t.Type() not in _TFLITE_ITEMSIZE:
            unknown_types += 1
        tensor_bytes[f"t{i}"] = n * _TFLITE_ITEMSIZE.get(t.Type(), 4)
    ops = []
    for i in range(sub.OperatorsLength()):
        op = sub.Operators(i)
        kind = codes[op.OpcodeIndex()] if op.OpcodeIndex() < len(codes) else "?"
        ins = tuple(f"t{int(v)}" for v in (op.InputsAsNumpy() if op.InputsLength() else ()) if v >= 0)
        outs = tuple(f"t{int(v)}" for v in (op.OutputsAsNumpy() if op.OutputsLength() else ()) if v >= 0)
        ops.append(GraphOp(f"#{i} {kind}", kind, ins, outs))
    inputs = tuple(f"t{int(v)}" for v in (sub.InputsAsNumpy() if sub.InputsLength() else ()))
    outputs = tuple(f"t{int(v)}" for v in (sub.OutputsAsNumpy() if sub.OutputsLength() else ()))
    notes: dict[str, Any] = {"subgraphs": int(model.SubgraphsLength())}
    if unknown_types:
        notes["tensors_of_unknown_type_counted_4_bytes"] = unknown_types
    return ArtifactGraph(tuple(ops), tensor_bytes, inputs, outputs, sum(weight_buffers.values()), notes)


def _tflite_buffer_size(model: Any, index: int) -> int:
    if index <= 0 or index >= model.BuffersLength():  # buffer 0 is the empty sentinel
        return 0
    buf = model.Buffers(index)
    if buf.Offset() > 1:  # large models keep buffers after the flatbuffer
        return int(buf.Size())
    return int(buf.DataLength())


# --- ONNX -----------------------------------------------------------------------------------------


def read_onnx_graph(path: str | Path) -> ArtifactGraph:
    """An .onnx file's main graph as an ``ArtifactGraph``, tensor shapes from ``onnx.shape_inference``.

    Symbolic dimensions count as 1 (batch 1); tensors whose shape inference cannot tell count 0
    bytes and are listed in ``notes``. Cost: loading the model and one shape-inference pass.
    """
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf DecodeError and friends
        raise EdgeoptError(f"{path} is not a readable .onnx file ({e})", "re-export the model") from e
    failed = None
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception as e:  # a graph shape inference rejects keeps the shapes it already stores
        failed = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    graph = onnx_graph(model)
    return graph if failed is None else replace(graph, notes={**graph.notes, "shape_inference_error": failed})


def _onnx_itemsize(elem_type: int) -> int:
    import onnx

    try:
        return int(onnx.helper.tensor_dtype_to_np_dtype(elem_type).itemsize)
    except (KeyError, TypeError, ValueError):
        return 0


def _onnx_tensor_bytes(dims: Sequence[int], elem_type: int) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n * _onnx_itemsize(elem_type)


def onnx_graph(model: Any) -> ArtifactGraph:
    """An ``onnx.ModelProto``'s main graph as an ``ArtifactGraph``. Pure (reads the proto only)."""
    g = model.graph
    init_names = {t.name for t in g.initializer}
    weights = sum(_onnx_tensor_bytes(t.dims, t.data_type) for t in g.initializer)
    tensor_bytes: dict[str, int] = {}
    symbolic = unknown = 0
    for vi in [*g.input, *g.value_info, *g.output]:
        tt = vi.type.tensor_type
        if not tt.HasField("shape") or not tt.elem_type:
            continue
        dims = []
        for d in tt.shape.dim:
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(d.dim_value)
            else:
                dims.append(1)
                symbolic += 1
        tensor_bytes[vi.name] = _onnx_tensor_bytes(dims, tt.elem_type)
    ops = []
    for i, node in enumerate(g.node):
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    weights += _onnx_tensor_bytes(a.t.dims, a.t.data_type)
        ins = tuple(n for n in node.input if n)
        outs = tuple(n for n in node.output if n)
        ops.append(GraphOp(f"#{i} {node.op_type}", node.op_type, ins, outs))
    inputs = tuple(vi.name for vi in g.input if vi.name not in init_names)
    outputs = tuple(vi.name for vi in g.output)
    produced = {t for op in ops for t in op.outputs}
    unknown = sum(1 for t in produced | set(inputs) if t not in tensor_bytes)
    notes: dict[str, Any] = {"opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                                          default=None)}  # fmt: skip
    if symbolic:
        notes["symbolic_dims_counted_as_1"] = symbolic
    if unknown:
        notes["tensors_without_inferred_shape_counted_0"] = unknown
    return ArtifactGraph(tuple(ops), tensor_bytes, inputs, outputs, weights, notes)

"""Each kernel's time inside a whole model, from the runtime's own per-operator profiler.

nn-Meter's latency predictor rests on per-kernel timings. Rather than timing kernels one at a time
in isolation, calibration reads them from the runtimes' profilers while a whole calibration model
runs, so each timing carries its real context (what ran before it, what is still in cache):

* ONNX Runtime: session profiling (``SessionOptions.enable_profiling``), one event per node of the
  optimised graph with its input and output shapes;
* ExecuTorch: an ETDump (``_load_for_executorch(enable_etdump=True)``), where the XNNPACK delegate
  reports one event per XNNPACK operator;
* LiteRT: its C API's profiler (``hardware.litert_profiler``; its Python API has none), where the
  XNNPACK delegate reports the same events.

``attribute`` then hands each runtime operator's time to one of edgeopt's kernels
(``hardware.kernels``): convolutions and matmuls by kernel size and output size, in execution
order (the runtimes may run a residual's shortcut before its body; ONNX Runtime's profiler gives
each node's shapes, and XNNPACK's are read from the delegate's serialised graph in the ``.pte``,
``xnnpack_compute_shapes``, or from the ``.tflite``'s operators, ``tflite_compute_shapes``), other
kernels by kind in order, and glue the runtime adds (layout reorders, reshapes, a clamp XNNPACK
runs after an add) to the kernel before it. A kernel the
runtime fused into another (ONNX Runtime folds a residual add into the convolution before it) gets 0.

Cost: one extra profiled session per model (~``seconds`` of calls, at most 200, plus warm-up and
reading the events), ~0.1–0.3 s.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgeopt.hardware.kernels import Kernel
from edgeopt.runtimes.base import repeat_for

# ONNX Runtime's node types (after graph optimisation) by the kernel type they run
_ORT_KINDS = {
    "Conv": "conv", "FusedConv": "conv", "Gemm": "linear", "MatMul": "linear", "FusedGemm": "linear",
    "FusedMatMul": "linear", "Add": "add", "Sum": "add", "Mul": "mul", "GlobalAveragePool": "pool",
    "AveragePool": "pool", "MaxPool": "pool", "GlobalMaxPool": "pool", "ReduceMean": "pool",
    "Transpose": "transpose", "Pad": "pad", "Softmax": "softmax", "Concat": "concat",
}  # fmt: skip
# XNNPACK operators that run a convolution or matmul (the delegate's event names). XNNPACK picks the
# micro-kernel itself (a 1×1 convolution runs as "Fully Connected", a 7×7 depthwise one as IGEMM), so
# the names do not say which kernel ran: the shapes come from the serialised graph instead.
_XNNPACK_COMPUTE = ("Convolution", "Fully Connected")
_XNNPACK_GRAPH_COMPUTE = frozenset({"XNNConv2d", "XNNDepthwiseConv2d", "XNNFullyConnected"})
_XNNPACK_KINDS = (
    ("Add", "add"), ("Multiply", "mul"), ("Mean", "pool"), ("Pooling", "pool"), ("Transpose", "transpose"),
    ("Pad", "pad"), ("Softmax", "softmax"), ("Concatenate", "concat"),
)  # fmt: skip
_ALWAYS_FOUND = frozenset({"conv", "dwconv", "linear", "compute"})  # kinds every model's kernels must all be found for


@dataclass(frozen=True)
class OpTime:
    """One runtime operator: the kernel kind it runs (``glue`` for layout and bookkeeping operators,
    ``compute`` for an XNNPACK convolution or matmul), its time per call in microseconds, and, for a
    convolution or matmul, its ``(kernel area, output area)`` to find its kernel by."""

    kind: str
    us: float
    shape: tuple[int, int] | None = None


def ort_op(op_name: str, inputs: Sequence[Sequence[int]], outputs: Sequence[Sequence[int]], us: float) -> OpTime:
    """An ONNX Runtime profiler node as an ``OpTime`` (a convolution whose weight is ``[C, 1, k, k]`` on
    ``C`` input channels is depthwise). Pure."""
    kind = _ORT_KINDS.get(op_name, "glue")
    shape = None
    if kind == "conv" and len(inputs) > 1 and len(inputs[1]) == 4 and outputs and len(outputs[0]) == 4:
        x, w, y = inputs[0], inputs[1], outputs[0]
        if w[1] == 1 and w[0] == x[1] > 1:
            kind = "dwconv"
        shape = (int(w[2] * w[3]), int(y[2] * y[3]))
    return OpTime(kind, float(us), shape)


def xnnpack_op(name: str, us: float, shape: tuple[int, int] | None = None) -> OpTime:
    """An XNNPACK operator (ExecuTorch's delegate event name) as an ``OpTime``; ``shape`` is a compute
    operator's, from ``xnnpack_compute_shapes``. Pure."""
    if any(key in name for key in _XNNPACK_COMPUTE):
        return OpTime("compute", float(us), shape)
    return OpTime(next((k for key, k in _XNNPACK_KINDS if key in name), "glue"), float(us))


def graph_compute_shapes(graph: dict) -> list[tuple[int, int]]:
    """``(kernel area, output area)`` of each convolution and matmul node of an XNNPACK graph (the
    delegate's flatbuffer as JSON), in node order, which is the order XNNPACK runs them. A matmul's
    output area is its rows (1 for a classifier head; H·W for a 1×1 convolution). Pure."""
    dims = {}
    for v in graph.get("xvalues", []):
        value = v.get("xvalue_union", {})
        if "id_out" in value:
            dims[value["id_out"]] = value.get("dims", [])
    shapes = []
    for node in graph.get("xnodes", []):
        if node.get("xnode_union_type") not in _XNNPACK_GRAPH_COMPUTE:
            continue
        n = node["xnode_union"]
        out = dims.get(n["output_id"], [])
        if node["xnode_union_type"] == "XNNFullyConnected":
            shapes.append((1, int(np.prod(out[:-1]))))
        else:
            shapes.append((int(n["kernel_height"] * n["kernel_width"]), int(np.prod(out[1:-1]))))
    return shapes


def attribute(kernels: Sequence[Kernel], ops: Sequence[OpTime]) -> list[float] | None:
    """Each kernel's time (µs) from the runtime's operators, or None when the two do not line up
    (a convolution or matmul with no kernel of its shape left to take it, or a convolution or matmul
    kernel that no operator ran). Pure.

    Why by hand: the runtimes name their fused operators in their own terms, and no library maps
    them back to a PyTorch graph's kernels.
    """
    merged = any(op.kind == "compute" for op in ops)  # XNNPACK: one kind for convolutions and matmuls

    def kind(k: Kernel) -> str:
        return "compute" if merged and k.type in ("conv", "dwconv", "linear") else k.type

    waiting: dict[str, list[int]] = {}
    for i, k in enumerate(kernels):
        waiting.setdefault(kind(k), []).append(i)
    times = [0.0] * len(kernels)
    last: int | None = None
    before = 0.0  # glue before the first matched operator
    for op in ops:
        queue = waiting.get(op.kind, []) if op.kind != "glue" else []
        match = next((i for i in queue if op.shape is None or (kernels[i].k, kernels[i].hw) == op.shape), None)
        if match is not None:
            queue.remove(match)
            times[match] += op.us + before
            before, last = 0.0, match
        elif op.kind in _ALWAYS_FOUND:
            return None
        elif last is None:
            before += op.us
        else:
            times[last] += op.us
    if any(waiting.get(k) for k in _ALWAYS_FOUND) or last is None:
        return None
    times[last] += before
    return times


def _trimmed_mean(values: np.ndarray) -> float:
    """The mean of the middle 80%: the profilers report whole microseconds, so a median would round."""
    v = np.sort(values)
    cut = len(v) // 10
    return float(v[cut : len(v) - cut].mean())


def _ort_ops(path: Path, threads: int, seconds: float, warmup: int) -> list[OpTime]:
    import onnxruntime as ort

    from edgeopt.runtimes.onnxruntime_runner import session_options

    with tempfile.TemporaryDirectory(prefix="edgeopt-prof-") as tmp:
        so = session_options(threads)
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        first = session.get_inputs()[0]
        feed = {first.name: _input([d if isinstance(d, int) and d > 0 else 1 for d in first.shape])}
        for _ in range(warmup):
            session.run(None, feed)
        repeat_for(lambda: session.run(None, feed), seconds)
        events = json.loads(Path(session.end_profiling()).read_text())
    nodes: dict[str, list[dict]] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            nodes.setdefault(e["name"], []).append(e)

    def shapes(key: str, args: dict) -> list[list[int]]:
        return [next(iter(d.values())) for d in args.get(key, [])]

    return [
        ort_op(a["op_name"], shapes("input_type_shape", a), shapes("output_type_shape", a),
               _trimmed_mean(np.array([e["dur"] for e in es[warmup:]], dtype=float)))
        for es in nodes.values()
        for a in [es[0]["args"]]
    ]  # fmt: skip


def xnnpack_compute_shapes(path: Path) -> list[tuple[int, int]]:
    """``graph_compute_shapes`` of every XNNPACK delegate in a ``.pte``, in call order.

    Why by hand: ExecuTorch's Python API reads a program but not a delegate's payload, so this takes
    the payload (``_extract_delegate_payload``), skips XNNPACK's header and has ``flatc`` (shipped
    with ExecuTorch) turn the graph's flatbuffer into JSON with the delegate's own schema."""
    from executorch.backends.xnnpack.serialization import xnnpack_graph_serialize as xnn
    from executorch.exir._serialize._flatbuffer import _flatc_decompile
    from executorch.exir._serialize._program import _extract_delegate_payload

    data = Path(path).read_bytes()
    schema = Path(xnn.__file__).with_name("schema.fbs")
    shapes: list[tuple[int, int]] = []
    for index in itertools.count():
        payload = _extract_delegate_payload(data, "XnnpackBackend", index)
        if payload is None:
            return shapes
        header = xnn.XNNHeader.from_bytes(payload[: xnn.XNNHeader.EXPECTED_LENGTH])
        with tempfile.TemporaryDirectory(prefix="edgeopt-xnn-") as tmp:
            graph_bin = Path(tmp) / "graph.bin"
            graph_bin.write_bytes(payload[header.flatbuffer_offset : header.flatbuffer_offset + header.flatbuffer_size])
            _flatc_decompile(tmp, str(schema), str(graph_bin), ["--raw-binary"])
            text = graph_bin.with_suffix(".json").read_text()
        # flatc writes non-finite floats (a clamp's bounds) as bare inf / nan, which JSON has no words for
        shapes += graph_compute_shapes(json.loads(re.sub(r"(?<![\w\"])(-?(?:inf|nan))(?![\w\"])", r'"\1"', text)))
    return shapes


def _executorch_ops(path: Path, threads: int, seconds: float, warmup: int) -> list[OpTime] | None:
    import torch
    from executorch.devtools.etdump.serialize import deserialize_from_etdump_flatcc
    from executorch.extension.pybindings import portable_lib

    from edgeopt.runtimes.executorch_runner import size_threadpool

    size_threadpool(threads)  # before loading: a resize destroys the pool a loaded program points to
    module = portable_lib._load_for_executorch(str(path), enable_etdump=True)
    sizes = module.method_meta("forward").input_tensor_meta(0).sizes()
    inputs = (torch.from_numpy(_input([int(d) for d in sizes])),)
    for _ in range(warmup):
        module.forward(inputs)
    repeat_for(lambda: module.forward(inputs), seconds)
    with tempfile.TemporaryDirectory(prefix="edgeopt-prof-") as tmp:
        dump = Path(tmp) / "run.etdp"
        module.write_etdump_result_to_file(str(dump))
        etdump = deserialize_from_etdump_flatcc(dump.read_bytes())
    runs: list[list[tuple[str, float]]] = [[]]
    for run in etdump.run_data:
        for event in run.events or []:
            pe = event.profile_event
            if pe is None:
                continue
            name = pe.name or pe.delegate_debug_id_str or ""
            if name == "Method::execute":  # closes one call
                runs.append([])
            elif name != "DELEGATE_CALL":
                runs[-1].append((name, (pe.end_time - pe.start_time) / 1e3))  # ns → µs
    calls = [r for r in runs[warmup:] if r]
    if not calls:
        return None
    names = [n for n, _ in calls[0]]
    us = np.array([[t for _, t in r] for r in calls if [n for n, _ in r] == names])
    try:
        shapes = xnnpack_compute_shapes(path)
    except (ImportError, AttributeError, OSError, ValueError, subprocess.CalledProcessError):
        return None  # ExecuTorch's private serialisation moved (another version): no kernel times, not no sample
    return _with_shapes([xnnpack_op(n, _trimmed_mean(us[:, j])) for j, n in enumerate(names)], shapes)


def tflite_compute_shapes(path: Path) -> list[tuple[int, int]]:
    """``(kernel area, output area)`` of each convolution and matmul of a ``.tflite``, in its operators'
    order, which is the order its XNNPACK delegate runs them (``graph_compute_shapes``'s terms)."""
    from edgeopt.runtimes.litert_runner import graph_interpreter

    it = graph_interpreter(path)
    dims = {int(t["index"]): [int(d) for d in t["shape"]] for t in it.get_tensor_details()}
    shapes = []
    for op in it._get_ops_details():
        out = dims[int(op["outputs"][0])]
        if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D"):  # weights [O, H, W, I] / [1, H, W, C]; NHWC out
            w = dims[int(op["inputs"][1])]
            shapes.append((w[1] * w[2], int(np.prod(out[1:-1]))))
        elif op["op_name"] == "FULLY_CONNECTED":
            shapes.append((1, int(np.prod(out[:-1]))))
    return shapes


def _litert_ops(path: Path, threads: int, seconds: float, warmup: int) -> list[OpTime] | None:
    from edgeopt.hardware.litert_profiler import profiled_calls

    calls = profiled_calls(path, threads, seconds, warmup)
    if calls is None:
        return None
    us = np.array([[t for _, t in c] for c in calls])
    return _with_shapes([xnnpack_op(n, _trimmed_mean(us[:, j])) for j, (n, _) in enumerate(calls[0])],
                        tflite_compute_shapes(path))  # fmt: skip


def _with_shapes(ops: list[OpTime], shapes: Sequence[tuple[int, int]]) -> list[OpTime] | None:
    """XNNPACK's compute operators given the graph's shapes, in order; None where the counts differ."""
    left = iter(shapes)
    ops = [replace(op, shape=next(left, None)) if op.kind == "compute" else op for op in ops]
    if any(op.kind == "compute" and op.shape is None for op in ops) or next(left, None) is not None:
        return None  # the profiled operators and the graph disagree: nothing to pair by
    return ops


def _input(shape: list[int]) -> np.ndarray:
    return np.random.default_rng(0).random(shape, dtype=np.float32)


def profiled_ops(runtime: str, path: str | Path, threads: int = 1, seconds: float = 0.2,
                 warmup: int = 10) -> list[OpTime] | None:  # fmt: skip
    """The runtime operators of one single-input artifact with their time per call (µs, trimmed mean
    over about ``seconds`` of calls, 20 to 200 of them), from the runtime's profiler; None for a runtime
    without one, a LiteRT whose profiler cannot be read, or where the operators cannot be paired
    with their shapes."""
    if runtime == "onnxruntime":
        return _ort_ops(Path(path), threads, seconds, warmup)
    if runtime == "executorch":
        return _executorch_ops(Path(path), threads, seconds, warmup)
    if runtime == "litert":
        return _litert_ops(Path(path), threads, seconds, warmup)
    return None

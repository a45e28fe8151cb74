"""Liveness schedule of a runtime's own graph (.tflite, .onnx, an XNNPACK delegate): ops -> ``TensorRecord``s.

A deployment graph lists its ops in execution order, each reading and writing named tensors; a
tensor's size is its element count times its element size. ``graph_records`` turns such a graph into
the ``TensorRecord`` schedule that ``activation_timeline`` (``profile.memory``) walks, with the same
conventions as the PyTorch liveness there:

* Activations are the graph inputs and every tensor computed from one. Constants (weights) and
  anything computed from constants alone (dequantized weights, shape arithmetic) live in flash and
  are left out.
* One record per op, named after the op, holding the bytes of all its outputs: an op allocates its
  outputs together when it runs and they are freed together after the last reader of any of them.
* Ops of a ``view_kinds`` kind (reshape, squeeze...) allocate nothing: they alias their first input.
* QDQ graphs (``dequantize_kinds`` / ``quantize_kinds``, as in an ONNX QDQ model that ONNX Runtime
  fuses into integer kernels): a dequantize aliases its input (the consumer reads the quantized
  tensor), and a quantize whose input has no other reader aliases it while the op that produced
  it stores its output in the quantized type (walking back over single-reader views and
  ``fusable_kinds`` element-wise ops, which store quantized too).

Everything here is pure (no file is read): the runtimes' readers in ``runtimes.memory_plan`` build
the ``GraphOp``s. Cost: linear in the number of ops and tensors.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from edgeopt.profile.memory import TensorRecord


@dataclass(frozen=True)
class GraphOp:
    """One op of a deployment graph: its name, kind (op type) and the tensors it reads and writes."""

    name: str
    kind: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def activation_ops(ops: Sequence[GraphOp], graph_inputs: Iterable[str]) -> list[GraphOp]:
    """The ops that read an activation (a graph input or a tensor computed from one), in order. Pure."""
    acts = set(graph_inputs)
    kept = []
    for op in ops:
        if any(t in acts for t in op.inputs):
            acts.update(op.outputs)
            kept.append(op)
    return kept


def _quantized_bytes(
    ops: Sequence[GraphOp],
    tensor_bytes: Mapping[str, int],
    producer: Mapping[str, GraphOp],
    readers: Mapping[str, int],
    quantize_kinds: frozenset[str],
    fusable_kinds: frozenset[str],
    view_kinds: frozenset[str],
) -> tuple[dict[str, int], set[str]]:
    """Ops that store their output quantized (op name -> bytes) and the quantize ops that alias them."""
    stored: dict[str, int] = {}
    aliasing: set[str] = set()
    for q in ops:
        if q.kind not in quantize_kinds or not q.inputs or len(q.outputs) != 1:
            continue
        qbytes = tensor_bytes.get(q.outputs[0], 0)
        walk = producer.get(q.inputs[0])
        tensor = q.inputs[0]
        while walk is not None and len(walk.outputs) == 1 and readers.get(tensor, 0) == 1:
            stored[walk.name] = qbytes
            aliasing.add(q.name)
            if walk.kind not in view_kinds and walk.kind not in fusable_kinds:
                break
            tensor = walk.inputs[0] if walk.inputs else ""
            walk = producer.get(tensor)
    return stored, aliasing


def graph_records(
    ops: Sequence[GraphOp],
    tensor_bytes: Mapping[str, int],
    graph_inputs: Sequence[str],
    graph_outputs: Sequence[str],
    view_kinds: Iterable[str] = (),
    dequantize_kinds: Iterable[str] = (),
    quantize_kinds: Iterable[str] = (),
    fusable_kinds: Iterable[str] = (),
) -> tuple[list[TensorRecord], list[str]]:
    """The liveness schedule of a graph as ``TensorRecord``s, and the record names of its outputs. Pure.

    ``ops`` are in execution order; ``tensor_bytes`` gives each tensor's size (a tensor missing from
    it counts 0 bytes). Graph inputs become the first records; graph outputs are named by the
    record (op) that produced them, or the input they are. See the module docstring for the rules.
    """
    views, deq, quant = frozenset(view_kinds), frozenset(dequantize_kinds), frozenset(quantize_kinds)
    fusable = frozenset(fusable_kinds)
    live_ops = activation_ops(ops, graph_inputs)
    record_of: dict[str, str] = {t: t for t in graph_inputs}  # tensor -> record that allocates it
    producer: dict[str, GraphOp] = {}
    readers: dict[str, int] = {}
    for op in live_ops:
        for t in op.outputs:
            producer[t] = op
        for t in set(op.inputs):
            readers[t] = readers.get(t, 0) + 1
    for t in graph_outputs:
        readers[t] = readers.get(t, 0) + 1
    stored, aliasing = _quantized_bytes(live_ops, tensor_bytes, producer, readers, quant, fusable, views)

    records = [TensorRecord(t, int(tensor_bytes.get(t, 0))) for t in graph_inputs]
    for op in live_ops:
        ins = [record_of[t] for t in op.inputs if t in record_of]
        first = record_of.get(op.inputs[0]) if op.inputs else None
        view = first is not None and (op.kind in views or op.kind in deq or op.name in aliasing)
        if view:
            ins = [first, *(r for r in ins if r != first)]  # the aliased tensor comes first
            nbytes = 0
        elif op.name in stored:
            nbytes = stored[op.name]
        else:
            nbytes = sum(int(tensor_bytes.get(t, 0)) for t in op.outputs)
        records.append(TensorRecord(op.name, nbytes, tuple(dict.fromkeys(ins)), view))
        for t in op.outputs:
            record_of[t] = op.name
    return records, [record_of[t] for t in graph_outputs if t in record_of]

"""Peak activation memory: the tensor-arena size an MCU deployment needs for one inference.

The exported graph (``torch.export``) is taken as the execution schedule. Each node's
output tensor is allocated when the node runs and freed after its last consumer has run;
graph inputs count, weights (parameters, buffers, lifted constants) live in flash and do
not; graph outputs stay live to the end. During a node's step its inputs and its output
are live together, and the peak over all steps is reported.

Modelling choices:

* View-like ops alias their input instead of allocating: ``view``, ``_unsafe_view``,
  ``reshape``, ``flatten``, ``contiguous``, ``squeeze``, ``unsqueeze``, ``alias``,
  ``detach``, ``expand`` (broadcasting is folded into the consumer), ``view_as`` /
  ``expand_as``, ``dropout`` in inference and ``getitem`` of a multi-output node. An alias
  keeps its base tensor alive.
* ``permute``, ``transpose``, ``t``, slicing and selecting *allocate*: they are strided
  views in eager PyTorch, but a deployment runtime (TFLite Transpose/StridedSlice,
  XNNPACK) writes a new buffer for them. As every tensor is therefore dense in its own
  logical order, reshapes are always free; PyTorch's strides (which may be channels-last
  for reasons of stride propagation alone) are not consulted.
* No in-place reuse (a ReLU gets its own output buffer) and no fragmentation: the figure
  is the sum of live tensor bytes, the lower bound of an arena for this schedule.
* A node with several outputs allocates them all when it runs and frees them together.
* Tensors computed from weights alone (dequantized weights, ``torch.ones`` in forward)
  are constants a converter folds: not activations.
* Quantized (QDQ) graphs, as PT2E produces: a ``dequantize`` aliases its input (the
  consumer reads the quantized tensor), and the op feeding a ``quantize`` (through
  single-reader views / element-wise ops) stores its output in the quantized type, the
  ``quantize`` aliasing it: int8 activations count one byte per element.
* Optionally (``fuse_elementwise=True``) inference BatchNorm and single-input
  activations write over their input when they are its only reader and it is not a graph
  input, as fused conv+BN+activation kernels do; off by default, the graph is taken as is.

The liveness walk (``activation_timeline``) is a pure function over ``TensorRecord``s so
it can be checked on a hand-made graph; ``records_from_graph`` turns an
``ExportedProgram`` into those records. Cost: one pass over the nodes, linear time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind

from edgeopt.profile.counts import is_quant_op, op_name

# How the figures of this module are labelled where they are reported: an estimate, not a runtime's plan.
LIVENESS_SOURCE = "edgeopt_liveness_torch_export"

# Ops whose output always shares its (first) input's storage in a deployment runtime.
VIEW_OPS = frozenset(
    {
        "view", "_unsafe_view", "reshape", "flatten", "contiguous", "squeeze", "unsqueeze",
        "alias", "detach", "expand", "view_as", "expand_as", "getitem",
    }
)  # fmt: skip
# Ops a deployment fuses into the producer of their input (with ``fuse_elementwise``).
FUSABLE_OPS = frozenset(
    {
        "batch_norm", "_native_batch_norm_legit_no_training", "relu", "relu6", "hardtanh", "clamp",
        "sigmoid", "tanh", "hardswish", "hardsigmoid", "silu", "gelu", "leaky_relu", "elu",
    }
)  # fmt: skip


@dataclass(frozen=True)
class TensorRecord:
    """One step of a schedule: the tensor a node produces.

    ``inputs`` names the records this node reads (names that are not records, such as
    weights, are ignored). A view (``is_view``) allocates nothing and aliases the storage
    of its first input, extending that storage's life to the view's last consumer.
    """

    name: str
    nbytes: int
    inputs: tuple[str, ...] = ()
    is_view: bool = False


@dataclass(frozen=True)
class ActivationMemory:
    """Peak live activation bytes, where it happens, and live bytes at every step."""

    peak_bytes: int
    peak_node: str | None
    timeline: tuple[int, ...]


def activation_timeline(records: Sequence[TensorRecord], outputs: Iterable[str] = ()) -> ActivationMemory:
    """Live bytes while each record's node runs (its inputs and output both live).

    ``records`` are in execution order; ``outputs`` names the tensors that must survive to
    the end (graph outputs). A storage is freed right after the last step that reads it or
    any alias of it; a record nobody reads is freed right after it is produced.
    """
    index = {r.name: i for i, r in enumerate(records)}
    base: dict[str, str] = {}  # record name -> the allocating record whose storage it uses
    for r in records:
        src = r.inputs[0] if r.is_view and r.inputs else None
        # a view of a non-activation (a weight) has no arena storage: it is its own base
        base[r.name] = base[src] if src in base else r.name
    end = len(records)
    last_use: dict[str, int] = {}
    for i, r in enumerate(records):
        for name in (r.name, *(n for n in r.inputs if n in base)):
            last_use[base[name]] = i
    for name in outputs:
        if name in base:
            last_use[base[name]] = end
    frees: dict[int, list[str]] = {}
    for b, step in last_use.items():
        frees.setdefault(step, []).append(b)

    live = 0
    peak, peak_node = 0, None
    timeline: list[int] = []
    for i, r in enumerate(records):
        if not r.is_view:
            live += r.nbytes
        timeline.append(live)
        if live > peak:
            peak, peak_node = live, r.name
        for b in frees.get(i, ()):
            if not records[index[b]].is_view:
                live -= records[index[b]].nbytes
    return ActivationMemory(peak, peak_node, tuple(timeline))


def peak_activation_bytes(records: Sequence[TensorRecord], outputs: Iterable[str] = ()) -> int:
    """Peak of live activation bytes over the schedule (see ``activation_timeline``)."""
    return activation_timeline(records, outputs).peak_bytes


def _val_bytes(val: object) -> int:
    if isinstance(val, torch.Tensor):
        return val.numel() * val.element_size()
    if isinstance(val, (list, tuple)):
        return sum(_val_bytes(v) for v in val)
    return 0


def _is_view(node: torch.fx.Node) -> bool:
    name = op_name(node)
    if name is None:
        # operator.getitem on a multi-output node is a plain Python call_function
        return node.op == "call_function" and getattr(node.target, "__name__", "") == "getitem"
    if name == "dropout":
        train = node.args[2] if len(node.args) > 2 else node.kwargs.get("train", True)
        return not train
    return name in VIEW_OPS


def _fusable(node: torch.fx.Node, user_inputs: set[str]) -> bool:
    """An element-wise op that can overwrite its activation input (it is the only reader)."""
    if op_name(node) not in FUSABLE_OPS or not isinstance(node.args[0], torch.fx.Node):
        return False
    src = node.args[0]
    if src.op != "call_function" or src.name in user_inputs or len(src.users) != 1:
        return False
    if _is_view(src) or is_quant_op(src):
        return False
    out, inp = node.meta.get("val"), src.meta.get("val")
    return isinstance(out, torch.Tensor) and isinstance(inp, torch.Tensor) and out.nbytes == inp.nbytes


def _is_quantize(node: torch.fx.Node) -> bool:
    return is_quant_op(node) and not (op_name(node) or "").startswith("dequantize")


def _quantized_storage(nodes: Iterable[torch.fx.Node], acts: set[str]) -> dict[str, int]:
    """Element size of activations a QDQ graph really stores quantized, by node name.

    Walking back from each ``quantize`` over its single-reader producers (views and
    fusable element-wise ops, then the compute op that feeds them) finds the tensors a
    runtime computes directly in the quantized type (conv + ReLU + requantize is one op).
    """
    itemsize: dict[str, int] = {}
    for q in nodes:
        val = q.meta.get("val")
        if not (_is_quantize(q) and q.name in acts and isinstance(val, torch.Tensor)):
            continue
        walk = q.args[0]
        while (
            isinstance(walk, torch.fx.Node)
            and walk.op == "call_function"
            and walk.name in acts
            and len(walk.users) == 1
            and not is_quant_op(walk)
        ):
            itemsize[walk.name] = val.element_size()
            if not (_is_view(walk) or op_name(walk) in FUSABLE_OPS):
                break
            walk = walk.args[0]
    return itemsize


def records_from_graph(ep: ExportedProgram, fuse_elementwise: bool = False) -> tuple[list[TensorRecord], list[str]]:
    """The schedule of an exported program as ``TensorRecord``s, and its output names.

    User inputs become records (they occupy the arena); parameters, buffers, constants and
    anything computed from them alone (constant-folded at export, e.g. dequantized
    weights) are left out, so reads of them are ignored by the liveness walk.
    ``fuse_elementwise`` turns fusable element-wise ops into in-place aliases (see the
    module docstring).
    """
    specs = ep.graph_signature.input_specs
    user_inputs = {s.arg.name for s in specs if s.kind == InputKind.USER_INPUT and hasattr(s.arg, "name")}
    nodes = list(ep.graph.nodes)
    acts = set(user_inputs)  # activations: user inputs and whatever depends on them
    for node in nodes:
        if node.op == "call_function" and any(n.name in acts for n in node.all_input_nodes):
            acts.add(node.name)
    quantized = _quantized_storage(nodes, acts)

    records: list[TensorRecord] = []
    outputs: list[str] = []
    for node in nodes:
        if node.op == "placeholder" and node.name in user_inputs:
            records.append(TensorRecord(node.name, _val_bytes(node.meta.get("val"))))
        elif node.op == "call_function" and node.name in acts:
            first = node.args[0] if node.args and isinstance(node.args[0], torch.fx.Node) else None
            view = (
                _is_view(node)
                or (is_quant_op(node) and not _is_quantize(node))  # the consumer reads the quantized tensor
                or (_is_quantize(node) and first is not None and first.name in quantized)
                or (fuse_elementwise and _fusable(node, user_inputs))
            )
            inputs = tuple(n.name for n in node.all_input_nodes if n.name in acts)
            if view and first is not None:  # the aliased tensor comes first: always the op's first argument
                inputs = (first.name, *(n for n in inputs if n != first.name))
            val = node.meta.get("val")
            if view:
                nbytes = 0
            elif node.name in quantized and isinstance(val, torch.Tensor):
                nbytes = val.numel() * quantized[node.name]
            else:
                nbytes = _val_bytes(val)
            records.append(TensorRecord(node.name, nbytes, inputs, view))
        elif node.op == "output":
            outputs.extend(n.name for n in node.all_input_nodes)
    return records, outputs


def activation_memory(ep: ExportedProgram, fuse_elementwise: bool = False) -> ActivationMemory:
    """Liveness of an exported program's activations (see the module docstring)."""
    records, outputs = records_from_graph(ep, fuse_elementwise)
    return activation_timeline(records, outputs)

"""Parameter, weight-size and MAC counts of a model.

``count_params`` / ``count_trainable_params`` / ``weight_bytes`` walk the module's stored
tensors (microseconds). ``count_macs`` walks the nodes of a ``torch.export`` graph
(ATen level, one pass, milliseconds) and needs no forward run: the shapes come from each
node's ``meta["val"]``. ``conv_macs`` / ``linear_macs`` are the plain formulas, shared
with the tests.

Counting conventions
--------------------
* ``params`` is the Keras-style count of every stored value: parameters plus buffers
  (BatchNorm running mean/var included), without BatchNorm's ``num_batches_tracked``
  counter, which is training bookkeeping that no deployment stores. Tensors shared by
  several modules are counted once. MLPerf Tiny's ResNet-8 gives 78,666 ("78.7K").
* ``weight_bytes`` is the serialized weight size: the ``nbytes`` of the same tensors,
  so a float32 model has ``weight_bytes == 4 * params``; int8 weights count one byte each,
  and quantization scales / zero points (not counted as params) add their bytes.
* An ``fx.GraphModule`` (e.g. a PT2E-quantized model) counts only the tensors its graph
  reads: ``convert_pt2e`` leaves the replaced float weights attached but unused.
* MACs count only multiply-accumulates of convolutions and matrix products (the figure
  papers and MLPerf Tiny quote); element-wise ops, pooling, BatchNorm and activations
  add nothing. Convolution: ``output elements x (Cin/groups) x kh x kw`` (transposed:
  ``input elements x (Cout/groups) x kh x kw``), so depthwise and grouped convolutions
  are counted right; linear / matmul: ``output elements x inner dimension``.
  Ops inside higher-order control flow (``torch.cond`` bodies) are not visited.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn

# ATen op-packet names whose multiply-accumulates are counted, by formula family.
_CONV_OPS = frozenset({"conv1d", "conv2d", "conv3d", "_convolution", "convolution"})
_CONV_T_OPS = frozenset({"conv_transpose1d", "conv_transpose2d", "conv_transpose3d"})
_MATMUL_OPS = frozenset({"linear", "mm", "addmm", "bmm", "baddbmm", "matmul", "addbmm"})


def is_quant_op(node: torch.fx.Node) -> bool:
    """A quantize / dequantize node (``quantized_decomposed`` or torchao affine ops)."""
    name = op_name(node)
    return name is not None and name.startswith(("quantize", "dequantize"))


def _fetch(root: nn.Module, target: str) -> object:
    obj: object = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _module_tensors(module: nn.Module) -> Iterator[tuple[str, torch.Tensor, bool, bool]]:
    """(name, tensor, is_parameter, is_qparam) of what ``module`` stores and uses.

    An ``fx.GraphModule`` (a PT2E-quantized model, an unlifted export) may keep tensors its
    graph no longer reads, such as the float weights replaced by int8 copies, so only those
    its graph reaches (``get_attr`` / ``call_module``) count there. A quantization
    parameter is a tensor read only as the scale / zero point of quantize ops.
    """
    if not isinstance(module, torch.fx.GraphModule):
        for name, t in module.named_parameters():
            yield name, t, True, False
        for name, t in module.named_buffers():
            yield name, t, False, False
        return
    param_ids = {id(p) for p in module.parameters()}
    for node in module.graph.nodes:
        if node.op == "get_attr" and node.users:  # unlifted exports keep dead get_attrs of unused weights
            obj = _fetch(module, node.target)
            if isinstance(obj, torch.Tensor):
                qparam = all(is_quant_op(u) and u.args[0] is not node for u in node.users)
                yield node.target, obj, id(obj) in param_ids, qparam
            elif isinstance(obj, nn.Module):  # bodies of higher-order ops
                yield from ((f"{node.target}.{n}", *rest) for n, *rest in _module_tensors(obj))
        elif node.op == "call_module":
            sub = module.get_submodule(node.target)
            yield from ((f"{node.target}.{n}", *rest) for n, *rest in _module_tensors(sub))


def _stored_tensors(module: nn.Module) -> Iterator[tuple[torch.Tensor, bool, bool]]:
    """(tensor, is_parameter, is_qparam) for each distinct stored tensor, BN counters excluded."""
    seen: set[int] = set()
    for name, t, is_param, qparam in _module_tensors(module):
        if id(t) in seen or name.rsplit(".", 1)[-1] == "num_batches_tracked":
            continue
        seen.add(id(t))
        yield t, is_param, qparam


def count_params(module: nn.Module) -> int:
    """Every stored value (Keras 'total params'): parameters plus buffers, shared tensors once.

    Quantization scales and zero points are metadata, not parameters: left out here,
    counted in ``weight_bytes``.
    """
    return sum(t.numel() for t, _, qparam in _stored_tensors(module) if not qparam)


def count_trainable_params(module: nn.Module) -> int:
    """Parameters with ``requires_grad`` (what an optimizer would update)."""
    return sum(t.numel() for t, is_param, _ in _stored_tensors(module) if is_param and t.requires_grad)


def weight_bytes(module: nn.Module) -> int:
    """Bytes of all stored tensors in their own dtypes (4 x params for a float32 model)."""
    return sum(t.numel() * t.element_size() for t, _, _ in _stored_tensors(module))


def weight_values_by_bits(module: nn.Module) -> dict[str, int]:
    """Weight values of a quantized program by bit width: ``{"8": n, "4": n, "32": n}``.

    A weight is an integer tensor read by a dequantize op: 4 bits when its quantization range fits
    ``[-8, 7]`` (edgeopt's int4 weights are ``[-7, 7]``), else 8; "32" counts the float weights of
    conv/linear layers left unquantized. Biases, scales and zero points are not weights here.
    """
    out = {"8": 0, "4": 0, "32": 0}
    if not isinstance(module, torch.fx.GraphModule):
        return out
    for node in module.graph.nodes:
        if node.op != "get_attr" or not node.users:
            continue
        t = _fetch(module, node.target)
        if not isinstance(t, torch.Tensor):
            continue
        users = list(node.users)
        if not t.is_floating_point() and t.dtype in (torch.int8, torch.uint8):
            dq = next((u for u in users if is_quant_op(u) and u.args[0] is node), None)
            if dq is None:
                continue
            lo, hi = _quant_range(dq)
            out["4" if lo is not None and lo >= -8 and hi <= 7 else "8"] += t.numel()
        elif t.is_floating_point() and t.ndim >= 2:
            if any(op_name(u) in _CONV_OPS | _MATMUL_OPS and len(u.args) > 1 and u.args[1] is node for u in users):
                out["32"] += t.numel()
    return out


def _quant_range(node: torch.fx.Node) -> tuple[int | None, int | None]:
    """(quant_min, quant_max) of a ``quantized_decomposed`` dequantize node, else (None, None)."""
    name = op_name(node) or ""
    # dequantize_per_tensor(x, scale, zp, qmin, qmax, dtype); dequantize_per_channel(x, s, zp, axis, qmin, qmax, dtype)
    i = 4 if name == "dequantize_per_channel" else 3
    args = node.args
    if len(args) > i + 1 and isinstance(args[i], int) and isinstance(args[i + 1], int):
        return int(args[i]), int(args[i + 1])
    return None, None


def conv_macs(out_shape: Sequence[int], weight_shape: Sequence[int]) -> int:
    """MACs of a convolution: output elements x (Cin/groups) x kernel volume.

    ``weight_shape`` is PyTorch's ``(Cout, Cin/groups, k...)``, so the per-output work is
    simply the product of ``weight_shape[1:]``: a depthwise 3x3 conv costs 9 MACs per output.
    For a transposed conv pass the *input* shape as ``out_shape`` (weights are
    ``(Cin, Cout/groups, k...)`` and each input element is scattered over that volume).
    """
    return math.prod(out_shape) * math.prod(weight_shape[1:])


def linear_macs(out_shape: Sequence[int], in_features: int) -> int:
    """MACs of a linear layer / matrix product: output elements (leading dims included) x inner dim."""
    return math.prod(out_shape) * int(in_features)


def _shape(x: object) -> tuple[int, ...] | None:
    val = x.meta.get("val") if isinstance(x, torch.fx.Node) else None
    if isinstance(val, torch.Tensor):
        return tuple(int(s) for s in val.shape)
    return None


def op_name(node: torch.fx.Node) -> str | None:
    """The ATen op-packet name of a ``call_function`` node (``'conv2d'``), else ``None``."""
    if node.op != "call_function":
        return None
    packet = getattr(node.target, "overloadpacket", None)
    return getattr(packet, "__name__", None)


def node_macs(node: torch.fx.Node) -> int:
    """Multiply-accumulates performed by one exported-graph node (0 for uncounted ops)."""
    name = op_name(node)
    if name is None:
        return 0
    out = _shape(node)
    if out is None:
        return 0
    args = node.args
    if name in _CONV_OPS or name in _CONV_T_OPS:
        inp, weight = _shape(args[0]), _shape(args[1])
        if inp is None or weight is None:
            return 0
        transposed = name in _CONV_T_OPS or (name in ("convolution", "_convolution") and bool(args[6]))
        return conv_macs(inp if transposed else out, weight)
    if name in _MATMUL_OPS:
        # linear(x, W[out, in]); mm/matmul/bmm(a, b); addmm/baddbmm/addbmm(bias, a, b)
        a = _shape(args[1] if name in ("addmm", "baddbmm", "addbmm") else args[0])
        if not a:
            return 0
        if name == "addbmm":  # sums the batch of products into one (n, m) output
            return linear_macs(out, a[-1]) * a[0]
        return linear_macs(out, a[-1])
    if name == "scaled_dot_product_attention":
        q, k, v = (_shape(a) for a in args[:3])
        if q is None or k is None or v is None:
            return 0
        # Q K^T: (..., L, S) outputs x E; attention x V: (..., L, Ev) outputs x S
        return math.prod(q[:-1]) * k[-2] * q[-1] + math.prod(out) * k[-2]
    return 0


def count_macs(graph: torch.fx.Graph) -> int:
    """Total multiply-accumulates of an exported graph (``ExportedProgram.graph``)."""
    return sum(node_macs(n) for n in graph.nodes)

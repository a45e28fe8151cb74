"""The kernels a runtime executes for a model: fused ops found in its exported graph, with features.

Mobile runtimes do not run a model op by op: XNNPACK, LiteRT and ONNX Runtime fuse a convolution
with the batch norm and activation after it, an add with the activation after it, and fold views
away. Following nn-Meter (Zhang et al., MobiSys 2021), a model's latency is predicted as the sum of
its *kernels'* latencies, so this module turns a ``torch.export`` graph into that kernel list:

* ``conv`` / ``dwconv``: a convolution (depthwise when ``groups == Cin == Cout``) plus a following
  batch norm and element-wise activation, when each is the only reader of the one before;
* ``linear``: a matrix product (``linear``/``addmm``/``mm``) plus its activation;
* ``add``: an element-wise sum (residual) plus its activation; ``mul`` likewise (squeeze-excite);
* ``pool``: average / max / adaptive pooling and ``mean`` over spatial dimensions;
* ``concat``, ``pad`` (explicit padding), ``transpose`` (layout permutes), ``softmax``;
* ``act``: an activation that follows nothing fusable (a standalone ReLU, hardswish, sigmoid…);
* views, reshapes and dropout cost nothing and are skipped; anything else becomes ``other``.

Each ``Kernel`` carries the numbers a cost model needs (MACs, bytes read and written, channels,
kernel size, stride, spatial size). Pure: one pass over the graph's nodes, no data is run.
Cost: one ``torch.export`` of the model (``kernels_of_model``), ~0.1–1 s for small CNNs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from edgeopt.profile.counts import node_macs, op_name

KERNEL_TYPES = (
    "conv", "dwconv", "linear", "add", "mul", "pool", "concat", "pad", "transpose", "softmax", "act", "other",
)  # fmt: skip

_CONV = frozenset({"conv1d", "conv2d", "convolution", "_convolution"})
_MATMUL = frozenset({"linear", "addmm", "mm", "matmul"})
_BN = frozenset({"batch_norm", "_native_batch_norm_legit_no_training", "_native_batch_norm_legit"})
_ACT = frozenset(
    {"relu", "relu6", "hardtanh", "clamp", "sigmoid", "tanh", "hardswish", "hardsigmoid", "silu", "gelu", "leaky_relu"}
)
_POOL = frozenset(
    {
        "avg_pool2d", "max_pool2d", "adaptive_avg_pool2d", "_adaptive_avg_pool2d", "mean",
        "max_pool2d_with_indices", "avg_pool1d", "max_pool1d", "adaptive_avg_pool1d",
    }
)  # fmt: skip
_FREE = frozenset(
    {
        "view", "_unsafe_view", "reshape", "flatten", "contiguous", "squeeze", "unsqueeze", "alias",
        "detach", "expand", "dropout", "clone", "getitem", "_assert_tensor_metadata", "lift_fresh_copy",
    }
)  # fmt: skip


@dataclass(frozen=True)
class Kernel:
    """One fused kernel and the features a latency model reads.

    ``in_bytes``/``out_bytes`` are the activation bytes read and written (float32 unless the graph
    says otherwise), ``weight_bytes`` the parameters it reads. Convolution fields are 0 elsewhere;
    ``hw`` is the output's spatial size (H*W, or L for 1-D), ``k`` the kernel's spatial size.
    """

    type: str
    macs: int
    in_bytes: int
    out_bytes: int
    weight_bytes: int
    cin: int = 0
    cout: int = 0
    k: int = 0
    stride: int = 1
    hw: int = 0
    fused: tuple[str, ...] = ()


def kernel_to_json(k: Kernel) -> dict[str, Any]:
    return {**asdict(k), "fused": list(k.fused)}


def kernel_from_json(d: dict[str, Any]) -> Kernel:
    return Kernel(**{**d, "fused": tuple(d.get("fused", ()))})


def _val(node: object) -> torch.Tensor | None:
    v = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
    return v if isinstance(v, torch.Tensor) else None


def _nbytes(node: object) -> int:
    v = _val(node)
    return 0 if v is None else v.numel() * v.element_size()


def _sole_user(node: torch.fx.Node, ops: frozenset[str]) -> torch.fx.Node | None:
    """The only reader of ``node`` when it is one of ``ops`` (a fusion candidate), else None."""
    users = [u for u in node.users if op_name(u) != "_assert_tensor_metadata"]
    if len(users) != 1:
        return None
    u = users[0]
    return u if op_name(u) in ops else None


def _getitem0(node: torch.fx.Node) -> torch.fx.Node:
    """A multi-output batch norm is read through ``getitem(bn, 0)``: return that reader."""
    users = list(node.users)
    if len(users) == 1 and users[0].op == "call_function" and getattr(users[0].target, "__name__", "") == "getitem":
        return users[0]
    return node


def _activation_inputs(node: torch.fx.Node, params: set[str]) -> list[torch.fx.Node]:
    return [n for n in node.all_input_nodes if n.name not in params and _val(n) is not None]


def _param_bytes(node: torch.fx.Node, params: set[str]) -> int:
    return sum(_nbytes(n) for n in node.all_input_nodes if n.name in params)


def kernels_of_graph(ep: torch.export.ExportedProgram) -> list[Kernel]:
    """The fused kernels of an exported program, in execution order. Pure over the graph.

    Parameters, buffers and constants are weights; user inputs and what follows from them are
    activations. A fusion (conv → bn → activation, add → activation) is taken only when each op
    is the sole reader of the one before, as runtimes require.
    """
    from torch.export.graph_signature import InputKind

    sig = ep.graph_signature.input_specs
    params = {s.arg.name for s in sig if s.kind != InputKind.USER_INPUT and hasattr(s.arg, "name")}
    consumed: set[str] = set()
    kernels: list[Kernel] = []
    for node in ep.graph.nodes:
        if node.op != "call_function" or node.name in consumed:
            continue
        name = op_name(node) or getattr(node.target, "__name__", "")
        acts = _activation_inputs(node, params)
        if not acts and name not in _CONV | _MATMUL:  # computed from weights alone: folded at export
            params.add(node.name)
            continue
        if name in _FREE:
            continue
        # grow the fused chain
        tail, fused = node, [name]
        if name in _CONV:
            bn = _sole_user(tail, _BN)
            if bn is not None:
                consumed.add(bn.name)
                tail = _getitem0(bn)
                consumed.add(tail.name)
                fused.append("bn")
        if name in _CONV | _MATMUL | {"add", "mul"}:
            act = _sole_user(tail, _ACT)
            if act is not None:
                consumed.add(act.name)
                tail = act
                fused.append(op_name(act) or "act")
        kernels.append(_kernel(node, name, tail, acts, params, tuple(fused)))
    return kernels


def _kernel(
    node: torch.fx.Node, name: str, tail: torch.fx.Node, acts: list[torch.fx.Node], params: set[str], fused: tuple
) -> Kernel:
    in_bytes = sum(_nbytes(a) for a in acts)
    out_bytes = _nbytes(tail)
    wbytes = _param_bytes(node, params)
    out = _val(node)
    if name in _CONV:
        w = _val(node.args[1])
        x = _val(node.args[0])
        # conv2d(x, w, b, stride, padding, dilation, groups); convolution(…, transposed, output_padding, groups)
        gi = 8 if name in ("convolution", "_convolution") else 6
        groups = int(node.args[gi] if len(node.args) > gi else node.kwargs.get("groups", 1))
        cin = int(x.shape[1]) if x is not None else 0
        cout = int(w.shape[0]) if w is not None else 0
        ks = tuple(int(s) for s in w.shape[2:]) if w is not None else (1,)
        stride_arg = node.args[3] if len(node.args) > 3 else 1
        stride = int(stride_arg[0] if isinstance(stride_arg, (list, tuple)) else stride_arg)
        hw = math.prod(int(s) for s in out.shape[2:]) if out is not None else 0
        depthwise = groups > 1 and groups == cin == cout
        return Kernel("dwconv" if depthwise else "conv", node_macs(node), in_bytes, out_bytes, wbytes,
                      cin, cout, math.prod(ks), stride, hw, fused)  # fmt: skip
    if name in _MATMUL:
        w = _val(node.args[2] if name == "addmm" else node.args[1])
        cin = int(w.shape[0] if name == "addmm" else w.shape[-1]) if w is not None else 0
        cout = int(out.shape[-1]) if out is not None else 0
        return Kernel("linear", node_macs(node), in_bytes, out_bytes, wbytes, cin, cout, 1, 1, 1, fused)
    if name in ("add", "sub"):
        return Kernel("add", 0, in_bytes, out_bytes, wbytes, fused=fused)
    if name in ("mul", "div"):
        return Kernel("mul", 0, in_bytes, out_bytes, wbytes, fused=fused)
    if name in _POOL:
        return Kernel("pool", 0, in_bytes, out_bytes, 0, fused=fused)
    if name in ("cat", "concat"):
        return Kernel("concat", 0, in_bytes, out_bytes, 0, fused=fused)
    if name in ("pad", "constant_pad_nd"):
        return Kernel("pad", 0, in_bytes, out_bytes, 0, fused=fused)
    if name in ("permute", "transpose", "t"):
        return Kernel("transpose", 0, in_bytes, out_bytes, 0, fused=fused)
    if name in ("softmax", "_softmax", "log_softmax", "_log_softmax"):
        return Kernel("softmax", 0, in_bytes, out_bytes, 0, fused=fused)
    if name in _ACT | _BN:
        return Kernel("act", 0, in_bytes, out_bytes, wbytes, fused=fused)
    return Kernel("other", 0, in_bytes, out_bytes, wbytes, fused=fused)


def kernels_of_model(model: object) -> list[Kernel]:
    """``kernels_of_graph`` of an ``EdgeModel`` exported at batch 1 (eval mode)."""
    from edgeopt.profile import export_for_profile

    return kernels_of_graph(export_for_profile(model))  # type: ignore[arg-type]

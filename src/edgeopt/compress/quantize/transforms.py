"""Float-model transforms that make quantization kinder: BN folding and cross-layer equalization.

Both keep the module's architecture (so the result saves and reloads from its ``arch`` record) and
change only weights:

- ``fold_batchnorm(module, x)``: each Conv→BatchNorm pair gets the BN scale ``γ/√(σ²+ε)`` folded
  into the conv weights; the BN is left as a pure per-channel bias (γ=1, μ=0, σ²=1-ε) that PT2E
  folds into the conv bias when it prepares the graph. Same function, weights as quantized.
- ``equalize(module, x)``: cross-layer equalization (Nagel et al. 2019) over Conv→[BN]→ReLU→Conv
  chains: output channel i of the first conv is divided by ``s_i = √(r1_i / r2_i)`` and the matching
  input channel of the second multiplied by it, so both see the range ``√(r1_i r2_i)``. ReLU is
  positively homogeneous, so the function is unchanged; ReLU6 is not (clipping at 6 moves), so
  chains through ReLU6 are equalized only with ``through_relu6=True`` (an approximation: measure).
  It matters for depthwise convs, whose per-channel ranges differ by orders of magnitude.

The layer chains come from the module's ``torch.export`` graph, so zoo models and imported graphs
are handled alike. The math is in pure functions (``fold_bn_weights``, ``equalization_scales``,
``apply_equalization``). Cost: one export (~1 s) plus O(weights).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

_RELU = {"aten.relu.default", "aten.relu_.default"}
_RELU6 = {"aten.hardtanh.default", "aten.hardtanh_.default", "aten.relu6.default"}
_PASS = {"aten.dropout.default", "aten.clone.default", "aten.contiguous.default"}


def fold_bn_weights(
    w: np.ndarray, b: np.ndarray | None, gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray, var: np.ndarray,
    eps: float,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Conv weight/bias with the following batch norm folded in: ``w γ/σ``, ``β + (b - μ) γ/σ``. Pure."""
    k = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
    shape = (-1,) + (1,) * (np.ndim(w) - 1)
    b0 = np.zeros_like(k) if b is None else np.asarray(b, np.float64)
    return (np.asarray(w, np.float64) * k.reshape(shape)).astype(np.float32), (beta + (b0 - mean) * k).astype(
        np.float32
    )


def equalization_scales(w1: np.ndarray, w2: np.ndarray, depthwise2: bool) -> np.ndarray:
    """Per-channel scales ``s = √(r1 / r2)`` for a pair (first conv's output channels, second's inputs). Pure.

    ``r1_i`` is max |w1| of output channel i; ``r2_i`` max |w2| over input channel i (for a depthwise
    second conv, its channel i). Channels where either range is 0 keep scale 1.
    """
    r1 = np.abs(np.asarray(w1, np.float64)).reshape(np.shape(w1)[0], -1).max(axis=1)
    a2 = np.abs(np.asarray(w2, np.float64))
    if depthwise2:
        r2 = a2.reshape(a2.shape[0], -1).max(axis=1)
    else:
        r2 = np.moveaxis(a2, 1, 0).reshape(a2.shape[1], -1).max(axis=1)
    s = np.ones_like(r1)
    ok = (r1 > 0) & (r2 > 0)
    s[ok] = np.sqrt(r1[ok] / r2[ok])
    return s


def apply_equalization(
    w1: np.ndarray, b1: np.ndarray | None, w2: np.ndarray, s: np.ndarray, depthwise2: bool
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """``w1 / s`` (output channels), ``b1 / s``, ``w2 * s`` (input channels, or channels if depthwise). Pure."""
    shape1 = (-1,) + (1,) * (np.ndim(w1) - 1)
    w1n = (np.asarray(w1, np.float64) / s.reshape(shape1)).astype(np.float32)
    b1n = None if b1 is None else (np.asarray(b1, np.float64) / s).astype(np.float32)
    if depthwise2:
        w2n = np.asarray(w2, np.float64) * s.reshape((-1,) + (1,) * (np.ndim(w2) - 1))
    else:
        w2n = np.asarray(w2, np.float64) * s.reshape((1, -1) + (1,) * (np.ndim(w2) - 2))
    return w1n, b1n, w2n.astype(np.float32)


@dataclass
class ConvLink:
    """A conv followed (through an optional batch norm and activation) by another conv."""

    first: str  # module path of the first conv
    bn: str | None  # module path of the batch norm right after it, if any
    act: str | None  # "relu", "relu6" or None
    second: str | None  # module path of the next conv, when the chain reaches one


def _export_graph(module: nn.Module, x: torch.Tensor) -> torch.fx.Graph:
    was = module.training
    module.eval()
    try:
        return torch.export.export(module, (x,)).module().graph
    finally:
        module.train(was)


def _attr_owner(node: torch.fx.Node | None) -> str | None:
    if isinstance(node, torch.fx.Node) and node.op == "get_attr":
        return str(node.target).rsplit(".", 1)[0]
    return None


# layers a link may start from: 2-D and 1-D convs, and dense layers (a Linear + BatchNorm1d chain); the
# consumers check the module types they handle (BN folding and CLE take Conv2d pairs only)
_LINKED_FIRST = ("aten.conv2d.default", "aten.conv1d.default", "aten.linear.default")


def conv_links(module: nn.Module, x: torch.Tensor) -> list[ConvLink]:
    """Every conv in ``module``'s exported graph with the single-use chain that follows it. Cost: one export."""
    graph = _export_graph(module, x)
    out = []
    for n in graph.nodes:
        if n.op != "call_function" or str(n.target) not in _LINKED_FIRST:
            continue
        first = _attr_owner(n.args[1])
        if first is None:
            continue
        bn = act = second = None
        cur = n
        while len(cur.users) == 1:
            nxt = next(iter(cur.users))
            t = str(nxt.target) if nxt.op == "call_function" else ""
            if "batch_norm" in t and bn is None and act is None and nxt.args[0] is cur:
                bn = _attr_owner(nxt.args[1])
                if bn is None:
                    break
            elif t in _RELU and act is None:
                act = "relu"
            elif t in _RELU6 and act is None:
                act = "relu6"
            elif t in _PASS or t == "getitem":
                pass
            elif t == "aten.conv2d.default" and nxt.args[0] is cur:
                second = _attr_owner(nxt.args[1])
                break
            else:
                break
            cur = nxt
        out.append(ConvLink(first, bn, act, second))
    return out


def fold_batchnorm(module: nn.Module, x: torch.Tensor) -> int:
    """Fold every BN that directly follows a conv into that conv's weights, in place. Returns the count.

    The BN stays in the module as a per-channel bias (identity scale), so the architecture and its
    saved form are unchanged.
    """
    mods = dict(module.named_modules())
    if not any(isinstance(m, nn.BatchNorm2d) for m in mods.values()):
        return 0  # nothing to fold (e.g. imported graphs, BN already folded): skip the export
    count = 0
    with torch.no_grad():
        for link in conv_links(module, x):
            conv, bn = mods.get(link.first), mods.get(link.bn) if link.bn else None
            if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d) or not bn.track_running_stats:
                continue
            gamma = bn.weight.numpy() if bn.weight is not None else np.ones(bn.num_features, np.float32)
            beta = bn.bias.numpy() if bn.bias is not None else np.zeros(bn.num_features, np.float32)
            if bn.weight is None or bn.bias is None:
                continue
            b = conv.bias.numpy() if conv.bias is not None else None
            w, nb = fold_bn_weights(
                conv.weight.numpy(), b, gamma, beta, bn.running_mean.numpy(), bn.running_var.numpy(), bn.eps
            )
            conv.weight.copy_(torch.from_numpy(w))
            if conv.bias is not None:
                conv.bias.zero_()
            bn.weight.fill_(1.0)
            bn.bias.copy_(torch.from_numpy(nb))
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
            count += 1
    return count


def equalize(module: nn.Module, x: torch.Tensor, iterations: int = 4, through_relu6: bool = False) -> int:
    """Cross-layer equalization in place over Conv→[BN]→ReLU→Conv chains. Returns pairs equalized.

    Fold batch norms first (``fold_batchnorm``): a BN with a non-identity scale between the two
    convs is skipped. Iterates ``iterations`` times (ranges converge in a few rounds).
    """
    mods = dict(module.named_modules())
    pairs = []
    for link in conv_links(module, x):
        if link.second is None or (link.act == "relu6" and not through_relu6):
            continue
        c1, c2 = mods.get(link.first), mods.get(link.second)
        bn = mods.get(link.bn) if link.bn else None
        if not isinstance(c1, nn.Conv2d) or not isinstance(c2, nn.Conv2d):
            continue
        if c1.groups != 1 and c1.groups != c1.out_channels:
            continue
        if bn is not None and not _identity_scale_bn(bn):
            continue
        depthwise2 = c2.groups == c2.in_channels and c2.groups > 1
        if c2.groups != 1 and not depthwise2:
            continue
        pairs.append((c1, bn, c2, depthwise2))
    with torch.no_grad():
        for _ in range(iterations):
            for c1, bn, c2, dw in pairs:
                s = equalization_scales(c1.weight.numpy(), c2.weight.numpy(), dw)
                carrier = bn.bias if bn is not None else c1.bias
                b1 = carrier.numpy() if carrier is not None else None
                w1, b1n, w2 = apply_equalization(c1.weight.numpy(), b1, c2.weight.numpy(), s, dw)
                c1.weight.copy_(torch.from_numpy(w1))
                c2.weight.copy_(torch.from_numpy(w2))
                if carrier is not None and b1n is not None:
                    carrier.copy_(torch.from_numpy(b1n))
                if bn is not None and c1.bias is not None:
                    c1.bias.div_(torch.from_numpy(s).float())
    return len(pairs)


def _identity_scale_bn(bn: nn.Module) -> bool:
    if not isinstance(bn, nn.BatchNorm2d) or bn.weight is None:
        return False
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return bool(torch.allclose(scale, torch.ones_like(scale), atol=1e-5)) and bool((bn.running_mean == 0).all())

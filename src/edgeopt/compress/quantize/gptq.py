"""Error-compensating weight rounding (GPTQ / Optimal Brain Quantization) for low-bit weights.

Rounding every weight to its nearest grid point (RTN) is what PT2E's convert does; at 4 bits the
errors of a layer's weights add up in its outputs. GPTQ (Frantar et al. 2022, after OBQ) rounds a
layer's input columns one at a time and moves each rounding error onto the columns not yet
rounded, weighted by the inverse Hessian ``H = 2 X Xᵀ`` of the layer's inputs ``X`` (im2col
patches for a conv), so the layer's *output* on calibration data changes as little as possible.

- ``gptq_quantize`` (pure, torch): one weight matrix ``[rows, cols]`` with per-row scales and its
  Hessian -> the rounded (fake-quantized) weights.
- ``layer_hessians``: ``H`` of chosen conv/linear layers over calibration images, one float pass.
- ``apply_gptq``: replaces those layers' weights, in place, by their GPTQ-rounded values ``q * s``
  and returns the scales ``s``; pinned as the layers' weight scales, PT2E's own round-to-nearest
  then lands exactly on GPTQ's choices (``q * s / s == q``), so the integer program, its artifacts
  and a reloaded model all carry them.

Layers are rounded in module order, each layer's Hessian taken with the earlier ones already
rounded (sequential GPTQ: a layer compensates for what reaches it). Cost: per layer, one float
pass over the calibration images (stopped at that layer), a ``cols x cols`` Cholesky and ``cols``
rank-1 updates of the ``rows x cols`` weights (ResNet-8, three 4-bit layers: ~3-6 s, 2 loaded cores).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeopt.compress.quantize import calibration as cal


def gptq_quantize(
    w: torch.Tensor, scales: torch.Tensor, h: torch.Tensor, bits: int = 4, damp: float = 0.01, act_order: bool = True
) -> torch.Tensor:
    """GPTQ rounding of ``w`` ``[rows, cols]`` on the grid ``scales[row] * {-qmax..qmax}``. Pure.

    ``h`` ``[cols, cols]`` is the Hessian of the layer's squared output error (``2 X Xᵀ / n``);
    ``damp`` × its mean diagonal is added for stability; columns whose input is always zero are
    zeroed. ``act_order`` rounds the columns with the largest Hessian diagonal first (the
    "act-order" heuristic). Returns the fake-quantized weights (``q * s``), same shape as ``w``.
    """
    qmax = 2 ** (bits - 1) - 1
    w = w.detach().double().clone()
    h = h.detach().double().clone()
    s = scales.detach().double().reshape(-1, 1)
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    perm = torch.argsort(torch.diag(h), descending=True) if act_order else torch.arange(h.shape[0])
    w, h = w[:, perm], h[perm][:, perm]
    h += damp * torch.mean(torch.diag(h)) * torch.eye(h.shape[0], dtype=h.dtype)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    q = torch.zeros_like(w)
    for i in range(w.shape[1]):
        col = w[:, i : i + 1]
        qc = torch.clamp(torch.round(col / s), -qmax, qmax) * s
        q[:, i : i + 1] = qc
        err = (col - qc) / hinv[i, i]
        w[:, i + 1 :] -= err @ hinv[i : i + 1, i + 1 :]
    out = torch.empty_like(q)
    out[:, perm] = q
    return out.float()


def _columns(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as ``[samples, cols]`` rows matching its flattened weight's columns."""
    if isinstance(layer, nn.Linear):
        return x.reshape(-1, x.shape[-1])
    assert isinstance(layer, nn.Conv2d)
    padding = layer.padding if isinstance(layer.padding, tuple) else (0, 0)
    cols = F.unfold(x, layer.kernel_size, dilation=layer.dilation, padding=padding, stride=layer.stride)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def supports(layer: nn.Module) -> bool:
    """GPTQ here handles linear layers and ungrouped, zero-padded 2-D convs."""
    if isinstance(layer, nn.Linear):
        return True
    return (
        isinstance(layer, nn.Conv2d)
        and layer.groups == 1
        and layer.padding_mode == "zeros"
        and not isinstance(layer.padding, str)
    )


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the layers of interest have been seen."""


def layer_hessians(module: nn.Module, names: list[str], x: torch.Tensor, chunk: int = 128) -> dict[str, torch.Tensor]:
    """``2 X Xᵀ / n`` of each named layer's input columns over ``x`` (float model).

    Each chunk's forward pass stops once every named layer has seen its input. Columns are formed
    in float32 (``unfold``), the products accumulated in float64. Cost: at most one forward pass.
    """
    mods = dict(module.named_modules())
    acc: dict[str, torch.Tensor] = {}
    count: dict[str, int] = dict.fromkeys(names, 0)
    seen: set[str] = set()

    def hook(name: str):
        def f(m: nn.Module, inp: tuple[torch.Tensor, ...]) -> None:
            c = _columns(m, inp[0].detach().float())
            cc = (c.T @ c).double()
            acc[name] = acc[name] + cc if name in acc else cc
            count[name] += c.shape[0]
            seen.add(name)
            if seen >= set(names):
                raise _Stop

        return f

    was = module.training
    module.eval()
    hs = [mods[n].register_forward_pre_hook(hook(n)) for n in names]
    try:
        with torch.no_grad():
            for i in range(0, x.shape[0], chunk):
                seen.clear()
                try:
                    module(x[i : i + chunk])
                except _Stop:
                    pass
    finally:
        for h in hs:
            h.remove()
        module.train(was)
    return {n: 2.0 * acc[n] / max(count[n], 1) for n in names if n in acc}


def apply_gptq(
    module: nn.Module, layer_bits: dict[str, int], x: torch.Tensor, weight_method: str = "mse"
) -> dict[str, list[float]]:
    """GPTQ-round the weights of the layers in ``layer_bits`` (path -> bits), in place.

    Scales are chosen first (per output channel, ``weight_method`` clipping search on the original
    weights), then GPTQ picks the integers. Returns the per-channel scales to pin. Layers GPTQ does
    not handle (grouped convs) are left alone. Cost: see the module doc.
    """
    mods = dict(module.named_modules())
    names = [n for n in layer_bits if n in mods and supports(mods[n])]
    if not names:
        return {}
    steps: dict[str, list[float]] = {}
    for name in names:  # in module order; each layer's Hessian sees the earlier layers already rounded
        hessians = layer_hessians(module, [name], x)
        if name not in hessians:
            continue
        layer = mods[name]
        w = layer.weight
        bits = layer_bits[name]
        scales = cal.weight_scales(w.detach().numpy(), bits, weight_method)
        with torch.no_grad():
            w2 = w.detach().reshape(w.shape[0], -1)
            q = gptq_quantize(w2, torch.from_numpy(scales), hessians[name], bits)
            w.copy_(q.reshape(w.shape).to(w.dtype))
        steps[name] = [float(v) for v in np.asarray(scales, np.float32)]
    return steps

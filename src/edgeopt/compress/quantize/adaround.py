"""AdaRound: learned rounding of each layer's weights on calibration data (Nagel et al. 2020).

Round-to-nearest picks each weight's integer alone; AdaRound picks, per weight, rounding down or up
so that the layer's *output* on calibration data stays closest to the float layer's. Per layer
(``adaround_weights``, pure torch): the soft weights are ``s * clamp(floor(w / s) + h(V), -qmax,
qmax)`` with the rectified sigmoid ``h(V) = clip(sigmoid(V) (ζ - γ) + γ, 0, 1)`` (ζ = 1.1, γ = -0.1),
``V`` initialised so that ``h(V)`` is the fractional part of ``w / s`` (the soft weights start at
the float weights); Adam minimises ``|W X - W_soft X|² / n + λ Σ (1 - |2 h(V) - 1|^β)``, the
regulariser off for the first 20% of the steps and ``β`` annealed from 20 to 2 after, which pushes
every ``h`` to 0 or 1. The result is ``floor(w / s) + (h(V) >= 0.5)``: integers on the grid.
(AIMET's ``Adaround.apply_adaround`` is the same recipe, with 10,000 steps by default.)

``apply_adaround`` runs it layer by layer in module order, like ``gptq.apply_gptq``: each layer's
inputs ``X`` (im2col patches for a conv, a random subset of the rows) are taken with the earlier
layers already rounded, and the target is the *original* weights on those inputs, so a layer also
compensates what reaches it. The weights become ``q * s`` and the per-channel scales are returned to
be pinned, so PT2E's round-to-nearest lands on AdaRound's integers in the program and every artifact.

Cost: per layer one forward pass (stopped at the layer) and ``iters`` Adam steps on a
``rows x cols`` weight against the ``cols x cols`` Gram matrix of its sampled input rows (the
output error over all of them, exactly, at the price of one small matmul per step);
``time_budget_s`` caps the whole run (each remaining layer gets an even share of what is left; a
layer cut short keeps the rounding its ``h(V)`` shows then). ResNet-8 at 8 bits, 500 images: see
docs/quantization.md for the measured time.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from edgeopt.compress.quantize import calibration as cal
from edgeopt.compress.quantize.gptq import _columns, _Stop, supports

ZETA, GAMMA = 1.1, -0.1


def rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    """``clip(sigmoid(v) (ζ - γ) + γ, 0, 1)``. Pure."""
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def rounding_regulariser(v: torch.Tensor, beta: float) -> torch.Tensor:
    """AdaRound's ``Σ 1 - |2 h(V) - 1|^β``: pushes every ``h(V)`` to 0 or 1 as ``β`` anneals. Pure."""
    return (1 - (2 * rectified_sigmoid(v) - 1).abs().pow(beta)).sum()


def annealed_beta(step: int, warm: int, iters: int) -> float:
    """``β`` at ``step``: from 20 after the warm-up down to 2 at ``iters`` (AdaRound's schedule). Pure."""
    return 2 + (20 - 2) * (1 - (step - warm) / max(iters - warm, 1))


def _init_v(frac: torch.Tensor) -> torch.Tensor:
    """``V`` with ``rectified_sigmoid(V) == frac`` (frac in [0, 1))."""
    p = ((frac - GAMMA) / (ZETA - GAMMA)).clamp(1e-4, 1 - 1e-4)
    return torch.log(p / (1 - p))


def adaround_weights(
    w: torch.Tensor,
    scales: torch.Tensor,
    x: torch.Tensor,
    bits: int = 8,
    iters: int = 500,
    lam: float = 0.01,
    lr: float = 1e-2,
    deadline: float | None = None,
) -> torch.Tensor:
    """AdaRound integers for ``w`` ``[rows, cols]`` with per-row ``scales`` on inputs ``x`` ``[n, cols]``. Pure.

    Returns the integer weights ``q`` (float tensor of whole numbers in ``[-qmax, qmax]``); the
    rounded weights are ``q * scales[:, None]``. ``deadline`` (``time.perf_counter()`` value): after 5 steps
    the step count is cut to what fits before it, and the warm-up and annealing are scaled to that count
    (a schedule stopped half-way reads its rounding off an un-annealed ``h(V)``: worse than nearest).
    """
    qmax = 2 ** (bits - 1) - 1
    w = w.detach().float()
    s = scales.detach().float().reshape(-1, 1)
    x = x.detach().float()
    base = torch.floor(w / s)
    v = _init_v(w / s - base).requires_grad_(True)
    opt = torch.optim.Adam([v], lr=lr)
    gram = (x.double().T @ x.double() / max(x.shape[0], 1)).float()  # |D x|² averaged over x = tr(D G Dᵀ)
    warm = int(0.2 * iters)
    t0 = time.perf_counter()
    for step in range(iters):
        if deadline is not None and step == 5:  # fit the whole schedule (warm-up + annealing) in the time left
            per_step = (time.perf_counter() - t0) / 5
            iters = max(step + 1, min(iters, int((deadline - t0) / max(per_step, 1e-9))))
            warm = int(0.2 * iters)
        if step >= iters:
            break
        soft = s * torch.clamp(base + rectified_sigmoid(v), -qmax, qmax)
        d = w - soft
        rec = ((d @ gram) * d).sum()
        loss = rec
        if step >= warm:
            loss = rec + lam * rounding_regulariser(v, annealed_beta(step, warm, iters))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return torch.clamp(base + (rectified_sigmoid(v) >= 0.5).float(), -qmax, qmax)


def layer_inputs(module: nn.Module, name: str, x: torch.Tensor, rows: int, seed: int = 0, chunk: int = 128
                 ) -> torch.Tensor | None:  # fmt: skip
    """Up to ``rows`` random input rows (im2col columns for a conv) of layer ``name`` over ``x``.
    Each chunk's forward pass stops at the layer. None when the layer is never reached."""
    layer = dict(module.named_modules())[name]
    got: list[torch.Tensor] = []

    def hook(m: nn.Module, inp: tuple[torch.Tensor, ...]) -> None:
        got.append(_columns(m, inp[0].detach().float()))
        raise _Stop

    h = layer.register_forward_pre_hook(hook)
    was = module.training
    module.eval()
    try:
        with torch.no_grad():
            for i in range(0, x.shape[0], chunk):
                try:
                    module(x[i : i + chunk])
                except _Stop:
                    pass
    finally:
        h.remove()
        module.train(was)
    if not got:
        return None
    cols = torch.cat(got)
    if cols.shape[0] > rows:
        g = torch.Generator().manual_seed(seed)
        cols = cols[torch.randperm(cols.shape[0], generator=g)[:rows]]
    return cols


def apply_adaround(
    module: nn.Module,
    layer_bits: dict[str, int],
    x: torch.Tensor,
    weight_method: str = "minmax",
    iters: int = 500,
    rows: int = 16384,
    time_budget_s: float = 45.0,
    seed: int = 0,
) -> dict[str, list[float]]:
    """AdaRound the weights of the layers in ``layer_bits`` (path -> bits), in place, in module order.

    Scales per output channel come from ``weight_method`` on the original weights; returns them to
    be pinned (layer path -> scales). Layers AdaRound does not handle (grouped convs) keep their
    weights. A progress bar counts the layers. Cost: see the module doc.
    """
    from edgeopt.progress import ProgressBar

    mods = dict(module.named_modules())
    names = [n for n in mods if n in layer_bits and layer_bits[n] in (4, 8) and supports(mods[n])]
    steps: dict[str, list[float]] = {}
    start = time.perf_counter()
    bar = ProgressBar("AdaRound", len(names))
    try:
        for i, name in enumerate(names):
            cols = layer_inputs(module, name, x, rows, seed)
            if cols is None:
                bar.advance(status=name)
                continue
            layer = mods[name]
            bits = layer_bits[name]
            w = layer.weight.detach().reshape(layer.weight.shape[0], -1)
            scales = cal.weight_scales(w.numpy(), bits, "mse" if bits == 4 else weight_method)  # 4 bits: as the mix
            s = torch.from_numpy(np.asarray(scales, np.float32))
            left = time_budget_s - (time.perf_counter() - start)
            deadline = time.perf_counter() + max(left, 0.0) / (len(names) - i)
            q = adaround_weights(w, s, cols, bits, iters, deadline=deadline)
            with torch.no_grad():
                layer.weight.copy_((q * s.reshape(-1, 1)).reshape(layer.weight.shape).to(layer.weight.dtype))
            steps[name] = [float(v) for v in s]
            bar.advance(status=name)
    finally:
        bar.close()
    return steps


def reconstruction_error(w: torch.Tensor, wq: torch.Tensor, x: torch.Tensor) -> float:
    """``|W X - W_q X|² / n`` of a ``[rows, cols]`` weight on inputs ``x`` ``[n, cols]``. Pure."""
    d = x.float() @ (w.float() - wq.float()).T
    return float((d**2).sum(1).mean())


def nearest(w: torch.Tensor, scales: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Round-to-nearest integers of ``w`` ``[rows, cols]`` on the per-row grid ``scales``. Pure."""
    qmax = 2 ** (bits - 1) - 1
    return torch.clamp(torch.round(w / scales.reshape(-1, 1)), -qmax, qmax)

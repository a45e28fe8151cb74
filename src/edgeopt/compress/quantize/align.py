"""Per-channel statistics alignment to the calibration data (AdaBN-style), before quantization.

When the user's data differs from the data a model was trained on (another camera, JPEG instead of
raw pixels), each layer's per-channel output statistics drift. AdaBN (Li et al. 2016, "Revisiting
batch normalization for practical domain adaptation") re-estimates every batch norm's mean and
variance on the new data, so each normalised channel again has the mean and variance the next layer
was trained for. Two forms, both fitted on calibration images only (no labels):

- ``adabn(module, x)``: the batch norms' running statistics re-estimated on ``x``, layer by layer
  (each batch norm sees the earlier ones already re-estimated). Needs batch norms that are still
  there: a graph whose BNs were folded into the convs (an imported ``.tflite``) has none, and is
  refused with a one-line error.
- ``align_to(module, x, target)``: each conv/linear output channel is moved by an affine map folded
  into that layer's weight and bias, ``y -> (y - m) * t_std / std + t_mean``, so that its mean and
  variance over ``x`` become ``target[layer]`` (e.g. ``layer_statistics`` of the model on data of the
  training domain). Sequential, in module order. When ``x`` already has the target statistics the
  map is the identity.

Domain adaptation, not quantization: the same alignment given to the float model is the control
(``controls``), and the benchmark reports both. Cost: ``adabn`` one forward pass over ``x`` in
training mode (the whole batch at once, ~0.1 s for 500 CIFAR images through ResNet-8);
``align_to`` one forward pass per layer (stopped at that layer), plus the statistics of the target.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from edgeopt.errors import EdgeoptError
from edgeopt.models.layers import capture_layers
from edgeopt.train.batchnorm import batchnorms, reestimate_batchnorms

ALIGN_CHOICES = ("none", "adabn")
_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)


def _channel_stats(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (dim 1; the last dim of a 2-D linear output) mean and variance in float64."""
    t = t.detach().double()
    if t.ndim == 2:
        return t.mean(0), t.var(0, unbiased=False)
    dims = [i for i in range(t.ndim) if i != 1]
    return t.mean(dims), t.var(dims, unbiased=False)


def layer_statistics(module: nn.Module, x: torch.Tensor, layers: list[str] | None = None
                     ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:  # fmt: skip
    """Per-channel output mean and variance of each conv/linear layer of ``module`` over ``x`` (one pass)."""
    mods = dict(module.named_modules())
    names = layers if layers is not None else [n for n, m in mods.items() if isinstance(m, _LAYERS)]
    was = module.training
    module.eval()
    try:
        outs = capture_layers(module, names, x)
    finally:
        module.train(was)
    return {n: _channel_stats(outs[n]) for n in names if n in outs}


def adabn(module: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """AdaBN in place: every batch norm's running mean/variance re-estimated on ``x``.

    One forward pass in training mode over the whole batch with cumulative averaging: each batch
    norm normalises with the statistics of ``x`` at its input, which are what it stores, so every
    later one sees the earlier ones already adapted. Returns per batch norm the largest change of a
    channel's mean, in units of its old standard deviation. Raises when ``module`` has no batch norm.
    """
    names = batchnorms(module)
    if not names:
        raise EdgeoptError(
            "--align adabn re-estimates batch norms, and this model has none (folded into its convs, e.g. an"
            " imported .tflite)", "quantize without --align adabn",
        )  # fmt: skip
    mods = dict(module.named_modules())
    before = {n: (mods[n].running_mean.clone(), mods[n].running_var.clone()) for n in names}
    reestimate_batchnorms(module, [x])
    out = {}
    for n in names:
        m0, v0 = before[n]
        out[n] = float(((mods[n].running_mean - m0).abs() / (v0 + mods[n].eps).sqrt()).max())
    return out


def align_affine(mean: torch.Tensor, var: torch.Tensor, t_mean: torch.Tensor, t_var: torch.Tensor,
                 eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Per-channel ``(a, c)`` with ``a * y + c`` having mean ``t_mean`` and variance ``t_var`` when ``y``
    has ``mean`` and ``var``. A dead channel (variance ~0) is only shifted. Pure."""
    a = torch.where(var > eps, (t_var.clamp_min(0) / var.clamp_min(eps)).sqrt(), torch.ones_like(var))
    return a, t_mean - a * mean


def align_to(module: nn.Module, x: torch.Tensor, target: dict[str, tuple[torch.Tensor, torch.Tensor]]
             ) -> dict[str, float]:  # fmt: skip
    """Align, in place and in module order, each layer in ``target`` so that its per-channel output
    mean/variance over ``x`` equal the target's; folded into the layer's weight and bias (a bias is
    added when the layer has none). Returns per layer the largest scale change ``|a - 1|``.
    Cost: one forward pass per layer."""
    mods = dict(module.named_modules())
    unknown = [n for n in target if not isinstance(mods.get(n), _LAYERS)]
    if unknown:
        raise EdgeoptError(f"alignment targets name no conv/linear layer: {', '.join(unknown[:3])}")
    out = {}
    for name in [n for n in mods if n in target]:
        mean, var = layer_statistics(module, x, [name])[name]
        t_mean, t_var = (torch.as_tensor(v, dtype=torch.float64) for v in target[name])
        a, c = align_affine(mean, var, t_mean, t_var)
        layer = mods[name]
        with torch.no_grad():
            shape = (-1,) + (1,) * (layer.weight.ndim - 1)
            layer.weight.mul_(a.to(layer.weight.dtype).reshape(shape))
            if layer.bias is None:
                layer.bias = nn.Parameter(torch.zeros(layer.weight.shape[0], dtype=layer.weight.dtype))
            layer.bias.copy_((a * layer.bias.double() + c).to(layer.bias.dtype))
        out[name] = float((a - 1).abs().max())
    return out


def aligned_copy(module: nn.Module, x: torch.Tensor, method: str) -> tuple[nn.Module, dict[str, Any]]:
    """A copy of ``module`` aligned with ``method`` (``ALIGN_CHOICES``) on ``x``: the float control of
    an aligned quantization, and what ``quantize_ptq`` starts from."""
    if method not in ALIGN_CHOICES:
        raise EdgeoptError(f"unknown alignment '{method}'", f"use {', '.join(ALIGN_CHOICES)}")
    m = copy.deepcopy(module)
    if method == "none":
        return m, {}
    return m, {"adabn_max_mean_shift_std": adabn(m, x)}

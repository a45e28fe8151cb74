"""Unstructured and N:M weight sparsity: masks, a gradual schedule, and honest accounting.

* ``magnitude_masks``: keep the largest-|w| weights, per layer or by one global threshold.
* ``nm_masks``: N:M semi-structured sparsity (2:4 by default): in every run of M consecutive
  weights along the input-channel axis, the N largest survive.
* ``polynomial_sparsity``: Zhu & Gupta (2017) schedule ``s_t = s_f + (s_i - s_f)(1 - p)^3``.
* ``GradualPruner``: applies that schedule during ``fit`` (a forward pre-hook recomputes the
  masks every ``frequency`` training steps; gradient hooks keep pruned weights at zero).

Dense runtimes (XNNPACK, ONNX Runtime CPU, LiteRT) execute zeros like any other value, so
these masks buy no latency there; what they buy is a smaller compressed file (see
:mod:`edgeopt.compress.storage`). Cost: masks are one sort per layer (or one global sort).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from edgeopt.errors import EdgeoptError

Masks = dict[str, torch.Tensor]  # layer path -> bool mask of its weight


def prunable_layers(module: nn.Module, min_size: int = 0) -> dict[str, nn.Module]:
    """Conv2d and Linear layers (by path) whose weight has at least ``min_size`` values."""
    return {n: m for n, m in module.named_modules()
            if isinstance(m, nn.Conv2d | nn.Linear) and m.weight.numel() >= min_size}  # fmt: skip


def magnitude_masks(module: nn.Module, sparsity: float, scope: str = "layer", min_size: int = 0) -> Masks:
    """Masks that zero a ``sparsity`` fraction of weights by magnitude (pure: the module is not changed).

    ``scope="layer"``: each layer loses the same fraction; ``"global"``: one threshold over all
    layers (layers with small weights lose more).
    """
    if not 0.0 <= sparsity < 1.0:
        raise EdgeoptError(f"sparsity {sparsity} is not in [0, 1)", "e.g. --ratio 0.8 zeroes 80% of the weights")
    if scope not in ("layer", "global"):
        raise EdgeoptError(f"unknown sparsity scope '{scope}'", "use layer or global")
    layers = prunable_layers(module, min_size)
    if scope == "layer":
        return {n: _keep_top(m.weight.detach().abs(), sparsity) for n, m in layers.items()}
    allw = torch.cat([m.weight.detach().abs().flatten() for m in layers.values()])
    k = int(math.floor(sparsity * allw.numel()))
    if k == 0:
        return {n: torch.ones_like(m.weight, dtype=torch.bool) for n, m in layers.items()}
    threshold = torch.kthvalue(allw, k).values
    return {n: m.weight.detach().abs() > threshold for n, m in layers.items()}


def _keep_top(a: torch.Tensor, sparsity: float) -> torch.Tensor:
    k = int(math.floor(sparsity * a.numel()))
    mask = torch.ones(a.shape, dtype=torch.bool, device=a.device)  # contiguous: weights train channels-last
    if k > 0:
        idx = torch.argsort(a.flatten(), stable=True)[:k]
        mask.view(-1)[idx] = False
    return mask


def nm_masks(module: nn.Module, n: int = 2, m: int = 4) -> Masks:
    """N:M masks: in each group of ``m`` consecutive input channels (per output and kernel position),
    the ``n`` largest-|w| weights survive. Layers whose input width is not a multiple of ``m``
    (or depthwise convs, one input per group) are left dense.
    """
    if not 0 < n < m:
        raise EdgeoptError(f"N:M needs 0 < N < M, got {n}:{m}", "e.g. --nm 2:4")
    masks = {}
    for name, layer in prunable_layers(module).items():
        w = layer.weight.detach()
        cin = w.shape[1]
        if cin % m:
            continue
        wl = w.permute(0, 2, 3, 1) if w.dim() == 4 else w  # input channels last
        groups = wl.abs().reshape(-1, m)
        keep = torch.zeros_like(groups, dtype=torch.bool)
        keep.scatter_(1, torch.topk(groups, n, dim=1).indices, True)
        keep = keep.reshape(wl.shape)
        masks[name] = keep.permute(0, 3, 1, 2).contiguous() if w.dim() == 4 else keep
    return masks


def check_nm(mask: torch.Tensor, n: int = 2, m: int = 4) -> bool:
    """True when every group of ``m`` consecutive input-channel weights keeps at most ``n``."""
    ml = mask.permute(0, 2, 3, 1) if mask.dim() == 4 else mask
    return bool((ml.reshape(-1, m).sum(1) <= n).all())


def apply_masks(module: nn.Module, masks: Masks) -> nn.Module:
    """Zero the masked weights in place (no hooks, no reparametrisation left behind)."""
    with torch.no_grad():
        for name, mask in masks.items():
            weight = module.get_submodule(name).weight
            weight.mul_(mask.to(weight.device, torch.float32))  # masks may come from training on a GPU
    return module


def sparsity_of(module: nn.Module) -> dict[str, Any]:
    """Fraction of exactly-zero weights in Conv2d / Linear layers, overall and per layer."""
    per, zeros, total = {}, 0, 0
    for name, layer in prunable_layers(module).items():
        z = int((layer.weight == 0).sum())
        per[name] = z / layer.weight.numel()
        zeros += z
        total += layer.weight.numel()
    return {"sparsity": zeros / max(1, total), "zeros": zeros, "weights": total, "per_layer": per}


def polynomial_sparsity(step: int, begin: int, end: int, final: float, initial: float = 0.0, power: int = 3) -> float:
    """Zhu & Gupta's gradual schedule: ``initial`` before ``begin``, ``final`` after ``end``."""
    if step <= begin:
        return initial
    if step >= end:
        return final
    p = (step - begin) / max(1, end - begin)
    return final + (initial - final) * (1.0 - p) ** power


@dataclass
class GradualPruner:
    """Raises sparsity on a polynomial schedule while ``fit`` trains the model.

    ``attach(module)`` before ``fit``; ``detach()`` after (it applies the final masks).
    ``method``: "magnitude" (``scope`` layer/global) or "nm" (``n``:``m``, applied at once at
    ``begin``). ``end`` defaults to 75% of ``total_steps`` so the last quarter fine-tunes at the
    final sparsity.
    """

    final_sparsity: float
    total_steps: int
    method: str = "magnitude"
    scope: str = "layer"
    begin: int = 0
    end: int | None = None
    frequency: int = 50
    n: int = 2
    m: int = 4
    masks: Masks = field(default_factory=dict)
    step: int = 0
    _hooks: list[Any] = field(default_factory=list)
    _module: nn.Module | None = None

    def attach(self, module: nn.Module) -> GradualPruner:
        self._module = module
        if self.end is None:
            self.end = max(self.begin + 1, int(0.75 * self.total_steps))
        self._hooks.append(module.register_forward_pre_hook(self._pre_forward))
        for name, layer in prunable_layers(module).items():
            self._hooks.append(layer.weight.register_hook(lambda g, n=name: self._mask_grad(n, g)))
        return self

    def _mask_grad(self, name: str, grad: torch.Tensor) -> torch.Tensor:
        mask = self.masks.get(name)
        return grad if mask is None else grad * mask.to(grad.device, grad.dtype)

    def target(self) -> float:
        return polynomial_sparsity(self.step, self.begin, int(self.end or 1), self.final_sparsity)

    def _update(self) -> None:
        assert self._module is not None
        if self.method == "nm":
            self.masks = nm_masks(self._module, self.n, self.m)
        else:
            self.masks = magnitude_masks(self._module, self.target(), self.scope)
        apply_masks(self._module, self.masks)

    def _pre_forward(self, module: nn.Module, _args: Any) -> None:
        if not module.training:
            return
        due = self.step % self.frequency == 0 or self.step == self.end
        if (self.method == "nm" and self.step == self.begin) or (
            self.method != "nm" and self.begin <= self.step <= int(self.end or 0) and due
        ):
            self._update()
        self.step += 1

    def detach(self) -> Masks:
        """Remove the hooks and apply the final masks; returns them."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
        if self._module is not None:
            self.step = max(self.step, int(self.end or 0))
            self._update()
        return self.masks

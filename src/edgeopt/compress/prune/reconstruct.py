"""Least-squares reconstruction after channel pruning (the layer-wise fit of He et al. 2017 / ThiNet).

Removing channels shifts every later layer's input. Networks whose batch norms were folded into
the convolutions (every imported TFLite model) cannot re-centre themselves, so a pruned model can
fall to chance accuracy before fine-tuning. ``reconstruct`` re-fits, in execution order, the
weights and bias of each Conv2d (groups=1) and Linear layer of the pruned model so that its output
on calibration images matches the *original* layer's output on the kept channels, given the
inputs the pruned model actually produces (so earlier errors are corrected too): a ridge
regression over im2col patches, closed form.

Cost: one forward of the original model, then per re-fitted layer (those from the first changed
one on) one pruned-model forward over the calibration batch and one solve with ``Cin*kh*kw + 1``
unknowns (ResNet-8, 512 images: a few seconds).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeopt.compress.prune.depgraph import DepGraph
from edgeopt.models.layers import capture_layers
from edgeopt.models.resize import layer_sizes


def _patches(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Rows = output positions, columns = the layer's inputs (im2col for convs)."""
    if isinstance(layer, nn.Linear):
        return x.reshape(-1, x.shape[-1])
    cols = F.unfold(x, layer.kernel_size, layer.dilation, layer.padding, layer.stride)  # N, C*k*k, L
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def _targets(layer: nn.Module, y: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, nn.Linear):
        return y.reshape(-1, y.shape[-1])
    return y.permute(0, 2, 3, 1).reshape(-1, y.shape[1])


def reconstruct(
    original: nn.Module,
    pruned: nn.Module,
    dep: DepGraph,
    removed: set[int],
    x: torch.Tensor,
    ridge: float = 1e-3,
    max_rows: int = 32768,
    seed: int = 0,
) -> nn.Module:
    """Re-fit ``pruned``'s Conv2d / Linear layers (in place) to reproduce ``original``'s outputs on ``x``.

    ``dep`` / ``removed`` map the pruned layers' output channels back to the original ones.
    Depthwise / grouped convolutions are left as they are.
    """
    rng = np.random.default_rng(seed)
    was_o, was_p = original.training, pruned.training
    original.eval()
    pruned.eval()
    try:
        fitted = _layers_to_fit(original, pruned, dep)
        targets = capture_layers(original, fitted, x, "out")
        for path in fitted:
            layer = pruned.get_submodule(path)
            keep = dep.kept((path, "out"), removed, layer.weight.shape[0])
            y = _targets(layer, targets.pop(path))[:, torch.from_numpy(keep)]
            a = _patches(layer, capture_layers(pruned, [path], x, "in")[path])
            if len(a) > max_rows:
                rows = torch.from_numpy(rng.choice(len(a), max_rows, replace=False))
                a, y = a[rows], y[rows]
            bias = layer.bias is not None
            a64 = torch.cat([a, torch.ones(len(a), 1)], 1).double() if bias else a.double()
            gram = a64.T @ a64
            reg = ridge * float(gram.diagonal().mean()) * torch.eye(gram.shape[0], dtype=torch.float64)
            sol = torch.linalg.solve(gram + reg, a64.T @ y.double())  # (features [+1]) x out
            w = sol[:-1] if bias else sol
            with torch.no_grad():
                layer.weight.copy_(w.T.reshape(layer.weight.shape).to(layer.weight.dtype))
                if bias:
                    layer.bias.copy_(sol[-1].to(layer.bias.dtype))
    finally:
        original.train(was_o)
        pruned.train(was_p)
    return pruned


def _layers_to_fit(original: nn.Module, pruned: nn.Module, dep: DepGraph) -> list[str]:
    """Conv2d (groups=1) / Linear layers of ``pruned`` from the first layer that pruning changed on
    (execution order): the layers before it see the same inputs as before and need no re-fit."""
    out: list[str] = []
    started = False
    for path in dep.layer_io:
        try:
            layer: nn.Module | None = pruned.get_submodule(path)
        except AttributeError:  # removed with its residual branch
            layer = None
        started = started or layer is None or layer_sizes(layer) != layer_sizes(original.get_submodule(path))
        if started and isinstance(layer, nn.Conv2d | nn.Linear) and getattr(layer, "groups", 1) == 1:
            out.append(path)
    return out

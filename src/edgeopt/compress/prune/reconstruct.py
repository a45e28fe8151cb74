"""Least-squares reconstruction after channel pruning (the layer-wise fit of He et al. 2017 / ThiNet).

Removing channels shifts every later layer's input. Networks whose batch norms were folded into
the convolutions (every imported TFLite model) cannot re-centre themselves, so a pruned model can
fall to chance accuracy before fine-tuning. ``reconstruct`` re-fits, in execution order, the
weights and bias of each Conv2d (groups=1) and Linear layer of the pruned model so that its output
on calibration images matches the *original* layer's output on the kept channels, given the
inputs the pruned model actually produces (so earlier errors are corrected too): a ridge
regression over im2col patches, closed form.

The fit runs inside one forward pass of the pruned model: a pre-hook on each layer to re-fit
solves for its weights from the input it is about to receive (computed by the layers already
re-fitted), then lets it run. The original's outputs (:func:`original_outputs`) do not depend on
the cut, so a search that re-fits many variants of one model captures them once and passes them.

Cost: one forward of the original model (none when ``targets`` are given), one forward of the
pruned model over the calibration batch, and per re-fitted layer (those from the first changed one
on) one solve with ``Cin*kh*kw + 1`` unknowns over at most ``max_rows`` rows (ResNet-8, 512
images: about a second).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeopt.compress.prune.depgraph import DepGraph
from edgeopt.models.layers import capture_layers
from edgeopt.models.resize import layer_sizes


def _rows(layer: nn.Module, x: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    """The layer's inputs, one row per output position (im2col for convs), only ``rows`` when given.

    Row ``r`` of a conv is image ``r // (Ho*Wo)`` at output position ``r % (Ho*Wo)``; a subset is
    gathered straight from the padded input (the full im2col of 512 CIFAR images is ~300 MB)."""
    if isinstance(layer, nn.Linear):
        a = x.reshape(-1, x.shape[-1])
        return a if rows is None else a[rows]
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = layer.kernel_size, layer.stride, layer.padding, layer.dilation
    if rows is None:
        cols = F.unfold(x, (kh, kw), (dh, dw), (ph, pw), (sh, sw))  # N, C*kh*kw, Ho*Wo
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    xp = F.pad(x, (pw, pw, ph, ph))
    wo = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    ho = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    img, pos = rows // (ho * wo), rows % (ho * wo)
    hh = ((pos // wo) * sh)[:, None, None, None] + (torch.arange(kh) * dh)[None, None, :, None]
    ww = ((pos % wo) * sw)[:, None, None, None] + (torch.arange(kw) * dw)[None, None, None, :]
    chans = torch.arange(x.shape[1])[None, :, None, None]
    return xp[img[:, None, None, None], chans, hh, ww].reshape(len(rows), -1)  # (rows, C*kh*kw), unfold's order


def _targets(layer: nn.Module, y: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, nn.Linear):
        return y.reshape(-1, y.shape[-1])
    return y.permute(0, 2, 3, 1).reshape(-1, y.shape[1])


def _row_count(layer: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """How many rows ``_rows`` yields for input ``x`` (the original output ``y`` has the same positions)."""
    return x.reshape(-1, x.shape[-1]).shape[0] if isinstance(layer, nn.Linear) else y.shape[0] * y[0, 0].numel()


def original_outputs(original: nn.Module, dep: DepGraph, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every Conv2d / Linear output of ``original`` on ``x`` (what :func:`reconstruct` fits to), from
    one forward pass. Capture it once to re-fit several cuts of the same model on the same ``x``."""
    paths = [p for p in dep.layer_io if isinstance(original.get_submodule(p), nn.Conv2d | nn.Linear)]
    was = original.training
    original.eval()
    try:
        return capture_layers(original, paths, x, "out")
    finally:
        original.train(was)


def reconstruct(
    original: nn.Module,
    pruned: nn.Module,
    dep: DepGraph,
    removed: set[int],
    x: torch.Tensor,
    ridge: float = 1e-3,
    max_rows: int = 32768,
    seed: int = 0,
    targets: dict[str, torch.Tensor] | None = None,
) -> nn.Module:
    """Re-fit ``pruned``'s Conv2d / Linear layers (in place) to reproduce ``original``'s outputs on ``x``.

    ``dep`` / ``removed`` map the pruned layers' output channels back to the original ones.
    Depthwise / grouped convolutions are left as they are. ``targets``: ``original_outputs(original,
    dep, x)`` when already captured (read, not changed). A layer called twice in one forward is
    fitted on its first call.
    """
    rng = np.random.default_rng(seed)
    was_o, was_p = original.training, pruned.training
    original.eval()
    pruned.eval()
    hooks = []
    try:
        fitted = _layers_to_fit(original, pruned, dep)
        if targets is None:
            targets = capture_layers(original, fitted, x, "out")
        todo = set(fitted)

        def fit(layer: nn.Module, inputs: tuple[Any, ...], path: str) -> None:
            if path not in todo:
                return
            todo.discard(path)
            y_full = targets[path]
            n = _row_count(layer, inputs[0], y_full)
            rows = torch.from_numpy(rng.choice(n, max_rows, replace=False)) if n > max_rows else None
            keep = torch.from_numpy(dep.kept((path, "out"), removed, layer.weight.shape[0]))
            y = _targets(layer, y_full)
            y = (y if rows is None else y[rows])[:, keep]
            a = _rows(layer, inputs[0], rows)
            bias = layer.bias is not None
            a = torch.cat([a, torch.ones(len(a), 1)], 1) if bias else a
            # products summed in float32 (relative error ~1e-6, far below the ridge), solved in float64
            gram = (a.T @ a).double()
            reg = ridge * float(gram.diagonal().mean()) * torch.eye(gram.shape[0], dtype=torch.float64)
            sol = torch.linalg.solve(gram + reg, (a.T @ y).double())  # (features [+1]) x out
            w = sol[:-1] if bias else sol
            layer.weight.copy_(w.T.reshape(layer.weight.shape).to(layer.weight.dtype))
            if bias:
                layer.bias.copy_(sol[-1].to(layer.bias.dtype))

        for path in fitted:
            hook = pruned.get_submodule(path).register_forward_pre_hook(
                lambda m, inputs, path=path: fit(m, inputs, path)
            )
            hooks.append(hook)
        if fitted:
            with torch.no_grad():
                pruned(x)
    finally:
        for h in hooks:
            h.remove()
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

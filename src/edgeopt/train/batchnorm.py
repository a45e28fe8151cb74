"""Batch-norm statistics re-estimated on data: one helper for every technique that changes what a
network's batch norms see (a sub-network cut from a supernet, gates made hard after a width search,
a quantized network whose activations drifted: AdaBN).

Why it is needed: a batch norm's running mean and variance were gathered under the network as it
was trained; once the network computes something else, they no longer match its activations and
eval-mode accuracy can collapse (a digits resnet8 whose width gates were made hard went from 94% to
18%; re-estimated, 84%). Slimmable networks, OFA and AdaBN all re-estimate them the same way.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def batchnorms(module: nn.Module) -> list[str]:
    """Paths of the batch norms of ``module`` that track running statistics."""
    return [n for n, m in module.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]  # fmt: skip


@torch.no_grad()
def reestimate_batchnorms(module: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Every batch norm's running mean and variance replaced, in place, by their cumulative average
    over ``batches`` (model inputs), run through ``module`` as it computes now.

    Only the batch norms are in training mode during the passes (dropout and the like stay off), so
    each normalises with its batch's statistics and every later one sees the earlier ones adapted.
    Momenta and the module's training flag are restored afterwards. Cost: one forward pass over
    ``batches`` without gradients."""
    mods = dict(module.named_modules())
    layers = [mods[n] for n in batchnorms(module)]
    if not layers:
        return
    saved = [m.momentum for m in layers]
    was_training = module.training
    module.eval()
    try:
        for m in layers:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches below
            m.train()
        for x in batches:
            module(x)
    finally:
        for m, momentum in zip(layers, saved, strict=True):
            m.momentum = momentum
        module.train(was_training)

"""Per-client accuracy of a federated run on each client's own held-out split, and local head fine-tuning.

:func:`client_accuracies` evaluates one weight vector per client on that client's held-out tensors
(the global model, or the global model with the client's personalized part);
:func:`finetune_heads` adapts the final global model's head on each client's training part (the
``finetune`` mode of :mod:`edgeopt.federated.personalize`). Cost: one forward pass over the held-out
data per client; fine-tuning adds ``finetune_epochs`` passes over each client's training data.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from edgeopt.federated.algorithms import ClientConfig, LocalTrainer, client_update
from edgeopt.federated.personalize import with_local

Tensors = tuple[torch.Tensor, torch.Tensor]


def client_accuracies(trainer: LocalTrainer, params: list[np.ndarray], holdouts: list[Tensors]) -> list[float | None]:
    """Accuracy of ``params[c]`` on ``holdouts[c]`` for every client (None where the split is empty)."""
    from edgeopt.federated.engine import evaluate_params

    out: list[float | None] = []
    for p, (x, y) in zip(params, holdouts, strict=True):
        if len(y) == 0:
            out.append(None)
            continue
        trainer.load(p)
        out.append(evaluate_params(trainer.module, x, y)[0])
    return out


def finetune_heads(
    module: nn.Module,
    global_params: np.ndarray,
    head_mask: np.ndarray,
    head_names: tuple[str, ...],
    data: list[Tensors],
    ccfg: ClientConfig,
    seeds: list[int],
) -> list[np.ndarray]:
    """Each client's weights after training only the head (``head_names``) from ``global_params`` on its data.

    The rest of the model is frozen; float buffers that moved in training mode (batch-norm statistics)
    are put back, so only the head differs from the global model.
    """
    work = copy.deepcopy(module)
    for n, p in work.named_parameters():
        p.requires_grad_(n in head_names)
    trainer = LocalTrainer(work)
    out = []
    for (x, y), seed in zip(data, seeds, strict=True):
        res = client_update(trainer, global_params, x, y, ccfg, seed)
        out.append(with_local(global_params, head_mask, (global_params + res.delta)[head_mask]))
    return out

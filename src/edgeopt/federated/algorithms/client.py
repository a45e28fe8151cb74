"""Client update: local SGD epochs from the global weights, with FedProx and SCAFFOLD terms.

``client_update`` is a pure function of its arguments: the :class:`LocalTrainer` is only the
compute object (one module reused by every client, its weights overwritten on entry), so
the same call gives the same result in the in-process engine and inside a Flower ClientApp.

- FedAvg (McMahan et al. 2017): ``epochs`` passes of minibatch SGD; ``batch_size=0`` means
  full batch, so ``epochs=1, batch_size=0`` is FedSGD (one gradient step per round).
- FedProx (Li et al. 2020): the gradient gets ``mu * (w - w_global)``.
- SCAFFOLD (Karimireddy et al. 2020): each step also moves the weights by ``-lr * (c - c_i)``
  (outside the momentum buffer, as NIID-Bench's implementation does, so with momentum the
  controls and the steps share the momentum-amplified scale); the new client control is
  option II, ``c_i+ = c_i - c + (w_global - w) / (steps * lr)``.

Cost: ``epochs * n_samples`` forward+backward passes of the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from edgeopt.federated.algorithms.params import ParamLayout, get_flat, layout_of, set_flat
from edgeopt.train.tasks import loss_function


@dataclass(frozen=True)
class ClientConfig:
    """Local training settings sent by the server each round."""

    epochs: int = 1
    batch_size: int = 32  # 0: full batch
    lr: float = 0.05
    momentum: float = 0.0
    weight_decay: float = 0.0
    mu: float = 0.0  # FedProx proximal strength; 0 = plain FedAvg
    scaffold: bool = False
    task: str = "classification"  # the loss: edgeopt.train.tasks.loss_function(task)


@dataclass
class ClientResult:
    """What a client sends back: its weight change and how much data produced it."""

    delta: np.ndarray  # float32, new - global
    num_samples: int
    train_loss: float
    steps: int
    control_delta: np.ndarray | None = None  # SCAFFOLD: c_i+ - c_i


class LocalTrainer:
    """One module and its flat-vector layout, shared by every simulated client.

    ``param_mask`` marks the entries of the flat vector that are trainable parameters
    (the rest are float buffers such as batch-norm statistics, which SGD does not touch).
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.layout: ParamLayout = layout_of(module)
        trainable = {n for n, p in module.named_parameters() if p.requires_grad}
        self.param_mask = self.layout.mask(trainable)
        state_names = list(self.layout.names)
        offsets = np.cumsum([0, *self.layout.sizes])
        self._slices = {n: slice(int(offsets[i]), int(offsets[i + 1])) for i, n in enumerate(state_names)}
        self.params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]

    def load(self, flat: np.ndarray) -> None:
        set_flat(self.module, flat, self.layout)

    def read(self) -> np.ndarray:
        return get_flat(self.module, self.layout)

    def slice_of(self, name: str) -> slice:
        return self._slices[name]


def client_update(
    trainer: LocalTrainer,
    global_params: np.ndarray,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: ClientConfig,
    seed: int,
    control: tuple[np.ndarray, np.ndarray] | None = None,
) -> ClientResult:
    """Train from ``global_params`` on (``x``, ``y``) and return the update.

    ``x`` is the client's data in the model's input layout (float), ``y`` its targets
    (:func:`edgeopt.train.tasks.batch_targets`: int64 classes, float targets) and the loss is
    ``cfg.task``'s (cross-entropy, or MSE against the targets or, for an autoencoder, the input);
    ``seed`` fixes the minibatch order; ``control`` is ``(c_global, c_client)`` for SCAFFOLD.
    """
    n = len(y)
    trainer.load(global_params)
    module = trainer.module.train()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    bs = n if cfg.batch_size <= 0 else min(cfg.batch_size, n)
    steps_per_epoch = max(1, math.ceil(n / bs))
    anchors = {name: p.detach().clone() for name, p in trainer.params} if cfg.mu > 0 else {}
    corrections: dict[str, torch.Tensor] = {}
    if cfg.scaffold:
        if control is None:
            raise ValueError("SCAFFOLD needs (c_global, c_client)")
        diff = (control[0] - control[1]).astype(np.float32)
        for name, p in trainer.params:
            corrections[name] = torch.from_numpy(diff[trainer.slice_of(name)].copy()).reshape(p.shape)
    bufs = {name: torch.zeros_like(p) for name, p in trainer.params} if cfg.momentum > 0 else {}
    plist = [p for _, p in trainer.params]
    anchor_list = [anchors[n] for n, _ in trainer.params] if anchors else []
    correction_list = [corrections[n] for n, _ in trainer.params] if corrections else []
    buf_list = [bufs[n] for n, _ in trainer.params] if bufs else []
    loss_fn = loss_function(cfg.task)
    loss_sum = 0.0
    steps = 0
    for _ in range(cfg.epochs):
        order = rng.permutation(n)
        for s in range(steps_per_epoch):
            idx = torch.from_numpy(order[s * bs : (s + 1) * bs])
            xb = x[idx]
            loss = loss_fn(module(xb), y[idx], xb)
            module.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():
                grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in plist]
                if cfg.weight_decay:
                    grads = torch._foreach_add(grads, plist, alpha=cfg.weight_decay)
                if cfg.mu > 0:
                    grads = torch._foreach_add(grads, torch._foreach_sub(plist, anchor_list), alpha=cfg.mu)
                if cfg.momentum > 0:
                    torch._foreach_mul_(buf_list, cfg.momentum)
                    torch._foreach_add_(buf_list, grads)
                    grads = buf_list
                torch._foreach_add_(plist, grads, alpha=-cfg.lr)
                if cfg.scaffold:  # outside the momentum buffer, as NIID-Bench applies it
                    torch._foreach_add_(plist, correction_list, alpha=-cfg.lr)
            loss_sum += float(loss.detach())
            steps += 1
    module.eval()
    new = trainer.read()
    delta = new - global_params
    control_delta = None
    if cfg.scaffold and control is not None:
        c_global, c_client = control
        new_c = c_client - c_global - delta / np.float32(steps * cfg.lr)
        new_c = np.where(trainer.param_mask, new_c, 0.0).astype(np.float32)
        control_delta = new_c - c_client
    return ClientResult(delta.astype(np.float32), n, loss_sum / max(1, steps), steps, control_delta)

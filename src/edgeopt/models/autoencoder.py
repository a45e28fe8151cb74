"""``fc_autoencoder``: the MLPerf Tiny anomaly-detection reference topology (dense, 640 inputs).

640 log-mel features (5 frames x 128 bins) -> four dense layers of 128 (batch norm, ReLU) ->
an 8-unit bottleneck -> four dense layers of 128 -> 640 reconstructed features. Anomalies are
scored by reconstruction error (see :mod:`edgeopt.train.tasks`). 270K parameters, 264K MACs.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from edgeopt.models.registry import register_model


def _dense(a: int, b: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU())


class FCAutoencoder(nn.Module):
    """Dense autoencoder; output has the input's shape (flattened in between)."""

    def __init__(self, input_shape: tuple[int, ...] = (640,), hidden: int = 128, bottleneck: int = 8, depth: int = 4):
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        self.flat = len(self.input_shape) == 1
        n = math.prod(self.input_shape)
        enc = [_dense(n, hidden)] + [_dense(hidden, hidden) for _ in range(depth - 1)] + [_dense(hidden, bottleneck)]
        dec = [_dense(bottleneck, hidden)] + [_dense(hidden, hidden) for _ in range(depth - 1)]
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)
        self.out = nn.Linear(hidden, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.flat:  # flat features: no reshapes in the traced / exported graph
            return self.out(self.decoder(self.encoder(x)))
        y = self.out(self.decoder(self.encoder(torch.flatten(x, 1))))
        return y.view(-1, *self.input_shape)


@register_model(
    "fc_autoencoder", (640,), 640, "dense autoencoder, MLPerf Tiny anomaly detection (640 features)",
    default_task="anomaly", reconstructs=True,
)  # fmt: skip
def fc_autoencoder(
    input_shape: tuple[int, ...] = (640,), num_classes: int = 640, hidden: int = 128, bottleneck: int = 8
) -> FCAutoencoder:
    """``num_classes`` is ignored (the output is the input's size); kept for the zoo's interface."""
    return FCAutoencoder(input_shape, hidden, bottleneck)

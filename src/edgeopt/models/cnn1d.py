"""``cnn1d``: a small 1-D convolutional classifier for sequences (N, C, L).

Three Conv1d(kernel 5) + BatchNorm + ReLU blocks (the 2nd and 3rd with stride 2), global
average pooling and a dense head: sensor windows, MNIST-1D, audio features over time. With
the defaults on MNIST-1D (1 x 40): 32/64/64 channels, 32K parameters, 0.42M MACs.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeopt.models.registry import register_model


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(cin, cout, 5, stride, 2, bias=False), nn.BatchNorm1d(cout), nn.ReLU())


class CNN1D(nn.Module):
    def __init__(
        self, input_shape: tuple[int, int] = (1, 40), num_classes: int = 10, widths: tuple[int, ...] = (32, 64, 64)
    ) -> None:
        super().__init__()
        c = int(input_shape[0])
        blocks, cin = [], c
        for i, w in enumerate(widths):
            blocks.append(_block(cin, w, 1 if i == 0 else 2))
            cin = w
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


@register_model("cnn1d", (1, 40), 10, "1-D conv classifier for sequences (N, C, L), e.g. MNIST-1D")
def cnn1d(input_shape: tuple[int, int] = (1, 40), num_classes: int = 10, widths: tuple[int, ...] = (32, 64, 64)):
    if len(input_shape) != 2:
        from edgeopt.errors import EdgeoptError

        raise EdgeoptError(f"cnn1d takes (C, L) sequences, not input shape {tuple(input_shape)}", "use mnist1d: data")
    return CNN1D(tuple(input_shape), num_classes, tuple(widths))

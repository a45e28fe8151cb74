"""Several outputs from one zoo model: a shared body whose last layer is split into heads.

``MultiHead(module, widths)`` runs any zoo model built with ``sum(widths)`` outputs and returns one
tensor per head (``torch.split`` of the last layer's output). A head's linear layer is its rows of
the last ``nn.Linear``: the same as separate linear heads on the shared features, in one matmul.
The ``zoo`` kind rebuilds it from the record's ``heads`` (``edgeopt.models.rebuild_zoo``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MultiHead(nn.Module):
    """``module``'s output split into heads of ``widths`` along the feature axis: a tuple of tensors."""

    def __init__(self, module: nn.Module, widths: Sequence[int]) -> None:
        super().__init__()
        self.net = module
        self.widths = [int(w) for w in widths]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(torch.split(self.net(x), self.widths, dim=1))

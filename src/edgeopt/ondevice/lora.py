"""Low-rank adapters (LoRA) beside frozen conv and linear layers, and merging them back.

An adapter adds ``up(down(x))`` to a frozen layer's output: ``down`` is a rank-R copy of the layer's
shape (a conv with R output channels and the layer's kernel, stride and padding; or an R-row linear),
``up`` a 1x1 conv / linear from R to the layer's outputs, initialised to zero so that training starts
from the unchanged model. Both are linear in the input, so after training they merge exactly into the
layer's weight (``W + up @ down``) and the adapted model has the original architecture.
"""

from __future__ import annotations

import torch
from torch import nn


class LoraConv2d(nn.Module):
    """A frozen ``nn.Conv2d`` plus a rank-``rank`` adapter (groups=1 convs only)."""

    def __init__(self, base: nn.Conv2d, rank: int) -> None:
        super().__init__()
        self.base = base
        self.lora_down = nn.Conv2d(base.in_channels, rank, base.kernel_size, base.stride, base.padding,  # type: ignore[arg-type]
                                   base.dilation, bias=False)  # fmt: skip
        self.lora_up = nn.Conv2d(rank, base.out_channels, 1, bias=False)
        nn.init.kaiming_uniform_(self.lora_down.weight, a=5**0.5)
        nn.init.zeros_(self.lora_up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.lora_up(self.lora_down(x))

    def merged_weight(self) -> torch.Tensor:
        """``W + up @ down`` as one conv weight (exact: both adapter convs are linear)."""
        up = self.lora_up.weight[:, :, 0, 0]
        return self.base.weight + torch.einsum("or,rikl->oikl", up, self.lora_down.weight)


class LoraLinear(nn.Module):
    """A frozen ``nn.Linear`` plus a rank-``rank`` adapter."""

    def __init__(self, base: nn.Linear, rank: int) -> None:
        super().__init__()
        self.base = base
        self.lora_down = nn.Linear(base.in_features, rank, bias=False)
        self.lora_up = nn.Linear(rank, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_down.weight, a=5**0.5)
        nn.init.zeros_(self.lora_up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.lora_up(self.lora_down(x))

    def merged_weight(self) -> torch.Tensor:
        """``W + up @ down``."""
        return self.base.weight + self.lora_up.weight @ self.lora_down.weight


def add_adapters(module: nn.Module, rank: int, skip: str = "") -> list[str]:
    """Wrap every conv (groups=1) and linear layer of ``module`` (in place) except ``skip`` and its children.

    Returns the names of the new adapter parameters. Cost: R x (inputs x kernel + outputs) parameters per layer.
    """
    targets = [(n, m) for n, m in module.named_modules()
               if isinstance(m, (nn.Linear, nn.Conv2d)) and not (skip and (n == skip or n.startswith(skip + ".")))
               and not (isinstance(m, nn.Conv2d) and m.groups != 1)]  # fmt: skip
    names: list[str] = []
    for name, layer in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        wrapped = LoraConv2d(layer, rank) if isinstance(layer, nn.Conv2d) else LoraLinear(layer, rank)
        setattr(parent, attr, wrapped)
        names += [f"{name}.lora_down.weight", f"{name}.lora_up.weight"]
    return names


def merge_adapters(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter of ``module`` under its name without adapters, with adapters merged into their layer."""
    out: dict[str, torch.Tensor] = {}
    wrappers = {n: m for n, m in module.named_modules() if isinstance(m, (LoraConv2d, LoraLinear))}
    with torch.no_grad():
        for name, p in module.named_parameters():
            owner = next((w for w in wrappers if name.startswith(w + ".")), None)
            if owner is None:
                out[name] = p.detach().clone()
                continue
            rest = name[len(owner) + 1 :]
            if rest == "base.weight":
                out[f"{owner}.weight"] = wrappers[owner].merged_weight().detach().clone()
            elif rest.startswith("base."):
                out[f"{owner}.{rest[5:]}"] = p.detach().clone()
    return out

"""Model weights as one flat float32 vector, the currency every federated algorithm trades in.

``ParamLayout`` records the names, shapes and dtypes of a module's floating-point state
(parameters and float buffers such as batch-norm statistics) so a vector can be written
back into the same module. Integer buffers (``num_batches_tracked``) are not federated.
Cost: one copy of the weights per call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class ParamLayout:
    """Names and shapes of the floating-point tensors of a module's state dict, in order."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(int(np.prod(s)) for s in self.shapes)

    @property
    def total(self) -> int:
        return int(sum(self.sizes))

    def mask(self, names: set[str] | tuple[str, ...]) -> np.ndarray:
        """Boolean mask over the flat vector: True on the entries of the tensors named in ``names``."""
        keep = set(names)
        if not self.names:
            return np.zeros(0, bool)
        return np.concatenate([np.full(s, n in keep, bool) for n, s in zip(self.names, self.sizes, strict=True)])

    def split(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """The flat vector cut back into named arrays (views, no copy)."""
        out: dict[str, np.ndarray] = {}
        start = 0
        for name, shape, size in zip(self.names, self.shapes, self.sizes, strict=True):
            out[name] = flat[start : start + size].reshape(shape)
            start += size
        return out


def layout_of(module: nn.Module) -> ParamLayout:
    """The :class:`ParamLayout` of ``module`` (floating-point state entries only)."""
    items = [(k, tuple(v.shape)) for k, v in module.state_dict().items() if v.is_floating_point()]
    return ParamLayout(tuple(k for k, _ in items), tuple(s for _, s in items))


def get_flat(module: nn.Module, layout: ParamLayout | None = None) -> np.ndarray:
    """The module's floating-point state as one float32 vector (a copy)."""
    layout = layout or layout_of(module)
    state = module.state_dict()
    if not layout.names:
        return np.zeros(0, np.float32)
    return np.concatenate([state[n].detach().reshape(-1).float().cpu().numpy() for n in layout.names]).astype(
        np.float32, copy=False
    )


def set_flat(module: nn.Module, flat: np.ndarray, layout: ParamLayout | None = None) -> None:
    """Write a flat vector into the module's floating-point state, in place (no new tensors)."""
    layout = layout or layout_of(module)
    if flat.shape != (layout.total,):
        raise ValueError(f"flat vector has {flat.shape} entries, the model has {layout.total}")
    state = module.state_dict()
    with torch.no_grad():
        for name, arr in layout.split(np.asarray(flat, np.float32)).items():
            # reshape: np.ascontiguousarray turns a 0-d array (a scalar state, e.g. a quantizer step) into 1-d
            state[name].copy_(torch.from_numpy(np.ascontiguousarray(arr).reshape(arr.shape)))

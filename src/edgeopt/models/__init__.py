"""Model zoo: ``create_model("resnet8", input_shape=(3, 32, 32), num_classes=10)``."""

from __future__ import annotations

from typing import Any

import torch

from edgeopt.model import EdgeModel, InputSpec, ModelMeta
from edgeopt.models import dscnn, lenet5, mlp, mobilenetv2, resnet8, searchable  # noqa: F401  (registration)
from edgeopt.models.registry import create_module, get_entry, list_models, register_model

__all__ = ["create_model", "create_module", "list_models", "register_model"]


def create_model(
    name: str,
    input_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
    seed: int | None = None,
    **kwargs: Any,
) -> EdgeModel:
    """A freshly initialised zoo model. ``input_shape`` is (C, H, W); inputs are NCHW in 0..1.

    With ``seed`` the initial weights depend on it alone (torch's global RNG is left as it was);
    without, they come from the global RNG.
    """
    entry = get_entry(name)
    shape = tuple(int(s) for s in (input_shape or entry.default_input_shape))
    classes = int(num_classes or entry.default_num_classes)
    arch_kwargs = {"input_shape": list(shape), "num_classes": classes, **kwargs}
    if seed is None:
        module = create_module(name, **dict(arch_kwargs))
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = create_module(name, **dict(arch_kwargs))
    meta = ModelMeta(
        input=InputSpec(shape=shape, layout="NCHW", value_range=(0.0, 1.0)),
        num_classes=classes,
        arch={"kind": "zoo", "name": name, "kwargs": arch_kwargs},
        lineage=[{"pass": "create", "source": f"zoo:{name}"}],
    )
    return EdgeModel(module.eval(), meta)

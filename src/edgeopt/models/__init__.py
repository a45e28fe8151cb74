"""Model zoo: ``create_model("resnet8", input_shape=(3, 32, 32), num_classes=10)``."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import torch

from edgeopt.errors import EdgeoptError
from edgeopt.model import (
    EdgeModel,
    InputSpec,
    ModelMeta,
    OutputSpec,
    check_outputs,
    layout_for_rank,
    register_kind,
)
from edgeopt.models import (  # noqa: F401  (registration)
    autoencoder,
    cnn1d,
    dscnn,
    lenet5,
    mlp,
    mobilenetv2,
    resnet8,
    searchable,
)
from edgeopt.models.registry import create_module, get_entry, list_models, register_model

__all__ = ["create_model", "create_module", "list_models", "register_model"]


def rebuild_zoo(arch: dict[str, Any]) -> torch.nn.Module:
    """The ``zoo`` architecture kind: a zoo builder's module, resized layers applied (after pruning)."""
    module = create_module(arch["name"], **arch.get("kwargs", {}))
    if arch.get("layers"):  # resized layers, e.g. after channel pruning
        from edgeopt.models.resize import resize_layers

        resize_layers(module, arch["layers"])
    if arch.get("heads"):  # a multi-output model: the last layer split into heads (models.heads)
        from edgeopt.models.heads import MultiHead

        return MultiHead(module, arch["heads"])
    return module


register_kind("zoo", rebuild_zoo)


def create_model(
    name: str,
    input_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
    seed: int | None = None,
    task: str | None = None,
    outputs: list[OutputSpec] | None = None,
    **kwargs: Any,
) -> EdgeModel:
    """A freshly initialised zoo model for ``task`` (default: the model's own, see the zoo entry).

    ``input_shape`` is (C, H, W) for images (NCHW in 0..1), (C, L) for sequences (NCL), (F,) for
    feature vectors (NC); ``num_classes`` is the classes or regression targets (an autoencoder's
    output is its input's size). With ``seed`` the initial weights depend on it alone (torch's
    global RNG is left as it was); without, they come from the global RNG.

    ``outputs`` (two or more :class:`~edgeopt.model.OutputSpec`) makes a multi-output model: the
    zoo model with ``sum(widths)`` outputs, its last layer split into one head per output
    (:mod:`edgeopt.models.heads`); ``num_classes`` and ``task`` are then taken from ``outputs``.
    """
    entry = get_entry(name)
    shape = tuple(int(s) for s in (input_shape or entry.default_input_shape))
    if outputs is not None:
        outputs = check_outputs([OutputSpec.from_json(asdict(o)) for o in outputs])
        if entry.reconstructs or task not in (None, "multi"):
            raise EdgeoptError(f"zoo:{name} cannot be a multi-output {task or 'anomaly'} model",
                               "drop --task; a multi-output model's task is in its outputs")  # fmt: skip
        task, num_classes = "multi", sum(o.width for o in outputs)
    elif task == "multi":
        raise EdgeoptError(f"a multi-output zoo:{name} needs its outputs", "train it on multi-output data")
    task = task or entry.default_task
    if entry.reconstructs and task != "anomaly":
        raise EdgeoptError(f"zoo:{name} is an autoencoder (task anomaly), not a {task} model", "drop --task")
    if task == "anomaly" and not entry.reconstructs:
        raise EdgeoptError(f"zoo:{name} is not an autoencoder", "use zoo:fc_autoencoder for anomaly detection")
    classes = math.prod(shape) if entry.reconstructs else int(num_classes or entry.default_num_classes)
    arch_kwargs = {"input_shape": list(shape), "num_classes": classes, **kwargs}
    if seed is None:
        module = create_module(name, **dict(arch_kwargs))
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = create_module(name, **dict(arch_kwargs))
    arch: dict[str, Any] = {"kind": "zoo", "name": name, "kwargs": arch_kwargs}
    if outputs is not None:
        from edgeopt.models.heads import MultiHead

        arch["heads"] = [o.width for o in outputs]
        module = MultiHead(module, arch["heads"])
    meta = ModelMeta(
        input=InputSpec(shape=shape, layout=layout_for_rank(len(shape)), value_range=(0.0, 1.0)),
        num_classes=classes,
        arch=arch,
        lineage=[{"pass": "create", "source": f"zoo:{name}"}],
        task=task,
        outputs=outputs,
    )
    return EdgeModel(module.eval(), meta)

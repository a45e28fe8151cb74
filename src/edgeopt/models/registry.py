"""Model registry in the style of timm: ``@register_model`` builders, looked up by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from edgeopt.errors import EdgeoptError


@dataclass(frozen=True)
class ZooEntry:
    name: str
    builder: Callable[..., nn.Module]
    default_input_shape: tuple[int, ...]  # (C, H, W) images, (C, L) sequences, (F,) vectors
    default_num_classes: int
    description: str
    default_task: str = "classification"  # what the model is for unless told otherwise
    reconstructs: bool = False  # an autoencoder: its output has the input's shape (num_classes unused)
    lr_scale: float = 1.0  # multiplies the optimizer's default learning rate when it classifies (``train.fit``)


_REGISTRY: dict[str, ZooEntry] = {}


def register_model(
    name: str,
    default_input_shape: tuple[int, ...],
    default_num_classes: int,
    description: str,
    default_task: str = "classification",
    reconstructs: bool = False,
    lr_scale: float = 1.0,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register ``builder(input_shape=..., num_classes=K, **kwargs) -> nn.Module`` under ``name``.

    ``default_task`` is the task a fresh model is for; ``reconstructs`` marks an autoencoder;
    ``lr_scale`` multiplies the default learning rate when training it as a classifier without
    ``--lr`` (the default suits ResNet-style BN networks; measure before registering another).
    """

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = ZooEntry(
            name, builder, default_input_shape, default_num_classes, description, default_task, reconstructs, lr_scale
        )
        return builder

    return wrap


def lr_scale_of(arch: dict[str, Any]) -> float:
    """The registered ``lr_scale`` of a zoo model's ``arch`` record; 1 for any other kind or an unknown name."""
    entry = _REGISTRY.get(str(arch.get("name"))) if arch.get("kind") == "zoo" else None
    return entry.lr_scale if entry is not None else 1.0


def list_models() -> list[ZooEntry]:
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def get_entry(name: str) -> ZooEntry:
    if name not in _REGISTRY:
        raise EdgeoptError(f"no zoo model named '{name}'", f"choose one of: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def create_module(name: str, **kwargs: Any) -> nn.Module:
    """Build the bare module; ``input_shape`` may come from JSON as a list."""
    if "input_shape" in kwargs:
        kwargs["input_shape"] = tuple(kwargs["input_shape"])
    return get_entry(name).builder(**kwargs)

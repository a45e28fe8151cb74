"""Rebuild a zoo module whose layers were resized (e.g. by channel pruning) from plain data.

A physically pruned model keeps its zoo topology but some Conv2d / Linear / BatchNorm layers
have fewer channels. Its ``arch`` record lists them (``arch["layers"] = {path: sizes}``), so
``build_module`` can rebuild the exact module without pickled code.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from edgeopt.errors import EdgeoptError


def layer_sizes(layer: nn.Module) -> dict[str, Any]:
    """The size fields of a Conv2d / Linear / BatchNorm layer, as JSON data."""
    if isinstance(layer, nn.Conv1d | nn.Conv2d):
        kind = "conv1d" if isinstance(layer, nn.Conv1d) else "conv2d"
        return {"type": kind, "in_channels": layer.in_channels, "out_channels": layer.out_channels,
                "groups": layer.groups}  # fmt: skip
    if isinstance(layer, nn.Linear):
        return {"type": "linear", "in_features": layer.in_features, "out_features": layer.out_features}
    if isinstance(layer, nn.BatchNorm2d | nn.BatchNorm1d):
        return {"type": "batchnorm", "num_features": layer.num_features}
    raise EdgeoptError(f"cannot resize a {type(layer).__name__} layer")


def resized_layer(layer: nn.Module, sizes: dict[str, Any]) -> nn.Module:
    """A fresh layer like ``layer`` (kernel, stride, bias, eps ... kept) with the sizes in ``sizes``.

    ``{"type": "lowrank", "layer": "linear"|"conv2d", "in", "out", "rank"}`` gives the two-layer
    factorisation of a Linear / 1x1 Conv2d (``in -> rank`` without bias, then ``rank -> out``).
    """
    if sizes.get("type") == "lowrank":
        r, cin, cout = int(sizes["rank"]), int(sizes["in"]), int(sizes["out"])
        bias = getattr(layer, "bias", None) is not None
        if sizes["layer"] == "linear":
            return nn.Sequential(nn.Linear(cin, r, bias=False), nn.Linear(r, cout, bias=bias))
        assert isinstance(layer, nn.Conv2d)
        first = nn.Conv2d(cin, r, 1, layer.stride, layer.padding, bias=False)
        return nn.Sequential(first, nn.Conv2d(r, cout, 1, bias=bias))
    if isinstance(layer, nn.Conv1d | nn.Conv2d):
        return type(layer)(
            int(sizes["in_channels"]), int(sizes["out_channels"]), layer.kernel_size, layer.stride, layer.padding,
            layer.dilation, int(sizes["groups"]), layer.bias is not None, layer.padding_mode,
        )  # fmt: skip
    if isinstance(layer, nn.Linear):
        return nn.Linear(int(sizes["in_features"]), int(sizes["out_features"]), layer.bias is not None)
    if isinstance(layer, nn.BatchNorm2d | nn.BatchNorm1d):
        return type(layer)(int(sizes["num_features"]), layer.eps, layer.momentum, layer.affine,
                           layer.track_running_stats)  # fmt: skip
    raise EdgeoptError(f"cannot resize a {type(layer).__name__} layer")


def set_submodule(root: nn.Module, path: str, new: nn.Module) -> None:
    """Replace the submodule at dotted ``path`` (children of ModuleDict / Sequential included)."""
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    parent._modules[name] = new


def resize_layers(module: nn.Module, layers: dict[str, dict[str, Any]]) -> nn.Module:
    """Replace each layer named in ``layers`` by a fresh one of the recorded sizes (in place)."""
    for path, sizes in layers.items():
        try:
            old = module.get_submodule(path)
        except AttributeError as e:
            raise EdgeoptError(f"model metadata names a layer '{path}' the architecture lacks", "re-save it") from e
        set_submodule(module, path, resized_layer(old, sizes))
    return module

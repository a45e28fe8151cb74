"""Small building blocks shared by zoo models, and a layer-output capture the techniques share."""

from __future__ import annotations

import math
from typing import Any

from torch import nn


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow 'SAME' (= ONNX SAME_UPPER) padding (before, after) for one spatial dimension.

    PyTorch's ``padding='same'`` refuses strides > 1, and TF puts the odd pixel after, so this
    is spelled out: the MLPerf Tiny (Keras) zoo topologies and the TFLite/ONNX importers use it.
    """
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: type[nn.Module] | None = nn.ReLU):
    """Conv (no bias, BN follows) + BatchNorm + optional activation, symmetric padding."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


def he_init(module: nn.Module) -> None:
    """He (Kaiming) normal init of every conv and linear weight, zero biases, in place.

    For ReLU networks without batch norm: it keeps the activations' scale from layer to layer,
    where PyTorch's default (uniform, variance 1/(3 fan_in)) shrinks it at every layer.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def capture_layers(module: nn.Module, paths: list[str], x: Any, what: str = "out") -> dict[str, Any]:
    """The input (``what="in"``) or output of each submodule in ``paths`` on ``x``, from one forward pass
    without gradients (forward hooks, removed afterwards). Used by pruning's reconstruction and by
    quantization's statistics alignment."""
    import torch

    box: dict[str, Any] = {}
    hooks = []
    for path in paths:

        def hook(_m: nn.Module, inp: tuple[Any, ...], out: Any, path: str = path) -> None:
            box[path] = inp[0] if what == "in" else out

        hooks.append(module.get_submodule(path).register_forward_hook(hook))
    try:
        with torch.no_grad():
            module(x)
    finally:
        for h in hooks:
            h.remove()
    return box

"""Varied architectures to calibrate a latency predictor on: ResNet, inverted residual, DS-CNN, MLP.

``sample_arch(rng)`` draws one architecture as plain data (a JSON-able dict: family, input shape,
per-stage widths, depths, kernels, strides, expansions); ``build_arch(spec)`` turns it into an
``nn.Module``. Widths include values that are not multiples of 8 or 16, because the runtimes'
SIMD packing makes those cost differently and pruned models have them. Pure (numpy RNG in, data
out); building is microseconds.

These are the zoo families (``models/``) with their knobs opened up; they exist to be measured,
not trained.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

FAMILIES = ("resnet", "mbv2", "dscnn", "mlp")
WIDTHS = (8, 12, 16, 20, 24, 32, 40, 48, 56, 64, 80, 96, 128)
SIZES = (16, 24, 32, 40, 48, 64)


def _pick(rng: np.random.Generator, values: tuple) -> Any:
    return values[int(rng.integers(len(values)))]


def sample_arch(rng: np.random.Generator, family: str | None = None) -> dict[str, Any]:
    """One random architecture of ``family`` (or a random family) as a JSON-able dict."""
    family = family or _pick(rng, FAMILIES)
    c = _pick(rng, (1, 3))
    size = _pick(rng, SIZES)
    spec: dict[str, Any] = {"family": family, "input_shape": [c, size, size], "num_classes": 10}
    stages = int(rng.integers(2, 5))
    if family == "resnet":
        spec["stem"] = _pick(rng, WIDTHS[:8])
        spec["widths"] = sorted(_pick(rng, WIDTHS) for _ in range(stages))
        spec["depths"] = [int(rng.integers(1, 3)) for _ in range(stages)]
        spec["kernels"] = [_pick(rng, (3, 3, 5, 7)) for _ in range(stages)]
        spec["strides"] = [_pick(rng, (1, 2))] + [2] * (stages - 1)
    elif family == "mbv2":
        spec["stem"] = _pick(rng, WIDTHS[:8])
        spec["stem_stride"] = _pick(rng, (1, 2))
        spec["widths"] = sorted(_pick(rng, WIDTHS) for _ in range(stages))
        spec["depths"] = [int(rng.integers(1, 3)) for _ in range(stages)]
        spec["kernels"] = [_pick(rng, (3, 5, 7)) for _ in range(stages)]
        spec["expand"] = [_pick(rng, (1, 3, 4, 6)) for _ in range(stages)]
        spec["se"] = [bool(rng.random() < 0.3) for _ in range(stages)]
        spec["strides"] = [_pick(rng, (1, 2))] + [2] * (stages - 1)
    elif family == "dscnn":
        spec["stem"] = _pick(rng, WIDTHS[2:])
        spec["stem_kernel"] = _pick(rng, (3, 5))
        spec["widths"] = [_pick(rng, WIDTHS[2:])] * int(rng.integers(2, 6))
        spec["strides"] = [_pick(rng, (1, 1, 2)) for _ in spec["widths"]]
    elif family == "mlp":
        spec["input_shape"] = [c, _pick(rng, SIZES[:4]), _pick(rng, SIZES[:4])]
        spec["widths"] = [_pick(rng, (32, 64, 100, 128, 200, 256, 384, 512)) for _ in range(int(rng.integers(1, 5)))]
    else:
        raise ValueError(f"unknown family {family}")
    # what imported (TFLite/Keras) graphs look like: NHWC input permuted to NCHW, explicit "SAME"
    # padding before strided convs, a softmax at the end
    spec["nhwc"] = bool(rng.random() < 0.25)
    spec["softmax"] = bool(rng.random() < 0.25)
    spec["explicit_pad"] = family == "resnet" and bool(rng.random() < 0.3)
    return spec


class _ExplicitPad(nn.Module):
    """TensorFlow's "SAME" padding of a strided conv as its own op (what imported graphs carry)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        lo = (k - 1) // 2
        self.pad = (lo, k - 1 - lo, lo, k - 1 - lo)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.pad(x, self.pad)


class _Permute(nn.Module):
    def __init__(self, *dims: int) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)


def _cbr(
    cin: int, cout: int, k: int, stride: int, groups: int = 1, act: type[nn.Module] | None = nn.ReLU, pad: bool = False
) -> nn.Module:
    explicit = pad and stride > 1 and k > 1
    conv = nn.Conv2d(cin, cout, k, stride, 0 if explicit else k // 2, groups=groups, bias=False)
    layers: list[nn.Module] = [*([_ExplicitPad(k)] if explicit else []), conv, nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class _Residual(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int, pad: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(_cbr(cin, cout, k, stride, pad=pad), _cbr(cout, cout, k, 1, act=None))
        self.shortcut = _cbr(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class _SqueezeExcite(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        mid = max(8, c // 4)
        self.fc = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, mid, 1), nn.ReLU(), nn.Conv2d(mid, c, 1), nn.Hardsigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x)


class _InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int, se: bool) -> None:
        super().__init__()
        mid = cin * expand
        layers: list[nn.Module] = [] if expand == 1 else [_cbr(cin, mid, 1, 1, act=nn.ReLU6)]
        layers.append(_cbr(mid, mid, k, stride, groups=mid, act=nn.ReLU6))
        if se:
            layers.append(_SqueezeExcite(mid))
        layers.append(_cbr(mid, cout, 1, 1, act=None))
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class _Head(nn.Module):
    def __init__(self, c: int, num_classes: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x), 1))


def build_arch(spec: dict[str, Any]) -> nn.Module:
    """The module that ``spec`` (from ``sample_arch``) describes, randomly initialised, in eval mode."""
    c, h, w = spec["input_shape"]
    k = int(spec.get("num_classes", 10))
    family = spec["family"]
    layers: list[nn.Module] = []
    if family == "resnet":
        cin = spec["stem"]
        layers.append(_cbr(c, cin, 3, 1))
        for width, depth, kern, stride in zip(
            spec["widths"], spec["depths"], spec["kernels"], spec["strides"], strict=True
        ):
            for i in range(depth):
                layers.append(_Residual(cin, width, kern, stride if i == 0 else 1, spec.get("explicit_pad", False)))
                cin = width
        layers.append(_Head(cin, k))
    elif family == "mbv2":
        cin = spec["stem"]
        layers.append(_cbr(c, cin, 3, spec["stem_stride"], act=nn.ReLU6))
        blocks = zip(spec["widths"], spec["depths"], spec["kernels"], spec["strides"], spec["expand"], spec["se"],
                     strict=True)  # fmt: skip
        for width, depth, kern, stride, expand, se in blocks:
            for i in range(depth):
                layers.append(_InvertedResidual(cin, width, kern, stride if i == 0 else 1, expand, se))
                cin = width
        layers.append(_Head(cin, k))
    elif family == "dscnn":
        cin = spec["stem"]
        layers.append(_cbr(c, cin, spec["stem_kernel"], 2))
        for width, stride in zip(spec["widths"], spec["strides"], strict=True):
            layers += [_cbr(cin, cin, 3, stride, groups=cin), _cbr(cin, width, 1, 1)]
            cin = width
        layers.append(_Head(cin, k))
    elif family == "mlp":
        layers.append(nn.Flatten())
        cin = c * h * w
        for width in spec["widths"]:
            layers += [nn.Linear(cin, width), nn.ReLU()]
            cin = width
        layers.append(nn.Linear(cin, k))
    else:
        raise ValueError(f"unknown family {family}")
    if spec.get("nhwc"):
        layers.insert(0, _Permute(0, 3, 1, 2))
    if spec.get("softmax"):
        layers.append(nn.Softmax(dim=-1))
    module = nn.Sequential(*layers)
    _randomise_bn(module)
    return module.eval()


def _randomise_bn(module: nn.Module) -> None:
    """Non-trivial batch-norm statistics, so exporters cannot fold them to identities."""
    g = torch.Generator().manual_seed(0)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def arch_model(spec: dict[str, Any], name: str = "calib") -> Any:
    """``spec`` as an ``EdgeModel`` (inputs 0..1, in the spec's layout) that the exporters take."""
    from edgeopt.model import EdgeModel, InputSpec, ModelMeta

    c, h, w = spec["input_shape"]
    shape, layout = ((h, w, c), "NHWC") if spec.get("nhwc") else ((c, h, w), "NCHW")
    meta = ModelMeta(InputSpec(shape, layout), int(spec.get("num_classes", 10)), {"name": name})
    return EdgeModel(build_arch(spec), meta)

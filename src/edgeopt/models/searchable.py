"""Searchable zoo families: networks described entirely by plain data (widths, depths, kernels).

``nas_resnet``, ``nas_mobilenet`` and ``nas_dscnn`` are zoo models whose builder takes the
architecture as JSON-able keyword arguments, so an architecture that ``edgeopt.nas`` samples is an
ordinary zoo record (``{"kind": "zoo", "name": "nas_resnet", "kwargs": {...}}``): it saves as
``.edgeopt`` without pickles, reloads through the zoo registry and exports like any zoo model.

Per family (lists have one entry per stage; ``strides`` defaults to 1 for the first stage and 2
for the others):

* ``nas_resnet``: ``stem``, ``widths``, ``depths``, ``kernels`` — basic residual blocks (two k x k
  convs with batch norm, a 1x1 projection shortcut where the shape changes).
* ``nas_mobilenet``: ``stem``, ``widths``, ``depths``, ``kernels``, ``expand``, ``se`` — inverted
  residuals (1x1 expansion, k x k depthwise, optional squeeze-excite, 1x1 projection).
* ``nas_dscnn``: ``stem``, ``stem_kernel`` (``[kh, kw]``), ``widths`` and ``strides`` per block —
  depthwise-separable blocks, for spectrograms (``input_shape`` (C, H, W): Conv2d) and 1-D
  sequences (``input_shape`` (C, L), N x C x L inputs: the same network with Conv1d, its stem
  kernel ``kh`` long, the time extent of a time x frequency ``kh x kw`` kernel).

Module names are fixed (``stem``, ``stages.S.B``, ``head``) so that a weight-sharing supernet can
hand its slices to the standalone network (``edgeopt.nas.supernet``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from edgeopt.errors import EdgeoptError
from edgeopt.models.layers import conv_bn
from edgeopt.models.registry import register_model


def default_strides(stages: int) -> list[int]:
    return [1] + [2] * (stages - 1)


def _check(name: str, **lists: Sequence) -> int:
    sizes = {k: len(v) for k, v in lists.items()}
    if len(set(sizes.values())) != 1 or 0 in sizes.values():
        detail = ", ".join(f"{k}={n}" for k, n in sizes.items())
        raise EdgeoptError(f"{name}: per-stage lists must be non-empty and of equal length ({detail})")
    return next(iter(sizes.values()))


class ResidualBlock(nn.Module):
    """Two k x k conv + BN, ReLU between and after the residual sum."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv_bn(cin, cout, kernel, stride)
        self.conv2 = conv_bn(cout, cout, kernel, act=None)
        self.shortcut = conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        mid = max(8, channels // 4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, mid, 1)
        self.relu = nn.ReLU()
        self.expand = nn.Conv2d(mid, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.relu(self.reduce(self.pool(x)))))


class InvertedResidualBlock(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, se: bool) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = conv_bn(cin, mid, 1, act=nn.ReLU6) if expand != 1 else nn.Identity()
        self.depthwise = conv_bn(mid, mid, kernel, stride, groups=mid, act=nn.ReLU6)
        self.se = SqueezeExcite(mid) if se else nn.Identity()
        self.project = conv_bn(mid, cout, 1, act=None)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.depthwise(self.expand(x))))
        return x + y if self.residual else y


def conv_bn_1d(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv1d (no bias) + BatchNorm1d + ReLU, symmetric padding: ``conv_bn`` for (N, C, L) sequences."""
    return nn.Sequential(
        nn.Conv1d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm1d(cout), nn.ReLU()
    )


class SeparableBlock(nn.Module):
    """3-wide depthwise conv (stride ``stride``) then 1x1 pointwise conv, each with BN and ReLU; ``dims`` 2
    (images, spectrograms) or 1 (sequences)."""

    def __init__(self, cin: int, cout: int, stride: int, dims: int = 2) -> None:
        super().__init__()
        make = conv_bn if dims == 2 else conv_bn_1d
        self.depthwise = make(cin, cin, 3, stride, groups=cin)
        self.pointwise = make(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class Head(nn.Module):
    """Global average pooling (over H x W, or over L when ``dims`` is 1) and a linear classifier."""

    def __init__(self, channels: int, num_classes: int, dims: int = 2) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1) if dims == 2 else nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x), 1))


class StagedNet(nn.Module):
    """stem -> stages (each a Sequential of blocks) -> head."""

    def __init__(self, stem: nn.Module, stages: list[list[nn.Module]], head: nn.Module) -> None:
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleList(nn.Sequential(*blocks) for blocks in stages)
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(x)


@register_model("nas_resnet", (3, 32, 32), 10, "searchable ResNet: blocks, width and kernel per stage (edgeopt.nas)")
def nas_resnet(
    input_shape: tuple[int, int, int] = (3, 32, 32),
    num_classes: int = 10,
    stem: int = 16,
    widths: Sequence[int] = (16, 32, 64),
    depths: Sequence[int] = (1, 1, 1),
    kernels: Sequence[int] = (3, 3, 3),
    strides: Sequence[int] | None = None,
) -> nn.Module:
    n = _check("nas_resnet", widths=widths, depths=depths, kernels=kernels)
    strides = list(strides or default_strides(n))
    cin, stages = stem, []
    for w, d, k, s in zip(widths, depths, kernels, strides, strict=True):
        stages.append([ResidualBlock(cin if i == 0 else w, w, k, s if i == 0 else 1) for i in range(d)])
        cin = w
    return StagedNet(conv_bn(input_shape[0], stem, 3), stages, Head(cin, num_classes))


@register_model("nas_mobilenet", (3, 32, 32), 10, "searchable inverted residuals: expansion, kernel, SE (edgeopt.nas)")
def nas_mobilenet(
    input_shape: tuple[int, int, int] = (3, 32, 32),
    num_classes: int = 10,
    stem: int = 16,
    widths: Sequence[int] = (16, 24, 32),
    depths: Sequence[int] = (1, 2, 2),
    kernels: Sequence[int] = (3, 3, 3),
    expand: Sequence[int] = (1, 6, 6),
    se: Sequence[bool] = (False, False, False),
    strides: Sequence[int] | None = None,
) -> nn.Module:
    n = _check("nas_mobilenet", widths=widths, depths=depths, kernels=kernels, expand=expand, se=se)
    strides = list(strides or default_strides(n))
    cin, stages = stem, []
    for w, d, k, e, q, s in zip(widths, depths, kernels, expand, se, strides, strict=True):
        stages.append(
            [InvertedResidualBlock(cin if i == 0 else w, w, k, s if i == 0 else 1, int(e), bool(q)) for i in range(d)]
        )
        cin = w
    return StagedNet(conv_bn(input_shape[0], stem, 3, act=nn.ReLU6), stages, Head(cin, num_classes))


@register_model("nas_dscnn", (1, 49, 10), 12, "searchable DS-CNN for spectrograms and 1-D inputs (edgeopt.nas)")
def nas_dscnn(
    input_shape: tuple[int, ...] = (1, 49, 10),
    num_classes: int = 12,
    stem: int = 64,
    stem_kernel: Sequence[int] = (3, 3),
    widths: Sequence[int] = (64, 64, 64, 64),
    strides: Sequence[int] | None = None,
) -> nn.Module:
    """(C, H, W) input: a Conv2d network; (C, L) input (N x C x L sequences): the same with Conv1d."""
    n = _check("nas_dscnn", widths=widths)
    strides = list(strides or [1] * n)
    _check("nas_dscnn", widths=widths, strides=strides)
    if len(input_shape) not in (2, 3):
        raise EdgeoptError(
            f"nas_dscnn takes (C, H, W) spectrograms/images or (C, L) sequences, not input shape {tuple(input_shape)}",
            "search on image, spectrogram or 1-D data",
        )
    dims = len(input_shape) - 1
    kh, kw = (int(k) for k in stem_kernel)
    if dims == 1:  # a sequence is time only: the stem spans the kernel's time extent (kh)
        stem_conv: nn.Module = nn.Sequential(
            nn.Conv1d(input_shape[0], stem, kh, 1, kh // 2, bias=False), nn.BatchNorm1d(stem), nn.ReLU()
        )
    else:
        # odd kernels keep symmetric padding; height-1 (1-D) inputs take a 1 x k stem
        kh = 1 if input_shape[1] == 1 else kh
        stem_conv = nn.Sequential(
            nn.Conv2d(input_shape[0], stem, (kh, kw), 1, (kh // 2, kw // 2), bias=False),
            nn.BatchNorm2d(stem),
            nn.ReLU(),
        )
    cin, blocks = stem, []
    for w, s in zip(widths, strides, strict=True):
        blocks.append(SeparableBlock(cin, w, int(s), dims))
        cin = w
    return StagedNet(stem_conv, [blocks], Head(cin, num_classes, dims))

"""MobileNetV2 (Sandler et al. 2018) with a width multiplier and a small-input variant.

For inputs of 64 pixels or less the stem and the first downsampling stage keep stride 1
(the usual CIFAR adaptation), so a 32x32 image still ends at 4x4 rather than 1x1.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeopt.models.layers import conv_bn
from edgeopt.models.registry import register_model

# expansion t, channels c, repeats n, stride s
_CONFIG = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def _make_divisible(v: float, divisor: int = 8) -> int:
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = [] if expand == 1 else [conv_bn(cin, hidden, 1, act=nn.ReLU6)]
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6), conv_bn(hidden, cout, 1, act=None)]
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.use_residual else self.block(x)


class MobileNetV2(nn.Module):
    def __init__(
        self, input_shape: tuple[int, int, int] = (3, 32, 32), num_classes: int = 10, width_mult: float = 1.0
    ) -> None:
        super().__init__()
        c, h, w = input_shape
        small = min(h, w) <= 64
        cin = _make_divisible(32 * width_mult)
        layers: list[nn.Module] = [conv_bn(c, cin, 3, 1 if small else 2, act=nn.ReLU6)]
        for i, (t, ch, n, s) in enumerate(_CONFIG):
            cout = _make_divisible(ch * width_mult)
            stride = 1 if small and i == 1 else s
            for j in range(n):
                layers.append(InvertedResidual(cin, cout, stride if j == 0 else 1, t))
                cin = cout
        self.last_channels = _make_divisible(1280 * max(1.0, width_mult))
        layers.append(conv_bn(cin, self.last_channels, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.last_channels, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@register_model("mobilenetv2", (3, 32, 32), 10, "MobileNetV2 with width multiplier (small-input variant <=64px)")
def mobilenetv2(
    input_shape: tuple[int, int, int] = (3, 32, 32), num_classes: int = 10, width_mult: float = 1.0
) -> nn.Module:
    return MobileNetV2(input_shape, num_classes, width_mult)

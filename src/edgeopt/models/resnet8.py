"""ResNet-8, the MLPerf Tiny image-classification reference topology.

Three residual stacks (16, 32, 64 filters), 1x1 strided convs on the downsampling
shortcuts, average pooling and one dense layer: 78.7K stored values (Keras count,
BN statistics included) and 12.5M MACs at 32x32x3.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeopt.models.registry import register_model


class ResidualStack(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(self.shortcut(x) + y)


class ResNet8(nn.Module):
    def __init__(self, input_shape: tuple[int, int, int] = (3, 32, 32), num_classes: int = 10, width: int = 16):
        super().__init__()
        c = input_shape[0]
        self.stem = nn.Sequential(nn.Conv2d(c, width, 3, 1, 1), nn.BatchNorm2d(width), nn.ReLU())
        self.stack1 = ResidualStack(width, width, 1)
        self.stack2 = ResidualStack(width, 2 * width, 2)
        self.stack3 = ResidualStack(2 * width, 4 * width, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stack3(self.stack2(self.stack1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


@register_model("resnet8", (3, 32, 32), 10, "MLPerf Tiny image classification ResNet-8 (78.7K params, 12.5M MACs)")
def resnet8(input_shape: tuple[int, int, int] = (3, 32, 32), num_classes: int = 10, width: int = 16) -> nn.Module:
    return ResNet8(input_shape, num_classes, width)

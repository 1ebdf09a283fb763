"""MobileNet-V1 (Howard et al., 2017): conv1 + 13 depthwise-separable blocks + classifier.

ImageNet layout: 224 px, conv1 stride 2, stride-2 depthwise convs in blocks 2, 4, 6 and 12.
The ``_cifar`` variant keeps the same layers but uses conv1 stride 1, for 28-32 px images.
"""

from __future__ import annotations

import torch
from torch import nn

from amc_mobile.models.layers import ConvBNAct, init_weights
from amc_mobile.models.registry import register_model

# (output channels of the pointwise conv, stride of the depthwise conv) for the 13 blocks.
V1_BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise conv + BN + ReLU, then 1x1 pointwise conv + BN + ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.dw = ConvBNAct(in_ch, in_ch, 3, stride, groups=in_ch, relu6=False)
        self.pw = ConvBNAct(in_ch, out_ch, 1, 1, relu6=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class MobileNetV1(nn.Module):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0,
                 first_stride: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        c0 = int(32 * width_mult)
        self.conv1 = ConvBNAct(in_chans, c0, 3, first_stride, relu6=False)
        blocks = []
        in_ch = c0
        for out, stride in V1_BLOCKS:
            out_ch = int(out * width_mult)
            blocks.append(DepthwiseSeparable(in_ch, out_ch, stride))
            in_ch = out_ch
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(in_ch, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(self.conv1(x)))
        return self.classifier(self.dropout(torch.flatten(x, 1)))


@register_model("mobilenet_v1", "MobileNet-V1, ImageNet layout (224 px, conv1 stride 2)")
def mobilenet_v1(num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0) -> nn.Module:
    return MobileNetV1(num_classes, in_chans, width_mult, first_stride=2)


@register_model("mobilenet_v1_cifar", "MobileNet-V1 for 28-32 px images (conv1 stride 1)",
                default_input_size=32, default_num_classes=10)
def mobilenet_v1_cifar(num_classes: int = 10, in_chans: int = 3, width_mult: float = 1.0) -> nn.Module:
    return MobileNetV1(num_classes, in_chans, width_mult, first_stride=1)

"""MobileNet-V2 (Sandler et al., 2018) with torchvision-compatible state_dict keys.

Module names follow ``torchvision.models.mobilenet_v2`` (``features.N.conv...``,
``classifier.1``) so a torchvision checkpoint loads with ``load_state_dict``. The ``_cifar``
variant uses stride 1 in the stem (the first stride), for 28-32 px images.
"""

from __future__ import annotations

import torch
from torch import nn

from amc_mobile.models.layers import ConvBNAct, init_weights, make_divisible
from amc_mobile.models.registry import register_model

# (expansion t, output channels c, repeats n, first stride s), as in the paper's Table 2.
V2_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)


class InvertedResidual(nn.Module):
    """1x1 expand (omitted when t == 1) -> 3x3 depthwise -> 1x1 linear projection (+ residual)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(in_ch * expand_ratio))
        self.use_res_connect = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(in_ch, hidden, 1))
        layers += [
            ConvBNAct(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, out_ch, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0,
                 stem_stride: int = 2, first_stage_stride: int = 2, dropout: float = 0.2) -> None:
        super().__init__()
        in_ch = make_divisible(32 * width_mult)
        self.last_channel = make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [ConvBNAct(in_chans, in_ch, 3, stem_stride)]
        for i, (t, c, n, s) in enumerate(V2_SETTINGS):
            out_ch = make_divisible(c * width_mult)
            stride = first_stage_stride if i == 1 else s
            for j in range(n):
                features.append(InvertedResidual(in_ch, out_ch, stride if j == 0 else 1, t))
                in_ch = out_ch
        features.append(ConvBNAct(in_ch, self.last_channel, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.last_channel, num_classes))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, 1)
        return self.classifier(torch.flatten(x, 1))


@register_model("mobilenet_v2", "MobileNet-V2, ImageNet layout (224 px), torchvision keys")
def mobilenet_v2(num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0) -> nn.Module:
    return MobileNetV2(num_classes, in_chans, width_mult)


@register_model("mobilenet_v2_cifar", "MobileNet-V2 for 28-32 px images (stem stride 1)",
                default_input_size=32, default_num_classes=10)
def mobilenet_v2_cifar(num_classes: int = 10, in_chans: int = 3, width_mult: float = 1.0) -> nn.Module:
    return MobileNetV2(num_classes, in_chans, width_mult, stem_stride=1)

"""VGG-11 with batch norm (Simonyan & Zisserman, 2015; configuration "A"), the VGG of DDC's tables.

``vgg11``: ImageNet layout (224 px, five 2x2 max-pools, 7x7 average pool, 4096-4096 classifier).
``vgg11_cifar``: the CIFAR layout DDC compresses (32 px, first conv stride 1), for 28-32 px images:
four max-pools, then a global average pool and one linear classifier (a fifth 2x2 pool would need
32 px; 28-px Fashion-MNIST would shrink to 0x0). Every conv is a ``ConvBNAct`` element of
``features`` so a whole layer (conv + BN + ReLU) is one module that block removal can drop.
"""

from __future__ import annotations

import torch
from torch import nn

from amc_mobile.models.layers import ConvBNAct, init_weights
from amc_mobile.models.registry import register_model

# Configuration "A": output channels of each 3x3 conv, "M" = 2x2 max-pool.
VGG11_CFG: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG(nn.Module):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0,
                 cifar: bool = False, dropout: float = 0.5) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = in_chans
        cfg = VGG11_CFG[:-1] if cifar else VGG11_CFG  # CIFAR: the last pool is the global average
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                out_ch = max(1, int(int(v) * width_mult))
                layers.append(ConvBNAct(in_ch, out_ch, 3, 1, relu6=False))
                in_ch = out_ch
        self.features = nn.Sequential(*layers)
        if cifar:
            self.avgpool: nn.Module = nn.AdaptiveAvgPool2d(1)
            self.classifier: nn.Module = nn.Linear(in_ch, num_classes)
        else:
            hidden = max(1, int(4096 * width_mult))
            self.avgpool = nn.AdaptiveAvgPool2d(7)
            self.classifier = nn.Sequential(
                nn.Linear(in_ch * 49, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                nn.Linear(hidden, num_classes),
            )
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


@register_model("vgg11", "VGG-11 (BN), ImageNet layout (224 px, 4096-4096 classifier)")
def vgg11(num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0) -> nn.Module:
    return VGG(num_classes, in_chans, width_mult, cifar=False)


@register_model("vgg11_cifar", "VGG-11 (BN) for 28-32 px images (DDC's CIFAR layout; global pool + linear)",
                default_input_size=32, default_num_classes=10)
def vgg11_cifar(num_classes: int = 10, in_chans: int = 3, width_mult: float = 1.0) -> nn.Module:
    return VGG(num_classes, in_chans, width_mult, cifar=True)

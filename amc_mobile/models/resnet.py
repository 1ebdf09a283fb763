"""ResNet-18 (He et al., 2016) with torchvision-compatible state_dict keys.

``resnet18``: ImageNet layout (224 px, 7x7 stride-2 stem + 3x3 max-pool); module names follow
``torchvision.models.resnet18`` (``conv1``, ``layerN.M.conv1``, ``downsample``, ``fc``) so a torchvision
checkpoint loads with ``load_state_dict``. ``resnet18_cifar``: the CIFAR layout DDC compresses
(3x3 stride-1 stem, no max-pool), for 28-32 px images. A basic block with an identity shortcut
(stride 1, equal in/out channels, no ``downsample``) is a removable unit for DDC.
"""

from __future__ import annotations

import torch
from torch import nn

from amc_mobile.models.layers import init_weights
from amc_mobile.models.registry import register_model

STAGES: tuple[tuple[int, int], ...] = ((64, 1), (128, 2), (256, 2), (512, 2))  # (channels, first stride)
BLOCKS_PER_STAGE = (2, 2, 2, 2)


class BasicBlock(nn.Module):
    """3x3 conv-BN-ReLU, 3x3 conv-BN, plus the shortcut (identity, or 1x1 conv-BN when shapes change)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0,
                 cifar: bool = False) -> None:
        super().__init__()
        c0 = max(1, int(64 * width_mult))
        if cifar:
            self.conv1 = nn.Conv2d(in_chans, c0, 3, 1, 1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_chans, c0, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(c0)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool: nn.Module = nn.Identity() if cifar else nn.MaxPool2d(3, 2, 1)
        in_ch = c0
        for i, ((ch, stride), n) in enumerate(zip(STAGES, BLOCKS_PER_STAGE, strict=True)):
            out_ch = max(1, int(ch * width_mult))
            blocks = [BasicBlock(in_ch if j == 0 else out_ch, out_ch, stride if j == 0 else 1) for j in range(n)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            in_ch = out_ch
        self.layer1: nn.Sequential
        self.layer2: nn.Sequential
        self.layer3: nn.Sequential
        self.layer4: nn.Sequential
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        init_weights(self, linear=False)  # torchvision's ResNet keeps nn.Linear's default init
        for m in self.modules():  # zero-init the last BN of each block: blocks start as identities
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


@register_model("resnet18", "ResNet-18, ImageNet layout (224 px, 7x7 stem + max-pool), torchvision keys")
def resnet18(num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0) -> nn.Module:
    return ResNet(num_classes, in_chans, width_mult, cifar=False)


@register_model("resnet18_cifar", "ResNet-18 for 28-32 px images (DDC's CIFAR layout: 3x3 stride-1 stem, no max-pool)",
                default_input_size=32, default_num_classes=10)
def resnet18_cifar(num_classes: int = 10, in_chans: int = 3, width_mult: float = 1.0) -> nn.Module:
    return ResNet(num_classes, in_chans, width_mult, cifar=True)

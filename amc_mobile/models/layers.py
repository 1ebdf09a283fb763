"""Building blocks and initialisation shared by the registered models."""

from __future__ import annotations

from torch import nn


def init_weights(model: nn.Module, linear: bool = True) -> None:
    """The torchvision initialisation every registered model starts from: Kaiming-normal (fan-out)
    convolutions, BatchNorm scale 1 / shift 0, classifier N(0, 0.01) with zero bias (``linear=False``
    keeps nn.Linear's default, as torchvision's ResNet does)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear:
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor`` (never dropping more than 10%)."""
    min_value = divisor if min_value is None else min_value
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) + BatchNorm2d (+ ReLU6 unless ``act=False``).

    Children are named ``0``, ``1``, ``2`` so that state_dict keys match torchvision's
    ``Conv2dNormActivation``.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                 act: bool = True, relu6: bool = True) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        if act:
            layers.append(nn.ReLU6(inplace=True) if relu6 else nn.ReLU(inplace=True))
        super().__init__(*layers)

"""Prunable units: the layers a latency table measures together, derived from a ModelDescription.

A unit is zero or more depthwise convs followed by one conv or linear layer (the depthwise conv is a
"buffer" whose width follows the conv after it, AMC notes): MobileNet-V1 gives conv1, 13 (dw3x3 + pw)
blocks and (pool + classifier); MobileNet-V2 gives the stem, each expansion 1x1, each (dw3x3 + linear
projection [+ residual add]), the last 1x1 and (pool + classifier). A unit is keyed by its *slot*
(kind, kernel, stride, input size, residual) and its (input, output) channel counts, so the same table
predicts any description whose channels were changed, without a forward pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from amc_mobile.models.bn import calibrate_bn
from amc_mobile.models.describe import LayerSpec, ModelDescription


@dataclass(frozen=True)
class Unit:
    """One measured unit of a model at its current widths."""

    name: str  # name of its last layer (stable across pruning)
    slot: str  # table key without channels, e.g. "dw+conv|k3|s2|112x112"
    kind: str  # "conv" | "dw+conv" | "dw+conv+res" | "pool+linear"
    kernel: int  # of the first layer
    stride: int
    input_hw: tuple[int, int]
    cin: int
    cout: int
    cin_fixed: bool  # image channels: never pruned
    cout_fixed: bool  # classes: never pruned
    layers: tuple[str, ...]


def residual_layers(model: nn.Module) -> list[str]:
    """Names of the last conv of every block whose output is added to its input (``use_res_connect``)."""
    names = {m: n for n, m in model.named_modules()}
    out = []
    for m in model.modules():
        if getattr(m, "use_res_connect", False):
            convs = [c for c in m.modules() if isinstance(c, nn.Conv2d)]
            if convs:
                out.append(names[convs[-1]])
    return out


def slot_key(kind: str, kernel: int, stride: int, hw: tuple[int, int]) -> str:
    return f"{kind}|k{kernel}|s{stride}|{hw[0]}x{hw[1]}"


def units_of(desc: ModelDescription | Sequence[LayerSpec], residual: Iterable[str] = ()) -> list[Unit]:
    """Split a description into units (see module docstring). ``residual``: see :func:`residual_layers`."""
    layers = list(desc.layers if isinstance(desc, ModelDescription) else desc)
    res = set(residual)
    units: list[Unit] = []
    pending: list[LayerSpec] = []
    prev_out_hw: tuple[int, int] | None = None
    for i, spec in enumerate(layers):
        if spec.type == "dwconv":
            pending.append(spec)
            prev_out_hw = spec.output_hw
            continue
        first = pending[0] if pending else spec
        if spec.type == "linear":
            hw = prev_out_hw or (1, 1)
            kind, kernel, stride = "pool+linear", 1, 1
        else:
            hw = first.input_hw
            kind = "dw+conv" if pending else "conv"
            if spec.name in res:
                kind += "+res"
            kernel, stride = first.kernel, max(s.stride for s in [*pending, spec])
        units.append(Unit(spec.name, slot_key(kind, kernel, stride, hw), kind, kernel, stride, hw,
                          first.in_channels, spec.out_channels, cin_fixed=(i - len(pending) == 0),
                          cout_fixed=(i == len(layers) - 1), layers=tuple(s.name for s in [*pending, spec])))
        pending = []
        prev_out_hw = spec.output_hw
    return units


class _Unit(nn.Module):
    def __init__(self, body: nn.Module, skip: torch.Tensor | None, pool: bool) -> None:
        super().__init__()
        self.body = body
        self.pool = pool
        if skip is not None:
            self.register_buffer("skip", skip)
        else:
            self.skip = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool:
            x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        y = self.body(x)
        return y + self.skip if self.skip is not None else y


def build_unit(slot: str, cin: int, cout: int, batch_size: int = 1, seed: int = 0) -> tuple[nn.Module, tuple[int, ...]]:
    """A standalone torch module for one unit of ``slot`` at (``cin``, ``cout``) and its input shape.

    Conv + BN + ReLU as in the models (BN folds into the conv at export); a residual unit adds a
    constant tensor of the output's shape (same memory traffic as the skip connection).
    """
    kind, k, s, hw = slot.split("|")
    kernel, stride = int(k[1:]), int(s[1:])
    h, w = (int(v) for v in hw.split("x"))
    g = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    if kind == "pool+linear":
        body: nn.Module = nn.Linear(cin, cout)
        skip = None
    else:
        if kind.startswith("dw"):
            layers += [nn.Conv2d(cin, cin, kernel, stride, kernel // 2, groups=cin, bias=False),
                       nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
                       nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        else:
            layers += [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout)]
        layers.append(nn.ReLU(inplace=True))
        body = nn.Sequential(*layers)
        oh, ow = (h + 2 * (kernel // 2) - kernel) // stride + 1, (w + 2 * (kernel // 2) - kernel) // stride + 1
        skip = torch.randn(1, cout, oh, ow, generator=g) if kind.endswith("+res") else None
    with torch.no_grad():
        for p in body.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    unit = _Unit(body, skip, kind == "pool+linear")
    calibrate_bn(unit, (2, cin, h, w), seed)
    return unit.eval(), (batch_size, cin, h, w)


class _ChannelsLast(nn.Module):
    """A unit fed (and, when its output is 4-D, read) in NHWC: see :func:`channels_last_unit`."""

    def __init__(self, unit: nn.Module) -> None:
        super().__init__()
        self.unit = unit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.unit(x.permute(0, 3, 1, 2))
        return y.permute(0, 2, 3, 1) if y.dim() == 4 else y


def channels_last_unit(unit: nn.Module, shape: tuple[int, ...]) -> tuple[nn.Module, tuple[int, ...]]:
    """``unit`` with NHWC input and output, and its NHWC input shape.

    For runtimes whose kernels run in NHWC (LiteRT/XNNPACK): a converter keeps a torch model's NCHW
    interface by adding a transpose at each end, which a unit inside a whole model never pays. Measured
    on LiteRT with XNNPACK (AMD EPYC, AVX2), the two transposes were 5-50% of an isolated unit's time
    (1.20 vs 0.80 ms for a 32->64 dw+conv unit at 112x112), varying with the channel counts, so an
    NCHW-interfaced table mis-predicts whole models by more than a whole-model fit can undo. The
    permutes here cancel the converter's transposes."""
    n, c, h, w = shape
    return _ChannelsLast(unit).eval(), (n, h, w, c)


REFERENCE_ID = "mini-mobilenet-v1"


def _body(unit: nn.Module) -> nn.Module:
    body = unit.body
    assert isinstance(body, nn.Module)
    return body


def reference_workload(batch_size: int = 1) -> tuple[nn.Module, tuple[int, ...]]:
    """The fixed reference workload measured between entries: a mini MobileNet (dw3x3 + pw blocks
    32->64 at 56x56, 128->128 at 28x28, 256->256 at 14x14; ~33M MACs, ~2.5 MB of activations and
    weights), so it feels cache/memory-bandwidth contention as well as compute speed."""
    torch.manual_seed(12345)
    net = nn.Sequential(
        _body(build_unit("dw+conv|k3|s1|56x56", 32, 64, seed=1)[0]),
        nn.Conv2d(64, 128, 1), nn.ReLU(),
        nn.MaxPool2d(2),
        _body(build_unit("dw+conv|k3|s1|28x28", 128, 128, seed=2)[0]),
        nn.Conv2d(128, 256, 1), nn.ReLU(),
        nn.MaxPool2d(2),
        _body(build_unit("dw+conv|k3|s1|14x14", 256, 256, seed=3)[0]),
    )
    shape = (batch_size, 32, 56, 56)
    calibrate_bn(net, (2, *shape[1:]), seed=4)
    return net.eval(), shape


def null_workload(batch_size: int = 1) -> tuple[nn.Module, tuple[int, ...]]:
    """A near-empty model (one ReLU on 8 values): its latency is the per-invocation overhead."""
    return nn.Sequential(nn.ReLU()).eval(), (batch_size, 8)

"""A model describes itself as data: the ordered conv/linear layers with their shapes.

The description is taken from a real forward pass (hooks), so it follows the graph rather than
hard-coded indices. Pruning groups, MACs counting and latency tables all read it.

Counting convention (one, everywhere): ``macs`` = multiply-accumulates of Conv2d and Linear layers
only (no BN, activations, pooling or additions); ``params`` = every parameter of the model
(conv/linear weights and biases and BN affine parameters).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class LayerSpec:
    """One Conv2d or Linear layer as it runs at the model's input resolution."""

    name: str  # module path, e.g. "features.3.pw.0"
    type: str  # "conv" | "dwconv" | "linear"
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    groups: int
    input_hw: tuple[int, int]
    output_hw: tuple[int, int]
    macs: int
    params: int  # weights + bias of this layer

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ModelDescription:
    input_size: int
    in_chans: int
    layers: list[LayerSpec] = field(default_factory=list)
    params: int = 0

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    def layer(self, name: str) -> LayerSpec:
        for spec in self.layers:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_size": self.input_size,
            "in_chans": self.in_chans,
            "macs": self.macs,
            "params": self.params,
            "layers": [spec.to_dict() for spec in self.layers],
        }


def _first_in_chans(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
        if isinstance(m, nn.Linear):
            return m.in_features
    raise ValueError("model has no Conv2d or Linear layer")


ForwardHook = Callable[[nn.Module, tuple[Any, ...], Any], None]


def forward_with_hooks(model: nn.Module, hooks: Iterable[tuple[nn.Module, ForwardHook]], in_chans: int,
                       size: int) -> None:
    """One no-grad eval-mode pass of a zero ``size`` x ``size`` image with forward ``hooks`` attached
    (how the model describes itself); hooks are removed and the train/eval mode restored after."""
    handles = [m.register_forward_hook(h) for m, h in hooks]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, in_chans, size, size))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)


def describe_model(model: nn.Module, input_size: int | None = None) -> ModelDescription:
    """Run one dummy image through ``model`` and record every Conv2d/Linear in execution order."""
    size = int(input_size if input_size is not None else getattr(model, "input_size", 224))
    in_chans = _first_in_chans(model)
    specs: list[LayerSpec] = []
    names = {m: n for n, m in model.named_modules()}

    def hook(mod: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        x = inputs[0]
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0]
            groups = mod.groups
            kind = "dwconv" if groups > 1 and groups == mod.in_channels == mod.out_channels else "conv"
            oh, ow = int(out.shape[2]), int(out.shape[3])
            macs = oh * ow * mod.out_channels * (mod.in_channels // groups) * k * mod.kernel_size[1]
            specs.append(LayerSpec(
                names[mod], kind, mod.in_channels, mod.out_channels, k, mod.stride[0], groups,
                (int(x.shape[2]), int(x.shape[3])), (oh, ow), macs,
                sum(p.numel() for p in mod.parameters(recurse=False)),
            ))
        elif isinstance(mod, nn.Linear):
            specs.append(LayerSpec(
                names[mod], "linear", mod.in_features, mod.out_features, 1, 1, 1, (1, 1), (1, 1),
                mod.in_features * mod.out_features,
                sum(p.numel() for p in mod.parameters(recurse=False)),
            ))

    forward_with_hooks(model, [(m, hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))],
                       in_chans, size)
    params = sum(p.numel() for p in model.parameters())
    return ModelDescription(size, in_chans, specs, params)


def count_macs_params(model: nn.Module, input_size: int | None = None) -> tuple[int, int]:
    """(MACs of conv+linear layers, all parameters) at ``input_size``; see the module docstring."""
    desc = describe_model(model, input_size)
    return desc.macs, desc.params

"""Removable units of a network, found from its graph (DDC, Pahwa et al., papers/004, sec. 3.2).

DDC decides, layer by layer, whether the teacher keeps or loses each layer/block. Which ones may go
is derived here from a forward pass, never from the model's name:

* the **trunk** is the chain the network runs: the root's children and, recursively, the children of
  plain ``nn.Sequential`` containers (``features``, ``layer1`` ...); a trunk element that is a module
  of its own class (a MobileNet block, a ResNet basic block, a conv + BN + ReLU) is one element;
* an **element** is a trunk element holding at least one Conv2d/Linear (BN, activations and pools
  alone are skipped); each carries DDC's eq. 1 features;
* an element is **removable** when it runs once and its output has exactly the shape of its input:
  replacing it by ``nn.Identity`` leaves a valid network (checked by running it with all removable
  elements dropped at once). This yields MobileNet-V2 inverted residuals with an identity shortcut,
  MobileNet-V1 depthwise-separable blocks with stride 1 and equal in/out channels, VGG convs with
  equal in/out channels and ResNet basic blocks with an identity shortcut. (DDC also drops VGG convs
  that change the width by adapting the next layer's input; that variant is not implemented here.)

Removing units (:func:`remove_units`) replaces them by ``nn.Identity``: the model is physically
smaller, records the removed names in its :class:`~amc_mobile.models.arch.ArchSpec` (``removed``), so
``load_checkpoint`` rebuilds it, and exports to ONNX/TFLite like any other model.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from amc_mobile.errors import UserError

N_UNIT_FEATURES = 8  # eq. 1 (t, k, s, p, n, s_start, s_end) + "removable"


@dataclass(frozen=True)
class TrunkElement:
    """One element of the network's chain, with what DDC's state (eq. 1) needs."""

    name: str  # module path, e.g. "features.5" or "layer2.1"
    index: int  # position in the trunk (execution order)
    kind: str  # the module's class name
    in_channels: int
    out_channels: int
    kernel: int  # largest kernel of its convs
    stride: int  # product of its convs' strides on the main path (1 for removable units)
    padding: int  # largest padding of its convs
    input_hw: tuple[int, int]
    output_hw: tuple[int, int]
    skip: bool  # an addition joins the element's input to its output (a residual shortcut)
    removable: bool
    layers: tuple[str, ...]  # Conv2d/Linear module paths inside, in execution order
    macs: int
    params: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def features(self, n_elements: int, max_channels: int) -> list[float]:
        """DDC eq. 1, normalised to [0, 1]: (t, k, s, p, n, s_start, s_end) + removable flag."""
        t = self.index / max(1, n_elements - 1)
        return [t, self.kernel / 7.0, self.stride / 2.0, self.padding / 3.0, self.out_channels / max(1, max_channels),
                float(self.skip), float(self.skip), float(self.removable)]


def _trunk_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    out: list[tuple[str, nn.Module]] = []

    def walk(prefix: str, mod: nn.Module) -> None:
        for child_name, child in mod.named_children():
            name = f"{prefix}.{child_name}" if prefix else child_name
            if type(child) is nn.Sequential:
                walk(name, child)
            else:
                out.append((name, child))

    walk("", model)
    return out


def _has_shortcut(mod: nn.Module) -> bool:
    """True when tracing the module shows an addition (a residual shortcut, identity or projection)."""
    import torch.fx

    try:
        gm = torch.fx.symbolic_trace(mod)
    except Exception:  # noqa: BLE001 - untraceable custom code: treat as a plain element
        return False
    adds = {operator.add, operator.iadd, torch.add}
    return any((n.op == "call_function" and n.target in adds)
               or (n.op == "call_method" and n.target in ("add", "add_")) for n in gm.graph.nodes)


def trunk_elements(model: nn.Module, input_size: int | None = None) -> list[TrunkElement]:
    """The trunk of ``model`` with shapes from one dummy forward pass (see the module docstring)."""
    from amc_mobile.models.describe import describe_model, forward_with_hooks

    size = int(input_size if input_size is not None else getattr(model, "input_size", 224))
    desc = describe_model(model, size)
    by_name = {spec.name: spec for spec in desc.layers}
    trunk = _trunk_modules(model)
    calls: dict[str, list[tuple[tuple[int, ...], tuple[int, ...]]]] = {name: [] for name, _ in trunk}

    def make_hook(name: str):  # noqa: ANN202
        def hook(mod: nn.Module, inputs: tuple[Any, ...], out: Any) -> None:
            x = inputs[0] if inputs else None
            if isinstance(x, torch.Tensor) and isinstance(out, torch.Tensor):
                calls[name].append((tuple(x.shape), tuple(out.shape)))
            else:
                calls[name].append(((), ()))
        return hook

    forward_with_hooks(model, [(m, make_hook(n)) for n, m in trunk], desc.in_chans, size)
    elements: list[TrunkElement] = []
    for name, mod in trunk:
        layers = tuple(spec.name for spec in desc.layers if spec.name == name or spec.name.startswith(name + "."))
        if not layers or not calls[name]:
            continue
        specs = [by_name[n] for n in layers]
        in_shape, out_shape = calls[name][0]
        convs = [m for m in mod.modules() if isinstance(m, nn.Conv2d)]
        padding = max([int(c.padding[0]) if isinstance(c.padding, tuple) else 0 for c in convs] or [0])
        removable = (len(calls[name]) == 1 and len(in_shape) == 4 and in_shape == out_shape)
        hw_in = (int(in_shape[2]), int(in_shape[3])) if len(in_shape) == 4 else (1, 1)
        hw_out = (int(out_shape[2]), int(out_shape[3])) if len(out_shape) == 4 else (1, 1)
        stride = max(1, hw_in[0] // max(1, hw_out[0])) if len(out_shape) == 4 else 1
        elements.append(TrunkElement(
            name=name, index=len(elements), kind=type(mod).__name__, in_channels=specs[0].in_channels,
            out_channels=specs[-1].out_channels, kernel=max(s.kernel for s in specs), stride=stride,
            padding=padding, input_hw=hw_in, output_hw=hw_out, skip=_has_shortcut(mod), removable=removable,
            layers=layers, macs=sum(s.macs for s in specs),
            params=sum(p.numel() for p in mod.parameters()),
        ))
    names = [e.name for e in elements if e.removable]
    if names and not _still_valid(model, names, size, desc.in_chans):
        raise UserError(f"dropping the shape-preserving units {', '.join(names)} breaks the network; "
                        "block removal does not support this model")
    return elements


def _still_valid(model: nn.Module, names: Sequence[str], size: int, in_chans: int) -> bool:
    """Run a copy of ``model`` with ``names`` replaced by identities: same output shape?"""
    probe = copy.deepcopy(model).eval()
    apply_removal(probe, names)
    with torch.no_grad():
        x = torch.zeros(1, in_chans, size, size)
        return tuple(probe(x).shape) == tuple(model.eval()(x).shape)


def removable_units(model: nn.Module, input_size: int | None = None) -> list[TrunkElement]:
    """The trunk elements that can be dropped (see the module docstring)."""
    return [e for e in trunk_elements(model, input_size) if e.removable]


def apply_removal(model: nn.Module, names: Iterable[str]) -> nn.Module:
    """Replace the modules ``names`` of ``model`` by ``nn.Identity`` in place; unknown names: one line."""
    from amc_mobile.models.checkpoint import replace_module

    modules = dict(model.named_modules())
    for name in names:
        if name not in modules or name == "":
            raise UserError(f"cannot remove unit '{name}': the model has no such module")
        replace_module(model, name, nn.Identity())
    return model


def remove_units(model: nn.Module, names: Iterable[str]) -> nn.Module:
    """A physically smaller copy of ``model`` without the units ``names`` (recorded in its ArchSpec's
    ``removed``, so checkpoints of it reload). Names must be removable units of ``model``."""
    from amc_mobile.models.arch import get_arch, set_arch

    names = list(dict.fromkeys(names))
    valid = {e.name for e in removable_units(model)} if names else set()
    bad = [n for n in names if n not in valid]
    if bad:
        raise UserError(f"not removable: {', '.join(bad)}; removable units: {', '.join(sorted(valid)) or 'none'}")
    out = copy.deepcopy(model)
    apply_removal(out, names)
    spec = get_arch(model)
    if spec is not None:
        set_arch(out, spec.replace(removed=tuple(sorted({*spec.removed, *names}, key=_module_order(model)))))
    return out


def _module_order(model: nn.Module):  # noqa: ANN202
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    return lambda n: order.get(n, len(order))

"""Model registry: ``@register_model`` + ``create_model(name, **kw)`` (the timm pattern)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from amc_mobile.errors import unknown_name
from amc_mobile.models.arch import ArchSpec, set_arch


@dataclass(frozen=True)
class ModelEntry:
    name: str
    factory: Callable[..., nn.Module]
    description: str
    default_input_size: int
    default_num_classes: int
    default_in_chans: int


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    description: str,
    default_input_size: int = 224,
    default_num_classes: int = 1000,
    default_in_chans: int = 3,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = ModelEntry(
            name, fn, description, default_input_size, default_num_classes, default_in_chans
        )
        return fn

    return deco


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise unknown_name("model", name, _REGISTRY)
    return _REGISTRY[name]


def create_model(
    name: str,
    num_classes: int | None = None,
    in_chans: int | None = None,
    width_mult: float = 1.0,
    input_size: int | None = None,
) -> nn.Module:
    """Build a registered model. Its :class:`ArchSpec` is attached (``model.arch_spec``, and
    ``model.input_size``) so that checkpoints, self-description and export know what it is."""
    entry = get_entry(name)
    spec = ArchSpec(  # validates first: a zero width or class count is one line, not a torch error
        name=name,
        num_classes=entry.default_num_classes if num_classes is None else int(num_classes),
        in_chans=entry.default_in_chans if in_chans is None else int(in_chans),
        width_mult=float(width_mult),
        input_size=entry.default_input_size if input_size is None else int(input_size),
    )
    model = entry.factory(num_classes=spec.num_classes, in_chans=spec.in_chans, width_mult=spec.width_mult)
    set_arch(model, spec)
    return model

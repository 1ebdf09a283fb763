"""Model registry: ``@register_model`` + ``create_model(name, **kw)`` (the timm pattern)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from amc_mobile.errors import unknown_name


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
    """Build a registered model. ``input_size`` is recorded on the model (``model.input_size``)
    so that self-description and export know the resolution it is meant for."""
    entry = get_entry(name)
    model = entry.factory(
        num_classes=entry.default_num_classes if num_classes is None else num_classes,
        in_chans=entry.default_in_chans if in_chans is None else in_chans,
        width_mult=width_mult,
    )
    size = entry.default_input_size if input_size is None else int(input_size)
    set_arch_kwargs(model, {
        "name": name,
        "num_classes": entry.default_num_classes if num_classes is None else int(num_classes),
        "in_chans": entry.default_in_chans if in_chans is None else int(in_chans),
        "width_mult": float(width_mult),
        "input_size": size,
    })
    return model


def set_arch_kwargs(model: nn.Module, kwargs: dict[str, Any]) -> None:
    """Record the constructor arguments (and ``input_size``) on the model, for checkpoints."""
    object.__setattr__(model, "arch_kwargs", dict(kwargs))
    object.__setattr__(model, "input_size", int(kwargs["input_size"]))


def arch_kwargs(model: nn.Module) -> dict[str, Any] | None:
    """The constructor arguments recorded by :func:`create_model` (None for foreign models)."""
    value = getattr(model, "arch_kwargs", None)
    return value if isinstance(value, dict) else None

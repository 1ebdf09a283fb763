"""The typed architecture record a model carries: registry name, constructor arguments, resolution.

:func:`create_model` attaches an :class:`ArchSpec` to every model it builds (``model.arch_spec``,
plus ``model.input_size``); checkpoints store it as a JSON dict (``ArchSpec.to_dict`` plus the
layer shapes), so pruned models, latency tables and exports know what they were made from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from amc_mobile.errors import UserError
from amc_mobile.records import reject_unknown

if TYPE_CHECKING:  # torch is not imported at runtime: CLI modules import this for --help
    from torch import nn

ATTR = "arch_spec"
# keys a checkpoint's "arch" dict may hold besides the fields (the layer shapes of a pruned model)
_EXTRA_KEYS = ("shapes",)


@dataclass(frozen=True)
class ArchSpec:
    """What :func:`amc_mobile.models.create_model` needs to rebuild a model (before resizing layers).

    ``removed`` names units a block-removal variant dropped (empty for channel pruning, which only
    changes layer widths; those are stored as shapes next to the record in checkpoints).
    """

    name: str
    num_classes: int
    in_chans: int
    width_mult: float = 1.0
    input_size: int = 224
    removed: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for key in ("num_classes", "in_chans", "input_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"architecture record: {key} must be a positive integer, got {value!r}")
        if not isinstance(self.width_mult, int | float) or isinstance(self.width_mult, bool) or self.width_mult <= 0:
            raise UserError(f"architecture record: width_mult must be a positive number, got {self.width_mult!r}")
        object.__setattr__(self, "width_mult", float(self.width_mult))
        object.__setattr__(self, "removed", tuple(str(r) for r in self.removed))

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """(1, channels, height, width) of one input image."""
        return (1, self.in_chans, self.input_size, self.input_size)

    def replace(self, **changes: Any) -> ArchSpec:
        """A copy with some fields changed (e.g. ``num_classes`` after cutting the classifier)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (the checkpoint format); ``removed`` only when non-empty, as old readers expect."""
        out: dict[str, Any] = {"name": self.name, "num_classes": self.num_classes, "in_chans": self.in_chans,
                               "width_mult": self.width_mult, "input_size": self.input_size}
        if self.removed:
            out["removed"] = list(self.removed)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "architecture record") -> ArchSpec:
        """Read a checkpoint's ``arch`` dict (layer ``shapes`` are ignored here); bad data is one line."""
        if not isinstance(data, Mapping):
            raise UserError(f"{where}: expected a mapping, got {type(data).__name__}")
        reject_unknown(data, cls, where, allowed=_EXTRA_KEYS)
        missing = [k for k in ("name", "num_classes", "in_chans") if k not in data]
        if missing:
            raise UserError(f"{where}: missing {', '.join(missing)}")
        fields = {k: v for k, v in data.items() if k not in _EXTRA_KEYS}
        if "removed" in fields:
            fields["removed"] = tuple(fields["removed"] or ())
        try:
            return cls(**fields)
        except TypeError as exc:
            raise UserError(f"{where}: {exc}") from None


def set_arch(model: nn.Module, spec: ArchSpec) -> None:
    """Attach ``spec`` to ``model`` (``model.arch_spec``, ``model.input_size``), bypassing nn.Module."""
    object.__setattr__(model, ATTR, spec)
    object.__setattr__(model, "input_size", spec.input_size)


def get_arch(model: nn.Module) -> ArchSpec | None:
    """The record :func:`create_model` attached, or None for a model built elsewhere."""
    value = getattr(model, ATTR, None)
    return value if isinstance(value, ArchSpec) else None


def require_arch(model: nn.Module) -> ArchSpec:
    """The attached record; a foreign model is one line (it cannot be saved, profiled or exported by name)."""
    spec = get_arch(model)
    if spec is None:
        raise UserError(f"model {type(model).__name__} was not created by amc_mobile.models.create_model "
                        "(it carries no architecture record)")
    return spec

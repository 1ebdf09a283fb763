"""Pruning policies: one keep-count per prunable group, saved as versioned JSON.

``keep_ratio`` = fraction of a group's channels kept (the one ratio convention of the project).
A ratio becomes a channel count as in AMC: ``max(1, round(c * ratio))`` rounded *up* to a multiple
of ``multiple`` (default 8), never above the full width ``c`` and never below ``min(multiple, c)``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amc_mobile.errors import UserError
from amc_mobile.pruning.groups import ChannelGroup
from amc_mobile.records import reject_unknown
from amc_mobile.storage import atomic_write_json

SCHEMA_VERSION = 1
DEFAULT_MULTIPLE = 8


def _int_value(value: Any, key: str, source: str, minimum: int = 1, group: str | None = None) -> int:
    """An integer >= ``minimum`` from JSON (``8`` or ``8.0``); NaN, text, booleans are one line."""
    where = f"group '{group}': {key}" if group else f"'{key}'"
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or int(value) != value):
        raise UserError(f"{source}: {where} must be an integer, got {value!r}")
    if value < minimum:
        raise UserError(f"{source}: {where} must be >= {minimum}, got {value!r}")
    return int(value)


def _int_list(data: dict[str, Any], key: str, source: str, names: list[str]) -> list[int]:
    values = data[key]
    if not isinstance(values, list):
        raise UserError(f"{source}: '{key}' must be a list of integers, got {type(values).__name__}")
    return [_int_value(v, key, source, group=names[i] if i < len(names) else None) for i, v in enumerate(values)]


def round_channels(full_width: int, keep_ratio: float, multiple: int = DEFAULT_MULTIPLE) -> int:
    """Channels kept for ``keep_ratio`` in (0, 1] of ``full_width`` (see the module docstring)."""
    if not 0.0 < keep_ratio <= 1.0:
        raise UserError(f"keep ratio {keep_ratio} is outside (0, 1]")
    if multiple < 1:
        raise UserError(f"channel multiple must be >= 1, got {multiple}")
    kept = max(1, round(full_width * keep_ratio))
    kept = math.ceil(kept / multiple) * multiple
    return max(min(kept, full_width), min(multiple, full_width))


@dataclass
class PruningPolicy:
    """Kept output width of every prunable group, in ``find_groups`` order.

    Saved as JSON: ``schema_version``, ``model``, ``input_size``, ``group_names``, ``full_widths``,
    ``keep_channels``, ``keep_ratios`` (= kept / full, informative), ``multiple``.
    """

    model: str
    input_size: int
    group_names: list[str]
    full_widths: list[int]
    keep_channels: list[int]
    multiple: int = DEFAULT_MULTIPLE
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes (source, search reward, ...)

    @property
    def keep_ratios(self) -> list[float]:
        return [k / w for k, w in zip(self.keep_channels, self.full_widths, strict=True)]

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "model": self.model, "input_size": self.input_size,
                "group_names": list(self.group_names), "full_widths": list(self.full_widths),
                "keep_channels": list(self.keep_channels),
                "keep_ratios": [round(r, 6) for r in self.keep_ratios], "multiple": self.multiple,
                "extra": self.extra}

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "policy") -> PruningPolicy:
        if not isinstance(data, dict):
            raise UserError(f"{source}: not a pruning policy (expected a JSON object)")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise UserError(f"{source}: policy schema_version {version!r}; this amc-mobile reads {SCHEMA_VERSION}")
        reject_unknown(data, cls, source, allowed=("schema_version", "keep_ratios"), what="policy key")
        missing = [k for k in ("model", "group_names", "full_widths") if k not in data]
        if missing:
            raise UserError(f"{source}: policy lacks {', '.join(missing)}")
        if not isinstance(data["model"], str) or not data["model"]:
            raise UserError(f"{source}: 'model' must be a model name, got {data['model']!r}")
        names = data["group_names"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise UserError(f"{source}: 'group_names' must be a list of strings")
        widths = _int_list(data, "full_widths", source, names)
        if len(names) != len(widths):
            raise UserError(f"{source}: {len(names)} group names but {len(widths)} full widths")
        multiple = _int_value(data.get("multiple", DEFAULT_MULTIPLE), "multiple", source)
        input_size = _int_value(data.get("input_size", 0), "input_size", source, minimum=0)
        extra = data.get("extra", {})
        if not isinstance(extra, dict):
            raise UserError(f"{source}: 'extra' must be a JSON object, got {type(extra).__name__}")
        if "keep_channels" in data:
            keep = _int_list(data, "keep_channels", source, names)
            if len(keep) != len(names):
                raise UserError(f"{source}: {len(keep)} keep counts for {len(names)} groups")
            for name, w, k in zip(names, widths, keep, strict=True):
                if k > w:
                    raise UserError(f"{source}: group '{name}': {k} channels is above its full width {w}")
        elif "keep_ratios" in data:
            ratios = data["keep_ratios"]
            if not isinstance(ratios, list):
                raise UserError(f"{source}: 'keep_ratios' must be a list of numbers")
            if len(ratios) != len(names):
                raise UserError(f"{source}: {len(ratios)} keep ratios for {len(names)} groups")
            keep = []
            for name, w, r in zip(names, widths, ratios, strict=True):
                if (isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r)
                        or not 0.0 < float(r) <= 1.0):
                    raise UserError(f"{source}: group '{name}': keep ratio {r!r} is outside (0, 1]")
                keep.append(round_channels(w, float(r), multiple))
        else:
            raise UserError(f"{source}: policy has neither keep_channels nor keep_ratios")
        if len(keep) != len(names):
            raise UserError(f"{source}: {len(keep)} keep counts for {len(names)} groups")
        return cls(str(data["model"]), input_size, list(names), widths, keep, multiple, dict(extra))

    @classmethod
    def load(cls, path: str | Path) -> PruningPolicy:
        path = Path(path)
        if not path.exists():
            raise UserError(f"policy file not found: {path}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
        return cls.from_dict(data, str(path))

    def validate(self, groups: Sequence[ChannelGroup], model: str | None = None) -> None:
        """Check the policy fits ``groups`` (and ``model``); ``UserError`` names the offending group."""
        if model is not None and self.model != model:
            raise UserError(f"policy is for model '{self.model}', not '{model}'")
        if len(self.group_names) != len(groups):
            raise UserError(f"policy has {len(self.group_names)} groups; model '{model or self.model}' "
                            f"has {len(groups)}")
        for g, name, width in zip(groups, self.group_names, self.full_widths, strict=True):
            if g.name != name:
                raise UserError(f"policy group '{name}' does not match the model's group '{g.name}' "
                                "(policy for another model or width?)")
            if g.width != width:
                raise UserError(f"group '{name}': policy full width {width} but the model has {g.width}")
        check_keep_channels(groups, self.keep_channels)


def check_keep_channels(groups: Sequence[ChannelGroup], keep_channels: Sequence[int]) -> list[int]:
    """Validate one kept width per group (1 <= kept <= full width); ``UserError`` names the group."""
    keep = list(keep_channels)
    if not groups:
        raise UserError("the model has no prunable channel groups")
    if len(keep) != len(groups):
        raise UserError(f"got {len(keep)} channel counts for {len(groups)} prunable groups "
                        f"('{groups[0].name}' ... '{groups[-1].name}'; see 'amc-mobile info --groups')")
    for g, k in zip(groups, keep, strict=True):
        if int(k) != k:
            raise UserError(f"group '{g.name}': channel count {k} is not an integer")
        if k > g.width:
            raise UserError(f"group '{g.name}': {k} channels is above its full width {g.width}")
        if k < 1:
            raise UserError(f"group '{g.name}': channel count must be >= 1, got {k}")
    return [int(k) for k in keep]


def policy_from_channels(groups: Sequence[ChannelGroup], keep_channels: Sequence[int], model: str,
                         input_size: int, multiple: int = DEFAULT_MULTIPLE, **extra: Any) -> PruningPolicy:
    """A policy from explicit kept widths (validated, not rounded)."""
    keep = check_keep_channels(groups, keep_channels)
    return PruningPolicy(model, int(input_size), [g.name for g in groups], [g.width for g in groups], keep,
                         multiple, dict(extra))


def policy_from_ratios(groups: Sequence[ChannelGroup], keep_ratios: Sequence[float], model: str,
                       input_size: int, multiple: int = DEFAULT_MULTIPLE, **extra: Any) -> PruningPolicy:
    """A policy from one keep ratio per group, each rounded with :func:`round_channels`."""
    ratios = list(keep_ratios)
    if len(ratios) != len(groups):
        raise UserError(f"got {len(ratios)} keep ratios for {len(groups)} prunable groups")
    keep = []
    for g, r in zip(groups, ratios, strict=True):
        if not 0.0 < r <= 1.0:
            raise UserError(f"group '{g.name}': keep ratio {r} is outside (0, 1]")
        keep.append(round_channels(g.width, r, multiple))
    return PruningPolicy(model, int(input_size), [g.name for g in groups], [g.width for g in groups], keep,
                         multiple, dict(extra))


def uniform_policy(groups: Sequence[ChannelGroup], keep_ratio: float, model: str = "",
                   input_size: int = 0, multiple: int = DEFAULT_MULTIPLE) -> PruningPolicy:
    """The same ``keep_ratio`` for every group (rounded per group)."""
    if not 0.0 < keep_ratio <= 1.0:
        raise UserError(f"keep ratio {keep_ratio} is outside (0, 1]")
    return policy_from_ratios(groups, [keep_ratio] * len(groups), model, input_size, multiple,
                              source=f"uniform {keep_ratio}")

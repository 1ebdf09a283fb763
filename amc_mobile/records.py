"""Helpers shared by the typed records read from YAML/JSON (profiles, farm files, checkpoints)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import fields, is_dataclass
from typing import Any

from amc_mobile.errors import UserError


def reject_unknown(data: Mapping[str, Any], cls: type, where: str, skip: Iterable[str] = (),
                   allowed: Iterable[str] = (), what: str = "key") -> None:
    """One line naming the keys of ``data`` that are not fields of dataclass ``cls``, and the valid ones.

    ``skip`` removes fields the file may not set (e.g. ``path``); ``allowed`` adds keys that are
    valid in the file but not fields (e.g. a checkpoint's layer ``shapes``); ``what`` names the keys
    in the message ("unknown {what}(s) in {where}: ...").
    """
    if not is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    names = ({f.name for f in fields(cls)} - set(skip)) | set(allowed)
    unknown = sorted(str(k) for k in set(data) - names)
    if unknown:
        raise UserError(f"unknown {what}(s) in {where}: {', '.join(unknown)}; "
                        f"valid keys: {', '.join(sorted(names)) or 'none'}")

"""Config dataclasses as the single source of CLI options: default, help text and flag live on the field.

A library config declares its fields with :func:`opt`; a CLI command gets one typer option per field
from :func:`cli_parameters` (flag ``--field-name``, the field's help, its default shown), and builds the
config from what was given with :func:`config_from_options`, so validation (``__post_init__``) and
defaults are the library's own, never restated next to the command.
"""

from __future__ import annotations

import inspect
from dataclasses import MISSING, Field, field, fields
from typing import Any, Optional

__all__ = ["cli_parameters", "config_from_options", "opt"]

_KINDS: dict[str, type] = {"int": int, "float": float, "bool": bool, "str": str}


def opt(default: Any, help: str, flag: str | None = None, short: str | None = None,  # noqa: A002
        cli: bool = True) -> Any:
    """A dataclass field carrying its CLI help (``flag`` overrides ``--field-name``; ``cli=False`` hides it)."""
    return field(default=default, metadata={"help": help, "flag": flag, "short": short, "cli": cli})


def _flag(f: Field[Any]) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def cli_parameters(cls: type, exclude: tuple[str, ...] = ()) -> list[inspect.Parameter]:
    """Keyword-only parameters (typer options) for every CLI field of dataclass ``cls``.

    Each option defaults to ``None`` ("not given", so the dataclass default applies); booleans become
    ``--name/--no-name``. The help ends with the dataclass default.
    """
    import typer

    params = []
    for f in fields(cls):
        if f.name in exclude or not f.metadata.get("cli", False):
            continue
        base = str(f.type).split("|")[0].strip()
        kind = _KINDS.get(base, str)
        flag = _flag(f)
        decls = [f"{flag}/--no-{flag[2:]}"] if kind is bool else [flag]
        if f.metadata.get("short"):
            decls.append(f.metadata["short"])
        default = f.default if f.default is not MISSING else None
        shown = "" if default in (None, "") else f" [default: {default}]"
        params.append(inspect.Parameter(
            f.name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[kind],  # noqa: UP045 - typer reads it
            default=typer.Option(None, *decls, help=f"{f.metadata['help']}{shown}", show_default=False)))
    return params


def config_from_options(cls: type, options: dict[str, Any], **fixed: Any) -> Any:
    """``cls(**given)``: the options that were given (not None) for ``cls``'s fields, plus ``fixed``;
    removes them from ``options`` so the caller is left with its own."""
    names = {f.name for f in fields(cls)}
    given = {k: options.pop(k) for k in list(options) if k in names}
    return cls(**{k: v for k, v in given.items() if v is not None}, **fixed)

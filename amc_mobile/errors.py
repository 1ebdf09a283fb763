"""User-facing errors: the CLI prints them as one line (no traceback unless --debug)."""

from __future__ import annotations

from collections.abc import Iterable


class UserError(Exception):
    """Bad input from the user: printed as a single clear line by the CLI."""


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> UserError:
    """The standard 'unknown X' error that lists the valid names."""
    choices = ", ".join(sorted(valid))
    return UserError(f"unknown {kind} '{name}'; valid {kind}s: {choices}")

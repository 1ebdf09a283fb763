"""Shared CLI plumbing: one-line errors for user mistakes, tracebacks only with --debug."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence

import click
import typer
from rich.console import Console

from amc_mobile.errors import UserError

console = Console()
err_console = Console(stderr=True)


def new_app(help_text: str) -> typer.Typer:
    app = typer.Typer(help=help_text, no_args_is_help=True, add_completion=False,
                      pretty_exceptions_enable=False, rich_markup_mode=None)

    @app.callback()
    def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
        """Global options."""

    return app


def run_app(app: typer.Typer, argv: Sequence[str] | None = None) -> int:
    """Run a typer app; map user errors to one stderr line and an exit code of 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        result = app(args=args, standalone_mode=False, prog_name=None)
        return int(result) if isinstance(result, int) else 0
    except UserError as exc:
        if debug:
            traceback.print_exc()
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (click.Abort, KeyboardInterrupt):
        err_console.print("interrupted; finished work is saved (re-run the same command to resume)",
                          markup=False)
        return 130
    except FileNotFoundError as exc:
        if debug:
            traceback.print_exc()
        err_console.print(f"error: file not found: {exc.filename}", markup=False)
        return 2

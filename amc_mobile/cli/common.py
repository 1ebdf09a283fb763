"""Shared CLI plumbing: one-line errors for user mistakes, tracebacks only with --debug."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence
from typing import Any

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


def model_from_args(model: str | None, checkpoint: str | None, width: float = 1.0,
                    resolution: int | None = None, in_chans: int | None = None,
                    num_classes: int | None = None) -> tuple[Any, dict[str, Any]]:
    """(model in eval mode, checkpoint metadata) from ``--model NAME [...]`` or ``--checkpoint FILE``.

    ``resolution`` overrides the input size the model records (``input_size``/``arch_kwargs``), so
    description, export and latency tables all use it. Typed ``Any``: the model carries those attributes.
    """
    from amc_mobile.models import create_model
    from amc_mobile.models.checkpoint import load_checkpoint
    from amc_mobile.models.registry import arch_kwargs, set_arch_kwargs

    if (model is None) == (checkpoint is None):
        raise UserError("give exactly one of --model NAME or --checkpoint FILE|zoo:NAME")
    net: Any
    meta: dict[str, Any] = {}
    if checkpoint is not None:
        net, meta = load_checkpoint(checkpoint)
        kwargs = arch_kwargs(net)
        if resolution is not None and kwargs is not None:
            set_arch_kwargs(net, {**kwargs, "input_size": int(resolution)})
    else:
        net = create_model(model, num_classes=num_classes, in_chans=in_chans, width_mult=width,
                           input_size=resolution)
    return net.eval(), meta

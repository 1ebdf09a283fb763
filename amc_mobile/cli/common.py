"""Shared CLI plumbing: one-line errors for user mistakes, tracebacks only with --debug."""

from __future__ import annotations

import functools
import inspect
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import typer
from rich.console import Console

from amc_mobile.errors import UserError
from amc_mobile.options import cli_parameters, config_from_options, opt

INTERRUPTED = 130  # exit status after Ctrl-C (128 + SIGINT), as shells report it
# commands whose re-run into the same --out is refused unless --resume is given
RESUME_FLAG_COMMANDS = ("train", "finetune")

console = Console()
err_console = Console(stderr=True)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("amc-mobile")
    except Exception:  # noqa: BLE001 - not installed (source tree on sys.path): the package's own
        from amc_mobile import __version__

        return __version__


def new_app(help_text: str) -> typer.Typer:
    app = typer.Typer(help=help_text, no_args_is_help=True, add_completion=False,
                      pretty_exceptions_enable=False, rich_markup_mode=None)

    def _show_version(value: bool) -> None:
        if value:
            print(f"amc-mobile {_version()}")
            raise typer.Exit(0)

    @app.callback()
    def _root(
        debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
        version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True,
                                     help="Print the version and exit."),
    ) -> None:
        """Global options."""

    return app


def _out_dir(args: Sequence[str]) -> str | None:
    """The ``--out``/``-o`` (or ``--resume DIR``) value on the command line, for the interrupt message."""
    for i, arg in enumerate(args):
        for flag in ("--out", "-o", "--resume"):
            if arg == flag and i + 1 < len(args) and not args[i + 1].startswith("-"):
                return args[i + 1]
            if arg.startswith(flag + "=") and flag.startswith("--"):
                return arg.split("=", 1)[1]
    return None


def _usage_line(exc: typer.TyperException, prog: str) -> str:
    """One line for a usage error: the message and where help is (typer's own text is several lines)."""
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    path = getattr(ctx, "command_path", None) or prog
    return f"error: {message} (see '{path} --help')"


def run_app(app: typer.Typer, argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Run a typer app: user and usage errors are one stderr line with exit code 2, Ctrl-C exits 130.

    Exit codes: 0 success (also help), 1 a command's own failure, 2 bad input, 130 interrupted.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    prog = prog or "amc-mobile"
    debug = "--debug" in args
    if not [a for a in args if a != "--debug"]:
        args = [*args, "--help"]  # no command: the help text, exit 0
    try:
        result = app(args=args, standalone_mode=False, prog_name=prog)
        if result == INTERRUPTED:  # typer turns Ctrl-C inside a command into a return value of 130
            raise KeyboardInterrupt
        return int(result) if isinstance(result, int) else 0
    except UserError as exc:
        if debug:
            traceback.print_exc()
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        out = _out_dir(args)
        where = f" in {out}" if out else ""
        command = next((a for a in args if not a.startswith("-")), "")
        how = ("re-run the same command with --resume to continue" if command in RESUME_FLAG_COMMANDS
               else "re-run the same command to continue")
        err_console.print(f"interrupted: every finished step is saved{where}; {how}", markup=False,
                          highlight=False, soft_wrap=True)
        return INTERRUPTED
    except typer.TyperException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # a group called without a command: its help
            print(exc.format_message())
            return 0
        if debug:
            traceback.print_exc()
        err_console.print(_usage_line(exc, prog), markup=False, highlight=False, soft_wrap=True)
        return 2 if exc.exit_code in (0, 1, 2) else exc.exit_code
    except FileNotFoundError as exc:
        if debug:
            traceback.print_exc()
        err_console.print(f"error: file not found: {exc.filename}", markup=False)
        return 2


@dataclass(frozen=True)
class ModelSource:
    """Which model a command works on: a checkpoint (its architecture and weights), or a registered
    model with random weights (latency studies). The options of every model command."""

    checkpoint: str | None = opt(None, "Checkpoint file or zoo:NAME.", short="-c")
    model: str | None = opt(None, "Registered model name, random weights (see 'amc-mobile models').", short="-m")
    width: float = opt(1.0, "Width multiplier (with --model).")
    resolution: int | None = opt(None, "Input size in pixels (default: the model's).", short="-r")
    in_chans: int | None = opt(None, "Input channels (with --model).")
    num_classes: int | None = opt(None, "Classifier outputs (with --model).")

    def load(self) -> tuple[Any, dict[str, Any]]:
        """(model in eval mode, checkpoint metadata): :func:`model_from_args`."""
        return model_from_args(**asdict(self))


def with_model_source(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A command taking ``source: ModelSource`` gets ModelSource's options (``--checkpoint``, ``--model``,
    ``--width``, ...), declared once here, after its ``device`` option if it has one."""
    own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in inspect.signature(fn).parameters.values()
           if p.name != "source"]
    lead = [p for p in own if p.name == "device"]
    params = [*lead, *cli_parameters(ModelSource), *(p for p in own if p.name != "device")]

    @functools.wraps(fn)
    def command(**options: Any) -> Any:
        source = config_from_options(ModelSource, options)
        return fn(source=source, **options)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return command


def model_from_args(model: str | None, checkpoint: str | None, width: float = 1.0,
                    resolution: int | None = None, in_chans: int | None = None,
                    num_classes: int | None = None) -> tuple[Any, dict[str, Any]]:
    """(model in eval mode, checkpoint metadata) from ``--model NAME [...]`` or ``--checkpoint FILE``.

    ``resolution`` overrides the input size the model records (``input_size``/``arch_spec``), so
    description, export and latency tables all use it. Typed ``Any``: the model carries those attributes.
    """
    from amc_mobile.models import create_model
    from amc_mobile.models.arch import get_arch, set_arch
    from amc_mobile.models.checkpoint import load_checkpoint

    if (model is None) == (checkpoint is None):
        raise UserError("give exactly one of --model NAME or --checkpoint FILE|zoo:NAME")
    net: Any
    meta: dict[str, Any] = {}
    if checkpoint is not None:
        net, meta = load_checkpoint(checkpoint)
        spec = get_arch(net)
        if resolution is not None and spec is not None:
            set_arch(net, spec.replace(input_size=int(resolution)))
    else:
        assert model is not None  # exactly one of the two, checked above
        net = create_model(model, num_classes=num_classes, in_chans=in_chans, width_mult=width,
                           input_size=resolution)
    return net.eval(), meta

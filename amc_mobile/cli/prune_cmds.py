"""``amc-mobile prune`` (channel or fine-grained pruning) and ``amc-mobile export`` (ONNX / TFLite)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import typer

from amc_mobile.cli.common import ModelSource, console


def _say(text: str) -> None:
    console.print(text, soft_wrap=True, markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("prune")(prune)
    app.command("export")(export)


def _prune_params() -> list[inspect.Parameter]:
    """Options of ``prune``: which model (as in every model command), ``--out``, then PruneConfig's fields."""
    from amc_mobile.options import cli_parameters
    from amc_mobile.pruning.run import PruneConfig

    def option(name: str, kind: Any, default: Any, *decls: str, help: str) -> inspect.Parameter:  # noqa: A002
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind,
                                 default=typer.Option(default, *decls, help=help))

    return [
        option("out", Path, ..., "--out", "-o", help="Where to write the pruned checkpoint."),
        *cli_parameters(ModelSource),
        *cli_parameters(PruneConfig),
    ]


def prune(**options: Any) -> None:
    """Prune channels (AMC: select by L1, refit by least squares) or weights (fine-grained); save.

    Prints MACs and params before and after, and the accuracy change when data are available.
    """
    from amc_mobile.options import config_from_options
    from amc_mobile.pruning.run import PruneConfig, prune_model

    cfg = config_from_options(PruneConfig, options)  # validated before the model is read
    source = config_from_options(ModelSource, options)
    checkpoint = source.checkpoint
    net, meta = source.load()
    res = prune_model(net, meta, cfg, options["out"], parent=checkpoint)

    before, after = res.before, res.after
    if res.sparsity is not None:
        report = res.sparsity
        _say(f"fine-grained: sparsity {report.sparsity:.1%} of {report.numel:,} conv/linear weights; "
             f"size {report.dense_bytes / 1e6:.2f} MB dense -> {report.csr_bytes / 1e6:.2f} MB CSR "
             f"(fp32 + int32 index), {report.bitmask_bytes / 1e6:.2f} MB bitmask")
    else:
        for w in res.warnings:
            _say(f"warning: {w}")
        if res.reconstruct_skipped:
            _say("note: no data: least-squares reconstruction skipped")
        _say("kept channels: " + ",".join(str(k) for k in res.keep_channels or ())
             + f" ({'with' if res.reconstructed else 'without'} reconstruction, criterion {res.criterion})")
    _say(f"MACs   {before.macs / 1e6:9.2f}M -> {after.macs / 1e6:9.2f}M ({after.macs / before.macs:.1%})")
    _say(f"params {before.params / 1e6:9.3f}M -> {after.params / 1e6:9.3f}M "
         f"({after.params / before.params:.1%})")
    if res.metrics_before is not None and res.metrics_after is not None:
        m0, m1 = res.metrics_before, res.metrics_after
        _say(f"top-1  {m0['top1']:8.2f}% -> {m1['top1']:8.2f}% ({m1['top1'] - m0['top1']:+.2f} points, "
             f"{res.dataset} {res.eval_split}, {m1['n']} images, no fine-tuning)")
    _say(f"saved {res.out}")


prune.__signature__ = inspect.Signature(_prune_params())  # type: ignore[attr-defined]


def export(
    checkpoint: str = typer.Option(..., "--checkpoint", "-c", help="Checkpoint file or zoo:NAME."),
    out: Path = typer.Option(..., "--out", "-o", help="Output file."),
    fmt: str = typer.Option("onnx", "--format", "-f", help="onnx or tflite."),
    resolution: int = typer.Option(None, "--resolution", "-r", help="Input size (default: the model's)."),
    atol: float = typer.Option(1e-4, "--atol", help="Tolerance of the numerical check (relative to max |output|)."),
) -> None:
    """Export a checkpoint and check the exported model numerically against torch."""
    from amc_mobile.errors import UserError
    from amc_mobile.models.arch import require_arch
    from amc_mobile.models.checkpoint import load_checkpoint

    net: Any = load_checkpoint(checkpoint)[0]
    size = int(net.input_size if resolution is None else resolution)
    if size < 1:
        raise UserError(f"--resolution must be a positive integer, got {size}")
    in_chans = require_arch(net).in_chans
    shape = (1, in_chans, size, size)
    if fmt == "onnx":
        from amc_mobile.export.onnx import export_onnx

        rep: Any = export_onnx(net, out, shape, atol=atol)
    elif fmt == "tflite":
        try:
            from amc_mobile.export.tflite import export_tflite
        except ImportError as exc:
            raise UserError(f"TFLite export is unavailable ({exc}); install with pip install 'amc-mobile[tflite]'") from exc
        rep = export_tflite(net, out, shape, atol=max(atol, 1e-3))
    else:
        raise UserError(f"unknown export format '{fmt}'; valid formats: onnx, tflite")
    _say(f"wrote {rep.path} ({out.stat().st_size / 1e6:.2f} MB), input {shape}, "
                  f"max |error| vs torch {rep.max_abs_error:.2e}")

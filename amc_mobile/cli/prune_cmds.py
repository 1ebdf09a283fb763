"""``amc-mobile prune`` (channel or fine-grained pruning) and ``amc-mobile export`` (ONNX / TFLite)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import typer

from amc_mobile.cli.common import console, model_from_args


def _say(text: str) -> None:
    console.print(text, soft_wrap=True, markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("prune")(prune)
    app.command("export")(export)


def _parse_channels(text: str) -> list[int]:
    from amc_mobile.errors import UserError

    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError as exc:
        raise UserError(f"--channels takes comma-separated integers, got '{text}'") from exc


def prune(
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the pruned checkpoint."),
    checkpoint: str = typer.Option(None, "--checkpoint", "-c", help="Checkpoint file or zoo:NAME to prune."),
    model: str = typer.Option(None, "--model", "-m", help="Registered model with RANDOM weights (latency studies)."),
    width: float = typer.Option(1.0, "--width", help="Width multiplier (with --model)."),
    resolution: int = typer.Option(None, "--resolution", "-r", help="Input size in pixels."),
    num_classes: int = typer.Option(None, "--num-classes", help="Classifier outputs (with --model)."),
    in_chans: int = typer.Option(None, "--in-chans", help="Input channels (with --model)."),
    policy: Path = typer.Option(None, "--policy", help="Pruning policy JSON (from the search or --save-policy)."),
    uniform: float = typer.Option(None, "--uniform", help="Keep this fraction of every group, in (0, 1]."),
    channels: str = typer.Option(None, "--channels", help="Kept width of each group, 'info --groups' order."),
    sparsity: float = typer.Option(None, "--sparsity", help="Fine-grained mode: zero this fraction of every "
                                   "conv/linear weight (AMC's model-size protocol); shapes unchanged."),
    criterion: str = typer.Option("l1", "--criterion", help="Channel selection: l1 (AMC), l2, out_l1, bn_gamma, random."),
    reconstruct: bool = typer.Option(True, "--reconstruct/--no-reconstruct",
                                     help="Least-squares refit of the consuming layers (needs data)."),
    dataset: str = typer.Option(None, "--dataset", help="Data set for calibration and accuracy "
                                "(default: the one the checkpoint records)."),
    data_dir: str = typer.Option(None, "--data-dir", help="Where the data set lives."),
    no_data: bool = typer.Option(False, "--no-data", help="Use no data: no reconstruction, no accuracy."),
    calib_batches: int = typer.Option(60, "--calib-batches", help="Calibration batches (AMC: 60)."),
    calib_batch_size: int = typer.Option(50, "--calib-batch-size", help="Images per calibration batch (AMC: 50)."),
    points_per_image: int = typer.Option(10, "--points-per-image", help="Random spatial points per image (AMC: 10)."),
    ridge: float = typer.Option(0.0, "--ridge", help="Ridge term of the refit, relative to the mean feature energy."),
    multiple: int = typer.Option(8, "--multiple", help="Round kept channels (from ratios) to this multiple."),
    eval_split: str = typer.Option("val", "--eval-split", help="Split for the accuracy check: val or test."),
    eval_images: int = typer.Option(None, "--eval-images", help="Evaluate on at most this many images."),
    save_policy: Path = typer.Option(None, "--save-policy", help="Also write the policy used as JSON."),
    seed: int = typer.Option(0, "--seed", help="Seed of the calibration sample and the random criterion."),
) -> None:
    """Prune channels (AMC: select by L1, refit by least squares) or weights (fine-grained); save.

    Prints MACs and params before and after, and the accuracy change when data are available.
    """
    from amc_mobile.errors import UserError
    from amc_mobile.models import describe_model, require_arch
    from amc_mobile.models.checkpoint import save_checkpoint
    from amc_mobile.pruning import (
        ChannelPruner,
        PruningPolicy,
        fine_grained_prune,
        get_criterion,
        policy_from_channels,
        uniform_policy,
    )

    chosen = [o for o in (policy, uniform, channels, sparsity) if o is not None]
    if len(chosen) != 1:
        raise UserError("give exactly one of --policy FILE, --uniform RATIO, --channels C1,C2,... "
                        "or --sparsity S (fine-grained)")
    if uniform is not None and not 0.0 < uniform <= 1.0:
        raise UserError(f"--uniform {uniform} is outside (0, 1]")
    get_criterion(criterion)  # unknown name -> one line listing the valid ones
    net, meta = model_from_args(model, checkpoint, width, resolution, in_chans, num_classes)
    name = require_arch(net).name
    size = int(net.input_size)
    before = describe_model(net, size)

    data = None
    wants_data = not no_data and (dataset is not None or bool((meta.get("data") or {}).get("dataset")))
    if wants_data:
        from amc_mobile.pruning.data import load_pruning_data

        data = load_pruning_data(meta, dataset, data_dir, calib_batches * calib_batch_size, eval_split,
                                 eval_images, seed=seed)

    extra: dict = {"data": meta.get("data") or (data.info if data else None), "parent": checkpoint or name}
    if sparsity is not None:
        pruned, report = fine_grained_prune(net, sparsity)
        extra["fine_grained"] = report.to_dict()
        after = describe_model(pruned, size)
        _say(f"fine-grained: sparsity {report.sparsity:.1%} of {report.numel:,} conv/linear weights; "
                      f"size {report.dense_bytes / 1e6:.2f} MB dense -> {report.csr_bytes / 1e6:.2f} MB CSR "
                      f"(fp32 + int32 index), {report.bitmask_bytes / 1e6:.2f} MB bitmask")
    else:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pruner = ChannelPruner(net, size, data.calib_images if (data and reconstruct) else None, criterion,
                                   reconstruct, calib_batches, calib_batch_size, points_per_image, ridge, seed)
        for w in caught:
            _say(f"warning: {w.message}")
        groups = pruner.groups
        if policy is not None:
            pol = PruningPolicy.load(policy)
            pol.validate(groups, name)
        elif uniform is not None:
            pol = uniform_policy(groups, uniform, name, size, multiple)
        else:
            pol = policy_from_channels(groups, _parse_channels(channels), name, size, multiple)
        if reconstruct and not pruner.reconstruct:
            _say("note: no data: least-squares reconstruction skipped")
        pruned = pruner.prune(pol.keep_channels)
        after = pruner.describe(pol.keep_channels)
        extra["pruning"] = {**pol.to_dict(), "criterion": criterion, "reconstruct": pruner.reconstruct}
        if save_policy is not None:
            pol.save(save_policy)
        _say("kept channels: " + ",".join(str(k) for k in pol.keep_channels)
                      + f" ({'with' if pruner.reconstruct else 'without'} reconstruction, criterion {criterion})")

    _say(f"MACs   {before.macs / 1e6:9.2f}M -> {after.macs / 1e6:9.2f}M ({after.macs / before.macs:.1%})")
    _say(f"params {before.params / 1e6:9.3f}M -> {after.params / 1e6:9.3f}M "
                  f"({after.params / before.params:.1%})")
    if data is not None:
        from amc_mobile.training import evaluate

        m0, m1 = evaluate(net, data.eval_batches), evaluate(pruned, data.eval_batches)
        extra["metrics"] = {"before": m0, "after": m1, "split": eval_split}
        _say(f"top-1  {m0['top1']:8.2f}% -> {m1['top1']:8.2f}% ({m1['top1'] - m0['top1']:+.2f} points, "
                      f"{data.info['dataset']} {eval_split}, {m1['n']} images, no fine-tuning)")
    save_checkpoint(out, pruned, **{k: v for k, v in extra.items() if v is not None})
    _say(f"saved {out}")


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

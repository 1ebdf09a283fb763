"""``amc-bench devices | profile | predict | measure | compare``: latency on real runtimes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from amc_mobile.cli.common import console, model_from_args
from amc_mobile.errors import UserError


def register(app: typer.Typer) -> None:
    app.command("devices")(devices)
    app.command("profile")(profile)
    app.command("predict")(predict)
    app.command("measure")(measure)
    app.command("compare")(compare)


def _usable_profile(device: str) -> Any:
    from amc_mobile.latency.profiles import load_profile

    prof = load_profile(device)
    reason = prof.availability()
    if reason:
        raise UserError(f"device '{device}' is not usable here: {reason}")
    return prof


def devices() -> None:
    """List device profiles and whether each is usable here (with the reason when not)."""
    from rich.table import Table

    from amc_mobile.latency.profiles import list_profiles, load_profile, profile_dirs

    table = Table("device", "backend", "usable here", "description")
    for col in table.columns:
        col.overflow = "fold"
    for name in list_profiles():
        try:
            prof = load_profile(name)
        except UserError as exc:
            table.add_row(name, "?", f"no: {exc}", "")
            continue
        reason = prof.availability()
        table.add_row(name, prof.backend, "yes" if reason is None else f"no: {reason}", prof.description)
    console.print(table)
    console.print("profile folders: " + ", ".join(str(d) for d in profile_dirs()))


def profile(
    device: str = typer.Option(..., "--device", "-d", help="Device profile name (see 'amc-bench devices')."),
    model: str = typer.Option(None, "--model", "-m", help="Registered model name."),
    checkpoint: str = typer.Option(None, "--checkpoint", "-c", help="Checkpoint file or zoo:NAME (its architecture)."),
    width: float = typer.Option(1.0, "--width", help="Width multiplier (with --model)."),
    resolution: int = typer.Option(None, "--resolution", "-r", help="Input size in pixels (default: the model's)."),
    in_chans: int = typer.Option(None, "--in-chans", help="Input channels (with --model)."),
    num_classes: int = typer.Option(None, "--num-classes", help="Classifier outputs (with --model)."),
    granularity: int = typer.Option(8, "--granularity", help="Channel step of the grid (AMC rounds to 8)."),
    points: int = typer.Option(5, "--points", help="Grid values per channel axis (interpolated between)."),
    out: Path = typer.Option(None, "--out", "-o", help="CSV to write (default device_profiles/<device>/...)."),
    repeats: int = typer.Option(None, "--repeats", help="Override the profile's repeats."),
    calibration: int = typer.Option(4, "--calibration", help="Random whole-model calibration configs measured "
                                    "after the grid (plus 4 uniform widths); -1: no calibration."),
    max_rows: int = typer.Option(None, "--max-rows", hidden=True, help="Stop after this many new rows."),
) -> None:
    """Measure each prunable unit in isolation over a (cin, cout) grid; resumable (re-run to continue)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from amc_mobile.latency.lut import default_table_path, profile_table
    from amc_mobile.latency.profiles import table_dir

    prof = _usable_profile(device)
    net, _ = model_from_args(model, checkpoint, width, resolution, in_chans, num_classes)
    size = int(net.input_size)
    path = out or default_table_path(table_dir(prof), net.arch_kwargs, size)
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
                  transient=False) as bar:
        task = bar.add_task(f"{net.arch_kwargs['name']} on {device}", total=None)
        state: dict[str, int] = {}

        def progress(done: int, total: int) -> None:
            if "start" not in state:  # rows found on disk do not count towards the ETA
                state["start"] = done
                bar.update(task, total=total - done, completed=0)
            else:
                bar.update(task, completed=done - state["start"])

        summary = profile_table(prof, net, path, input_size=size, granularity=granularity, points=points,
                                max_rows=max_rows, settings_overrides={"repeats": repeats},
                                calibration=None if calibration < 0 else calibration, progress=progress)
    console.print(f"{summary['path']}: {summary['rows']}/{summary['grid_points']} grid points "
                  f"({summary['new_rows']} measured now in {summary['seconds']:.0f} s); the full grid would be "
                  f"{summary['full_grid_points']} points ({100 * summary['grid_points'] / summary['full_grid_points']:.1f}% measured)")


def predict(
    device: str = typer.Option(..., "--device", "-d", help="Device profile name."),
    policy: Path = typer.Option(None, "--policy", "-p", help="Pruning policy JSON (amc-mobile prune/search)."),
    channels: str = typer.Option(None, "--channels", help="Kept channels per prunable group, comma separated."),
    model: str = typer.Option(None, "--model", "-m", help="Registered model (default: the policy's)."),
    checkpoint: str = typer.Option(None, "--checkpoint", "-c", help="Checkpoint (its architecture) instead of --model."),
    width: float = typer.Option(1.0, "--width", help="Width multiplier (with --model)."),
    resolution: int = typer.Option(None, "--resolution", "-r", help="Input size in pixels."),
    in_chans: int = typer.Option(None, "--in-chans", help="Input channels (with --model)."),
    num_classes: int = typer.Option(None, "--num-classes", help="Classifier outputs (with --model)."),
    table: Path = typer.Option(None, "--table", help="Latency table CSV (default: the device's table for the model)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Predicted latency (ms) of a model or of a pruning policy / channel list, from the device's table."""
    from amc_mobile.search.costs import load_latency_table

    pol = None
    if policy is not None:
        from amc_mobile.pruning import PruningPolicy

        pol = PruningPolicy.load(policy)
        if model is None and checkpoint is None:
            model = pol.model
            resolution = resolution or pol.input_size or None
    net, _ = model_from_args(model, checkpoint, width, resolution, in_chans, num_classes)
    size = int(net.input_size)
    tab = load_latency_table(device, net, size, checkpoint, table)
    from amc_mobile.models import describe_model

    desc = describe_model(net, size)
    keep = None
    if pol is not None or channels is not None:
        from amc_mobile.pruning import find_groups, pruned_description

        groups = find_groups(net, size)
        if pol is not None:
            pol.validate(groups, net.arch_kwargs["name"])
            keep = list(pol.keep_channels)
        else:
            try:
                keep = [int(c) for c in channels.split(",") if c.strip()]
            except ValueError as exc:
                raise UserError(f"--channels: expected comma-separated integers, got '{channels}'") from exc
        desc = pruned_description(desc, groups, keep)
    full_ms = tab.predict(describe_model(net, size))
    ms = tab.predict(desc)
    out = {"device": device, "model": net.arch_kwargs["name"], "input_size": size, "predicted_ms": ms,
           "unpruned_predicted_ms": full_ms, "predicted_speedup": full_ms / ms, "macs": desc.macs,
           "table": tab.path}
    if as_json:
        print(json.dumps(out, indent=2))
        return
    console.print(f"{out['model']} @ {size}px on {device}: predicted {ms:.3f} ms "
                  f"(unpruned {full_ms:.3f} ms, {full_ms / ms:.2f}x), {desc.macs / 1e6:.1f}M MACs; table {tab.path}")


def _artifact_for(backend: Any, spec: str, work: Path) -> tuple[Path, str]:
    """An artefact the backend runs, from a .onnx/.tflite file or a checkpoint (exported here)."""
    p = Path(spec)
    if p.suffix in (".onnx", ".tflite", ".pt") and p.exists() and p.suffix == backend.artifact_suffix:
        if p.stat().st_size == 0:
            raise UserError(f"{p} is empty (corrupt model file)")
        return p, p.name
    if p.suffix in (".onnx", ".tflite") and p.suffix != backend.artifact_suffix:
        raise UserError(f"device backend '{backend.name}' runs {backend.artifact_suffix} files, not {p.suffix}; "
                        "give the checkpoint instead and it is exported for the device")
    if p.suffix in (".onnx", ".tflite") and not p.exists():
        raise UserError(f"model file not found: {p}")
    from amc_mobile.models.checkpoint import load_checkpoint

    net: Any
    net, _ = load_checkpoint(spec)
    shape = (backend.profile.batch_size, net.arch_kwargs["in_chans"], net.input_size, net.input_size)
    stem = Path(spec.replace("zoo:", "zoo_")).stem
    return backend.prepare(net, shape, work / stem), spec


def measure(
    model_file: str = typer.Argument(..., help="MODEL.onnx | MODEL.tflite | checkpoint | zoo:NAME"),
    device: str = typer.Option(..., "--device", "-d", help="Device profile name."),
    repeats: int = typer.Option(None, "--repeats", help="Override the profile's repeats."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """End-to-end latency with spread, interleaved with the reference workload."""
    import tempfile

    from amc_mobile.latency.protocol import Protocol, ProtocolSettings
    from amc_mobile.threads import torch_threads

    prof = _usable_profile(device)
    with tempfile.TemporaryDirectory(prefix="amc-measure-") as tmp, prof.create_backend() as backend, \
            torch_threads(1):
        art, label = _artifact_for(backend, model_file, Path(tmp))
        proto = Protocol(backend, ProtocolSettings.from_profile(prof, repeats=repeats), tmp)
        m = proto.measure_many([art])[0]
        out = {"model": label, **m.to_dict(), "metadata": {**backend.describe_device(),
                                                            "protocol": proto.settings.to_dict()}}
    if as_json:
        print(json.dumps(out, indent=2))
        return
    s = m.stats
    console.print(f"{label} on {device}: median {s.median_ms:.3f} ms (p10 {s.p10_ms:.3f}, p90 {s.p90_ms:.3f}, "
                  f"std {s.std_ms:.3f} over {s.count} windows x {m.runs_per_window} runs); "
                  f"{m.ratio:.2f}x the reference ({m.ref_ms:.3f} ms); overhead {m.overhead_ms * 1e3:.1f} us subtracted")


def compare(
    model_a: str = typer.Argument(..., help="Baseline: MODEL.onnx | MODEL.tflite | checkpoint"),
    model_b: str = typer.Argument(..., help="Candidate: MODEL.onnx | MODEL.tflite | checkpoint"),
    device: str = typer.Option(..., "--device", "-d", help="Device profile name."),
    repeats: int = typer.Option(10, "--repeats", help="ABBA rounds (two window pairs each)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Speedup of B over A (latency A / latency B), measured interleaved, with a 95% confidence interval."""
    import tempfile

    from amc_mobile.latency.protocol import Protocol, ProtocolSettings
    from amc_mobile.threads import torch_threads

    prof = _usable_profile(device)
    with tempfile.TemporaryDirectory(prefix="amc-compare-") as tmp, prof.create_backend() as backend, \
            torch_threads(1):
        a, la = _artifact_for(backend, model_a, Path(tmp) / "a")
        b, lb = _artifact_for(backend, model_b, Path(tmp) / "b")
        proto = Protocol(backend, ProtocolSettings.from_profile(prof), tmp)
        res = proto.compare(a, b, repeats)
        res["metadata"] = {**backend.describe_device(), "protocol": proto.settings.to_dict()}
    if as_json:
        print(json.dumps(res, indent=2))
        return
    console.print(f"{lb} vs {la} on {device}: speedup {res['speedup']:.3f}x (95% CI {res['ci95_low']:.3f}-"
                  f"{res['ci95_high']:.3f}, {res['pairs']} interleaved pairs); A {res['a']['median_ms']:.3f} ms, "
                  f"B {res['b']['median_ms']:.3f} ms median")

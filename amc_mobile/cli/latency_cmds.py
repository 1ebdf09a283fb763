"""``amc-bench devices | profile | validate | predict | measure | compare | clean``: latency on real runtimes."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer

from amc_mobile.cli.common import ModelSource, console, with_model_source
from amc_mobile.errors import UserError


def register(app: typer.Typer) -> None:
    app.command("devices")(devices)
    app.command("profile")(profile)
    app.command("validate")(validate)
    app.command("clean")(clean)
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


class _Bar:
    """A progress callback ``(done, total)`` drawing one bar (amc_mobile.progress), created on first call;
    rows found on disk do not count towards the rate and ETA."""

    def __init__(self, desc: str) -> None:
        self.desc = desc
        self.bar: Any = None
        self.start = 0

    def __call__(self, done: int, total: int) -> None:
        from amc_mobile.progress import progress_bar

        if self.bar is None or self.bar.total != total - self.start:
            if self.bar is not None:
                self.bar.close()
            self.start = done
            self.bar = progress_bar(total=total - done, desc=self.desc, unit="row")
        self.bar.update(done - self.start - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _say(text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


@with_model_source
def profile(
    source: ModelSource,
    device: str = typer.Option(..., "--device", "-d", help="Device profile name (see 'amc-bench devices')."),
    granularity: str = typer.Option("auto", "--granularity", help="Channel step of the grid; 'auto': measure "
                                    "whether the device rewards multiples of 16 (e.g. AVX-512 CPUs), else 8 "
                                    "(AMC's rounding). Searches with the table keep multiples of it."),
    points: int = typer.Option(5, "--points", help="Grid values per channel axis (interpolated between)."),
    out: Path = typer.Option(None, "--out", "-o", help="Measure into this CSV (resumable). Default: make sure the "
                             "device has a fitting table: a matching one is used, one measured elsewhere is "
                             "adapted, else a table is profiled in the user store."),
    reprofile: bool = typer.Option(False, "--reprofile", help="Measure a fresh table of this device in the user "
                                   "store even when one exists (an interrupted one is resumed)."),
    repeats: int = typer.Option(None, "--repeats", help="Override the profile's repeats."),
    calibration: int = typer.Option(4, "--calibration", help="Random whole-model calibration configs measured "
                                    "after the grid (plus 4 uniform widths and 2 block-removed); -1: none."),
    max_rows: int = typer.Option(None, "--max-rows", hidden=True, help="Stop after this many new rows."),
    ray: str = typer.Option(None, "--ray", help="HEAD:PORT of a Ray cluster: split the grid over every device of "
                            "model --device its nodes advertise ('local': this machine only). See 'Scale out'."),
    tolerance: float = typer.Option(0.15, "--tolerance", help="With --ray: largest relative spread between the "
                                    "devices' reference latencies / calibration ratios before the profile fails."),
) -> None:
    """Measure each prunable unit in isolation over a (cin, cout) grid; resumable (re-run to continue)."""
    step = _granularity(granularity, ray is not None)
    prof = _usable_profile(device) if ray is None else None  # with --ray the phones are on the worker hosts
    net, _ = source.load()
    checkpoint = source.checkpoint
    size = int(net.input_size)
    from amc_mobile.models.arch import require_arch

    bar = _Bar(f"{require_arch(net).name} on {device}")
    try:
        if ray is not None:
            from amc_mobile.distributed.profile import profile_sharded

            summary = profile_sharded(device, net, out, address=ray, input_size=size, granularity=step,
                                      points=points, settings_overrides={"repeats": repeats},
                                      calibration=None if calibration < 0 else calibration, tolerance=tolerance,
                                      progress=bar)
            bar.close()
            _say(summary.summary_line())
            _say(_grid_line(summary.path, summary.rows, summary.grid_points, summary.new_rows, summary.seconds,
                            summary.full_grid_points))
        elif out is None:
            from amc_mobile.latency.store import ensure_table

            opts = {"granularity": step, "points": points, "settings_overrides": {"repeats": repeats},
                    "calibration": None if calibration < 0 else calibration}
            _, report = ensure_table(device, net, size, checkpoint, reprofile=reprofile, log=_say, progress=bar,
                                     profile_options=opts)
            bar.close()
            done_now = f"; this run: {', '.join(report['actions'])}" if report["actions"] else ""
            _say(f"{device}: using {report['table']} ({report['source']} table{done_now})")
            return
        else:
            from amc_mobile.latency.profiling import profile_table

            prof = _usable_profile(device)
            res = profile_table(prof, net, out, input_size=size, granularity=step, points=points,
                                max_rows=max_rows, settings_overrides={"repeats": repeats},
                                calibration=None if calibration < 0 else calibration, progress=bar, log=_say)
            bar.close()
            _say(_grid_line(res.path, res.rows, res.grid_points, res.new_rows, res.seconds, res.full_grid_points))
    finally:
        bar.close()


def _granularity(text: str, sharded: bool) -> int:
    """--granularity: 'auto' (0: probe the device; 8 with --ray, whose devices are probed nowhere) or N >= 1."""
    from amc_mobile.latency.profiling import AUTO_GRANULARITY

    if text.strip().lower() == "auto":
        return 8 if sharded else AUTO_GRANULARITY
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"--granularity {text!r}: give 'auto' or a channel step >= 1 (8 or 16)")
    return value


def _grid_line(path: str, rows: int, grid_points: int, new_rows: int, seconds: float, full_grid_points: int) -> str:
    """One line on how far a table's grid is measured (local or sharded profiling)."""
    return (f"{path}: {rows}/{grid_points} grid points ({new_rows} measured now in {seconds:.0f} s); the full grid "
            f"would be {full_grid_points} points ({100 * grid_points / full_grid_points:.1f}% measured)")


@with_model_source
def validate(
    source: ModelSource,
    device: str = typer.Option(..., "--device", "-d", help="Device profile name."),
    table: Path = typer.Option(None, "--table", help="Latency table CSV (default: the one a search would use)."),
    configs: int = typer.Option(10, "--configs", help="Fresh random configs measured (plus the unpruned model)."),
    seed: int = typer.Option(None, "--seed", help="Seed of the configs (default: fresh each run)."),
    plot: Path = typer.Option(None, "--plot", help="Predicted-vs-measured PNG (default: in the user store)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (errors as fractions)."),
) -> None:
    """Fidelity of the device's table on fresh random configs: median |error|, share within +-10%, noise floor."""
    from amc_mobile.latency.store import validate_device_table

    net, _ = source.load()
    checkpoint = source.checkpoint
    if configs < 1:
        raise UserError(f"--configs must be >= 1, got {configs}")
    rep = validate_device_table(device, net, int(net.input_size), checkpoint, table, configs=configs, seed=seed,
                                plot=plot)
    if as_json:
        print(json.dumps(rep, indent=2, default=str))
        return
    if not rep["validated"]:
        _say(f"{rep['table']}: unvalidated ({rep['reason']})")
        return
    _say(f"{rep['table']} on {device}: median |error| {100 * rep['median_abs_error']:.1f}%, "
         f"{100 * rep['within_10pct']:.0f}% within +-10%, worst {100 * rep['worst_abs_error']:.1f}% over "
         f"{rep['configs']} models; noise floor {100 * rep['noise_floor']:.1f}% (second round); plot {rep['plot']}")


def clean(
    cache: bool = typer.Option(True, "--cache/--no-cache", help="Empty the exported-model cache."),
    scratch: bool = typer.Option(True, "--scratch/--no-scratch", help="Remove scratch exports of finished jobs."),
) -> None:
    """Free disk space: the artefact cache and scratch exports (never measured tables)."""
    from amc_mobile.latency.store import clean_caches

    res = clean_caches(cache=cache, scratch=scratch)
    _say(f"removed {res['files']} files ({res['bytes'] / 1e6:.1f} MB) from {', '.join(res['dirs']) or 'nothing'}")


@with_model_source
def predict(
    source: ModelSource,
    device: str = typer.Option(..., "--device", "-d", help="Device profile name."),
    policy: Path = typer.Option(None, "--policy", "-p", help="Pruning policy JSON (amc-mobile prune/search)."),
    channels: str = typer.Option(None, "--channels", help="Kept channels per prunable group, comma separated."),
    table: Path = typer.Option(None, "--table", help="Latency table CSV (default: the device's table for the model)."),
    check: bool = typer.Option(False, "--validate", help="First validate the table on the device (measures the "
                               "model and 4 configs) and adapt it when it misses 5%."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Predicted latency (ms) of a model or of a pruning policy / channel list, from the device's table."""
    from amc_mobile.latency.store import open_table_for
    from amc_mobile.models.arch import require_arch

    pol = None
    if policy is not None:
        from amc_mobile.pruning import PruningPolicy

        pol = PruningPolicy.load(policy)
        if source.model is None and source.checkpoint is None:  # the policy's model
            source = replace(source, model=pol.model, resolution=source.resolution or pol.input_size or None)
    checkpoint = source.checkpoint
    net, _ = source.load()
    size = int(net.input_size)
    tab, report = open_table_for(device, net, size, checkpoint, table, validate=check, adapt=check, build=False)
    from amc_mobile.models import describe_model

    desc = describe_model(net, size)
    keep = None
    if pol is not None or channels is not None:
        from amc_mobile.pruning import find_groups, pruned_description

        groups = find_groups(net, size)
        if pol is not None:
            pol.validate(groups, require_arch(net).name)
            keep = list(pol.keep_channels)
        else:
            try:
                keep = [int(c) for c in channels.split(",") if c.strip()]
            except ValueError as exc:
                raise UserError(f"--channels: expected comma-separated integers, got '{channels}'") from exc
        desc = pruned_description(desc, groups, keep)
    full_ms = tab.predict(describe_model(net, size))
    ms = tab.predict(desc)
    import sys

    for line in report["messages"]:  # table warnings, after a prediction succeeded (an error stays one line)
        print(line, file=sys.stderr)
    out = {"device": device, "model": require_arch(net).name, "input_size": size, "predicted_ms": ms,
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
    from amc_mobile.models.arch import require_arch
    from amc_mobile.models.checkpoint import load_checkpoint

    net: Any
    net, _ = load_checkpoint(spec)
    arch = require_arch(net)
    shape = (backend.profile.batch_size, arch.in_chans, arch.input_size, arch.input_size)
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

"""Profiling a latency table (the driver half of the old lut.py): resumable, locked, atomic.

Each unit of the model (:mod:`amc_mobile.latency.units`) is measured in isolation at ``points``
values per channel axis (multiples of ``granularity``) under the noise-robust protocol
(:mod:`amc_mobile.latency.protocol`); then whole-model calibration configs (uniform widths, random
policies and, where the model has removable blocks, models without them) fit the unit-sum -> model
correction (:mod:`amc_mobile.latency.table`).

Safety (issue 10): one writer per table (``<table>.csv.lock``: a second profiler gets one line naming
the holder's PID); each row is one appended, fsynced line written under the lock, so a kill loses no
finished row and a resume never duplicates one; metadata is written atomically; scratch exports go to
a unique folder in the user cache. Resume compares the device's STABLE identity (fingerprint), never
live readings (which each row records in its ``live`` column).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from torch import nn

from amc_mobile.errors import UserError
from amc_mobile.latency.fingerprint import describe_differences, differences, identity_of
from amc_mobile.latency.table import (
    CALIB_COLUMNS,
    CALIB_OPTIONAL,
    COLUMNS,
    KIND,
    OPTIONAL_COLUMNS,
    TABLE_SCHEMA,
    calib_path,
    format_row,
    meta_path,
    read_csv_rows,
)
from amc_mobile.latency.units import (
    REFERENCE_ID,
    Unit,
    build_unit,
    channels_last_unit,
    residual_layers,
    units_of,
)
from amc_mobile.models.arch import get_arch
from amc_mobile.models.describe import ModelDescription, describe_model
from amc_mobile.storage import (
    ExclusiveLock,
    append_line,
    atomic_write_json,
    atomic_write_text,
    user_cache_dir,
)
from amc_mobile.threads import torch_threads

_RESUME_KEYS = ("model", "granularity", "points", "profile", "reference")


@dataclass(frozen=True)
class ProfileResult:
    """What one :func:`profile_table` call did: rows measured now and in all, grid sizes, time taken."""

    path: str  # the table CSV
    new_rows: int  # grid rows measured by this call
    rows: int  # grid rows in the table now
    grid_points: int  # rows of the complete (sub-sampled) grid
    full_grid_points: int  # rows a grid of every ``granularity`` step would have
    calibration_rows_new: int  # whole-model calibration configs measured by this call
    seconds: float  # wall time of this call
    cpu_seconds: float  # process CPU time of this call

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (benches record them)."""
        return asdict(self)


def axis_points(max_c: int, granularity: int, points: int, fixed: bool = False) -> tuple[list[int], int]:
    """(measured values, size of the full axis) for one channel axis: ``points`` near-evenly spaced
    multiples of ``granularity`` from ``granularity`` to ``max_c`` (always including both ends)."""
    if fixed:
        return [max_c], 1
    full = sorted({*range(granularity, max_c + 1, granularity), max_c})
    if len(full) == 1 and max_c > 1:  # narrower than one step: add 1 channel so it can still interpolate
        return [1, max_c], 1
    if points <= 0 or len(full) <= points:
        return full, len(full)
    step = (max_c - granularity) / (points - 1)
    vals = {max(granularity, min(max_c, int(round((granularity + i * step) / granularity)) * granularity))
            for i in range(points)}
    vals |= {granularity, max_c}
    return sorted(vals), len(full)


@dataclass(frozen=True)
class SlotGrid:
    slot: str
    cin: list[int]
    cout: list[int]
    full_points: int


def plan_grid(units: Sequence[Unit], granularity: int = 8, points: int = 5) -> list[SlotGrid]:
    """The grid to measure: per slot, ``points`` values per prunable axis up to the widest unit."""
    by_slot: dict[str, list[Unit]] = {}
    for u in units:
        by_slot.setdefault(u.slot, []).append(u)
    grids = []
    for slot, us in by_slot.items():
        cin, n_in = axis_points(max(u.cin for u in us), granularity, points, all(u.cin_fixed for u in us))
        cout, n_out = axis_points(max(u.cout for u in us), granularity, points, all(u.cout_fixed for u in us))
        grids.append(SlotGrid(slot, cin, cout, n_in * n_out))
    return grids


# --- whole-model configurations (calibration, validation, adaptation) -------------------------------
@dataclass(frozen=True)
class ModelConfig:
    """A whole model to measure: kept channels per prunable group and removed blocks (module names)."""

    config_id: str
    keep: tuple[int, ...]
    removed: tuple[str, ...] = ()


def removable_blocks(model: nn.Module, input_size: int) -> list[str]:
    """Blocks the model stays valid without (DDC's removable units; graph-derived by
    ``amc_mobile.search.ddc.units`` where available)."""
    try:
        from amc_mobile.search.ddc.units import removable_units
    except ImportError:  # the DDC package is optional for tables
        return []
    try:
        return [e.name for e in removable_units(model, input_size)]
    except (UserError, RuntimeError, ValueError):
        return []


def grid_units(model: nn.Module, desc: ModelDescription, residual: Sequence[str]) -> list[Unit]:
    """The units whose slots the grid measures: the model's own, then every new slot a unit takes once
    a run of removable blocks before it is dropped (VGG's classifier after its last convs runs on a
    3x3 input instead of 1x1), so the table also predicts DDC's block-removed students. A unit's slot
    depends only on the run of removed blocks right before it: contiguous runs of the removable list
    cover every removal set."""
    import copy

    units = units_of(desc, residual)
    blocks = removable_blocks(model, desc.input_size)
    if not blocks:
        return units
    from amc_mobile.search.ddc.units import apply_removal

    seen = {u.slot for u in units}
    extra: list[Unit] = []
    for i in range(len(blocks)):
        for j in range(i, len(blocks)):
            try:
                d = describe_model(apply_removal(copy.deepcopy(model), blocks[i:j + 1]), desc.input_size)
            except (UserError, RuntimeError):  # not a valid network without this run
                continue
            for u in units_of(d, residual):
                if u.slot not in seen:
                    seen.add(u.slot)
                    extra.append(u)
    return units + extra


def build_config_model(model: nn.Module, input_size: int, cfg: ModelConfig, pruner: Any = None) -> nn.Module:
    """The pruned (no reconstruction) and block-removed model of ``cfg``, BN statistics set from one
    random batch (random-init weights otherwise decay into slow denormals)."""
    from amc_mobile.models.bn import calibrate_bn
    from amc_mobile.pruning import ChannelPruner

    pruner = pruner or ChannelPruner(model, input_size, reconstruct=False)
    net = pruner.prune(list(cfg.keep))
    if cfg.removed:
        from amc_mobile.search.ddc.units import apply_removal

        apply_removal(net, cfg.removed)
    desc = describe_model(net, input_size)
    return calibrate_bn(net, (2, desc.in_chans, input_size, input_size))


def model_configs(model: nn.Module, input_size: int, uniform: Sequence[float] = (1.0, 0.75, 0.5, 0.3),
                  n_random: int = 4, n_removed: int = 2, seed: int = 1234, prefix: str = "",
                  multiple: int = 8) -> list[ModelConfig]:
    """Configs that span the space: uniform keep ratios, ``n_random`` random policies (keep ratio
    U[0.25, 1] per group, AMC rounding to ``multiple`` channels: the table's channel step, the counts a
    search keeps) and ``n_removed`` models with removable blocks dropped (at full and at a random width;
    only configs whose removal leaves a valid model)."""
    import random

    from amc_mobile.pruning import find_groups, round_channels

    groups = find_groups(model, input_size)
    rng = random.Random(seed)
    out = [ModelConfig(f"{prefix}uniform-{r:g}", tuple(round_channels(g.width, r, multiple) for g in groups))
           for r in uniform]
    for i in range(n_random):
        out.append(ModelConfig(f"{prefix}random-{seed}-{i}",
                               tuple(round_channels(g.width, rng.uniform(0.25, 1.0), multiple) for g in groups)))
    blocks = removable_blocks(model, input_size) if n_removed > 0 else []
    for i in range(min(n_removed, len(blocks))):
        gone = tuple(sorted(rng.sample(blocks, max(1, len(blocks) // 3))))
        ratio = 1.0 if i == 0 else rng.uniform(0.4, 0.9)  # one ratio for all: removed blocks keep in == out
        out.append(ModelConfig(f"{prefix}removed-{seed}-{i}",
                               tuple(round_channels(g.width, ratio, multiple) for g in groups), gone))
    return out


def calibration_configs(model: nn.Module, input_size: int, n_random: int = 4, seed: int = 1234,
                        multiple: int = 8) -> list[ModelConfig]:
    """Whole-model configurations measured with the table to fit its unit-sum -> model correction
    (channel counts on the table's grid step ``multiple``)."""
    return model_configs(model, input_size, n_random=n_random, seed=seed, multiple=multiple)


def table_step(meta: dict[str, Any]) -> int:
    """The channel step a table's grid was measured at (``amc-bench profile --granularity``)."""
    return int(meta.get("granularity") or 8)


def table_unit_layout(meta: dict[str, Any]) -> str:
    """The layout a table's units were timed in (``LatencyBackend.unit_layout``); tables from before the
    field timed every unit NCHW."""
    return str(meta.get("unit_layout") or "nchw")


def unit_couts(desc: ModelDescription, residual: Sequence[str]) -> str:
    """Output channels of each unit but the last, space separated (a calibration row's key)."""
    return " ".join(str(u.cout) for u in units_of(desc, residual)[:-1])


# --- one writer per table ---------------------------------------------------------------------------
def _live_text(live: dict[str, Any]) -> str:
    return ";".join(f"{k}={v}" for k, v in live.items()).replace(",", " ")


class TableWriter:
    """Appends rows to a table's CSV files under the table's lock (one line per row, fsynced).

    Hook for drivers other than :func:`profile_table` (e.g. sharded profiling): ``done_keys()``,
    ``append_rows(rows)`` and ``append_calib(rows)`` skip rows already present, so no duplicates.
    """

    def __init__(self, csv_path: Path) -> None:
        self.path = Path(csv_path)
        self.lock = ExclusiveLock(self.path, f"latency table {self.path}")
        self._done: set[tuple[str, int, int]] | None = None
        self._columns: list[str] | None = None

    def __enter__(self) -> TableWriter:
        self.lock.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.lock.release()

    def _repair_tail(self, path: Path) -> None:
        """Drop a partial last line left by a kill in the middle of a write (under the lock)."""
        if path.exists():
            data = path.read_bytes()
            if data and not data.endswith(b"\n"):
                atomic_write_text(path, data[: data.rfind(b"\n") + 1].decode("utf-8", "replace"))

    def _header(self, path: Path, default: list[str]) -> list[str]:
        import csv

        if path.exists() and path.stat().st_size:
            with open(path, encoding="utf-8") as f:
                return next(csv.reader([f.readline()]))
        append_line(path, ",".join(default))
        return default

    def done_keys(self) -> set[tuple[str, int, int]]:
        if self._done is None:
            self._repair_tail(self.path)
            self._columns = self._header(self.path, COLUMNS + OPTIONAL_COLUMNS)
            rows = read_csv_rows(self.path, COLUMNS, {"cin", "cout"}, "latency table")
            self._done = {(str(r["slot"]), int(r["cin"]), int(r["cout"])) for r in rows}
        return self._done

    def append_rows(self, rows: Sequence[dict[str, Any]]) -> int:
        assert self.lock.held, "append rows under the table lock"
        done = self.done_keys()
        cols = self._columns or COLUMNS
        n = 0
        for r in rows:
            key = (str(r["slot"]), int(r["cin"]), int(r["cout"]))
            if key in done:
                continue
            append_line(self.path, format_row(cols, r))
            done.add(key)
            n += 1
        return n

    def calib_done(self) -> set[str]:
        cp = calib_path(self.path)
        self._repair_tail(cp)
        if not cp.exists() or not cp.stat().st_size:
            return set()
        return {str(r["config"]) for r in read_csv_rows(cp, CALIB_COLUMNS, {"ratio"}, "calibration file")}

    def append_calib(self, rows: Sequence[dict[str, Any]]) -> int:
        assert self.lock.held, "append rows under the table lock"
        cp = calib_path(self.path)
        done = self.calib_done()
        cols = self._header(cp, CALIB_COLUMNS + CALIB_OPTIONAL)
        n = 0
        for r in rows:
            if str(r["config"]) in done:
                continue
            append_line(cp, format_row(cols, r))
            n += 1
        return n


def check_resume(old: dict[str, Any], new: dict[str, Any], csv_path: Path) -> None:
    """Refuse to resume a table started for another model, grid, protocol or device (stable facts
    only: a live reading or a tuple-vs-list difference never refuses), in one line."""
    if {k: v for k, v in (old.get("model") or {}).items() if k != "removed"} != new["model"]:
        raise UserError(f"{csv_path} was started for a different model ({old.get('model', {}).get('name')}); "
                        "choose another --out")
    diffs = [f"{k} {old.get(k)} != {new.get(k)}" for k in _RESUME_KEYS[1:] if old.get(k) != new.get(k)]
    diffs += [f"protocol {k} {old.get('protocol', {}).get(k)} != {new['protocol'].get(k)}"
              for k in ("warmup_runs", "runs", "repeats", "min_window_ms", "calibrate_overhead")
              if old.get("protocol", {}).get(k) != new["protocol"].get(k)]
    if table_unit_layout(old) != table_unit_layout(new):
        diffs.append(f"unit_layout {table_unit_layout(old)} != {table_unit_layout(new)}")
    diffs += differences(identity_of(old.get("device")), identity_of(new.get("device")))
    if diffs:
        raise UserError(f"{csv_path} was started on another device or setup ({describe_differences(diffs)}); "
                        "profile into the user store (omit --out) or choose another --out")


def _scratch_dir(stem: str) -> Path:
    root = user_cache_dir() / "work"
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{stem}.", dir=root))


AUTO_GRANULARITY = 0  # profile_table(granularity=0): probe the channel step the device rewards (8 or 16)


def profile_table(profile: Any, model: nn.Module, out_csv: str | Path, *, input_size: int | None = None,
                  granularity: int = 8, points: int = 5, batch_rows: int = 6, max_rows: int | None = None,
                  settings_overrides: dict[str, Any] | None = None, calibration: int | None = 4,
                  progress: Callable[[int, int], None] | None = None,
                  log: Callable[[str], None] | None = None) -> ProfileResult:
    """Measure (or resume measuring) the table of ``model`` on ``profile``'s device into ``out_csv``.

    Resumable: rows already in ``out_csv`` are skipped; rows are appended as each batch finishes.
    ``max_rows`` stops after that many new rows (tests, budgets). ``progress(done, total)`` is called
    after each batch. Once the grid is complete, whole-model calibration configurations (4 uniform +
    ``calibration`` random + up to 2 block-removed; None: none) are measured into ``<name>.calib.csv``.
    ``granularity`` :data:`AUTO_GRANULARITY` (0): a new table probes the channel step the device rewards
    (:mod:`amc_mobile.latency.channels`; ``log`` gets the one-line verdict), a started one keeps its own.
    Returns what was done (rows measured now, total, grid sizes, seconds) as a :class:`ProfileResult`.
    """
    with torch_threads(1):
        return _profile_table(profile, model, Path(out_csv), input_size, granularity, points, batch_rows, max_rows,
                              settings_overrides, calibration, progress, log)


def table_meta(profile: Any, backend: Any, model: nn.Module, desc: ModelDescription, residual: list[str],
               units: Sequence[Unit], grids: Sequence[SlotGrid], granularity: int, points: int,
               settings: Any) -> dict[str, Any]:
    return table_meta_for(model, desc, residual, units, grids, granularity, points,
                          device_record=backend.device_record(), profile_name=profile.name,
                          protocol=settings.to_dict(), unit_layout=backend.unit_layout)


def table_meta_for(model: nn.Module, desc: ModelDescription, residual: list[str], units: Sequence[Unit],
                   grids: Sequence[SlotGrid], granularity: int, points: int, *, device_record: dict[str, Any],
                   profile_name: str, protocol: dict[str, Any], unit_layout: str = "nchw") -> dict[str, Any]:
    """A table's metadata from explicit parts (no backend needed: the sharded Ray profiler builds it
    from the devices' reports)."""
    spec = get_arch(model)
    arch = spec.to_dict() if spec is not None else {"name": type(model).__name__, "width_mult": 1.0,
                                                    "num_classes": -1, "in_chans": -1}
    arch.pop("removed", None)
    return {
        "schema_version": TABLE_SCHEMA, "kind": KIND,
        "model": {**arch, "input_size": desc.input_size, "in_chans": desc.in_chans},
        "residual_layers": residual, "granularity": granularity, "points": points,
        "units": [{"name": u.name, "slot": u.slot, "cin": u.cin, "cout": u.cout, "layers": list(u.layers)}
                  for u in units],
        "grid": [{"slot": g.slot, "cin": g.cin, "cout": g.cout, "full_points": g.full_points} for g in grids],
        "device": device_record, "profile": profile_name, "protocol": protocol,
        "reference": REFERENCE_ID, "unit_layout": unit_layout,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def unit_artifacts(backend: Any, keys: Sequence[tuple[str, int, int]], batch_size: int, work: Path) -> list[Path]:
    """Each grid point ``(slot, cin, cout)`` built as its isolated unit and prepared by ``backend``
    (in the backend's ``unit_layout``)."""
    arts = []
    for slot, a, b in keys:
        mod, shape = build_unit(slot, a, b, batch_size)
        if backend.unit_layout == "nhwc":
            mod, shape = channels_last_unit(mod, shape)
        safe = slot.replace("|", "_").replace("+", "-")
        arts.append(backend.prepare(mod, shape, work / f"{safe}_{a}_{b}{backend.artifact_suffix}"))
    return arts


def grid_row(key: tuple[str, int, int], m: Any, stamp: str, live: str) -> dict[str, Any]:
    """The table row of grid point ``key`` from its protocol measurement ``m``."""
    slot, a, b = key
    return {"slot": slot, "cin": a, "cout": b, "latency_ms": m.stats.median_ms, "p10_ms": m.stats.p10_ms,
            "p90_ms": m.stats.p90_ms, "std_ms": m.stats.std_ms, "windows": m.stats.count, "ratio": m.ratio,
            "ratio_p10": m.ratio_p10, "ratio_p90": m.ratio_p90, "ref_ms": m.ref_ms, "overhead_ms": m.overhead_ms,
            "runs_per_window": m.runs_per_window, "measured_at": stamp, "live": live}


def _batches(todo: Sequence[tuple[str, int, int]], n: int) -> Iterator[Sequence[tuple[str, int, int]]]:
    for start in range(0, len(todo), n):
        yield todo[start:start + n]


def _profile_table(profile: Any, model: nn.Module, out_csv: Path, input_size: int | None, granularity: int,
                   points: int, batch_rows: int, max_rows: int | None, settings_overrides: dict[str, Any] | None,
                   calibration: int | None, progress: Callable[[int, int], None] | None,
                   log: Callable[[str], None] | None = None) -> ProfileResult:
    from amc_mobile.latency.protocol import Protocol, ProtocolSettings
    from amc_mobile.latency.table import read_meta

    t0, cpu0 = time.perf_counter(), time.process_time()
    desc = describe_model(model, input_size)
    residual = residual_layers(model)
    units = units_of(desc, residual)
    probe: dict[str, Any] | None = None
    if granularity == AUTO_GRANULARITY:  # the step a table already started with, else the one the device rewards
        if out_csv.exists() and out_csv.stat().st_size and meta_path(out_csv).exists():
            granularity = table_step(read_meta(out_csv))
        else:
            from amc_mobile.latency.channels import describe_probe, probe_channel_step

            probe = probe_channel_step(profile, model, desc.input_size)
            granularity = int(probe["step"])
            if log is not None:
                log(describe_probe(probe))
    grids = plan_grid(grid_units(model, desc, residual), granularity, points)
    backend = profile.create_backend()
    reason = backend.check_available()
    if reason:
        raise UserError(f"device '{profile.name}' is not usable here: {reason}")
    settings = ProtocolSettings.from_profile(profile, **(settings_overrides or {}))
    new_rows = calib_new = 0
    work: Path | None = None
    try:
        meta = table_meta(profile, backend, model, desc, residual, units, grids, granularity, points, settings)
        if probe is not None:
            meta["channel_probe"] = probe
        from amc_mobile.storage import ensure_dir

        ensure_dir(out_csv.parent, "table folder")
        with TableWriter(out_csv) as writer:
            if out_csv.exists() and out_csv.stat().st_size:
                check_resume(read_meta(out_csv), meta, out_csv)
            else:
                atomic_write_json(meta_path(out_csv), meta, indent=1)
            done = set(writer.done_keys())
            todo = [(g.slot, a, b) for g in grids for a in g.cin for b in g.cout if (g.slot, a, b) not in done]
            total = sum(len(g.cin) * len(g.cout) for g in grids)
            if max_rows is not None:
                todo = todo[:max_rows]
            work = _scratch_dir(out_csv.stem)
            proto = Protocol(backend, settings, work)
            if progress:
                progress(len(done), total)
            for batch in _batches(todo, batch_rows):
                arts = unit_artifacts(backend, batch, profile.batch_size, work)
                ms = proto.measure_many(arts)
                stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
                live = _live_text(backend.live())
                new_rows += writer.append_rows([grid_row(key, m, stamp, live)
                                                for key, m in zip(batch, ms, strict=True)])
                for p in arts:
                    if p.parent == work:
                        p.unlink(missing_ok=True)
                if progress:
                    progress(len(done) + new_rows, total)
            if calibration is not None and (max_rows is None or new_rows < max_rows) and len(done) + new_rows == total:
                calib_new = _profile_calibration(proto, backend, model, desc, residual, writer, calibration,
                                                 granularity)
    finally:
        backend.close()
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    return ProfileResult(path=str(out_csv), new_rows=new_rows, rows=len(done) + new_rows, grid_points=total,
                         full_grid_points=sum(g.full_points for g in grids), calibration_rows_new=calib_new,
                         seconds=time.perf_counter() - t0, cpu_seconds=time.process_time() - cpu0)


def _profile_calibration(proto: Any, backend: Any, model: nn.Module, desc: ModelDescription, residual: list[str],
                         writer: TableWriter, n_random: int, multiple: int = 8) -> int:
    """Measure the calibration models (whole models, interleaved with the reference); resumable."""
    from amc_mobile.pruning import ChannelPruner

    done = writer.calib_done()
    configs = [c for c in calibration_configs(model, desc.input_size, n_random, multiple=multiple)
               if c.config_id not in done]
    if not configs:
        return 0
    pruner = ChannelPruner(model, desc.input_size, reconstruct=False)
    arts, couts = [], []
    bs = backend.profile.batch_size
    for cfg in configs:
        net = build_config_model(model, desc.input_size, cfg, pruner)
        arts.append(backend.prepare(net, (bs, desc.in_chans, desc.input_size, desc.input_size),
                                    proto.work_dir / f"calib-{cfg.config_id}"))
        couts.append(unit_couts(describe_model(net, desc.input_size), residual))
    ms = proto.measure_many(arts)
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return writer.append_calib([
        {"config": cfg.config_id, "unit_couts": c, "ratio": m.ratio, "latency_ms": m.stats.median_ms,
         "p10_ms": m.stats.p10_ms, "p90_ms": m.stats.p90_ms, "ref_ms": m.ref_ms, "overhead_ms": m.overhead_ms,
         "measured_at": stamp, "removed": " ".join(removed_units(desc, residual, cfg.removed))}
        for cfg, c, m in zip(configs, couts, ms, strict=True)])


def removed_units(desc: ModelDescription, residual: Sequence[str], blocks: Sequence[str]) -> list[str]:
    """Table unit names whose layers all lie inside the removed ``blocks``."""
    if not blocks:
        return []
    prefixes = tuple(f"{b}." for b in blocks)
    return [u.name for u in units_of(desc, residual) if all(n.startswith(prefixes) for n in u.layers)]

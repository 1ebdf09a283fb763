"""Sharded latency tables: one table's (cin, cout) grid split over every device of one model on Ray.

The driver (this process) owns the single resumable table: it holds the table's lock, plans the
rows still missing (the grid of :func:`amc_mobile.latency.lut.plan_grid`), hands chunks of
``batch_rows`` rows to one actor per physical device (placed by the ``device:NAME`` resource on the
host that has the phone) and appends each chunk's rows, fsynced, as it comes back, recording which
device measured them (column ``device``). A device that is lost mid-chunk (its node killed, the phone
unplugged) loses only that chunk: the chunk goes back to the queue for the other devices, and every
row already appended stays. Rows are keyed by (slot, cin, cout) and never written twice.

Each device's rows are ratios to the reference workload measured on that same device (NetAdapt-style
normalisation, as in :mod:`amc_mobile.latency.lut`), so devices of one model mix in one table. That
only holds when the devices agree: the reference latency per device (every row carries it) and, once
the grid is complete, the whole-model calibration configurations measured on *every* device are
compared; a spread beyond ``tolerance`` is one line naming the devices (the rows are kept).
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from statistics import median
from typing import Any

from amc_mobile.distributed.cluster import (
    DEVICE_RESOURCE,
    LOCAL,
    ClusterDevice,
    devices_of_model,
    ray_name,
    ray_session,
)
from amc_mobile.errors import UserError
from amc_mobile.farm.spec import FarmDevice
from amc_mobile.latency.profiling import ProfileResult

log = logging.getLogger(__name__)
Row = tuple[str, int, int]
DEVICE_COLUMN = "device"
DEFAULT_TOLERANCE = 0.15


@dataclass(frozen=True)
class DeviceShare:
    """One physical device's part of a sharded table."""

    rows: int  # grid rows this device measured (all calls)
    ref_ms: float  # median reference-workload latency over its rows


@dataclass(frozen=True)
class ShardedProfileResult(ProfileResult):
    """What one :func:`profile_sharded` call did: :class:`ProfileResult`'s fields, plus each device's
    share, the devices lost during this call (with why), and how far the devices agree."""

    devices: dict[str, DeviceShare] = field(default_factory=dict)
    lost: dict[str, str] = field(default_factory=dict)
    spread: dict[str, float | None] = field(default_factory=dict)  # reference / calibration, fractions
    disagreement: str = ""  # the worst disagreement in words ("" with one device)

    @property
    def worst_spread(self) -> float:
        return max((v for v in self.spread.values() if v is not None), default=0.0)

    def summary_line(self) -> str:
        """One line: which devices measured the table, any lost, and how far they agree."""
        text = "devices: " + ", ".join(f"{k} {v.rows} rows (reference {v.ref_ms:.3f} ms)"
                                       for k, v in self.devices.items())
        if self.lost:
            text += "; lost: " + ", ".join(f"{k} ({v})" for k, v in self.lost.items())
        spread = [f"{k} {100 * v:.1f}%" for k, v in self.spread.items() if v is not None]
        return text + ("; spread: " + ", ".join(spread) if spread else "")


# ---------------------------------------------------------------------------------------------------
# On the device's host
# ---------------------------------------------------------------------------------------------------

class DeviceMeasurer:
    """Runs on the host of one device (a Ray actor): holds the backend and the protocol between chunks."""

    def __init__(self, name: str, device: FarmDevice | None, settings_overrides: dict[str, Any]) -> None:
        from amc_mobile.distributed.cluster import load_host_device
        from amc_mobile.farm.spec import resolve_profile
        from amc_mobile.latency.protocol import Protocol, ProtocolSettings
        from amc_mobile.storage import user_cache_dir

        spec = device if device is not None else load_host_device(name)
        self.name = name
        self.profile = resolve_profile(spec)
        self.backend = self.profile.create_backend()
        why = self.backend.check_available()
        if why:
            self.backend.close()
            raise UserError(f"device '{name}' is not reachable: {why}")
        settings = ProtocolSettings.from_profile(self.profile, **settings_overrides)
        self.work = user_cache_dir() / "ray-profile" / name
        self.proto = Protocol(self.backend, settings, self.work)
        self.settings = settings.to_dict()

    def describe(self) -> dict[str, Any]:
        facts: dict[str, Any] = json.loads(json.dumps(self.backend.describe_device(), default=str))
        record = json.loads(json.dumps(self.backend.device_record(), default=str))
        return {"device": self.name, "backend": self.profile.backend, "protocol": self.settings, "facts": facts,
                "record": record, "unit_layout": self.backend.unit_layout}

    def measure_rows(self, rows: Sequence[Row]) -> list[dict[str, Any]]:
        """Table rows (:data:`amc_mobile.latency.table.COLUMNS` plus ``live`` and ``device``) for these
        grid points, measured interleaved with the reference workload."""
        from amc_mobile.latency.profiling import grid_row, unit_artifacts
        from amc_mobile.threads import torch_threads

        with torch_threads(1):
            arts = unit_artifacts(self.backend, rows, self.profile.batch_size, self.work)
            ms = self.proto.measure_many(arts)
        stamp, live = _now(), self._live()
        for p in arts:
            if p.parent == self.work:
                p.unlink(missing_ok=True)
        return [{**grid_row(key, m, stamp, live), "device": self.name} for key, m in zip(rows, ms, strict=True)]

    def _live(self) -> str:
        live = self.backend.live()
        return ";".join(f"{k}={v}" for k, v in live.items()).replace(",", " ")

    def measure_models(self, configs: Sequence[tuple[str, str, str, Any]],
                       input_shape: tuple[int, ...]) -> list[dict[str, Any]]:
        """Calibration rows (config id ``ID@DEVICE``) for whole models: (id, unit couts, removed, model)."""
        from amc_mobile.threads import torch_threads

        shape = (self.profile.batch_size, *input_shape[1:])
        with torch_threads(1):
            arts = [self.backend.prepare(net, shape, self.work / f"calib-{cid}") for cid, _, _, net in configs]
            ms = self.proto.measure_many(arts)
        stamp = _now()
        return [{"config": f"{cid}@{self.name}", "unit_couts": couts, "ratio": m.ratio, "latency_ms": m.stats.median_ms,
                 "p10_ms": m.stats.p10_ms, "p90_ms": m.stats.p90_ms, "ref_ms": m.ref_ms, "overhead_ms": m.overhead_ms,
                 "measured_at": stamp, "removed": removed, "device": self.name}
                for (cid, couts, removed, _), m in zip(configs, ms, strict=True)]

    def close(self) -> None:
        self.backend.close()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------------
# The table on the driver
# ---------------------------------------------------------------------------------------------------

@dataclass
class _Device:
    name: str
    actor: Any
    lost: str = ""


def _remote_class(ray: Any) -> Any:
    return ray.remote(DeviceMeasurer)


def _start_devices(ray: Any, devices: Sequence[tuple[str, FarmDevice | None]],
                   overrides: dict[str, Any]) -> list[_Device]:
    cls = _remote_class(ray)
    return [_Device(name, cls.options(num_cpus=0, resources={DEVICE_RESOURCE + name: 1.0}, max_restarts=0,
                                      max_task_retries=0).remote(name, spec, overrides))
            for name, spec in devices]


def _describe(ray: Any, devs: list[_Device], timeout_s: float = 180.0) -> dict[str, Any]:
    """Facts of every device that answers within ``timeout_s`` (connecting included); the others are
    marked lost, with why (a node that vanished before its actor was placed never answers)."""
    out = {}
    refs = [(d, d.actor.describe.remote()) for d in devs]
    for d, ref in refs:
        try:
            out[d.name] = ray.get(ref, timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            d.lost = f"no answer within {timeout_s:.0f} s (its node gone or busy)"
            ray.kill(d.actor)
        except ray.exceptions.RayError as exc:
            d.lost = _why(exc)
        if d.lost:
            log.warning("device %s unusable: %s", d.name, d.lost)
    return out


def _why(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    text = str(cause if isinstance(cause, BaseException) else exc).strip().splitlines()
    for line in text:  # the user-facing line of a device error, else the first line
        if "UserError" in line or "AdbError" in line or "not reachable" in line:
            return line.strip()[:240]
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"


def _dispatch(ray: Any, devs: list[_Device], queue: deque[Any], submit: Callable[[_Device, Any], Any],
              on_result: Callable[[_Device, Any, Any], None]) -> None:
    """Keep one chunk in flight per live device until the queue is empty; a lost device's chunk is
    put back at the front of the queue. Raises when every device is lost with work left."""
    inflight: dict[Any, tuple[_Device, Any]] = {}
    while queue or inflight:
        for d in devs:
            if queue and not d.lost and all(x is not d for x, _ in inflight.values()):
                chunk = queue.popleft()
                inflight[submit(d, chunk)] = (d, chunk)
        if not inflight:
            lost = "; ".join(f"{d.name}: {d.lost}" for d in devs)
            raise UserError(f"every device was lost with {len(queue)} chunk(s) left ({lost}); the rows measured so "
                            "far are kept: re-run the same command to resume")
        ready, _ = ray.wait(list(inflight), num_returns=1)
        for ref in ready:
            d, chunk = inflight.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as exc:
                d.lost = _why(exc)
                log.warning("device %s lost (%s); its chunk goes to the other devices", d.name, d.lost)
                queue.appendleft(chunk)
                continue
            on_result(d, chunk, result)


def profile_sharded(model_name: str, model: Any, out_csv: str | Path | None, *, address: str = LOCAL,
                    local_device: FarmDevice | None = None, input_size: int | None = None, granularity: int = 8,
                    points: int = 5, batch_rows: int = 6, settings_overrides: dict[str, Any] | None = None,
                    calibration: int | None = 4, tolerance: float = DEFAULT_TOLERANCE,
                    progress: Callable[[int, int], None] | None = None) -> ShardedProfileResult:
    """Measure (or resume) the table of ``model`` for device model ``model_name`` on every device of
    that model in the Ray cluster at ``address`` (``local``: just ``local_device`` on this machine,
    default: the profile named ``model_name``). ``out_csv`` None: the user store's table of the model.

    Devices disagreeing by more than ``tolerance`` is one line (after every row is saved)."""
    from amc_mobile.latency.profiling import TableWriter
    from amc_mobile.storage import ensure_dir

    ray_name(model_name, "device model")
    if out_csv is None:
        from amc_mobile.latency.store import user_tables_dir
        from amc_mobile.latency.table import default_table_path
        from amc_mobile.models.arch import require_arch

        out_csv = default_table_path(user_tables_dir(model_name), require_arch(model),
                                     int(input_size or model.input_size))
    out_csv = Path(out_csv)
    ensure_dir(out_csv.parent, "table folder")
    if address == LOCAL and local_device is None:
        local_device = FarmDevice(name=model_name, profile=model_name)
    with TableWriter(out_csv) as writer:
        if address == LOCAL:
            assert local_device is not None
            with ray_session(LOCAL, local_devices=[(local_device.name, model_name)], num_cpus=1) as ray:
                summary = _profile(ray, [(local_device.name, local_device)], writer, model_name, model, input_size,
                                   granularity, points, batch_rows, settings_overrides or {}, calibration, progress)
        else:
            with ray_session(address) as ray:
                found: list[ClusterDevice] = devices_of_model(model_name)
                summary = _profile(ray, [(d.name, None) for d in found], writer, model_name, model, input_size,
                                   granularity, points, batch_rows, settings_overrides or {}, calibration, progress)
    agree = device_agreement(out_csv)
    result = ShardedProfileResult(
        **summary, devices={k: DeviceShare(**v) for k, v in agree["devices"].items()}, spread=agree["spread"],
        disagreement=agree["disagreement"])
    worst = result.worst_spread
    if worst > tolerance:
        raise UserError(f"devices of model '{model_name}' disagree: {result.disagreement} (spread "
                        f"{100 * worst:.0f}% > tolerance {100 * tolerance:.0f}%); every measured row is kept in "
                        f"{out_csv}: check the outlier's temperature and governor, or profile each phone separately")
    return result


def _profile(ray: Any, devices: Sequence[tuple[str, FarmDevice | None]], writer: Any, model_name: str, model: Any,
             input_size: int | None, granularity: int, points: int, batch_rows: int, overrides: dict[str, Any],
             calibration: int | None, progress: Callable[[int, int], None] | None) -> dict[str, Any]:
    """Measure the missing grid rows on ``devices`` (then the calibration); ProfileResult's fields and
    ``lost`` as a dict."""
    from amc_mobile.latency.profiling import check_resume, grid_units, plan_grid, table_meta_for
    from amc_mobile.latency.table import meta_path, read_meta
    from amc_mobile.latency.units import residual_layers, units_of
    from amc_mobile.models.describe import describe_model
    from amc_mobile.storage import atomic_write_json

    t0, c0 = time.perf_counter(), time.process_time()
    out_csv = writer.path
    overrides = {k: v for k, v in overrides.items() if v is not None}
    desc = describe_model(model, input_size)
    residual = residual_layers(model)
    units = units_of(desc, residual)
    grids = plan_grid(grid_units(model, desc, residual), granularity, points)
    devs = _start_devices(ray, devices, overrides)
    facts = _describe(ray, devs)
    if not facts:
        raise UserError("no device of model '{}' is usable: {}".format(
            model_name, "; ".join(f"{d.name}: {d.lost}" for d in devs)))
    first = facts[sorted(facts)[0]]
    meta = table_meta_for(model, desc, residual, units, grids, granularity, points,
                          device_record=first["record"], profile_name=model_name, protocol=first["protocol"],
                          unit_layout=first.get("unit_layout", "nchw"))
    meta.update({
        "sharded": {"model": model_name, "devices": {k: v["facts"] for k, v in facts.items()}}, "created": _now(),
    })
    if out_csv.exists() and out_csv.stat().st_size:
        old = read_meta(out_csv)
        check_resume(old, meta, out_csv)
        meta["created"] = old.get("created", meta["created"])
        meta["sharded"]["devices"] = {**(old.get("sharded") or {}).get("devices", {}), **meta["sharded"]["devices"]}
    atomic_write_json(meta_path(out_csv), meta, indent=1)
    done = set(writer.done_keys())
    before = len(done)
    total = sum(len(g.cin) * len(g.cout) for g in grids)
    todo = [(g.slot, a, b) for g in grids for a in g.cin for b in g.cout if (g.slot, a, b) not in done]
    queue: deque[Any] = deque(todo[i:i + batch_rows] for i in range(0, len(todo), batch_rows))
    state = {"rows": before}
    if progress:
        progress(before, total)

    def on_rows(d: _Device, chunk: Any, rows: Any) -> None:
        state["rows"] += writer.append_rows(rows)
        if progress:
            progress(state["rows"], total)

    calib_new = 0
    try:
        _dispatch(ray, devs, queue, lambda d, chunk: d.actor.measure_rows.remote(chunk), on_rows)
        if calibration is not None and state["rows"] >= total:
            calib_new = _calibrate(ray, devs, writer, model, desc, residual, calibration, granularity)
    finally:
        for d in devs:
            if not d.lost:
                try:
                    ray.get(d.actor.close.remote(), timeout=30)
                except Exception:  # noqa: BLE001 - closing a device that just died is not an error
                    pass
    return {"path": str(out_csv), "new_rows": state["rows"] - before, "rows": state["rows"], "grid_points": total,
            "full_grid_points": sum(g.full_points for g in grids), "calibration_rows_new": calib_new,
            "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
            "lost": {d.name: str(d.lost) for d in devs if d.lost}}


def _calibrate(ray: Any, devs: list[_Device], writer: Any, model: Any, desc: Any, residual: list[str],
               n_random: int, multiple: int = 8) -> int:
    """Whole-model calibration configurations on *every* live device (config ids ``ID@DEVICE``): they fit
    the table's correction and show whether the devices agree. Resumable per (config, device)."""
    from amc_mobile.latency.profiling import (
        build_config_model,
        calibration_configs,
        removed_units,
        unit_couts,
    )
    from amc_mobile.models.describe import describe_model
    from amc_mobile.pruning import ChannelPruner

    done = writer.calib_done()
    configs = calibration_configs(model, desc.input_size, n_random, multiple=multiple)
    pruner = ChannelPruner(model, desc.input_size, reconstruct=False)
    built = []
    for cfg in configs:
        net = build_config_model(model, desc.input_size, cfg, pruner)
        built.append((cfg.config_id, unit_couts(describe_model(net, desc.input_size), residual),
                      " ".join(removed_units(desc, residual, cfg.removed)), net))
    shape = (1, desc.in_chans, desc.input_size, desc.input_size)
    refs = []
    for d in devs:
        mine = [c for c in built if f"{c[0]}@{d.name}" not in done]
        if mine and not d.lost:
            refs.append((d, d.actor.measure_models.remote(mine, shape)))
    new = 0
    for d, ref in refs:
        try:
            new += writer.append_calib(ray.get(ref))
        except ray.exceptions.RayError as exc:
            d.lost = _why(exc)
            log.warning("device %s lost during calibration (%s)", d.name, d.lost)
    return int(new)


def device_agreement(out_csv: str | Path) -> dict[str, Any]:
    """How far the devices of a sharded table agree: per device its rows and median reference latency;
    ``spread.reference`` = (max - min) / median of those; ``spread.calibration`` = the worst relative
    range of one calibration configuration's ratio across devices (None with fewer than 2 devices)."""
    import pandas as pd

    from amc_mobile.latency.table import calib_path

    out_csv = Path(out_csv)
    rows = pd.read_csv(out_csv)
    per: dict[str, Any] = {}
    if DEVICE_COLUMN in rows.columns:
        for name, sub in rows.dropna(subset=[DEVICE_COLUMN]).groupby(DEVICE_COLUMN):
            per[str(name)] = {"rows": len(sub), "ref_ms": float(sub["ref_ms"].median())}
    spread: dict[str, float | None] = {"reference": None, "calibration": None}
    text = []
    refs = {k: v["ref_ms"] for k, v in per.items()}
    if len(refs) >= 2:
        spread["reference"] = (max(refs.values()) - min(refs.values())) / median(refs.values())
        lo, hi = min(refs, key=refs.__getitem__), max(refs, key=refs.__getitem__)
        text.append(f"reference workload {lo} {refs[lo]:.3f} ms vs {hi} {refs[hi]:.3f} ms")
    cpath = calib_path(out_csv)
    if cpath.exists() and cpath.stat().st_size:
        calib = pd.read_csv(cpath)
        if DEVICE_COLUMN in calib.columns and calib[DEVICE_COLUMN].nunique() >= 2:
            calib["base"] = [str(c).rsplit("@", 1)[0] for c in calib["config"]]
            worst, where = 0.0, ""
            for cid, sub in calib.groupby("base"):
                r = {str(k): float(v) for k, v in zip(sub[DEVICE_COLUMN], sub["ratio"], strict=True)}
                if len(r) < 2:
                    continue
                s = (max(r.values()) - min(r.values())) / median(r.values())
                if s >= worst:
                    lo, hi = min(r, key=r.__getitem__), max(r, key=r.__getitem__)
                    worst, where = s, f"config {cid}: {lo} {r[lo]:.3f} vs {hi} {r[hi]:.3f} x reference"
            spread["calibration"] = worst
            if where:
                text.append(where)
    return {"devices": per, "spread": spread, "disagreement": "; ".join(text)}

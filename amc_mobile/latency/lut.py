"""Per-unit latency tables (LUT): resumable profiling on a coarse channel grid, interpolated prediction.

NetAdapt-style: model latency = sum of its units' entries (units: :mod:`amc_mobile.latency.units`),
each unit measured in isolation at (input channels, output channels) grid points under the noise-robust
protocol (:mod:`amc_mobile.latency.protocol`). Entries are stored in ms and as ratios to the reference
workload; prediction interpolates the ratios bilinearly in (cin, cout) - exact for the cin*cout MAC term
- and converts to ms with the table's median reference latency. The grid holds ``points`` values per
axis (multiples of ``granularity``), not the full grid of every multiple.

Files: ``<name>.csv`` (one row per grid point, appended and fsynced as measured, so a kill loses no
finished row) and ``<name>.meta.json`` (schema version, model, resolution, device facts, protocol).
"""

from __future__ import annotations

import json
import os
import time
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from torch import nn

from amc_mobile.errors import UserError
from amc_mobile.latency.units import (
    REFERENCE_ID,
    Unit,
    build_unit,
    residual_layers,
    units_of,
)
from amc_mobile.models.describe import ModelDescription, describe_model
from amc_mobile.threads import torch_threads

TABLE_SCHEMA = 1
COLUMNS = ["slot", "cin", "cout", "latency_ms", "p10_ms", "p90_ms", "std_ms", "windows", "ratio", "ratio_p10",
           "ratio_p90", "ref_ms", "overhead_ms", "runs_per_window", "measured_at"]


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


CALIB_COLUMNS = ["config", "unit_couts", "ratio", "latency_ms", "p10_ms", "p90_ms", "ref_ms", "overhead_ms",
                 "measured_at"]


def calibration_configs(model: nn.Module, input_size: int, n_random: int = 4, seed: int = 1234
                        ) -> list[tuple[str, list[int]]]:
    """Whole-model configurations measured with the table to fit its unit-sum -> model correction:
    uniform keep ratios 1.0, 0.75, 0.5, 0.3 and ``n_random`` random policies (keep ratio U[0.25, 1]
    per group, AMC rounding). Returns (config id, keep channels per prunable group)."""
    import random

    from amc_mobile.pruning import find_groups, round_channels

    groups = find_groups(model, input_size)
    rng = random.Random(seed)
    out = [(f"uniform-{r:g}", [round_channels(g.width, r) for g in groups]) for r in (1.0, 0.75, 0.5, 0.3)]
    for i in range(n_random):
        out.append((f"random-{seed}-{i}", [round_channels(g.width, rng.uniform(0.25, 1.0)) for g in groups]))
    return out


def default_table_path(device_dir: Path, arch: dict[str, Any], input_size: int) -> Path:
    w = f"{arch['width_mult']:g}"
    return device_dir / f"{arch['name']}_w{w}_r{input_size}_c{arch['in_chans']}_n{arch['num_classes']}.csv"


def _meta_path(csv_path: Path) -> Path:
    return csv_path.with_name(csv_path.stem + ".meta.json")


def _calib_path(csv_path: Path) -> Path:
    return csv_path.with_name(csv_path.stem + ".calib.csv")


def _append_rows(path: Path, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Append CSV rows and fsync (a kill loses no finished row); header on a new file."""
    new_file = not path.exists() or path.stat().st_size == 0
    with open(path, "a") as f:
        if new_file:
            f.write(",".join(columns) + "\n")
        for vals in rows:
            f.write(",".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in vals) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _repair_tail(csv_path: Path) -> None:
    """Drop a partial last line left by a kill in the middle of a write."""
    data = csv_path.read_bytes()
    if data and not data.endswith(b"\n"):
        csv_path.write_bytes(data[: data.rfind(b"\n") + 1])


def _done_keys(csv_path: Path) -> set[tuple[str, int, int]]:
    import pandas as pd

    if not csv_path.exists() or csv_path.stat().st_size == 0:
        return set()
    df = pd.read_csv(csv_path)
    return {(s, int(a), int(b)) for s, a, b in zip(df["slot"], df["cin"], df["cout"], strict=True)}


def profile_table(profile: Any, model: nn.Module, out_csv: str | Path, *, input_size: int | None = None,
                  granularity: int = 8, points: int = 5, batch_rows: int = 6, max_rows: int | None = None,
                  settings_overrides: dict[str, Any] | None = None, calibration: int | None = 4,
                  progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Measure (or resume measuring) the table of ``model`` on ``profile``'s device into ``out_csv``.

    Resumable: rows already in ``out_csv`` are skipped; rows are appended as each batch finishes.
    ``max_rows`` stops after that many new rows (tests, budgets). ``progress(done, total)`` is called
    after each batch. Once the grid is complete, whole-model calibration configurations (4 uniform +
    ``calibration`` random; None: none) are measured into ``<name>.calib.csv``; they fit the correction
    from the sum of isolated units to the whole model (see :class:`LatencyTable`).
    Returns a summary (rows measured now, total, grid sizes, seconds).
    """
    with torch_threads(1):
        return _profile_table(profile, model, out_csv, input_size, granularity, points, batch_rows, max_rows,
                              settings_overrides, calibration, progress)


def _profile_table(profile: Any, model: nn.Module, out_csv: str | Path, input_size: int | None, granularity: int,
                   points: int, batch_rows: int, max_rows: int | None, settings_overrides: dict[str, Any] | None,
                   calibration: int | None, progress: Callable[[int, int], None] | None) -> dict[str, Any]:
    from amc_mobile.latency.protocol import Protocol, ProtocolSettings

    t0, cpu0 = time.perf_counter(), time.process_time()
    out_csv = Path(out_csv)
    arch = dict(getattr(model, "arch_kwargs", {}) or {"name": type(model).__name__, "width_mult": 1.0,
                                                      "num_classes": -1, "in_chans": -1})
    desc = describe_model(model, input_size)
    residual = residual_layers(model)
    units = units_of(desc, residual)
    grids = plan_grid(units, granularity, points)
    backend = profile.create_backend()
    reason = backend.check_available()
    if reason:
        raise UserError(f"device '{profile.name}' is not usable here: {reason}")
    settings = ProtocolSettings.from_profile(profile, **(settings_overrides or {}))
    meta = {
        "schema_version": TABLE_SCHEMA, "kind": "amc-mobile-latency-table",
        "model": {**arch, "input_size": desc.input_size, "in_chans": desc.in_chans},
        "residual_layers": residual, "granularity": granularity, "points": points,
        "units": [{"name": u.name, "slot": u.slot, "cin": u.cin, "cout": u.cout, "layers": list(u.layers)}
                  for u in units],
        "grid": [{"slot": g.slot, "cin": g.cin, "cout": g.cout, "full_points": g.full_points} for g in grids],
        "device": backend.describe_device(), "profile": profile.name, "protocol": settings.to_dict(),
        "reference": REFERENCE_ID,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    meta_path = _meta_path(out_csv)
    if out_csv.exists():
        _check_resume(meta_path, meta, out_csv)
        _repair_tail(out_csv)
    else:
        out_csv.parent.mkdir(parents=True, exist_ok=True)
        meta_path.write_text(json.dumps(meta, indent=1))
    done = _done_keys(out_csv)
    todo = [(g.slot, a, b) for g in grids for a in g.cin for b in g.cout if (g.slot, a, b) not in done]
    total = sum(len(g.cin) * len(g.cout) for g in grids)
    if max_rows is not None:
        todo = todo[:max_rows]
    work = out_csv.parent / ".work" / out_csv.stem
    proto = Protocol(backend, settings, work)
    new_rows = 0
    if progress:
        progress(len(done), total)
    try:
        for start in range(0, len(todo), batch_rows):
            batch = todo[start:start + batch_rows]
            arts = []
            for slot, a, b in batch:
                mod, shape = build_unit(slot, a, b, profile.batch_size)
                safe = slot.replace("|", "_").replace("+", "-")
                arts.append(backend.prepare(mod, shape, work / f"{safe}_{a}_{b}{backend.artifact_suffix}"))
            ms = proto.measure_many(arts)
            stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
            _append_rows(out_csv, COLUMNS, [
                [slot, a, b, m.stats.median_ms, m.stats.p10_ms, m.stats.p90_ms, m.stats.std_ms, m.stats.count,
                 m.ratio, m.ratio_p10, m.ratio_p90, m.ref_ms, m.overhead_ms, m.runs_per_window, stamp]
                for (slot, a, b), m in zip(batch, ms, strict=True)])
            new_rows += len(batch)
            for p in arts:
                if p.parent == work:
                    p.unlink(missing_ok=True)
            if progress:
                progress(len(done) + new_rows, total)
        calib_new = 0
        if calibration is not None and (max_rows is None or new_rows < max_rows) and len(done) + new_rows == total:
            calib_new = _profile_calibration(proto, backend, model, desc, residual, out_csv, work, calibration)
    finally:
        backend.close()
    return {"path": str(out_csv), "new_rows": new_rows, "rows": len(done) + new_rows, "grid_points": total,
            "full_grid_points": sum(g.full_points for g in grids), "calibration_rows_new": calib_new,
            "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - cpu0}


def _profile_calibration(proto: Any, backend: Any, model: nn.Module, desc: ModelDescription, residual: list[str],
                         out_csv: Path, work: Path, n_random: int) -> int:
    """Measure the calibration models (whole models, interleaved with the reference); resumable."""
    import pandas as pd

    from amc_mobile.models.bn import calibrate_bn
    from amc_mobile.pruning import ChannelPruner, find_groups, pruned_description

    path = _calib_path(out_csv)
    if path.exists():
        _repair_tail(path)
    done = set(pd.read_csv(path)["config"]) if path.exists() and path.stat().st_size else set()
    configs = [c for c in calibration_configs(model, desc.input_size, n_random) if c[0] not in done]
    if not configs:
        return 0
    groups = find_groups(model, desc.input_size)
    pruner = ChannelPruner(model, desc.input_size, reconstruct=False)
    arts, couts = [], []
    bs = backend.profile.batch_size
    for cid, keep in configs:
        net = calibrate_bn(pruner.prune(keep), (2, desc.in_chans, desc.input_size, desc.input_size))
        arts.append(backend.prepare(net, (bs, desc.in_chans, desc.input_size, desc.input_size), work / f"calib-{cid}"))
        units = units_of(pruned_description(desc, groups, keep), residual)
        couts.append(" ".join(str(u.cout) for u in units[:-1]))
    ms = proto.measure_many(arts)
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    _append_rows(path, CALIB_COLUMNS, [[cid, c, m.ratio, m.stats.median_ms, m.stats.p10_ms, m.stats.p90_ms,
                                        m.ref_ms, m.overhead_ms, stamp]
                                       for (cid, _), c, m in zip(configs, couts, ms, strict=True)])
    return len(configs)


_RESUME_KEYS = ("schema_version", "model", "granularity", "points", "profile", "device", "reference")


def _check_resume(meta_path: Path, meta: dict[str, Any], csv_path: Path) -> None:
    if not meta_path.exists():
        raise UserError(f"{csv_path} exists but {meta_path.name} is missing; delete the CSV or choose --out")
    old = json.loads(meta_path.read_text())
    for key in _RESUME_KEYS:
        if old.get(key) != meta.get(key):
            raise UserError(f"{csv_path} was started with a different {key} ({old.get(key)} vs "
                            f"{meta.get(key)}); use another --out or delete it")


class LatencyTable:
    """A loaded table: ``predict(description)`` -> ms (fast path for the search, ~tens of µs).

    Model ratio = alpha * S + beta * B + delta, where S is the sum of the units' interpolated ratios
    and B the sum of their boundary activations (input + output elements, in millions). Isolated units
    pay per-call costs that a whole model pays once (layout reorders/transposes at the graph boundary,
    cold-vs-warm effects); (alpha, beta, delta) are fitted by least squares on the whole-model
    calibration configurations measured with the table (``<name>.calib.csv``). Without them (fewer
    than 4 rows) the raw sum is used (alpha 1, beta 0, delta 0).
    """

    def __init__(self, rows: Any, meta: dict[str, Any], path: str = "", calib: Any = None) -> None:
        self.meta = meta
        self.path = path
        self.rows = rows
        self.residual = set(meta.get("residual_layers", []))
        self.ref_ms = float(rows["ref_ms"].median())
        self.overhead_ms = float(rows["overhead_ms"].median())
        self._grids: dict[str, tuple[list[float], list[float], list[list[float]]]] = {}
        self._geom: dict[str, tuple[float, float]] = {}
        incomplete = []
        for g in meta["grid"]:
            sub = rows[rows["slot"] == g["slot"]]
            z = {(int(a), int(b)): float(r) for a, b, r in zip(sub["cin"], sub["cout"], sub["ratio"], strict=True)}
            missing = [(a, b) for a in g["cin"] for b in g["cout"] if (a, b) not in z]
            self._geom[g["slot"]] = _slot_geometry(g["slot"])
            if missing:
                incomplete.append(f"{g['slot']} ({len(missing)} missing)")
                continue
            self._grids[g["slot"]] = ([float(a) for a in g["cin"]], [float(b) for b in g["cout"]],
                                      [[z[(a, b)] for b in g["cout"]] for a in g["cin"]])
        self.incomplete = incomplete
        self._names = [u["name"] for u in meta["units"]]
        self._slots = [u["slot"] for u in meta["units"]]
        self._plans: dict[tuple[Any, ...], list[tuple[int, int, str]]] = {}
        self.alpha, self.beta, self.delta = 1.0, 0.0, 0.0
        self.calibration: dict[str, Any] = {"rows": 0, "fitted": False}
        if calib is not None and not incomplete and len(calib) >= 4:
            self._fit(calib)

    def _features(self, slots: Sequence[str], cins: Sequence[float], couts: Sequence[float]) -> tuple[float, float]:
        s_sum = b_sum = 0.0
        for slot, a, b in zip(slots, cins, couts, strict=True):
            s_sum += self._interp(slot, a, b)
            hw_in, hw_out = self._geom[slot]
            b_sum += (a * hw_in + b * hw_out) * 1e-6
        return s_sum, b_sum

    def _chain(self, couts: Sequence[int]) -> tuple[list[float], list[float]]:
        first, last = self.meta["units"][0]["cin"], self.meta["units"][-1]["cout"]
        return [first, *couts], [*couts, last]

    def _fit(self, calib: Any) -> None:
        import numpy as np

        feats, target = [], []
        for couts_text, ratio in zip(calib["unit_couts"], calib["ratio"], strict=True):
            couts = [int(c) for c in str(couts_text).split()]
            if len(couts) != len(self._names) - 1:
                return
            cins, outs = self._chain(couts)
            feats.append([*self._features(self._slots, cins, outs), 1.0])
            target.append(float(ratio))
        x, y = np.asarray(feats), np.asarray(target)
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        if not coef[0] > 0:  # degenerate: keep the raw sum
            return
        pred = x @ coef
        self.alpha, self.beta, self.delta = (float(c) for c in coef)
        raw_err = np.abs(x[:, 0] / y - 1)
        fit_err = np.abs(pred / y - 1)
        self.calibration = {"rows": len(y), "fitted": True, "alpha": self.alpha, "beta": self.beta,
                            "delta": self.delta, "raw_sum_median_abs_err": float(np.median(raw_err)),
                            "fit_median_abs_err": float(np.median(fit_err))}

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        import pandas as pd

        path = Path(path)
        if not path.exists():
            raise UserError(f"latency table not found: {path}")
        meta_path = _meta_path(path)
        try:
            meta = json.loads(meta_path.read_text())
            rows = pd.read_csv(path)
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise UserError(f"corrupt latency table {path}: {str(exc).splitlines()[0][:160]}") from exc
        if meta.get("kind") != "amc-mobile-latency-table" or not set(COLUMNS) <= set(rows.columns):
            raise UserError(f"{path} is not an amc-mobile latency table")
        if meta.get("schema_version", 0) > TABLE_SCHEMA:
            raise UserError(f"{path}: table schema {meta['schema_version']} is newer than this amc-mobile reads")
        calib_path = _calib_path(path)
        calib = None
        if calib_path.exists() and calib_path.stat().st_size:
            try:
                calib = pd.read_csv(calib_path)
            except (ValueError, pd.errors.ParserError) as exc:
                raise UserError(f"corrupt calibration file {calib_path}: {str(exc).splitlines()[0][:160]}") from exc
        return cls(rows, meta, str(path), calib)

    # -- prediction -------------------------------------------------------------------------------
    def _interp(self, slot: str, cin: float, cout: float) -> float:
        try:
            xs, ys, z = self._grids[slot]
        except KeyError:
            raise UserError(self._slot_error(slot)) from None
        i, tx = _locate(xs, cin)
        j, ty = _locate(ys, cout)
        if len(xs) == 1 and len(ys) == 1:
            return z[0][0]
        if len(xs) == 1:
            return max(0.0, z[0][j] + (z[0][j + 1] - z[0][j]) * ty)
        if len(ys) == 1:
            return max(0.0, z[i][0] + (z[i + 1][0] - z[i][0]) * tx)
        a = z[i][j] + (z[i][j + 1] - z[i][j]) * ty
        b = z[i + 1][j] + (z[i + 1][j + 1] - z[i + 1][j]) * ty
        return max(0.0, a + (b - a) * tx)

    def _slot_error(self, slot: str) -> str:
        m = self.meta["model"]
        if slot in [u["slot"] for u in self.meta["units"]]:
            return f"latency table {self.path} is incomplete ({', '.join(self.incomplete)}); resume 'amc-bench profile'"
        return (f"latency table {self.path} is for {m['name']} at {m['input_size']} px; it has no entry for "
                f"unit '{slot}' (a different model or resolution?)")

    def units(self, desc: ModelDescription | nn.Module) -> list[Unit]:
        if isinstance(desc, nn.Module):
            desc = describe_model(desc, self.meta["model"]["input_size"])
        if desc.input_size != self.meta["model"]["input_size"]:
            raise UserError(f"latency table {self.path} is for {self.meta['model']['input_size']} px, "
                            f"the model runs at {desc.input_size} px")
        units = units_of(desc, self.residual)
        if [u.name for u in units] != self._names:
            raise UserError(f"latency table {self.path} is for model {self.meta['model']['name']}; "
                            "the given model has different layers")
        return units

    def unit_ratios(self, desc: ModelDescription | nn.Module) -> list[float]:
        """Raw interpolated ratio of each unit (before the whole-model correction)."""
        return [self._interp(u.slot, u.cin, u.cout) for u in self.units(desc)]

    def _plan(self, desc: ModelDescription) -> list[tuple[int, int, str]]:
        """(first layer index, last layer index, slot) per unit, cached per layer layout: pruning
        changes only channel counts, so the search's thousands of calls skip the unit split."""
        key = (desc.input_size, tuple(s.name for s in desc.layers))
        plan = self._plans.get(key)
        if plan is None:
            idx = {s.name: i for i, s in enumerate(desc.layers)}
            plan = [(idx[u.layers[0]], idx[u.layers[-1]], u.slot) for u in self.units(desc)]
            self._plans[key] = plan
        return plan

    def predict_ratio(self, desc: ModelDescription | nn.Module) -> float:
        """Predicted latency / reference latency (drift-free; compare with a measured ratio)."""
        if isinstance(desc, nn.Module):
            desc = describe_model(desc, self.meta["model"]["input_size"])
        layers = desc.layers
        plan = self._plan(desc)
        s_sum, b_sum = self._features([p[2] for p in plan], [layers[p[0]].in_channels for p in plan],
                                      [layers[p[1]].out_channels for p in plan])
        return self.alpha * s_sum + self.beta * b_sum + self.delta + self.overhead_ms / self.ref_ms

    def predict(self, desc: ModelDescription | nn.Module) -> float:
        """Predicted whole-model latency in ms (one invocation overhead included)."""
        return self.predict_ratio(desc) * self.ref_ms

    def predict_channels(self, channels: Sequence[int]) -> float:
        """Fast path: ms for the table's model with the given output channels of each unit but the
        last (the chain: unit i+1 takes unit i's output), no description needed."""
        n = len(self._names)
        if len(channels) != n - 1:
            raise UserError(f"expected {n - 1} channel counts (outputs of each unit but the classifier), got {len(channels)}")
        cins, couts = self._chain(channels)
        s_sum, b_sum = self._features(self._slots, cins, couts)
        return (self.alpha * s_sum + self.beta * b_sum + self.delta + self.overhead_ms / self.ref_ms) * self.ref_ms

    def summary(self) -> dict[str, Any]:
        grid = self.meta["grid"]
        return {"path": self.path, "model": self.meta["model"], "device": self.meta.get("device"),
                "rows": len(self.rows), "grid_points": sum(len(g["cin"]) * len(g["cout"]) for g in grid),
                "full_grid_points": sum(g["full_points"] for g in grid), "ref_ms": self.ref_ms,
                "overhead_ms": self.overhead_ms, "incomplete": self.incomplete, "calibration": self.calibration}


def _slot_geometry(slot: str) -> tuple[float, float]:
    """(input pixels, output pixels) of a unit slot, to count its boundary activations."""
    kind, k, st, hw = slot.split("|")
    h, w = (int(v) for v in hw.split("x"))
    if kind == "pool+linear":
        return float(h * w), 1.0
    kernel, stride = int(k[1:]), int(st[1:])
    oh = (h + 2 * (kernel // 2) - kernel) // stride + 1
    ow = (w + 2 * (kernel // 2) - kernel) // stride + 1
    return float(h * w), float(oh * ow)


def _locate(xs: list[float], x: float) -> tuple[int, float]:
    """Segment index and fraction for linear inter/extrapolation on sorted ``xs``."""
    if len(xs) == 1:
        return 0, 0.0
    i = min(max(bisect_right(xs, x) - 1, 0), len(xs) - 2)
    return i, (x - xs[i]) / (xs[i + 1] - xs[i])

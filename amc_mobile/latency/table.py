"""A per-unit latency table (LUT) on disk and its predictor (the prediction half of the old lut.py).

NetAdapt-style (Yang et al., ECCV 2018): a model's latency is predicted from the latencies of its
units (:mod:`amc_mobile.latency.units`), each measured in isolation on a coarse (cin, cout) grid and
stored as a ratio to a reference workload measured in the same stretch of time. Prediction:

    ratio(model) = sum_k a_k * S_k + beta * B + delta            (one formula, used everywhere)
    ms(model)    = (ratio(model) + overhead_ms / ref_ms) * ref_ms

S_k is the sum of the bilinearly interpolated unit ratios of kind k (conv, dw+conv, dw+conv+res,
pool+linear), B the units' boundary activations (millions of elements). Isolated units pay per-call
costs a whole model pays once, so (a_k, beta, delta) are fitted on whole-model calibration configs
measured with the table (one shared a for all kinds), or re-fitted by an adaptation to a new device
(:mod:`amc_mobile.latency.adapt`, stored in the table's metadata). All coefficients are
non-negative except delta and every grid is made monotone (running maximum along each axis), so a
prediction never decreases when a channel count grows (issue 9: the action wall and the budget
check rely on it).

Files: ``<name>.csv`` (one row per grid point), ``<name>.calib.csv`` (whole-model calibration rows),
``<name>.meta.json`` (schema, model, units, grid, device record with its fingerprint, protocol, and an
optional ``adaptation``). A corrupt file is one line naming it, never a traceback.
"""

from __future__ import annotations

import csv
import io
import json
import math
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from amc_mobile.errors import UserError
from amc_mobile.latency.units import Unit, units_of
from amc_mobile.models.arch import ArchSpec
from amc_mobile.models.describe import ModelDescription, describe_model

TABLE_SCHEMA = 2  # 2: device record with a fingerprint ("identity"), optional "adaptation", "live" column
KIND = "amc-mobile-latency-table"
COLUMNS = ["slot", "cin", "cout", "latency_ms", "p10_ms", "p90_ms", "std_ms", "windows", "ratio", "ratio_p10",
           "ratio_p90", "ref_ms", "overhead_ms", "runs_per_window", "measured_at"]
OPTIONAL_COLUMNS = ["live", "device"]  # per-row live readings of the device (temperature, frequency): recorded only;
# "device": which physical device measured the row (sharded profiling, amc_mobile.distributed.profile)
CALIB_COLUMNS = ["config", "unit_couts", "ratio", "latency_ms", "p10_ms", "p90_ms", "ref_ms", "overhead_ms",
                 "measured_at"]
CALIB_OPTIONAL = ["removed", "device"]  # units removed from the model (space separated unit names); measuring device
KINDS = ("conv", "dw+conv", "dw+conv+res", "pool+linear")
_NUMERIC = {"cin", "cout", "latency_ms", "p10_ms", "p90_ms", "std_ms", "windows", "ratio", "ratio_p10",
            "ratio_p90", "ref_ms", "overhead_ms", "runs_per_window"}


def table_stem(arch: ArchSpec, input_size: int) -> str:
    """File stem of a table: model, width, resolution, input channels, classes."""
    return f"{arch.name}_w{arch.width_mult:g}_r{input_size}_c{arch.in_chans}_n{arch.num_classes}"


def default_table_path(device_dir: Path, arch: ArchSpec, input_size: int) -> Path:
    """``<device_dir>/<stem>.csv`` for ``arch`` at ``input_size`` px."""
    return Path(device_dir) / f"{table_stem(arch, input_size)}.csv"


def meta_path(csv_path: Path) -> Path:
    return csv_path.with_name(csv_path.stem + ".meta.json")


def calib_path(csv_path: Path) -> Path:
    return csv_path.with_name(csv_path.stem + ".calib.csv")


def format_row(columns: Sequence[str], values: Mapping[str, Any]) -> str:
    """One CSV line (no newline) of ``values`` in ``columns`` order; floats with 6 significant digits."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(
        [f"{values.get(c, ''):.6g}" if isinstance(values.get(c), float) else values.get(c, "") for c in columns])
    return buf.getvalue()


def read_csv_rows(path: Path, required: Sequence[str], numeric: set[str], what: str) -> list[dict[str, Any]]:
    """Rows of a table CSV as dicts; a partial last line (a kill during a write) is ignored; any other
    malformed row is one line naming the file and line number."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {what} {path}: {exc}") from exc
    lines = text.split("\n")
    if lines and lines[-1] != "":  # no trailing newline: an interrupted append
        lines = lines[:-1]
    lines = [ln for ln in lines if ln.strip()]
    if not lines:
        return []
    header = next(csv.reader([lines[0]]))
    missing = [c for c in required if c not in header]
    if missing:
        raise UserError(f"{path} is not an amc-mobile {what} (missing columns: {', '.join(missing)})")
    rows = []
    for n, fields_ in enumerate(csv.reader(lines[1:]), start=2):
        if len(fields_) != len(header):
            raise UserError(f"corrupt {what} {path}: line {n} has {len(fields_)} fields, expected {len(header)}; "
                            "delete that line (it is re-measured) or the file")
        row: dict[str, Any] = dict(zip(header, fields_, strict=True))
        for c in numeric & set(header):
            try:
                row[c] = float(row[c])
            except ValueError:
                raise UserError(f"corrupt {what} {path}: line {n}, column {c} = {row[c]!r} is not a number; "
                                "delete that line (it is re-measured) or the file") from None
            if not math.isfinite(row[c]):
                raise UserError(f"corrupt {what} {path}: line {n}, column {c} is {row[c]}")
        rows.append(row)
    return rows


def read_meta(path: Path) -> dict[str, Any]:
    """A table's metadata; missing or corrupt: one line."""
    mp = meta_path(path)
    if not mp.exists():
        raise UserError(f"{path} has no {mp.name}; delete the table (it is rebuilt) or pass another one")
    try:
        meta = json.loads(mp.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"corrupt latency table metadata {mp}: {str(exc).splitlines()[0][:160]}") from exc
    if not isinstance(meta, dict) or meta.get("kind") != KIND:
        raise UserError(f"{mp} is not amc-mobile latency table metadata")
    if not isinstance(meta.get("schema_version"), int) or meta["schema_version"] > TABLE_SCHEMA:
        raise UserError(f"{mp}: table schema {meta.get('schema_version')!r} is not one this amc-mobile reads "
                        f"(<= {TABLE_SCHEMA})")
    for key in ("model", "units", "grid"):
        if not isinstance(meta.get(key), dict | list):
            raise UserError(f"corrupt latency table metadata {mp}: '{key}' is missing")
    return meta


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


def monotone_grid(z: list[list[float]]) -> list[list[float]]:
    """Running maximum along both axes: z[i][j] never decreases with i (cin) or j (cout)."""
    out = [list(r) for r in z]
    for i in range(len(out)):
        for j in range(len(out[i])):
            best = out[i][j]
            if i:
                best = max(best, out[i - 1][j])
            if j:
                best = max(best, out[i][j - 1])
            out[i][j] = best
    return out


def slot_kind(slot: str) -> str:
    return slot.split("|", 1)[0]


class Coefficients:
    """The whole-model correction ``sum_k a_k S_k + beta B + delta`` (see the module docstring)."""

    def __init__(self, a: Mapping[str, float] | float = 1.0, beta: float = 0.0, delta: float = 0.0) -> None:
        self.a = {k: float(a) for k in KINDS} if isinstance(a, int | float) else {k: float(a.get(k, 1.0)) for k in KINDS}
        self.beta, self.delta = float(beta), float(delta)
        if min(self.a.values()) < 0 or self.beta < 0:
            raise UserError("latency table coefficients must be non-negative (a monotone table)")

    def apply(self, s_by_kind: Mapping[str, float], b_sum: float) -> float:
        return sum(self.a[k] * s_by_kind.get(k, 0.0) for k in KINDS) + self.beta * b_sum + self.delta

    def to_dict(self) -> dict[str, Any]:
        return {"a": dict(self.a), "beta": self.beta, "delta": self.delta}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Coefficients:
        return cls(d.get("a", 1.0), d.get("beta", 0.0), d.get("delta", 0.0))


def features_matrix(rows: Sequence[tuple[dict[str, float], float]]) -> tuple[Any, Any]:
    """(X, kinds) with columns S_conv, S_dw+conv, S_dw+conv+res, S_pool+linear, B for least squares."""
    import numpy as np

    return np.asarray([[s.get(k, 0.0) for k in KINDS] + [b] for s, b in rows], dtype=float), KINDS


def fit_coefficients(feats: Sequence[tuple[dict[str, float], float]], target: Sequence[float],
                     per_kind: bool = False) -> Coefficients | None:
    """Least squares of ``target`` on the features with a >= 0, beta >= 0 (delta free): one shared a
    (``per_kind`` False) or one per unit kind. None when degenerate (e.g. too few rows)."""
    import numpy as np
    from scipy.optimize import lsq_linear

    x, _ = features_matrix(feats)
    y = np.asarray(target, dtype=float)
    n_par = (len(KINDS) if per_kind else 1) + 2
    if len(y) < n_par:
        return None
    s_cols = x[:, : len(KINDS)]
    present = s_cols.any(axis=0)
    if per_kind:
        design = np.column_stack([s_cols[:, present], x[:, -1], np.ones(len(y))])
    else:
        design = np.column_stack([s_cols.sum(axis=1), x[:, -1], np.ones(len(y))])
    k = design.shape[1]
    lo = np.array([0.0] * (k - 1) + [-np.inf])
    res = lsq_linear(design, y, bounds=(lo, np.full(k, np.inf)))
    coef = res.x
    if not coef[0] > 0:
        return None
    if per_kind:
        a = dict.fromkeys(KINDS, 0.0)
        for kind, c in zip([k_ for k_, p in zip(KINDS, present, strict=True) if p], coef[:-2], strict=True):
            a[kind] = float(c)
        return Coefficients(a, float(coef[-2]), float(coef[-1]))
    return Coefficients(float(coef[0]), float(coef[1]), float(coef[2]))


class LatencyTable:
    """A loaded table: ``predict(description)`` -> ms, ``predict_ratio`` -> drift-free ratio.

    Predicts models whose channels were pruned and models whose units were removed (DDC): the
    description's units must be a subsequence of the table's, each in its measured slot.
    """

    def __init__(self, rows: Sequence[Mapping[str, Any]], meta: dict[str, Any], path: str = "",
                 calib: Sequence[Mapping[str, Any]] | None = None) -> None:
        from statistics import median

        self.meta = meta
        self.path = path
        self.rows = list(rows)
        if not self.rows:
            raise UserError(f"latency table {path} has no rows; resume it with 'amc-bench profile'")
        self.residual = set(meta.get("residual_layers", []))
        self.table_ref_ms = float(median(float(r["ref_ms"]) for r in self.rows))
        self.table_overhead_ms = float(median(float(r["overhead_ms"]) for r in self.rows))
        self._grids: dict[str, tuple[list[float], list[float], list[list[float]]]] = {}
        self._geom: dict[str, tuple[float, float]] = {}
        self.monotone_fixes = 0
        incomplete = []
        by_slot: dict[str, dict[tuple[int, int], float]] = {}
        for r in self.rows:
            by_slot.setdefault(str(r["slot"]), {})[(int(r["cin"]), int(r["cout"]))] = float(r["ratio"])
        for g in meta["grid"]:
            z = by_slot.get(g["slot"], {})
            missing = [(a, b) for a in g["cin"] for b in g["cout"] if (a, b) not in z]
            self._geom[g["slot"]] = _slot_geometry(g["slot"])
            if missing:
                incomplete.append(f"{g['slot']} ({len(missing)} missing)")
                continue
            raw = [[z[(a, b)] for b in g["cout"]] for a in g["cin"]]
            mono = monotone_grid(raw)
            self.monotone_fixes += sum(m != r_ for rm, rr in zip(mono, raw, strict=True)
                                       for m, r_ in zip(rm, rr, strict=True))
            self._grids[g["slot"]] = ([float(a) for a in g["cin"]], [float(b) for b in g["cout"]], mono)
        self.incomplete = incomplete
        self._names = [u["name"] for u in meta["units"]]
        self._unit_slot = {u["name"]: u["slot"] for u in meta["units"]}
        self._plans: dict[tuple[Any, ...], list[tuple[int, int, str]]] = {}
        self.coef = Coefficients()
        self.calibration: dict[str, Any] = {"rows": 0, "fitted": False}
        if calib and not incomplete:
            self._fit(calib)
        self.ref_ms, self.overhead_ms = self.table_ref_ms, self.table_overhead_ms
        self.adaptation: dict[str, Any] | None = None
        adapt = meta.get("adaptation")
        if isinstance(adapt, dict) and adapt.get("accepted"):
            self.apply_adaptation(adapt)

    # -- loading ----------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        path = Path(path)
        if not path.exists():
            raise UserError(f"latency table not found: {path}")
        meta = read_meta(path)
        rows = read_csv_rows(path, COLUMNS, _NUMERIC, "latency table")
        cp = calib_path(path)
        calib = read_csv_rows(cp, CALIB_COLUMNS, {"ratio", "latency_ms", "ref_ms", "overhead_ms"},
                              "calibration file") if cp.exists() and cp.stat().st_size else None
        return cls(rows, meta, str(path), calib)

    # -- the whole-model correction ---------------------------------------------------------------
    def calib_features(self, unit_couts: str, removed: str = "") -> tuple[dict[str, float], float] | None:
        """Raw features (S by kind, B) of a calibration row; None when it does not fit this table."""
        gone = set(removed.split())
        names = [n for n in self._names if n not in gone]
        try:
            couts = [int(c) for c in str(unit_couts).split()]
        except ValueError:
            return None
        if len(couts) != len(names) - 1:
            return None
        first, last = self.meta["units"][0]["cin"], self.meta["units"][-1]["cout"]
        if names and names[0] != self._names[0]:
            return None
        slots = [self._unit_slot[n] for n in names]
        return self.features(slots, [first, *couts], [*couts, last])

    def _fit(self, calib: Sequence[Mapping[str, Any]]) -> None:
        import numpy as np

        feats, target = [], []
        for r in calib:
            f = self.calib_features(str(r["unit_couts"]), str(r.get("removed", "") or ""))
            if f is not None:
                feats.append(f)
                target.append(float(r["ratio"]))
        if len(target) < 4:
            return
        coef = fit_coefficients(feats, target)
        if coef is None:
            return
        y = np.asarray(target)
        raw = np.asarray([sum(s.values()) for s, _ in feats])
        pred = np.asarray([coef.apply(s, b) for s, b in feats])
        self.coef = coef
        self.calibration = {"rows": len(y), "fitted": True, **coef.to_dict(),
                            "raw_sum_median_abs_err": float(np.median(np.abs(raw / y - 1))),
                            "fit_median_abs_err": float(np.median(np.abs(pred / y - 1)))}

    def apply_adaptation(self, adaptation: Mapping[str, Any]) -> None:
        """Use an adaptation's coefficients and this device's reference/overhead times."""
        self.coef = Coefficients.from_dict(adaptation["coef"])
        self.ref_ms = float(adaptation.get("ref_ms", self.ref_ms))
        self.overhead_ms = float(adaptation.get("overhead_ms", self.overhead_ms))
        self.adaptation = dict(adaptation)

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

    def features(self, slots: Sequence[str], cins: Sequence[float], couts: Sequence[float]
                 ) -> tuple[dict[str, float], float]:
        """(sum of interpolated unit ratios per unit kind, boundary activations in millions)."""
        s: dict[str, float] = {}
        b_sum = 0.0
        for slot, a, b in zip(slots, cins, couts, strict=True):
            kind = slot_kind(slot)
            s[kind] = s.get(kind, 0.0) + self._interp(slot, a, b)
            hw_in, hw_out = self._geom[slot]
            b_sum += (a * hw_in + b * hw_out) * 1e-6
        return s, b_sum

    def _slot_error(self, slot: str) -> str:
        m = self.meta["model"]
        if slot in self._unit_slot.values():
            return f"latency table {self.path} is incomplete ({', '.join(self.incomplete)}); resume 'amc-bench profile'"
        return (f"latency table {self.path} is for {m['name']} at {m['input_size']} px; it has no entry for "
                f"unit '{slot}' (a different model or resolution?)")

    def units(self, desc: ModelDescription | nn.Module) -> list[Unit]:
        """The description's units, checked against the table (a subsequence: units may be removed)."""
        if isinstance(desc, nn.Module):
            desc = describe_model(desc, self.meta["model"]["input_size"])
        if desc.input_size != self.meta["model"]["input_size"]:
            raise UserError(f"latency table {self.path} is for {self.meta['model']['input_size']} px, "
                            f"the model runs at {desc.input_size} px")
        units = units_of(desc, self.residual)
        pos = {n: i for i, n in enumerate(self._names)}
        order = [pos.get(u.name, -1) for u in units]
        if -1 in order or order != sorted(order) or (units and units[-1].name != self._names[-1]):
            raise UserError(f"latency table {self.path} is for model {self.meta['model']['name']}; "
                            "the given model has different layers")
        for u in units:
            if u.slot != self._unit_slot[u.name] and u.slot not in self._grids:
                raise UserError(f"latency table {self.path}: unit {u.name} runs as '{u.slot}', the table measured "
                                f"it as '{self._unit_slot[u.name]}' (removing that block changed its input; a table "
                                "profiled by this version measures it: 'amc-bench profile --reprofile')")
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

    def raw_features(self, desc: ModelDescription | nn.Module) -> tuple[dict[str, float], float]:
        """Features of a model (before the whole-model correction); used by adaptation."""
        if isinstance(desc, nn.Module):
            desc = describe_model(desc, self.meta["model"]["input_size"])
        layers = desc.layers
        plan = self._plan(desc)
        return self.features([p[2] for p in plan], [layers[p[0]].in_channels for p in plan],
                             [layers[p[1]].out_channels for p in plan])

    def model_ratio(self, desc: ModelDescription | nn.Module) -> float:
        """Predicted whole-model latency / reference latency, without the invocation overhead (what
        the measurement protocol reports as a model's ratio)."""
        s, b = self.raw_features(desc)
        return self.coef.apply(s, b)

    def predict_ratio(self, desc: ModelDescription | nn.Module) -> float:
        """Predicted latency / reference latency, one invocation overhead included (drift-free)."""
        return self.model_ratio(desc) + self.overhead_ms / self.ref_ms

    def predict(self, desc: ModelDescription | nn.Module) -> float:
        """Predicted whole-model latency in ms (one invocation overhead included)."""
        return self.predict_ratio(desc) * self.ref_ms

    # -- facts ------------------------------------------------------------------------------------
    @property
    def identity(self) -> dict[str, Any]:
        from amc_mobile.latency.fingerprint import identity_of

        return identity_of(self.meta.get("device"))

    def summary(self) -> dict[str, Any]:
        grid = self.meta["grid"]
        return {"path": self.path, "model": self.meta["model"], "device": self.meta.get("device"),
                "rows": len(self.rows), "grid_points": sum(len(g["cin"]) * len(g["cout"]) for g in grid),
                "full_grid_points": sum(g["full_points"] for g in grid), "ref_ms": self.ref_ms,
                "overhead_ms": self.overhead_ms, "incomplete": self.incomplete, "calibration": self.calibration,
                "monotone_fixes": self.monotone_fixes, "adaptation": self.adaptation}

"""Device farm: the speedup of a candidate model over a baseline on every device of a farm file.

Each device runs in its own thread. On a device, baseline (A) and candidate (B) windows are
interleaved ABBA/BAAB by :meth:`amc_mobile.latency.protocol.Protocol.compare`, which reports
speedup = latency_A / latency_B with a 95% confidence interval (t interval on the mean log-speedup of
window pairs). Host-side backends (onnxruntime, tflite, cuda) share one lock while measuring, so they
never time each other; phones measure in parallel. Writes ``farm-report.md``, ``farm-report.json``
(schema-versioned) and ``farm-speedup.png``.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from amc_mobile.errors import UserError

log = logging.getLogger(__name__)
SCHEMA_VERSION = 1
_HOST_LOCK = threading.Lock()    # host runtimes measure one at a time
_EXPORT_LOCK = threading.Lock()  # converters are CPU-heavy and not all thread-safe


@dataclass(frozen=True)
class FarmDevice:
    name: str
    profile: str | dict[str, Any]            # profile name, path to a .yaml, or an inline profile mapping
    required: bool = False                   # unreachable/failed -> the job fails only when required
    threshold: float | None = None           # overrides the farm's threshold for this device
    options: dict[str, Any] = field(default_factory=dict)  # merged over the profile's options


@dataclass(frozen=True)
class FarmSpec:
    name: str
    devices: tuple[FarmDevice, ...]
    threshold: float = 1.0                   # minimum speedup (baseline ms / candidate ms) on each device
    rounds: int = 4                          # ABBA blocks per device
    schema_version: int = SCHEMA_VERSION
    path: str = ""


def _reject_unknown(data: dict[str, Any], cls: type, where: str, skip: tuple[str, ...] = ()) -> None:
    names = {f.name for f in fields(cls)} - set(skip)
    unknown = sorted(set(data) - names)
    if unknown:
        raise UserError(f"unknown key(s) in {where}: {', '.join(unknown)}; valid keys: {', '.join(sorted(names))}")


def load_farm(path: str | Path) -> FarmSpec:
    """Read and validate a farm YAML (unknown keys rejected with their names)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"farm file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path}: a farm file must be a YAML mapping")
    _reject_unknown(data, FarmSpec, str(path), skip=("path",))
    if data.get("schema_version", SCHEMA_VERSION) > SCHEMA_VERSION:
        raise UserError(f"{path}: schema_version {data['schema_version']} is newer than this reader ({SCHEMA_VERSION})")
    raw_devices = data.get("devices")
    if not isinstance(raw_devices, list) or not raw_devices:
        raise UserError(f"{path}: 'devices' must be a non-empty list")
    devices = []
    for i, d in enumerate(raw_devices):
        where = f"{path}: devices[{i}]"
        if not isinstance(d, dict):
            raise UserError(f"{where} must be a mapping")
        _reject_unknown(d, FarmDevice, where)
        if "name" not in d or "profile" not in d:
            raise UserError(f"{where} needs 'name' and 'profile'")
        devices.append(FarmDevice(**{**d, "options": dict(d.get("options") or {})}))
    names = [d.name for d in devices]
    if len(set(names)) != len(names):
        raise UserError(f"{path}: device names must be unique")
    threshold = float(data.get("threshold", 1.0))
    rounds = int(data.get("rounds", 4))
    if rounds < 2:
        raise UserError(f"{path}: rounds must be at least 2 (a confidence interval needs two pairs)")
    return FarmSpec(name=str(data.get("name", path.stem)), devices=tuple(devices), threshold=threshold,
                    rounds=rounds, schema_version=int(data.get("schema_version", SCHEMA_VERSION)), path=str(path))


def resolve_profile(device: FarmDevice, farm_path: str = "") -> Any:
    """The :class:`DeviceProfile` of a farm entry, with the entry's option overrides applied."""
    from amc_mobile.latency.profiles import load_profile, profile_from_dict

    if isinstance(device.profile, dict):
        data = dict(device.profile)
        data.setdefault("name", device.name)
        where = f"inline profile of farm device '{device.name}'"
    else:
        text = device.profile
        rel = Path(farm_path).parent / text if farm_path else Path(text)
        base = load_profile(str(rel) if text.endswith((".yaml", ".yml")) and rel.exists() else text)
        if not device.options:
            return base
        data = {k: getattr(base, k) for k in ("name", "backend", "description", "threads", "batch_size",
                                                "warmup_runs", "runs", "repeats", "min_window_ms",
                                                "calibrate_overhead", "schema_version")}
        data["options"] = dict(base.options)
        data["name"] = device.name  # errors and facts name the farm device, not the shared profile
        where = base.path
    data["options"] = {**dict(data.get("options") or {}), **device.options}
    return profile_from_dict(data, where)


def load_model(spec: str) -> tuple[Any, tuple[int, ...]]:
    """A model from ``zoo:NAME``, a checkpoint path, or ``REGISTRY_NAME[@WIDTH]``; with its input shape."""
    from amc_mobile.models import create_model, list_models
    from amc_mobile.models.checkpoint import load_checkpoint

    if spec.startswith("zoo:") or Path(spec).exists():
        model, _meta = load_checkpoint(spec)
    else:
        name, _, width = spec.partition("@")
        if name not in list_models():
            raise UserError(f"model '{spec}' is neither a checkpoint (path or zoo:NAME) nor a registered model; "
                            f"registered: {', '.join(list_models())}")
        model = create_model(name, width_mult=float(width) if width else 1.0)
    kw: dict[str, Any] = model.arch_kwargs  # type: ignore[assignment]
    return model.eval(), (1, int(kw["in_chans"]), int(kw["input_size"]), int(kw["input_size"]))


@dataclass
class DeviceResult:
    device: str
    backend: str
    status: str                      # ok | below-threshold | unreachable | error
    required: bool
    threshold: float
    baseline_ms: float | None = None
    candidate_ms: float | None = None
    speedup: float | None = None
    ci95_low: float | None = None
    ci95_high: float | None = None
    spread_pct: float | None = None  # half-width of the 95% CI relative to the speedup
    pairs: int = 0
    seconds: float = 0.0
    reason: str = ""
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def fails_job(self) -> bool:
        if self.status == "below-threshold":
            return True
        return self.status in ("unreachable", "error") and self.required


def measure_device(device: FarmDevice, spec: FarmSpec, baseline: tuple[Any, tuple[int, ...]],
                   candidate: tuple[Any, tuple[int, ...]], work_dir: Path) -> DeviceResult:
    """One device: availability check, export, ABBA-interleaved comparison. Never raises UserError."""
    from amc_mobile.latency.protocol import Protocol, ProtocolSettings

    threshold = device.threshold if device.threshold is not None else spec.threshold
    t0 = time.monotonic()
    res = DeviceResult(device=device.name, backend="?", status="error", required=device.required, threshold=threshold)
    backend = None
    try:
        profile = resolve_profile(device, spec.path)
        res.backend = profile.backend
        backend = profile.create_backend()
        why = backend.check_available()
        if why:
            res.status, res.reason = "unreachable", why
            return res
        host = profile.backend != "android"
        wd = work_dir / device.name
        bs = profile.batch_size
        with _EXPORT_LOCK:
            (ma, sa), (mb, sb) = baseline, candidate
            a = backend.prepare(ma, (bs, *sa[1:]), wd / f"baseline{backend.artifact_suffix}")
            b = backend.prepare(mb, (bs, *sb[1:]), wd / f"candidate{backend.artifact_suffix}")
            proto = Protocol(backend, ProtocolSettings.from_profile(profile), wd)
        lock = _HOST_LOCK if host else threading.Lock()
        with lock:
            cmp = proto.compare(a, b, repeats=spec.rounds)
        res.facts = _jsonable(backend.describe_device())
        res.baseline_ms, res.candidate_ms = cmp["a"]["median_ms"], cmp["b"]["median_ms"]
        res.speedup, res.ci95_low, res.ci95_high = cmp["speedup"], cmp["ci95_low"], cmp["ci95_high"]
        res.pairs = int(cmp["pairs"])
        res.spread_pct = 100.0 * (cmp["ci95_high"] - cmp["ci95_low"]) / 2.0 / cmp["speedup"]
        res.status = "ok" if cmp["speedup"] >= threshold else "below-threshold"
        if res.status != "ok":
            res.reason = f"speedup {cmp['speedup']:.3f} < threshold {threshold:g}"
    except UserError as exc:
        res.status, res.reason = "error", str(exc)
    except Exception as exc:  # a device's failure must not take the other devices down
        log.exception("device %s failed", device.name)
        res.status, res.reason = "error", f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    finally:
        if backend is not None:
            backend.close()
        res.seconds = time.monotonic() - t0
    return res


def run_farm(spec: FarmSpec, baseline: str, candidate: str, out_dir: str | Path,
             only: list[str] | None = None) -> tuple[list[DeviceResult], dict[str, Path]]:
    """Measure every device in parallel; write the report files; return (results, written paths)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    devices = [d for d in spec.devices if not only or d.name in only]
    if only and len(devices) != len(set(only)):
        missing = sorted(set(only) - {d.name for d in spec.devices})
        raise UserError(f"unknown farm device(s): {', '.join(missing)}; farm has: {', '.join(d.name for d in spec.devices)}")
    a, b = load_model(baseline), load_model(candidate)
    with ThreadPoolExecutor(max_workers=max(1, len(devices)), thread_name_prefix="farm") as pool:
        futures = [pool.submit(measure_device, d, spec, a, b, out / "artifacts") for d in devices]
        results = [f.result() for f in futures]
    paths = write_report(results, spec, baseline, candidate, out)
    return results, paths


def _fmt(v: float | None, nd: int = 2) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{nd}f}"


def markdown_table(results: list[DeviceResult], spec: FarmSpec, baseline: str, candidate: str) -> str:
    lines = [f"# Device farm '{spec.name}': {candidate} vs {baseline}", "",
             f"speedup = baseline ms / candidate ms (ABBA-interleaved windows, 95% CI); threshold {spec.threshold:g}",
             "", "| device | backend | baseline ms | candidate ms | speedup | 95% CI | spread | status |",
             "|---|---|---:|---:|---:|---|---:|---|"]
    for r in results:
        ci = f"[{_fmt(r.ci95_low, 3)}, {_fmt(r.ci95_high, 3)}]" if r.speedup is not None else "n/a"
        spread = f"±{_fmt(r.spread_pct, 1)}%" if r.spread_pct is not None else "n/a"
        status = r.status + (" (required)" if r.required else "")
        if r.reason:
            status += f": {r.reason[:160]}"
        lines.append(f"| {r.device} | {r.backend} | {_fmt(r.baseline_ms, 3)} | {_fmt(r.candidate_ms, 3)} | "
                     f"{_fmt(r.speedup, 3)} | {ci} | {spread} | {status.replace('|', '/')} |")
    failing = [r.device for r in results if r.fails_job]
    lines += ["", f"**result: {'FAIL (' + ', '.join(failing) + ')' if failing else 'PASS'}**", ""]
    return "\n".join(lines)


def write_report(results: list[DeviceResult], spec: FarmSpec, baseline: str, candidate: str,
                 out: Path) -> dict[str, Path]:
    md = out / "farm-report.md"
    md.write_text(markdown_table(results, spec, baseline, candidate))
    js = out / "farm-report.json"
    js.write_text(json.dumps({"schema_version": SCHEMA_VERSION, "farm": spec.name, "farm_file": spec.path,
                              "baseline": baseline, "candidate": candidate, "threshold": spec.threshold,
                              "rounds": spec.rounds, "passed": not any(r.fails_job for r in results),
                              "devices": [asdict(r) for r in results]}, indent=1, default=str))
    png = out / "farm-speedup.png"
    _plot(results, spec, png)
    return {"markdown": md, "json": js, "png": png}


def _plot(results: list[DeviceResult], spec: FarmSpec, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(results) + 2), 3.5))
    xs = list(range(len(results)))
    for x, r in zip(xs, results, strict=True):
        if r.speedup is None:
            ax.bar(x, 0.0, color="0.8")
            ax.text(x, 0.05, r.status, ha="center", va="bottom", rotation=90, fontsize=8)
            continue
        color = "tab:green" if r.status == "ok" else "tab:red"
        err = [[r.speedup - (r.ci95_low or r.speedup)], [(r.ci95_high or r.speedup) - r.speedup]]
        ax.bar(x, r.speedup, color=color, yerr=err, capsize=4)
    ax.axhline(spec.threshold, color="k", ls="--", lw=1, label=f"threshold {spec.threshold:g}")
    ax.axhline(1.0, color="0.5", lw=0.8)
    ax.set_xticks(xs, [r.device for r in results], rotation=20, ha="right")
    ax.set_ylabel("speedup (baseline / candidate)")
    ax.set_title(f"farm '{spec.name}'")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))

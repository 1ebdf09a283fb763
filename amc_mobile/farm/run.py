"""Measuring a farm: :func:`measure_device` on one device, :func:`run_farm` over all of them.

On a device, baseline (A) and candidate (B) windows are interleaved ABBA/BAAB by
:meth:`amc_mobile.latency.protocol.Protocol.compare`, which reports speedup = latency_A / latency_B
with a 95% confidence interval (t interval on the mean log-speedup of window pairs). Host-side
backends (onnxruntime, tflite, cuda) share one lock while measuring, so they never time each other;
remote devices (phones) measure in parallel.

:func:`measure_device` takes only picklable values (frozen records, torch models, paths) and returns
a :class:`DeviceResult`, so any executor can map it: :func:`run_farm` uses threads unless given a
``mapper`` (e.g. one that sends each device to a Ray worker).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amc_mobile.errors import UserError
from amc_mobile.farm.report import write_report
from amc_mobile.farm.spec import FarmDevice, FarmSpec, ModelSpec, load_model, resolve_profile
from amc_mobile.storage import ensure_dir, safe_name

log = logging.getLogger(__name__)
_HOST_LOCK = threading.Lock()    # host runtimes measure one at a time
_EXPORT_LOCK = threading.Lock()  # converters are CPU-heavy and not all thread-safe
REMOTE_BACKENDS = frozenset({"android"})  # measure on their own hardware: no host lock

DeviceFn = Callable[[FarmDevice], "DeviceResult"]
Mapper = Callable[[DeviceFn, Sequence[FarmDevice]], list["DeviceResult"]]


@dataclass
class DeviceResult:
    """One device's row of the report (JSON as is)."""

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


def default_work_dir() -> Path:
    from amc_mobile.storage import user_cache_dir

    return user_cache_dir() / "farm"


def measure_device(device: FarmDevice, spec: FarmSpec, baseline: ModelSpec, candidate: ModelSpec,
                   work_dir: str | Path | None = None) -> DeviceResult:
    """One device: availability check, export, ABBA-interleaved comparison.

    Never raises for a device's own failure (unreachable, export error, crash): that becomes the
    row's ``status``/``reason`` so one device cannot take the others down. Artefacts go to
    ``work_dir/<device name>`` (default: the user cache)."""
    from amc_mobile.latency.protocol import Protocol, ProtocolSettings

    threshold = device.threshold if device.threshold is not None else spec.threshold
    t0 = time.monotonic()
    res = DeviceResult(device=device.name, backend="?", status="error", required=device.required, threshold=threshold)
    backend = None
    try:
        wd = Path(work_dir if work_dir is not None else default_work_dir()) / safe_name(device.name, "farm device name")
        profile = resolve_profile(device, spec.path)
        res.backend = profile.backend
        backend = profile.create_backend()
        why = backend.check_available()
        if why:
            res.status, res.reason = "unreachable", why
            return res
        bs = profile.batch_size
        with _EXPORT_LOCK:
            (ma, sa), (mb, sb) = baseline, candidate
            a = backend.prepare(ma, (bs, *sa[1:]), wd / f"baseline{backend.artifact_suffix}")
            b = backend.prepare(mb, (bs, *sb[1:]), wd / f"candidate{backend.artifact_suffix}")
            proto = Protocol(backend, ProtocolSettings.from_profile(profile), wd)
        lock = threading.Lock() if profile.backend in REMOTE_BACKENDS else _HOST_LOCK
        with lock:
            cmp = proto.compare(a, b, repeats=spec.rounds)
        res.facts = _device_facts(backend, device.name)
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
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        res.status, res.reason = "error", f"{type(exc).__name__}: {first}"
    finally:
        if backend is not None:
            backend.close()
        res.seconds = time.monotonic() - t0
    return res


def _device_facts(backend: Any, name: str) -> dict[str, Any]:
    """The backend's device description as plain JSON, naming the farm entry."""
    import json

    facts: dict[str, Any] = json.loads(json.dumps(backend.describe_device(), default=str))
    facts["device"] = name
    inner = facts.get("facts")
    if isinstance(inner, dict):
        inner["farm_device"] = name
    return facts


def thread_mapper(fn: DeviceFn, devices: Sequence[FarmDevice]) -> list[DeviceResult]:
    """The default :data:`Mapper`: one thread per device, results in device order."""
    with ThreadPoolExecutor(max_workers=max(1, len(devices)), thread_name_prefix="farm") as pool:
        return list(pool.map(fn, devices))


def select_devices(spec: FarmSpec, only: Sequence[str] | None) -> list[FarmDevice]:
    """The farm's devices, or those named in ``only`` (unknown names listed with the valid ones)."""
    if not only:
        return list(spec.devices)
    missing = sorted(set(only) - {d.name for d in spec.devices})
    if missing:
        raise UserError(f"unknown farm device(s): {', '.join(missing)}; farm has: "
                        f"{', '.join(d.name for d in spec.devices)}")
    return [d for d in spec.devices if d.name in only]


def run_farm(spec: FarmSpec, baseline: str, candidate: str, out_dir: str | Path,
             only: Sequence[str] | None = None, mapper: Mapper | None = None) -> tuple[list[DeviceResult], dict[str, Path]]:
    """Measure every (or each ``only``) device; write the report files atomically into ``out_dir``.

    ``mapper(fn, devices)`` runs ``fn`` (a picklable :func:`functools.partial` of
    :func:`measure_device`) on each device and returns the results in order; default
    :func:`thread_mapper`. Returns (results, written paths)."""
    devices = select_devices(spec, only)
    out = ensure_dir(out_dir, "farm report directory")
    a, b = load_model(baseline), load_model(candidate)
    fn = functools.partial(measure_device, spec=spec, baseline=a, candidate=b, work_dir=out / "artifacts")
    results = (mapper or thread_mapper)(fn, devices)
    paths = write_report(results, spec, baseline, candidate, out)
    return results, paths

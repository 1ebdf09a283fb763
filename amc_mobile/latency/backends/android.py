"""Android phones over adb: TFLite ``benchmark_model`` pinned to the big cores (``android_harness``).

``run`` pushes the model (once per content hash), runs the user's ``benchmark_model`` with exact run
counts and returns raw text: ``# key: value`` header lines (device facts, thermal state before/after,
the exact command) followed by the tool's output, one ``@@@ invocation N`` section per invocation.
``parse`` turns that text into :class:`LatencyStats` (ms). Two sampling modes (``options.sampling``):

* ``window`` (default): one invocation of ``runs`` timed runs. benchmark_model prints count/avg/std/
  min/max (microseconds), not each run, so ``mean_ms``/``std_ms`` are exact while ``median_ms`` is the
  average (full precision) clipped to within 0.5 us of the printed whole-microsecond median when the
  tool prints percentiles, else the average; ``p10``/``p90`` are printed
  percentiles, else ``avg -/+ 1.2816 std`` clipped to [min, max] (normal approximation).
* ``per-invocation``: ``runs`` invocations of one timed run each (after the warm-up): real
  per-inference samples, exact quantiles, at the cost of one model load per sample.

``run_batch`` measures a whole sequence in one on-device script (:mod:`android_harness.batch`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

from amc_mobile.errors import UserError
from amc_mobile.latency.artifacts import cached_export
from amc_mobile.latency.base import BackendOptions, LatencyBackend, LatencyStats, register_backend

SECTION = re.compile(r"^@@@ invocation (\d+)\s*$", re.MULTILINE)
HEADER = re.compile(r"^# ([a-z_]+): (.*)$", re.MULTILINE)
Z90 = 1.2815515655446004  # standard normal 90% quantile


@dataclass(frozen=True)
class AndroidOptions(BackendOptions):
    binary: str = ""                   # host path of benchmark_model (Android arm64 prebuilt); $VARS expand
    address: str | None = None         # "host:port" over TCP (adb tcpip); else USB (serial) ...
    serial: str | None = None          # ... or $AMC_DEVICE_ADDRESS / $AMC_DEVICE_SERIAL when both unset
    remote_dir: str = "/data/local/tmp/amc"
    core_mask: str | None = None       # hex taskset mask, e.g. "c" = cpu2+cpu3; None: detected big cores
    use_taskset: bool = True
    op_profiling: bool = False
    sampling: str = "window"           # window | per-invocation (see module docstring)
    max_thermal_status: int = 1        # hottest Android thermal status still measured (0 none, 1 light, 2 moderate)
    cooldown_s: float = 2.0            # pause between batch items; poll period while the phone is hot
    max_cooldown_s: float = 120.0      # fail when still hot after this long
    batch_chunk: int = 8               # items per on-device script in batch mode
    key_path: str | None = None        # adb private key; default ~/.android/adbkey (created when absent)
    connect_timeout_s: float = 10.0
    auth_timeout_s: float = 30.0       # first connection: time to tap "Allow USB debugging" on the phone
    read_timeout_s: float = 30.0
    run_timeout_s: float = 300.0       # longest silence while one benchmark_model invocation runs
    retries: int = 3                   # reconnect attempts after a dropped connection
    atol: float = 1e-3                 # export check tolerance (host LiteRT vs torch)
    cache_artifacts: bool = True

    def __post_init__(self) -> None:
        if self.sampling not in ("window", "per-invocation"):
            raise UserError(f"options.sampling must be 'window' or 'per-invocation', got '{self.sampling}'")
        if self.core_mask is not None and not re.fullmatch(r"(0x)?[0-9a-fA-F]+", str(self.core_mask)):
            raise UserError(f"options.core_mask must be a hex CPU mask such as 'c' or 'f0', got '{self.core_mask}'")
        if self.address is not None and not re.fullmatch(r".+:\d+", os.path.expandvars(str(self.address))):
            raise UserError(f"options.address must be host:port, got '{self.address}'")


def stats_from_outputs(outputs: Sequence[Any], sampling: str) -> LatencyStats:
    """LatencyStats (ms) from parsed ``BenchmarkOutput``s; see the module docstring for the rules."""
    if not outputs:
        raise UserError("no benchmark_model output to parse")
    if sampling == "per-invocation":
        return LatencyStats.from_samples_ms([o.inference_avg_us / 1000.0 for o in outputs])
    windows = []
    for o in outputs:
        s = o.inference
        n = s.count if s else 1
        avg = o.inference_avg_us
        std = s.std_us if s and s.std_us is not None else 0.0
        lo = s.min_us if s and s.min_us is not None else float("-inf")
        hi = s.max_us if s and s.max_us is not None else float("inf")
        pct = s.percentiles_us if s else {}
        med = _full_precision_median(avg, pct.get("p50"))
        p10 = pct.get("p10", min(max(avg - Z90 * std, lo), avg))
        p90 = pct.get("p90", max(min(avg + Z90 * std, hi), avg))
        windows.append((n, avg, std, med, p10, p90))
    total = sum(w[0] for w in windows)
    mean = sum(w[0] * w[1] for w in windows) / total
    var = sum(w[0] * (w[2] ** 2 + (w[1] - mean) ** 2) for w in windows) / total
    return LatencyStats(median_ms=median(w[3] for w in windows) / 1000.0,
                        p10_ms=min(w[4] for w in windows) / 1000.0, p90_ms=max(w[5] for w in windows) / 1000.0,
                        mean_ms=mean / 1000.0, std_ms=var ** 0.5 / 1000.0, count=total)


def _full_precision_median(avg_us: float, printed_us: float | None) -> float:
    """The window's median at full precision: the tool prints the median as whole microseconds (its
    samples are integers) but the average with six significant digits. The true median lies within
    half a microsecond of the printed one; the average, clipped to that interval, is the estimate (a
    sub-millisecond unit is not quantised to 1 us, a skewed window keeps its printed median)."""
    if printed_us is None:
        return avg_us
    if printed_us != round(printed_us):  # printed with a fraction: already full precision
        return printed_us
    return min(max(avg_us, printed_us - 0.5), printed_us + 0.5)


def format_raw(header: dict[str, Any], outputs: Sequence[str]) -> str:
    lines = [f"# {k}: {v if isinstance(v, str) else json.dumps(v)}" for k, v in header.items()]
    for i, out in enumerate(outputs, 1):
        lines.append(f"@@@ invocation {i}")
        lines.append(out.rstrip("\n"))
    return "\n".join(lines) + "\n"


def split_raw(raw: str) -> tuple[dict[str, str], list[str]]:
    """(header, per-invocation outputs) of :func:`format_raw` text; bare tool output is one section."""
    marks = list(SECTION.finditer(raw))
    if not marks:
        return {}, [raw]
    header = {m.group(1): m.group(2) for m in HEADER.finditer(raw[:marks[0].start()])}
    sections = [raw[m.end():(marks[i + 1].start() if i + 1 < len(marks) else len(raw))] for i, m in enumerate(marks)]
    return header, sections


@register_backend("android")
class AndroidBackend(LatencyBackend):
    artifact_suffix = ".tflite"
    unit_layout = "nhwc"  # TFLite kernels run NHWC: units are timed without the converter's boundary transposes
    Options = AndroidOptions
    options: AndroidOptions

    def __init__(self, profile: Any) -> None:
        super().__init__(profile)
        self._runner: Any = None
        self.last_records: list[Any] = []

    # -- connection ----------------------------------------------------------------------------
    def _adb_config(self) -> Any:
        from android_harness.transport import AdbConfig

        o = self.options
        address = os.path.expandvars(o.address) if o.address else None
        serial = os.path.expandvars(o.serial) if o.serial else None
        if not address and not serial:
            address = os.environ.get("AMC_DEVICE_ADDRESS") or None
            serial = os.environ.get("AMC_DEVICE_SERIAL") or None
        key = os.path.expanduser(os.path.expandvars(o.key_path)) if o.key_path else None
        return AdbConfig(address=address, serial=serial, key_path=key, connect_timeout_s=o.connect_timeout_s,
                         auth_timeout_s=o.auth_timeout_s, read_timeout_s=o.read_timeout_s, retries=o.retries)

    def _binary(self) -> str:
        return os.path.expanduser(os.path.expandvars(self.options.binary))

    def runner(self) -> Any:
        """The connected :class:`android_harness.runner.BenchmarkRunner` (created on first use)."""
        if self._runner is None:
            from android_harness.runner import BenchmarkRunner, RunnerConfig
            from android_harness.transport import AdbTransport

            o = self.options
            cfg = RunnerConfig(binary=self._binary(), remote_dir=o.remote_dir,
                               core_mask=o.core_mask.removeprefix("0x") if o.core_mask else None,
                               threads=self.profile.threads, use_taskset=o.use_taskset, op_profiling=o.op_profiling,
                               max_thermal_status=o.max_thermal_status, cooldown_s=o.cooldown_s,
                               max_cooldown_s=o.max_cooldown_s, run_timeout_s=o.run_timeout_s)
            self._runner = BenchmarkRunner(AdbTransport(self._adb_config()), cfg)
        return self._runner

    def phone_lock_path(self) -> Path:
        """The host-side lock a measurement holds on this phone (user cache, one file per connection)."""
        from amc_mobile.storage import user_cache_dir

        key = re.sub(r"[^A-Za-z0-9._+-]", "_", self._adb_config().describe())
        return user_cache_dir() / "phones" / f"{key}.lock"

    @contextmanager
    def _phone(self) -> Iterator[None]:
        """One process measures a phone at a time: runs on a shared phone disturb each other's timings,
        and a run cleans what an earlier run left on the phone. A second one gets one line naming the
        holder's PID."""
        from amc_mobile.storage import ExclusiveLock

        with ExclusiveLock(self.phone_lock_path(), f"phone {self._adb_config().describe()}"):
            yield

    def _guard(self, fn: Any, *args: Any, **kw: Any) -> Any:
        """Harness errors become one-line UserErrors naming the device."""
        from android_harness.transport import AdbError

        try:
            return fn(*args, **kw)
        except AdbError as exc:
            raise UserError(f"device '{self.profile.name}': {exc}") from exc

    def check_available(self) -> str | None:
        if not self.options.binary:
            return (f"device profile '{self.profile.name}' sets no options.binary; download TFLite's Android "
                    f"arm64 benchmark_model (see android_harness/README.md) and point options.binary at it")
        if not Path(self._binary()).is_file():
            return f"benchmark_model binary not found at {self._binary()} (options.binary of '{self.profile.name}')"
        try:
            from android_harness.transport import AdbError
        except ImportError as exc:
            return f"android_harness is not importable ({exc}); reinstall amc-mobile"
        try:
            self.runner().t.shell("echo ok").check("echo")
        except AdbError as exc:
            return f"cannot reach phone: {exc}; see android_harness/README.md"
        return None

    # -- LatencyBackend --------------------------------------------------------------------------
    def prepare(self, model: Any, input_shape: tuple[int, ...], path: str | Path) -> Path:
        from amc_mobile.export.tflite import export_tflite

        def export(m: Any, p: Path, shape: tuple[int, ...]) -> None:
            export_tflite(m, p, shape, atol=self.options.atol)

        return cached_export(export, model.eval(), Path(path).with_suffix(".tflite"), tuple(input_shape),
                             "litert-torch", self.options.cache_artifacts)

    def _header(self, record: Any) -> dict[str, Any]:
        r = self.runner()
        facts = r.facts()
        return {"backend": "android", "device": self.profile.name, "sampling": self.options.sampling,
                "model": Path(record.model).name if record else "", "core_mask": r.core_mask,
                "threads": self.profile.threads,
                "device_model": facts.model, "soc": facts.soc, "android": facts.android_version,
                "fingerprint": facts.fingerprint,
                "thermal_before": _thermal(record.thermal_before) if record else None,
                "thermal_after": _thermal(record.thermal_after) if record else None,
                "command": record.command if record else ""}

    def run(self, artifact: str | Path, warmup_runs: int, runs: int) -> str:
        r = self.runner()
        with self._phone():
            if self.options.sampling == "per-invocation":
                rec = self._guard(r.run, artifact, warmup_runs, 1, invocations=runs)
            else:
                rec = self._guard(r.run, artifact, warmup_runs, runs)
        self.last_records = [rec]
        return format_raw(self._header(rec), rec.outputs)

    def run_batch(self, artifacts: Sequence[str | Path], warmup_runs: int, runs: int | Sequence[int]) -> list[str]:
        from android_harness.batch import run_batch

        counts = [runs] * len(artifacts) if isinstance(runs, int) else list(runs)
        r = self.runner()
        per_inv = self.options.sampling == "per-invocation"
        items: list[tuple[str, str | Path]] = []
        owners: list[int] = []
        item_runs: list[int] = []
        for i, (a, n) in enumerate(zip(artifacts, counts, strict=True)):
            reps = n if per_inv else 1
            for j in range(reps):
                items.append((f"{i}.{j}", a))
                owners.append(i)
                item_runs.append(1 if per_inv else n)
        with self._phone():
            rows = self._guard(run_batch, r, items, warmup_runs, item_runs, chunk_size=self.options.batch_chunk)
        grouped: list[list[Any]] = [[] for _ in artifacts]
        for owner, row in zip(owners, rows, strict=True):
            grouped[owner].append(row)
        out = []
        for a, group in zip(artifacts, grouped, strict=True):
            head = self._header(None)
            head.update({"model": Path(a).name, "mode": "batch",
                         "thermal_before": [g.thermal_before for g in group],
                         "thermal_after": [g.thermal_after for g in group]})
            out.append(format_raw(head, [g.output for g in group]))
        return out

    def parse(self, raw: str) -> LatencyStats:
        from android_harness.parser import BenchmarkParseError, parse_benchmark_output

        header, sections = split_raw(raw)
        try:
            outputs = [parse_benchmark_output(s) for s in sections]
        except BenchmarkParseError as exc:
            raise UserError(f"cannot parse benchmark_model output: {exc}") from exc
        return stats_from_outputs(outputs, header.get("sampling", self.options.sampling))

    def describe_device(self) -> dict[str, Any]:
        from android_harness.runner import file_sha256

        r = self.runner()
        facts = self._guard(r.facts)
        binary = self._binary()
        return {**super().describe_device(), "runtime": "tflite benchmark_model",
                "binary_sha256": file_sha256(binary) if Path(binary).is_file() else None,
                "connection": r.t.config.describe(), "core_mask": self._guard(lambda: r.core_mask),
                "sampling": self.options.sampling, "facts": facts.to_dict()}

    def identity(self) -> dict[str, Any]:
        """Stable facts a table must match to be resumed or used: the phone (model, SoC, build
        fingerprint, cores and their max frequencies), the runtime (``benchmark_model``'s hash), threads,
        batch size, the core mask and the sampling mode. Plain JSON types, so a table read back compares
        equal; the address, serial and live readings are not part of it."""
        from android_harness.runner import file_sha256

        r = self.runner()
        facts = self._guard(r.facts)
        binary = self._binary()
        return {"backend": "android", "runtime": "tflite benchmark_model",
                "binary_sha256": file_sha256(binary) if Path(binary).is_file() else None,
                "threads": self.profile.threads, "batch_size": self.profile.batch_size,
                "core_mask": self._guard(lambda: r.core_mask), "sampling": self.options.sampling,
                **facts.identity()}

    def live(self) -> dict[str, Any]:
        """This moment's thermal status and current CPU frequencies (recorded with each table row,
        never compared); empty when the phone cannot be read right now."""
        from android_harness.transport import AdbError

        try:
            snap = self.runner().thermal()
        except AdbError:
            return {}
        return {"thermal_status": snap.status, "cur_freq_khz": list(snap.cur_freq_khz)}

    def close(self) -> None:
        if self._runner is not None:
            self._runner.t.close()
            self._runner = None


def _thermal(snap: Any) -> dict[str, Any] | None:
    return None if snap is None else dict(snap.to_dict())

"""Run TFLite's ``benchmark_model`` on a phone: push the user's binary once (checked by hash), push
models, pin to the big cores with ``taskset``, exact run counts, thermal gating, parse the output.

Every device path and argument is passed through :func:`android_harness.transport.quote`.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from android_harness.facts import (
    DeviceFacts,
    ThermalSnapshot,
    big_core_mask,
    collect_facts,
    mask_cores,
    thermal_snapshot,
)
from android_harness.parser import BenchmarkOutput, BenchmarkParseError, parse_benchmark_output
from android_harness.transport import AdbError, AdbTransport, join, quote

log = logging.getLogger(__name__)


class ThermalError(AdbError):
    """The phone stayed too hot to measure after the allowed cool-down."""


@dataclass(frozen=True)
class RunnerConfig:
    binary: str                          # host path of the arm64 ``benchmark_model`` the user supplies
    remote_dir: str = "/data/local/tmp/amc"
    core_mask: str | None = None         # hex taskset mask; None: the detected big cores
    threads: int = 1
    use_taskset: bool = True
    op_profiling: bool = False
    max_thermal_status: int = 1          # hottest Android thermal status still measured (1 = light)
    cooldown_s: float = 2.0              # pause between batch items / poll period while hot
    max_cooldown_s: float = 120.0        # give up (ThermalError) when still hot after this long
    run_timeout_s: float = 300.0         # longest silence tolerated while one invocation runs
    parse_retries: int = 2               # re-runs after truncated/malformed output or a one-off crash
    clean_stale: bool = True             # first use: remove batch folders and models an earlier (killed) run left


def crashed(rc: int) -> bool:
    """Exit status of a process killed by a signal (the shell reports 128 + N: 139 = SIGSEGV, 134 =
    SIGABRT, 137 = SIGKILL). A one-off crash is retried like a dropped run; a status below 128 is the
    tool's own verdict (e.g. the model cannot be opened) and is not."""
    return rc >= 128


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class RunRecord:
    """One model run: the raw outputs, their parse, facts and thermal state around it."""

    model: str
    outputs: list[str]
    parsed: list[BenchmarkOutput]
    thermal_before: ThermalSnapshot | None
    thermal_after: ThermalSnapshot | None
    command: str
    attempts: int = 1
    extra: dict[str, str] = field(default_factory=dict)


class BenchmarkRunner:
    def __init__(self, transport: AdbTransport, config: RunnerConfig,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.t = transport
        self.cfg = config
        self._sleep = sleep
        self._facts: DeviceFacts | None = None
        self._mask: str | None = None
        self._remote_binary: str | None = None
        self._pushed: dict[str, str] = {}  # host sha256 -> remote path
        self._cleaned = not config.clean_stale
        self._stale_models: set[str] = set()  # model file names found on the phone, not (yet) reused

    # -- device state --------------------------------------------------------------------------
    def facts(self, refresh: bool = False) -> DeviceFacts:
        if self._facts is None or refresh:
            self._facts = collect_facts(self.t)
        return self._facts

    @property
    def core_mask(self) -> str:
        """The configured mask, else the fastest clusters holding ``threads`` cores (warns once when
        ``threads`` exceeds the cores the mask allows: the threads would share cores)."""
        if self._mask is None:
            self._mask = self.cfg.core_mask or big_core_mask(self.facts().cpu_max_freq_khz, self.cfg.threads)
            cores = mask_cores(self._mask)
            if self.cfg.use_taskset and self.cfg.threads > cores:
                log.warning("%s: %d threads but core mask %s allows only %d core(s); the threads will share "
                            "cores (set options.core_mask or lower threads)", self.t.config.describe(),
                            self.cfg.threads, self._mask, cores)
        return self._mask

    def thermal(self) -> ThermalSnapshot:
        n = len(self.facts().cpu_max_freq_khz)
        return thermal_snapshot(self.t, list(range(n)))

    def wait_until_cool(self) -> ThermalSnapshot:
        """Poll the thermal status every ``cooldown_s`` until it is at most ``max_thermal_status``."""
        start = time.monotonic()
        snap = self.thermal()
        while snap.status > self.cfg.max_thermal_status:
            waited = time.monotonic() - start
            if waited >= self.cfg.max_cooldown_s:
                raise ThermalError(f"{self.t.config.describe()}: thermal status still {snap.name} "
                                   f"({snap.status}) after {waited:.0f}s cool-down; let the phone cool "
                                   f"(unplug the charger, remove the case) or raise max_thermal_status")
            log.warning("phone is hot (thermal status %s); cooling down %.1fs", snap.name, self.cfg.cooldown_s)
            self._sleep(self.cfg.cooldown_s)
            snap = self.thermal()
        return snap

    # -- files ---------------------------------------------------------------------------------
    @property
    def models_dir(self) -> str:
        return posixpath.join(self.cfg.remote_dir, "models")

    @property
    def batch_dir(self) -> str:
        return posixpath.join(self.cfg.remote_dir, "batch")

    def clean_stale(self) -> None:
        """Once per runner, before its first push: delete the batch folders an earlier (killed) run left
        and note the models already on the phone; those this session does not reuse are deleted by
        :meth:`drop_stale_models` once its first models are pushed. The binary stays (re-pushed only
        when its hash changes). One process measures a phone at a time (two would disturb each other's
        timings anyway)."""
        if self._cleaned:
            return
        self._cleaned = True
        self.t.shell(f"rm -rf {quote(self.batch_dir)}").check("removing stale batch folders")
        self._stale_models = set(self.t.listdir(self.models_dir))

    def drop_stale_models(self) -> None:
        """Delete the models an earlier run pushed that this session has not reused (see :meth:`clean_stale`)."""
        stale = sorted(self._stale_models)
        self._stale_models = set()
        if stale:
            paths = " ".join(quote(posixpath.join(self.models_dir, n)) for n in stale)
            self.t.shell(f"rm -f {paths}").check("removing stale models")
            log.info("removed %d model(s) an earlier run left on the phone", len(stale))

    def _push_verified(self, local: Path, remote: str, digest: str, mode: int) -> None:
        """Push and check the device-side hash; re-push once on mismatch (a drop can leave a partial file)."""
        for attempt in range(3):
            self.t.push(local, remote, mode=mode)
            got = self.t.sha256(remote)
            if got == digest:
                return
            log.warning("hash mismatch after pushing %s (attempt %d); pushing again", local.name, attempt + 1)
        raise AdbError(f"pushing {local.name} to {remote} keeps failing the hash check")

    def ensure_binary(self) -> str:
        """Path of ``benchmark_model`` on the device, pushed only when its hash differs."""
        if self._remote_binary is not None:
            return self._remote_binary
        local = Path(self.cfg.binary).expanduser()
        if not local.is_file():
            raise AdbError(f"benchmark_model binary not found at {local}; download the Android arm64 "
                           f"prebuilt (see android_harness/README.md) and set options.binary")
        remote = posixpath.join(self.cfg.remote_dir, "benchmark_model")
        digest = file_sha256(local)
        self.clean_stale()
        self.t.shell(f"mkdir -p {quote(self.cfg.remote_dir)}").check("mkdir")
        if self.t.sha256(remote) != digest:
            self._push_verified(local, remote, digest, 0o755)
        self.t.shell(f"chmod 755 {quote(remote)}").check("chmod benchmark_model")
        self._remote_binary = remote
        return remote

    def push_model(self, local: str | Path) -> str:
        """Push a ``.tflite`` once per content hash; its device name keeps the original file name."""
        local = Path(local)
        digest = file_sha256(local)
        self.clean_stale()
        if digest in self._pushed:
            return self._pushed[digest]
        remote_dir = self.models_dir
        name = f"{digest[:12]}_{local.name}"
        remote = posixpath.join(remote_dir, name)
        self._stale_models.discard(name)
        self.t.shell(f"mkdir -p {quote(remote_dir)}").check("mkdir")
        if self.t.sha256(remote) != digest:
            self._push_verified(local, remote, digest, 0o644)
        self._pushed[digest] = remote
        return remote

    # -- running -------------------------------------------------------------------------------
    def argv(self, remote_model: str, warmup_runs: int, num_runs: int) -> list[str]:
        binary = self.ensure_binary()
        argv = [binary, f"--graph={remote_model}", f"--num_threads={self.cfg.threads}",
                f"--warmup_runs={warmup_runs}", f"--num_runs={num_runs}", "--min_secs=0",
                "--warmup_min_secs=0", f"--enable_op_profiling={'true' if self.cfg.op_profiling else 'false'}"]
        if self.cfg.use_taskset:
            argv = ["taskset", self.core_mask, *argv]
        return argv

    def command(self, remote_model: str, warmup_runs: int, num_runs: int) -> str:
        return join(self.argv(remote_model, warmup_runs, num_runs))  # type: ignore[arg-type]

    def run(self, local_model: str | Path, warmup_runs: int, num_runs: int, invocations: int = 1) -> RunRecord:
        """``invocations`` back-to-back runs of one model, each parsed (retried when garbled)."""
        remote = self.push_model(local_model)
        self.drop_stale_models()
        cmd = self.command(remote, warmup_runs, num_runs)
        before = self.wait_until_cool()
        outputs: list[str] = []
        parsed: list[BenchmarkOutput] = []
        attempts = 0
        for _ in range(invocations):
            for attempt in range(self.cfg.parse_retries + 1):
                attempts += 1
                res = self.t.shell(cmd, timeout_s=self.cfg.run_timeout_s)
                try:
                    if crashed(res.rc):
                        raise BenchmarkParseError(f"benchmark_model crashed (exit status {res.rc})")
                    if res.rc != 0:
                        res.check(f"benchmark_model on {Path(local_model).name}")
                    parsed.append(parse_benchmark_output(res.output))
                    outputs.append(res.output)
                    break
                except BenchmarkParseError as exc:
                    if attempt == self.cfg.parse_retries:
                        raise AdbError(f"benchmark_model output for {Path(local_model).name} unusable after "
                                       f"{attempt + 1} attempts: {exc}") from exc
                    log.warning("unusable benchmark_model run (%s); running again", exc)
        after = self.thermal()
        return RunRecord(model=str(local_model), outputs=outputs, parsed=parsed, thermal_before=before,
                         thermal_after=after, command=cmd, attempts=attempts)

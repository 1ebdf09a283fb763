"""What the in-process host runtimes (onnxruntime, LiteRT) share: options and the timing loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from amc_mobile.errors import UserError
from amc_mobile.latency.base import BackendOptions

CLOCKS = ("thread_cpu", "wall")


@dataclass(frozen=True)
class HostOptions(BackendOptions):
    atol: float = 1e-3  # export check tolerance (relative to the output's max |value|)
    cache_artifacts: bool = True
    # "thread_cpu": CPU time of the calling thread (the runtime computes on it with threads=1), which
    # excludes time the OS gave the core to other processes: on a shared machine wall time of a 20 ms
    # model is inflated by every preemption while sub-ms table entries mostly escape them. "wall":
    # wall-clock time (use on a quiet, dedicated machine or with threads > 1).
    clock: str = "thread_cpu"

    def __post_init__(self) -> None:
        if self.clock not in CLOCKS:
            raise UserError(f"option clock must be 'thread_cpu' or 'wall', got {self.clock!r}")


def time_calls(call: Callable[[], object], warmup_runs: int, runs: int, clock: str, threads: int) -> list[float]:
    """Run ``call`` ``warmup_runs`` times untimed, then ``runs`` times; per-call times in ms."""
    if clock == "thread_cpu" and threads > 1:
        raise UserError("clock 'thread_cpu' measures one thread; use clock: wall with threads > 1")
    now = time.thread_time_ns if clock == "thread_cpu" else time.perf_counter_ns
    for _ in range(warmup_runs):
        call()
    samples = []
    for _ in range(runs):
        t0 = now()
        call()
        samples.append((now() - t0) / 1e6)
    return samples

"""A measurement protocol that survives noisy, drifting machines and phones that heat up.

- Warm-up: ``warmup_runs`` untimed runs before every timed window (switching models evicts caches).
- Windows: each timed window has ``runs`` runs, raised so it lasts ``min_window_ms`` (sub-ms models
  would otherwise be dominated by timer and scheduler noise); its statistic is the median.
- Interleaving: every window of an artefact is preceded and followed by a window of a fixed reference
  workload (:func:`~amc_mobile.latency.units.reference_workload`); each entry is also stored as a ratio
  to the reference measured in the same stretch of time, so machine-speed drift (frequency scaling,
  thermal throttling, neighbours' load) cancels. Orders are shuffled per repeat.
- Repeats: ``repeats`` windows per artefact; the reported value is the median over windows.
- Overhead: a near-empty model is measured once per repeat; its median (the per-invocation cost of the
  runtime call) is subtracted from every window before ratios are taken. A whole model pays it once.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import median
from typing import Any

from amc_mobile.latency.base import LatencyBackend, LatencyStats, quantile
from amc_mobile.latency.units import null_workload, reference_workload

MAX_RUNS = 20000


@dataclass(frozen=True)
class ProtocolSettings:
    warmup_runs: int = 10
    runs: int = 20
    repeats: int = 5
    min_window_ms: float = 20.0
    calibrate_overhead: bool = True
    seed: int = 0

    @classmethod
    def from_profile(cls, profile: Any, **overrides: Any) -> ProtocolSettings:
        base = {k: getattr(profile, k) for k in ("warmup_runs", "runs", "repeats", "min_window_ms",
                                                  "calibrate_overhead")}
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Measurement:
    """One artefact measured under the protocol. ``stats`` summarise the per-window medians with the
    overhead subtracted (``count`` = windows); ``ratio`` = latency / reference latency, same windows."""

    stats: LatencyStats
    ratio: float
    ratio_p10: float
    ratio_p90: float
    ref_ms: float  # median reference latency in the same windows (overhead subtracted)
    overhead_ms: float
    runs_per_window: int
    total_runs: int

    @property
    def median_ms(self) -> float:
        return self.stats.median_ms

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "stats"}
        return {**self.stats.to_dict(), **d}


class Protocol:
    """Runs artefacts on a backend with warm-up, adaptive windows, reference interleaving and
    overhead subtraction. ``work_dir`` holds the reference and null artefacts."""

    def __init__(self, backend: LatencyBackend, settings: ProtocolSettings, work_dir: str | Path) -> None:
        self.backend = backend
        self.settings = settings
        self.work_dir = Path(work_dir)
        self.rng = random.Random(settings.seed)
        bs = backend.profile.batch_size
        ref_model, ref_shape = reference_workload(bs)
        self.reference = backend.prepare(ref_model, ref_shape, self.work_dir / f"_reference{backend.artifact_suffix}")
        self.null: Path | None = None
        if settings.calibrate_overhead:
            null_model, null_shape = null_workload(bs)
            self.null = backend.prepare(null_model, null_shape, self.work_dir / f"_null{backend.artifact_suffix}")
        self._runs: dict[str, int] = {}

    def runs_for(self, artifact: Path) -> int:
        """Timed runs per window so that a window lasts ``min_window_ms`` (probed once per artefact)."""
        key = str(artifact)
        if key not in self._runs:
            s = self.settings
            probe = self.backend.parse(self.backend.run(artifact, min(s.warmup_runs, 3), 5)).median_ms
            need = math.ceil(s.min_window_ms / max(probe, 1e-4))
            self._runs[key] = int(min(MAX_RUNS, max(s.runs, need)))
        return self._runs[key]

    def _windows(self, seq: Sequence[Path]) -> list[float]:
        """Run a sequence of windows (one device session where the backend supports it)."""
        runs = [self.runs_for(a) for a in seq]
        raws = self.backend.run_batch(list(seq), self.settings.warmup_runs, runs)
        return [self.backend.parse(r).median_ms for r in raws]

    def measure_many(self, artifacts: Sequence[Path],
                     progress: Callable[[int], None] | None = None) -> list[Measurement]:
        """Measure each artefact ``repeats`` times, each window between two reference windows."""
        k = len(artifacts)
        win: list[list[float]] = [[] for _ in range(k)]
        ratios: list[list[float]] = [[] for _ in range(k)]
        refs: list[float] = []
        nulls: list[float] = []
        raw_pairs: list[tuple[int, float, float]] = []
        for _ in range(self.settings.repeats):
            order = list(range(k))
            self.rng.shuffle(order)
            seq: list[Path] = [self.reference]
            for i in order:
                seq += [artifacts[i], self.reference]
            if self.null is not None:
                seq.append(self.null)
            times = self._windows(seq)
            if self.null is not None:
                nulls.append(times.pop())
            for j, i in enumerate(order):
                before, t, after = times[2 * j], times[2 * j + 1], times[2 * j + 2]
                raw_pairs.append((i, t, 0.5 * (before + after)))
            refs += times[0::2]
            if progress:
                progress(k)
        overhead = median(nulls) if nulls else 0.0
        for i, t, ref in raw_pairs:
            win[i].append(max(t - overhead, 0.0))
            ratios[i].append(max(t - overhead, 0.0) / max(ref - overhead, 1e-9))
        ref_ms = median(refs) - overhead
        out = []
        for i in range(k):
            runs = self.runs_for(artifacts[i])
            out.append(Measurement(LatencyStats.from_samples_ms(win[i]), median(ratios[i]),
                                   quantile(ratios[i], 0.1), quantile(ratios[i], 0.9), ref_ms, overhead, runs,
                                   runs * len(win[i])))
        return out

    def compare(self, a: Path, b: Path, repeats: int | None = None) -> dict[str, Any]:
        """Speedup of ``b`` over ``a`` (latency_a / latency_b) from ABBA-interleaved windows, with a
        95% confidence interval (t interval on the mean log-speedup across window pairs)."""
        from scipy import stats as st

        n = repeats or max(self.settings.repeats, 8)
        speedups: list[float] = []
        nulls: list[float] = []
        ta: list[float] = []
        tb: list[float] = []
        for r in range(n):
            seq = [a, b, b, a] if r % 2 == 0 else [b, a, a, b]
            times = self._windows(seq + ([self.null] if self.null is not None else []))
            if self.null is not None:
                nulls.append(times.pop())
            pa = [t for p, t in zip(seq, times, strict=True) if p == a]
            pb = [t for p, t in zip(seq, times, strict=True) if p == b]
            ta += pa
            tb += pb
        o = median(nulls) if nulls else 0.0
        for i in range(0, len(ta), 2):
            speedups.append((0.5 * (ta[i] + ta[i + 1]) - o) / max(0.5 * (tb[i] + tb[i + 1]) - o, 1e-9))
        logs = [math.log(max(s, 1e-9)) for s in speedups]
        m = sum(logs) / len(logs)
        sd = math.sqrt(sum((x - m) ** 2 for x in logs) / (len(logs) - 1)) if len(logs) > 1 else 0.0
        half = float(st.t.ppf(0.975, len(logs) - 1)) * sd / math.sqrt(len(logs)) if len(logs) > 1 else 0.0
        return {"speedup": math.exp(m), "ci95_low": math.exp(m - half), "ci95_high": math.exp(m + half),
                "speedup_median": median(speedups), "pairs": len(speedups),
                "a": LatencyStats.from_samples_ms([max(t - o, 0.0) for t in ta]).to_dict(),
                "b": LatencyStats.from_samples_ms([max(t - o, 0.0) for t in tb]).to_dict(),
                "overhead_ms": o}

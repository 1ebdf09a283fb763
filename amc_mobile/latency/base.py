"""The latency-backend interface: prepare an artefact, run it, parse the raw text (nn-Meter's split).

A backend is a profiler (``prepare`` + ``run``: produce raw text on the device) plus a parser
(``parse``: text -> :class:`LatencyStats`). Running and parsing are separate so parsers are tested on
captured output. Backends register by name with :func:`register_backend`; a device profile's
``backend`` key names one. Built-in names resolve lazily (their modules import heavy runtimes).

Stable interface (other backends, e.g. ``android``, and the search depend on it): do not rename.
"""

from __future__ import annotations

import importlib
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from amc_mobile.errors import UserError, unknown_name
from amc_mobile.records import reject_unknown

if TYPE_CHECKING:
    from torch import nn

    from amc_mobile.latency.profiles import DeviceProfile


@dataclass(frozen=True)
class LatencyStats:
    """Summary of latency samples in milliseconds (one sample = one inference)."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    std_ms: float
    count: int

    @classmethod
    def from_samples_ms(cls, samples_ms: Sequence[float]) -> LatencyStats:
        """Robust statistics of raw samples (ms). Raises ``ValueError`` on an empty sequence."""
        xs = sorted(float(s) for s in samples_ms)
        if not xs:
            raise ValueError("no latency samples")
        n = len(xs)
        mean = sum(xs) / n
        std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
        return cls(quantile(xs, 0.5), quantile(xs, 0.1), quantile(xs, 0.9), mean, std, n)

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def quantile(xs: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of ``xs`` (numpy's default method) over a sorted copy."""
    ys = sorted(xs)
    pos = (len(ys) - 1) * q
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(ys) - 1)
    return ys[lo] + (ys[hi] - ys[lo]) * (pos - lo)


# --- the raw text format written by the in-process backends (onnxruntime, tflite, cuda) -----------
SAMPLE_RE = re.compile(r"^sample_ms\s+([0-9.eE+-]+)\s*$", re.MULTILINE)


def format_samples(samples_ms: Sequence[float], header: Mapping[str, Any] | None = None) -> str:
    """Raw text of the in-process backends: ``# key: value`` header lines, one ``sample_ms X`` a run."""
    lines = [f"# {k}: {v}" for k, v in (header or {}).items()]
    lines += [f"sample_ms {s:.6f}" for s in samples_ms]
    return "\n".join(lines) + "\n"


def parse_samples(raw: str) -> LatencyStats:
    """Parse :func:`format_samples` text; a one-line ``UserError`` when it holds no samples."""
    samples = [float(m) for m in SAMPLE_RE.findall(raw)]
    if not samples:
        first = raw.strip().splitlines()[0][:160] if raw.strip() else "<empty>"
        raise UserError(f"no latency samples in runner output (first line: {first})")
    return LatencyStats.from_samples_ms(samples)


# --- the backend interface ---------------------------------------------------------------------
@dataclass(frozen=True)
class BackendOptions:
    """Base of each backend's typed ``options`` record (the profile's ``options:`` mapping)."""

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None, where: str = "options") -> BackendOptions:
        """Build from a mapping, rejecting unknown keys with their names (and listing valid ones)."""
        data = dict(data or {})
        reject_unknown(data, cls, where)
        for f in fields(cls):  # YAML types: "no" is a string, not false
            if f.name in data and isinstance(f.default, bool | int | float | str) and data[f.name] is not None:
                want = type(f.default)
                ok = (isinstance(data[f.name], bool) if want is bool else
                      isinstance(data[f.name], int | float) and not isinstance(data[f.name], bool) if want in (int, float)
                      else isinstance(data[f.name], str))
                if not ok:
                    raise UserError(f"{where}: '{f.name}' must be {want.__name__}, got {data[f.name]!r}")
        try:
            return cls(**data)
        except TypeError as exc:  # a required option is missing
            raise UserError(f"bad {where}: {exc}") from exc


class LatencyBackend(ABC):
    """One runtime on one device. Subclasses set ``name``, ``artifact_suffix`` and ``Options``.

    Life cycle: ``backend = get_backend(profile.backend)(profile)``; ``check_available()`` (None when
    usable here); ``prepare(model, input_shape, path)`` once per model; then ``run``/``parse`` as often
    as the measurement protocol (:mod:`amc_mobile.latency.protocol`) needs; ``close()`` at the end.
    """

    name: ClassVar[str] = ""
    artifact_suffix: ClassVar[str] = ""  # ".onnx" | ".tflite" | ".pt2" ...
    Options: ClassVar[type[BackendOptions]] = BackendOptions
    # the layout isolated table units are exported in: "nhwc" where the runtime's kernels run in NHWC
    # (a converter's boundary transposes would otherwise be timed with every unit; units.channels_last_unit)
    unit_layout: ClassVar[str] = "nchw"

    def __init__(self, profile: DeviceProfile) -> None:
        self.profile = profile
        self.options = self.Options.from_mapping(profile.options, f"options of device profile '{profile.name}'")

    @classmethod
    def validate_options(cls, data: Mapping[str, Any] | None, where: str = "options") -> BackendOptions:
        """Check a profile's ``options`` mapping without building the backend (used when loading)."""
        return cls.Options.from_mapping(data, where)

    @abstractmethod
    def check_available(self) -> str | None:
        """None when this backend can run here; otherwise one line: why not, and how to fix it."""

    @abstractmethod
    def prepare(self, model: nn.Module, input_shape: tuple[int, ...], path: str | Path) -> Path:
        """Export ``model`` (eval mode) for this runtime to ``path`` (suffix ``artifact_suffix``);
        verify it numerically against torch; return the artefact path."""

    @abstractmethod
    def run(self, artifact: str | Path, warmup_runs: int, runs: int) -> str:
        """Run ``artifact`` ``warmup_runs`` untimed then ``runs`` timed times; return the raw text."""

    @abstractmethod
    def parse(self, raw: str) -> LatencyStats:
        """Turn the raw text of :meth:`run` into statistics (per-inference latency in ms)."""

    def artifact_path(self, path: str | Path) -> Path:
        """``path`` with this backend's suffix appended unless it already has it."""
        p = Path(path)
        return p if p.suffix == self.artifact_suffix else p.with_name(p.name + self.artifact_suffix)

    def describe_device(self) -> dict[str, Any]:
        """Facts recorded with every measurement: runtime and version, threads, device, ..."""
        return {"backend": self.name, "device": self.profile.name, "threads": self.profile.threads,
                "batch_size": self.profile.batch_size}

    def identity(self) -> dict[str, Any]:
        """Stable facts that decide whether a latency table fits this device (compared on resume and
        on use; see :mod:`amc_mobile.latency.fingerprint`). Default: :meth:`describe_device` without
        live readings and labels. Remote backends override it (phones: model, SoC, build fingerprint)."""
        from amc_mobile.latency.fingerprint import LIVE_KEYS

        return {k: v for k, v in self.describe_device().items() if k not in LIVE_KEYS}

    def live(self) -> dict[str, Any]:
        """Live readings (temperature, current frequency...) recorded with each table row, never
        compared. Default: none."""
        return {}

    def device_record(self) -> dict[str, Any]:
        """What a latency table stores about its device: the facts plus the stable ``identity``."""
        return {**self.describe_device(), "identity": self.identity()}

    def run_batch(self, artifacts: Sequence[str | Path], warmup_runs: int,
                  runs: int | Sequence[int]) -> list[str]:
        """Run several artefacts back to back, in the given order, one raw text each.

        ``runs`` is one count for all or one per artefact (the protocol sizes windows by time). The
        same artefact may appear several times (the reference workload is interleaved). Hook for tables
        and interleaved protocols: a remote backend should override it to run the whole sequence in one
        device session (one push, one shell invocation). Default: loop over ``run``.
        """
        counts = [runs] * len(artifacts) if isinstance(runs, int) else list(runs)
        return [self.run(a, warmup_runs, n) for a, n in zip(artifacts, counts, strict=True)]

    def measure(self, artifact: str | Path, warmup_runs: int | None = None, runs: int | None = None) -> LatencyStats:
        """``parse(run(...))`` with the profile's warm-up and run counts by default."""
        w = self.profile.warmup_runs if warmup_runs is None else warmup_runs
        r = self.profile.runs if runs is None else runs
        return self.parse(self.run(artifact, w, r))

    def close(self) -> None:  # noqa: B027  (optional hook)
        """Release sessions / device connections (default: nothing)."""

    def __enter__(self) -> LatencyBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- registry --------------------------------------------------------------------------------
_BACKENDS: dict[str, type[LatencyBackend]] = {}
# Built-in backends, imported on first use (their runtimes are heavy or optional).
_LAZY: dict[str, str] = {
    "onnxruntime": "amc_mobile.latency.backends.onnxruntime",
    "tflite": "amc_mobile.latency.backends.tflite",
    "cuda": "amc_mobile.latency.backends.cuda",
    "android": "amc_mobile.latency.backends.android",
}


def register_backend(name: str) -> Callable[[type[LatencyBackend]], type[LatencyBackend]]:
    """Class decorator: ``@register_backend("onnxruntime")`` makes a profile's ``backend:`` find it."""

    def deco(cls: type[LatencyBackend]) -> type[LatencyBackend]:
        cls.name = name
        _BACKENDS[name] = cls
        return cls

    return deco


def list_backends() -> list[str]:
    return sorted(set(_BACKENDS) | set(_LAZY))


def get_backend(name: str) -> type[LatencyBackend]:
    """The backend class registered as ``name`` (importing its module on first use)."""
    if name not in _BACKENDS and name in _LAZY:
        try:
            importlib.import_module(_LAZY[name])
        except ModuleNotFoundError as exc:
            if exc.name == _LAZY[name]:
                raise UserError(f"backend '{name}' is not implemented in this installation "
                                f"(module {_LAZY[name]} missing)") from exc
            raise
    if name not in _BACKENDS:
        raise unknown_name("backend", name, list_backends())
    return _BACKENDS[name]

"""Parse the text that TFLite's ``benchmark_model`` (classic) and LiteRT's ``benchmark_litert_model`` print.

Units: the classic tool prints microseconds (``us``); the LiteRT results block prints milliseconds.
Every field below carries its unit in its name.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)"
# The tool prints averages with the stream's default 6 significant digits, the same way on the stats
# line and on the timings line; two roundings differ by at most ~1e-5 relative.
_SAME_REL = 2e-5


class BenchmarkParseError(ValueError):
    """The output does not hold a complete benchmark result (truncated, malformed, or the tool failed)."""


@dataclass(frozen=True)
class RunStats:
    """One ``count=… first=… curr=… min=… max=… avg=… std=…`` line (microseconds)."""

    count: int
    avg_us: float
    min_us: float | None = None
    max_us: float | None = None
    std_us: float | None = None
    first_us: float | None = None
    curr_us: float | None = None
    percentiles_us: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class OpRow:
    """One row of the op-profiling "Run Order" table (regular runs)."""

    node_type: str
    first_ms: float
    avg_ms: float
    percent: float
    times_called: int
    name: str


@dataclass(frozen=True)
class BenchmarkOutput:
    """Everything the harness uses from one ``benchmark_model`` invocation."""

    format: str                         # "classic" or "litert"
    init_us: float | None
    first_inference_us: float | None
    warmup_avg_us: float | None
    inference_avg_us: float
    warmup: RunStats | None
    inference: RunStats | None
    init_footprint_mb: float | None = None
    overall_footprint_mb: float | None = None
    peak_memory_mb: float | None = None
    ops: tuple[OpRow, ...] = ()

    def to_dict(self) -> dict:
        return asdict(self)


def _num(text: str) -> float:
    return float(text)


_TIMINGS = re.compile(
    r"Inference timings in us:\s*Init:\s*(?P<init>" + NUMBER + r"),\s*First inference:\s*(?P<first>" + NUMBER
    + r"),\s*Warmup \(avg\):\s*(?P<warm>" + NUMBER + r"),\s*Inference \(avg\):\s*(?P<inf>" + NUMBER + r")\s*$",
    re.MULTILINE)
# log prefixes: "INFO: " (TFLite's minimal logger) or glog/absl "I1201 04:25:28.123456  1234 file.cc:42] "
_PREFIX = r"(?:[A-Z]+: |[IWEF]\d{4} [0-9:.]+\s+\d+ \S+:\d+\] )?"
_COUNT_LINE = re.compile(r"^" + _PREFIX + r"\s*count=(\d+)\b(.*)$", re.MULTILINE)
_KV = re.compile(r"([A-Za-z][A-Za-z0-9_]*)=(" + NUMBER + r")")
_RUNNING = re.compile(r"^" + _PREFIX + r"Running benchmark for at least (\d+) iterations", re.MULTILINE)
_MEM_DELTA = re.compile(r"Memory footprint delta from the start of the tool \(MB\):\s*init=(" + NUMBER
                        + r")\s+overall=(" + NUMBER + r")")
_PEAK = re.compile(r"Overall peak memory footprint \(MB\) via periodic monitoring:\s*(" + NUMBER + r")")
_LITERT_BLOCK = re.compile(r"=+ BENCHMARK RESULTS =+(?P<body>.*?)\n[^\n]*?={10,}", re.DOTALL)


def parse_stats_line(line: str) -> RunStats:
    """Parse a ``count=…`` line; handles the ``count=0`` (empty window, e.g. ``--warmup_runs=0``) and
    ``count=1 curr=X`` (all same) forms and ``pNN=``/``median=``."""
    m = _COUNT_LINE.match(line.strip())
    if not m:
        raise BenchmarkParseError(f"not a stats line: {line!r}")
    count = int(m.group(1))
    if count == 0:
        if m.group(2).strip():
            raise BenchmarkParseError(f"stats line with count=0 but values: {line!r}")
        return RunStats(count=0, avg_us=math.nan)
    values = {k: _num(v) for k, v in _KV.findall(m.group(2))}
    if "avg" in values:
        avg = values["avg"]
    elif "curr" in values:          # "count=N curr=X(all same)": every run took X
        avg = values["curr"]
    else:
        raise BenchmarkParseError(f"stats line without avg or curr: {line!r}")
    all_same = "avg" not in values
    pct = {k: v for k, v in values.items() if re.fullmatch(r"p\d+(?:\.\d+)?|median", k)}
    if "median" in pct:
        pct["p50"] = pct.pop("median")
    return RunStats(count=count, avg_us=avg,
                    min_us=values.get("min", avg if all_same else None),
                    max_us=values.get("max", avg if all_same else None),
                    std_us=values.get("std", 0.0 if all_same else None),
                    first_us=values.get("first", avg if all_same else None),
                    curr_us=values.get("curr"), percentiles_us=pct)


def _stats_after_running_lines(text: str) -> list[RunStats]:
    """The stats lines that follow each "Running benchmark for at least N iterations" line, in order."""
    stats: list[RunStats] = []
    for run in _RUNNING.finditer(text):
        m = _COUNT_LINE.search(text, run.end())
        if m is None:
            continue
        nxt = _RUNNING.search(text, run.end())
        if nxt is not None and m.start() > nxt.start():
            continue
        stats.append(parse_stats_line(m.group(0)))
    return stats


def parse_op_profile(text: str) -> tuple[OpRow, ...]:
    """Rows of the "Run Order" table of regular runs (tab-separated; node types may hold commas/spaces)."""
    start = text.find("Operator-wise Profiling Info for Regular Benchmark Runs")
    if start < 0:
        return ()
    section = text[start:]
    order = section.find("= Run Order =")
    if order < 0:
        return ()
    rows: list[OpRow] = []
    lines = section[order:].splitlines()[1:]
    for line in lines:
        if not line.strip():
            if rows:
                break
            continue
        raw = line.split("\t")
        if raw and raw[0].strip() == "":
            raw = raw[1:]
        cells = [c.strip() for c in raw]
        if cells and cells[0].startswith("[node type]"):
            continue
        if line.lstrip().startswith("="):
            break
        if len(cells) < 9:
            raise BenchmarkParseError(f"malformed op-profiling row: {line!r}")
        try:
            rows.append(OpRow(node_type=cells[0], first_ms=_num(cells[2]), avg_ms=_num(cells[3]),
                              percent=_num(cells[4].rstrip("%")), times_called=int(float(cells[7])),
                              name="\t".join(cells[8:])))
        except ValueError as exc:
            raise BenchmarkParseError(f"malformed op-profiling row: {line!r}") from exc
    return tuple(rows)


def _parse_litert_block(text: str) -> BenchmarkOutput | None:
    m = _LITERT_BLOCK.search(text)
    if m is None:
        return None
    body = m.group("body")

    def grab(label: str, with_runs: bool = False) -> tuple[float | None, int | None]:
        pat = re.escape(label) + r":\s*(" + NUMBER + r")(?:\s*ms)?" + (r"\s*\((\d+) runs\)" if with_runs else "")
        mm = re.search(pat, body)
        if not mm:
            return None, None
        return _num(mm.group(1)), (int(mm.group(2)) if with_runs else None)

    init_ms, _ = grab("Model initialization")
    first_ms, _ = grab("Warmup (first)")
    warm_ms, warm_n = grab("Warmup (avg)", True)
    inf_ms, inf_n = grab("Inference (avg)", True)
    if inf_ms is None or inf_n is None:
        raise BenchmarkParseError("LiteRT results block without 'Inference (avg): X ms (N runs)'")
    min_ms, _ = grab("Inference (min)")
    max_ms, _ = grab("Inference (max)")
    std_ms, _ = grab("Inference (std)")
    init_mb, _ = grab("Init footprint")
    overall_mb, _ = grab("Overall footprint")
    peak_mb, _ = grab("Peak memory")

    def us(v: float | None) -> float | None:
        return None if v is None else v * 1000.0

    inference = RunStats(count=inf_n, avg_us=inf_ms * 1000.0, min_us=us(min_ms), max_us=us(max_ms),
                         std_us=us(std_ms))
    warmup = None if warm_ms is None else RunStats(count=warm_n or 0, avg_us=warm_ms * 1000.0, first_us=us(first_ms))
    return BenchmarkOutput(format="litert", init_us=us(init_ms), first_inference_us=us(first_ms),
                           warmup_avg_us=us(warm_ms), inference_avg_us=inf_ms * 1000.0, warmup=warmup,
                           inference=inference, init_footprint_mb=init_mb, overall_footprint_mb=overall_mb,
                           peak_memory_mb=peak_mb, ops=parse_op_profile(text))


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=_SAME_REL, abs_tol=1e-9)


def _check_timings(text: str, timings: re.Match[str], warmup: RunStats | None, inference: RunStats | None) -> None:
    """Reject a timings line that is cut (no line end after its last number) or that disagrees with
    the stats lines it summarises (a number cut short still parses, e.g. ``29045.5`` -> ``2``)."""
    if not re.match(r"[ \t\r]*\n", text[timings.end("inf"):]):
        raise BenchmarkParseError("the 'Inference timings' line is cut short (no line end after it; "
                                  f"truncated output): {timings.group(0).strip()[-80:]!r}")
    inf_avg = _num(timings["inf"])
    if not math.isfinite(inf_avg) or inf_avg < 0:
        raise BenchmarkParseError(f"'Inference (avg): {timings['inf']}' is not a latency (no timed runs?)")
    if inference is not None:
        if inference.count < 1:
            raise BenchmarkParseError("the timed window ran 0 times (count=0)")
        if not _same(inference.avg_us, inf_avg):
            raise BenchmarkParseError(f"'Inference (avg): {timings['inf']}' disagrees with the stats line "
                                      f"(avg={inference.avg_us:g} over count={inference.count}): truncated or "
                                      f"garbled output")
    warm_avg = _num(timings["warm"])
    if warmup is not None and warmup.count > 0 and not _same(warmup.avg_us, warm_avg):
        raise BenchmarkParseError(f"'Warmup (avg): {timings['warm']}' disagrees with the warm-up stats line "
                                  f"(avg={warmup.avg_us:g} over count={warmup.count}): garbled output")


def parse_benchmark_output(text: str) -> BenchmarkOutput:
    """Parse one invocation's output; raise :class:`BenchmarkParseError` when it is incomplete."""
    litert = _parse_litert_block(text)
    if litert is not None:
        return litert
    timings = _TIMINGS.search(text)
    if timings is None:
        tail = " | ".join(line for line in text.strip().splitlines()[-3:])
        raise BenchmarkParseError(
            "no 'Inference timings in us: …' line in benchmark_model output (truncated or failed run); "
            f"last lines: {tail[:300]!r}")
    stats = _stats_after_running_lines(text[:timings.start()])
    warmup = stats[0] if len(stats) >= 2 else None
    inference = stats[-1] if stats else None
    _check_timings(text, timings, warmup, inference)
    mem = _MEM_DELTA.search(text)
    peak = _PEAK.search(text)
    return BenchmarkOutput(
        format="classic", init_us=_num(timings["init"]), first_inference_us=_num(timings["first"]),
        warmup_avg_us=_num(timings["warm"]), inference_avg_us=_num(timings["inf"]),
        warmup=warmup, inference=inference,
        init_footprint_mb=_num(mem.group(1)) if mem else None,
        overall_footprint_mb=_num(mem.group(2)) if mem else None,
        peak_memory_mb=_num(peak.group(1)) if peak else None,
        ops=parse_op_profile(text))

"""The loopback device's ``benchmark_model``: runs the pushed ``.tflite`` with the host LiteRT runtime
and prints TFLite ``benchmark_model``'s classic output format with the numbers it really measured.

Flags and loop semantics follow the real tool: warm-up then timed runs, each loop running for at
least ``--*_runs`` iterations *and* ``--*min_secs`` seconds (defaults 0.5 s / 1 s, as upstream).
Op profiling prints the real table layout with the interpreter's real node list, but per-op times are
the measured total split evenly (the host runtime exposes no per-op timer): layout, not numbers.
Faults (see :class:`~android_harness.loopback.server.Faults`) can truncate, garble or drop the run.
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from android_harness.loopback.server import LoopbackAdbDevice

DEFAULTS = {"num_threads": "-1", "warmup_runs": "1", "num_runs": "50", "warmup_min_secs": "0.5",
            "min_secs": "1", "max_secs": "150", "enable_op_profiling": "false",
            "report_peak_memory_footprint": "false", "graph": ""}


class DropConnection(Exception):
    """Raised to make the server drop the TCP connection mid-run (fault injection)."""


def _flags(argv: list[str], out: Callable[[str], None]) -> dict[str, str] | None:
    flags = dict(DEFAULTS)
    for a in argv[1:]:
        if not a.startswith("--") or "=" not in a:
            out(f"ERROR: Unrecognized flag: {a}\n")
            return None
        k, v = a[2:].split("=", 1)
        flags[k] = v
    return flags


def _truthy(v: str) -> bool:
    return v.lower() in ("1", "true", "yes")


def _stat_line(xs_us: list[float]) -> str:
    n = len(xs_us)
    if n == 0:
        return "count=0"
    ints = [int(round(x)) for x in xs_us]
    if len(set(ints)) == 1:
        return f"count={n} curr={ints[-1]}" + ("(all same)" if n > 1 else "")
    avg = sum(xs_us) / n
    std = int(round(math.sqrt(sum((x - avg) ** 2 for x in xs_us) / n)))
    return (f"count={n} first={ints[0]} curr={ints[-1]} min={min(ints)} max={max(ints)} "
            f"avg={avg:g} std={std}")


def benchmark_model(device: LoopbackAdbDevice, argv: list[str], out: Callable[[str], None]) -> int:
    """Entry point used by the loopback shell for ``.../benchmark_model --graph=... ...``."""
    faults = device.faults
    flags = _flags(argv, out)
    if flags is None:
        return 1
    lines: list[str] = []
    emit = lines.append
    graph = flags["graph"]
    emit("STARTING!")
    emit("Log parameter values verbosely: [0]")
    emit(f"Min num runs: [{flags['num_runs']}]")
    emit(f"Min runs duration (seconds): [{flags['min_secs']}]")
    emit(f"Min warmup runs: [{flags['warmup_runs']}]")
    emit(f"Min warmup runs duration (seconds): [{flags['warmup_min_secs']}]")
    emit(f"Num threads: [{flags['num_threads']}]")
    emit(f"Graph: [{graph}]")
    if _truthy(flags["enable_op_profiling"]):
        emit("Enable op profiling: [1]")
    threads = max(1, int(flags["num_threads"])) if int(flags["num_threads"]) > 0 else 1
    emit(f"#threads used for CPU inference: [{threads}]")
    try:
        host_path = device.fs.host(graph)
        model_bytes = host_path.read_bytes() if host_path.is_file() else None
    except PermissionError:
        model_bytes = None
    if not model_bytes:
        out("\n".join(lines) + f"\nERROR: Could not open '{graph}'.\nFailed to mmap model {graph}\n")
        return 1
    emit(f"Loaded model {graph}")
    device.benchmark_runs += 1
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    t0 = time.perf_counter()
    try:
        interp = Interpreter(model_content=model_bytes, num_threads=threads)
        interp.allocate_tensors()
    except Exception as exc:  # the runtime's own errors: report like the tool does
        out("\n".join(lines) + f"\nERROR: {str(exc).splitlines()[0][:200]}\nFailed to construct interpreter\n")
        return 1
    init_us = (time.perf_counter() - t0) * 1e6
    rng = np.random.default_rng(0)
    for d in interp.get_input_details():
        if np.issubdtype(d["dtype"], np.floating):
            interp.set_tensor(d["index"], rng.standard_normal(d["shape"]).astype(d["dtype"]))
    emit("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.")
    emit(f"The input model file size (MB): {len(model_bytes) / 1e6:g}")
    emit(f"Initialized session in {init_us / 1000:.3f}ms.")
    rss_init = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    def loop(min_runs: int, min_secs: float) -> list[float]:
        xs: list[float] = []
        start = time.perf_counter()
        while len(xs) < min_runs or (time.perf_counter() - start) < min_secs:
            a = time.perf_counter()
            interp.invoke()
            xs.append(float(round((time.perf_counter() - a) * 1e6)))  # whole microseconds, as the tool's timer
            if time.perf_counter() - start > float(flags["max_secs"]):
                break
        return xs

    w_runs, w_secs = int(flags["warmup_runs"]), float(flags["warmup_min_secs"])
    emit(f"Running benchmark for at least {w_runs} iterations and at least {w_secs:g} seconds but "
         f"terminate if exceeding {float(flags['max_secs']):g} seconds.")
    warm = loop(w_runs, w_secs)
    emit(_stat_line(warm))
    emit("")
    if faults.drop_run > 0 and not faults.take("drop_run_after") and faults.take("drop_run"):
        out("\n".join(lines) + "\n")
        raise DropConnection("fault: connection dropped mid-run")
    if faults.crash_run > 0 and not faults.take("crash_run_after") and faults.take("crash_run"):
        out("\n".join(lines) + "\n")
        return 139  # killed by SIGSEGV: the device shell reports 128 + 11
    n_runs, n_secs = int(flags["num_runs"]), float(flags["min_secs"])
    emit(f"Running benchmark for at least {n_runs} iterations and at least {n_secs:g} seconds but "
         f"terminate if exceeding {float(flags['max_secs']):g} seconds.")
    timed = loop(n_runs, n_secs)
    emit(_stat_line(timed))
    emit("")
    avg_us = sum(timed) / len(timed)
    warm_avg = sum(warm) / len(warm) if warm else 0.0
    first = warm[0] if warm else 0.0  # the tool prints the warm-up window's first run (0 when empty)
    emit(f"Inference timings in us: Init: {init_us:g}, First inference: {first:g}, "
         f"Warmup (avg): {warm_avg:g}, Inference (avg): {avg_us:g}")
    emit("Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE "
         "to the actual memory footprint of the model at runtime. Take the information at your one's own risk.")
    rss_end = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    emit(f"Memory footprint delta from the start of the tool (MB): init={max(rss_init - rss0, 0):g} "
         f"overall={max(rss_end - rss0, 0):g}")
    if _truthy(flags["report_peak_memory_footprint"]):
        emit(f"Overall peak memory footprint (MB) via periodic monitoring: {rss_end:g}")
    if _truthy(flags["enable_op_profiling"]):
        lines.extend(_op_table(interp, avg_us / 1000.0, len(timed)))
    text = "\n".join(lines) + "\n"
    if faults.take("truncate_output"):
        out(text[: len(text) // 3])
        return 0
    if faults.take("truncate_timings"):  # cut inside the last number of the timings line (no line end)
        cut = text.index("Inference (avg): ") + len("Inference (avg): ") + 1
        out(text[:cut])
        return 0
    if faults.take("malformed_output"):
        out(text.replace("Inference (avg): ", "Inference (avg): -nan(ind)x").replace("count=", "cnt="))
        return 0
    out(text)
    return 0


def _op_table(interp, total_ms: float, runs: int) -> list[str]:  # type: ignore[no-untyped-def]
    ops = interp._get_ops_details()  # noqa: SLF001  (the only op listing the Python API offers)
    n = max(len(ops), 1)
    per = total_ms / n
    hdr = "\t" + "\t".join(["             [node type]", "          [start]", "  [first]", " [avg ms]",
                            "     [%]", "  [cdf%]", "  [mem KB]", "[times called]", "[Name]"])
    rows = ["", "Operator-wise Profiling Info for Regular Benchmark Runs:",
            "============================== Run Order ==============================", hdr]
    for i, op in enumerate(ops):
        pct = 100.0 / n
        rows.append("\t" + "\t".join([f"{op['op_name']:>24}", f"{per * i:17.3f}", f"{per:9.3f}", f"{per:9.3f}",
                                      f"{pct:7.3f}%", f"{pct * (i + 1):7.3f}%", f"{0.0:10.3f}", f"{1:9d}",
                                      f"[{op['op_name'].lower()}_{i}]:{i}"]))
    rows += ["", f"Number of nodes executed: {len(ops)}", f"{len(ops)} nodes observed ({runs} runs)", ""]
    return rows

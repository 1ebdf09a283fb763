"""Parsers on captured benchmark_model output (tests/data/benchmark_model_*.txt, real formats)."""

from __future__ import annotations

from pathlib import Path

import pytest

from amc_mobile.errors import UserError
from amc_mobile.latency.backends.android import format_raw, split_raw, stats_from_outputs
from android_harness.facts import big_core_mask, parse_cpu_range, parse_getprop, parse_thermal_status
from android_harness.parser import BenchmarkParseError, parse_benchmark_output, parse_stats_line
from android_harness.transport import ShellReplyTruncated, parse_shell_reply

DATA = Path(__file__).parent / "data"


def read(name: str) -> str:
    return (DATA / f"benchmark_model_{name}.txt").read_text()


def test_classic_output_pixel1() -> None:
    out = parse_benchmark_output(read("classic_pixel1"))
    assert out.format == "classic"
    assert out.inference_avg_us == 119043
    assert (out.init_us, out.first_inference_us, out.warmup_avg_us) == (58372, 131852, 121235)
    assert out.inference is not None and out.inference.count == 50
    assert (out.inference.min_us, out.inference.max_us, out.inference.std_us) == (117305, 126814, 1688)
    assert out.warmup is not None and out.warmup.count == 5
    assert (out.init_footprint_mb, out.overall_footprint_mb) == (28.3477, 34.8359)
    assert out.ops == ()


def test_scientific_notation_percentiles_and_all_same_warmup() -> None:
    out = parse_benchmark_output(read("sci_percentiles"))
    assert out.first_inference_us == pytest.approx(1251.7)
    assert out.inference is not None
    assert out.inference.max_us == pytest.approx(1112.0)
    assert out.inference.percentiles_us == {"p5": 810.0, "p50": 889.0, "p95": 1080.0}
    assert out.warmup is not None and out.warmup.count == 1 and out.warmup.avg_us == pytest.approx(1251.7)
    assert out.peak_memory_mb == pytest.approx(5.22656)


def test_op_profiling_table_node_types_with_commas() -> None:
    out = parse_benchmark_output(read("op_profiling"))
    assert out.inference_avg_us == pytest.approx(51020.6)
    assert [op.node_type for op in out.ops][:3] == [
        "Convolution (NHWC, F32) IGEMM", "Convolution (NHWC, F32) DWConv", "Convolution (NHWC, F32) GEMM"]
    assert len(out.ops) == 6  # only the regular-run Run Order table, not the init table
    assert out.ops[0].avg_ms == pytest.approx(6.505) and out.ops[0].percent == pytest.approx(12.771)
    assert out.ops[-1].name == "Delegate/Fully Connected (NC, F32) GEMM:5"


def test_litert_results_block_is_in_ms() -> None:
    out = parse_benchmark_output(read("litert_results"))
    assert out.format == "litert"
    assert out.inference_avg_us == pytest.approx(1240.0)
    assert out.inference is not None and out.inference.count == 30
    assert out.inference.std_us == pytest.approx(50.0)
    assert out.warmup is not None and out.warmup.count == 3
    assert (out.init_footprint_mb, out.peak_memory_mb) == (3.12, 6.02)


@pytest.mark.parametrize("name", ["classic_pixel1", "op_profiling", "sci_percentiles"])
def test_truncated_output_is_an_error(name: str) -> None:
    text = read(name)
    with pytest.raises(BenchmarkParseError, match="truncated or failed"):
        parse_benchmark_output(text[: text.index("Inference timings")])


def test_malformed_output_is_an_error() -> None:
    text = read("classic_pixel1").replace("Inference (avg): 119043", "Inference (avg): -nan(ind)")
    with pytest.raises(BenchmarkParseError):
        parse_benchmark_output(text)
    with pytest.raises(BenchmarkParseError):
        parse_benchmark_output("ERROR: Could not open '/x.tflite'.\nFailed to mmap model /x.tflite\n")


def test_stats_line_forms() -> None:
    s = parse_stats_line("count=3 curr=1200(all same)")
    assert (s.count, s.avg_us, s.std_us) == (3, 1200.0, 0.0)
    with pytest.raises(BenchmarkParseError):
        parse_stats_line("cnt=3 avg=1")


def test_window_stats_in_ms_with_stated_approximation() -> None:
    out = parse_benchmark_output(read("classic_pixel1"))
    st = stats_from_outputs([out], "window")
    assert st.mean_ms == pytest.approx(119.043) and st.std_ms == pytest.approx(1.688)
    assert st.median_ms == pytest.approx(119.043)  # no percentiles printed: the average
    assert st.p10_ms == pytest.approx(117.305)  # avg - 1.2816 std = 116.88 < min: clipped to min
    assert st.p90_ms == pytest.approx(119.043 + 1.2815515655 * 1.688, rel=1e-6)
    assert st.count == 50
    pct = stats_from_outputs([parse_benchmark_output(read("sci_percentiles"))], "window")
    # printed median (whole us) wins, refined within its half-microsecond by the full-precision average
    assert pct.median_ms == pytest.approx(0.8895)


def test_per_invocation_stats_are_real_quantiles() -> None:
    base = read("classic_pixel1")
    outs = [parse_benchmark_output(base.replace("Inference (avg): 119043", f"Inference (avg): {v}")
                                   .replace("avg=119043", f"avg={v}"))  # the stats line agrees with it
            for v in (100000, 110000, 120000, 130000, 140000)]
    st = stats_from_outputs(outs, "per-invocation")
    assert st.median_ms == pytest.approx(120.0) and st.count == 5


def test_raw_text_round_trip() -> None:
    raw = format_raw({"backend": "android", "sampling": "window", "thermal_before": {"status": 0}},
                     [read("classic_pixel1"), read("sci_percentiles")])
    header, sections = split_raw(raw)
    assert header["sampling"] == "window" and len(sections) == 2
    assert parse_benchmark_output(sections[1]).inference_avg_us == pytest.approx(902.35)


def test_backend_parse_error_is_one_line_user_error() -> None:
    from amc_mobile.latency.backends.android import AndroidBackend
    from amc_mobile.latency.profiles import profile_from_dict

    backend = AndroidBackend(profile_from_dict({"name": "p", "backend": "android"}, "test"))
    with pytest.raises(UserError, match="cannot parse benchmark_model output"):
        backend.parse("STARTING!\nLoaded model x\n")
    assert backend.parse(read("classic_pixel1")).mean_ms == pytest.approx(119.043)


def test_shell_reply_exit_status_marker() -> None:
    assert parse_shell_reply("hello\r\n__AMC_RC=0\r\n").output == "hello\n"
    res = parse_shell_reply("cat: x: No such file or directory\n__AMC_RC=1\n")
    assert res.rc == 1
    assert parse_shell_reply("no newline__AMC_RC=127\n").rc == 127
    with pytest.raises(ShellReplyTruncated):
        parse_shell_reply("partial output with no marker")


def test_device_fact_parsers() -> None:
    props = parse_getprop("[ro.product.model]: [Pixel]\n[ro.build.version.release]: [10]\n")
    assert props == {"ro.product.model": "Pixel", "ro.build.version.release": "10"}
    assert parse_cpu_range("0-3,6\n") == [0, 1, 2, 3, 6]
    assert big_core_mask((1593600, 1593600, 2150400, 2150400)) == "c"
    assert big_core_mask((1800000,) * 4 + (2400000,) * 4) == "f0"
    assert parse_thermal_status("IsStatusOverride: false\nThermal Status: 3\n") == 3
    assert parse_thermal_status("Can't find service") == -1


def _pixel1_with_empty_warmup(warm_avg: str) -> str:
    text = read("classic_pixel1")
    text = text.replace("Running benchmark for at least 5 iterations", "Running benchmark for at least 0 iterations")
    text = text.replace("count=5 first=131852 curr=118640 min=117981 max=131852 avg=121235 std=5311", "count=0")
    return text.replace("First inference: 131852, Warmup (avg): 121235",
                        f"First inference: 0, Warmup (avg): {warm_avg}")


@pytest.mark.parametrize("warm_avg", ["0", "nan", "-nan"])
def test_empty_warmup_window_parses(warm_avg: str) -> None:
    """``--warmup_runs=0 --warmup_min_secs=0``: the tool prints ``count=0`` for the warm-up window."""
    out = parse_benchmark_output(_pixel1_with_empty_warmup(warm_avg))
    assert out.warmup is not None and out.warmup.count == 0
    assert out.inference is not None and out.inference.count == 50 and out.inference_avg_us == 119043
    assert stats_from_outputs([out], "window").mean_ms == pytest.approx(119.043)
    assert parse_stats_line("INFO: count=0").count == 0


@pytest.mark.parametrize("name", ["classic_pixel1", "sci_percentiles"])
@pytest.mark.parametrize("keep", [1, 2, 4])
def test_timings_line_cut_inside_its_last_number_is_rejected(name: str, keep: int) -> None:
    text = read(name)
    start = text.index("Inference (avg): ") + len("Inference (avg): ")
    with pytest.raises(BenchmarkParseError, match="cut short|disagrees"):
        parse_benchmark_output(text[:start + keep])
    # even when something appended a line end, the stats line gives the cut number away
    with pytest.raises(BenchmarkParseError, match="disagrees"):
        parse_benchmark_output(text[:start + keep] + "\n")


def test_timings_line_must_agree_with_the_stats_lines() -> None:
    text = read("classic_pixel1")
    with pytest.raises(BenchmarkParseError, match="disagrees"):
        parse_benchmark_output(text.replace("Inference (avg): 119043", "Inference (avg): 119.043"))
    with pytest.raises(BenchmarkParseError, match="warm-up"):
        parse_benchmark_output(text.replace("Warmup (avg): 121235", "Warmup (avg): 12"))
    with pytest.raises(BenchmarkParseError, match="0 times"):
        parse_benchmark_output(text.replace("count=50 first=118902 curr=119377 min=117305 max=126814 "
                                            "avg=119043 std=1688", "count=0"))


def test_sub_millisecond_median_is_not_quantised_to_a_microsecond() -> None:
    """A 23.46 us unit: the whole-microsecond printed median (23) must not become the table value."""
    text = read("sci_percentiles").replace(
        "count=20 first=982 curr=871 min=803 max=1.112e+03 avg=902.35 std=71 p5=810 median=889 p95=1.08e+03",
        "count=20 first=25 curr=23 min=22 max=27 avg=23.46 std=1 p5=22 median=23 p95=26").replace(
        "Inference (avg): 902.35", "Inference (avg): 23.46")
    st = stats_from_outputs([parse_benchmark_output(text)], "window")
    assert st.median_ms == pytest.approx(0.02346) and st.mean_ms == pytest.approx(0.02346)
    skewed = text.replace("avg=23.46", "avg=26.1").replace("Inference (avg): 23.46", "Inference (avg): 26.1")
    assert stats_from_outputs([parse_benchmark_output(skewed)], "window").median_ms == pytest.approx(0.0235)


def test_glog_prefixed_output_parses() -> None:
    """LiteRT builds that log through absl prefix every line with glog's header."""
    lines = read("classic_pixel1").splitlines(keepends=True)
    text = "".join(f"I1201 04:25:28.123456   4242 benchmark_model.cc:{i}] {line}" if line.strip() else line
                   for i, line in enumerate(lines))
    out = parse_benchmark_output(text)
    assert out.warmup is not None and out.warmup.count == 5
    assert out.inference is not None and out.inference.count == 50 and out.inference_avg_us == 119043

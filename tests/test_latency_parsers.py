"""Parsers on captured runner output, and the statistics they produce."""

from __future__ import annotations

from pathlib import Path

import pytest

from amc_mobile.errors import UserError
from amc_mobile.latency import LatencyStats, format_samples, get_backend, load_profile, parse_samples

DATA = Path(__file__).parent / "data"


def test_stats_from_samples() -> None:
    s = LatencyStats.from_samples_ms([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (s.median_ms, s.mean_ms, s.count) == (3.0, 3.0, 5)
    assert s.p10_ms == pytest.approx(1.4) and s.p90_ms == pytest.approx(4.6)
    assert s.std_ms == pytest.approx(1.5811, abs=1e-4)
    with pytest.raises(ValueError):
        LatencyStats.from_samples_ms([])


@pytest.mark.parametrize("device,fname", [("host-cpu", "captured_onnxruntime_host-cpu.txt"),
                                          ("host-tflite", "captured_tflite_host-tflite.txt")])
def test_backend_parsers_on_captured_output(device: str, fname: str) -> None:
    raw = (DATA / fname).read_text()
    backend = get_backend(load_profile(device).backend)(load_profile(device))
    stats = backend.parse(raw)
    samples = [float(line.split()[1]) for line in raw.splitlines() if line.startswith("sample_ms")]
    assert stats.count == len(samples) == 12
    assert min(samples) <= stats.p10_ms <= stats.median_ms <= stats.p90_ms <= max(samples)
    assert "# clock: thread_cpu" in raw  # the header records how it was timed


def test_cuda_parser_reads_the_shared_format() -> None:
    prof = load_profile("gpu-cuda")
    raw = format_samples([2.5, 2.0, 3.0], {"runner": "amc-mobile cuda-events", "batch_size": 32})
    assert get_backend("cuda")(prof).parse(raw).median_ms == 2.5


def test_parser_ignores_noise_and_rejects_empty_output() -> None:
    raw = "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\nsample_ms 1.5\nwarning: x\nsample_ms 2.5\n"
    assert parse_samples(raw).median_ms == 2.0
    with pytest.raises(UserError, match="no latency samples"):
        parse_samples("Segmentation fault\n")

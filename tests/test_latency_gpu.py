"""The CUDA backend on a real GPU (skipped where torch sees no CUDA device)."""

from __future__ import annotations

import pytest

from amc_mobile.latency import load_profile
from amc_mobile.latency.units import build_unit


@pytest.mark.gpu
def test_cuda_backend_measures_a_unit(tmp_path) -> None:
    prof = load_profile("gpu-cuda")
    with prof.create_backend() as backend:
        assert backend.check_available() is None
        model, shape = build_unit("dw+conv|k3|s1|28x28", 32, 64, prof.batch_size)
        art = backend.prepare(model, shape, tmp_path / "unit")
        stats = backend.parse(backend.run(art, 3, 10))
        assert stats.count == 10 and stats.median_ms > 0
        info = backend.describe_device()
        assert info["gpu"] and info["batch_size"] == prof.batch_size

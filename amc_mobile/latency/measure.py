"""Measure several models on a device in ONE interleaved run of the latency protocol.

Used at the end of a search (final candidates next to the teacher) and by the benchmarks: because
the models alternate window by window and are reported as ratios to the reference workload, machine
drift during the run cancels out of their comparison.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from amc_mobile.errors import UserError


def measure_on_device(device: str, models: dict[str, nn.Module], input_shape: tuple[int, ...],
                      work_dir: Path) -> dict[str, dict[str, Any]]:
    """``{name: {median_ms, p10_ms, p90_ms, ratio_to_reference, windows}}`` of each model on ``device``."""
    from amc_mobile.latency.profiles import load_profile
    from amc_mobile.latency.protocol import Protocol, ProtocolSettings

    profile = load_profile(device)
    backend = profile.create_backend()
    try:
        reason = backend.check_available()
        if reason:
            raise UserError(f"device '{device}' is not usable here: {reason}")
        shape = (profile.batch_size, *input_shape[1:])
        work_dir.mkdir(parents=True, exist_ok=True)
        proto = Protocol(backend, ProtocolSettings.from_profile(profile), work_dir)
        names = list(models)
        arts = [backend.prepare(models[n].eval(), shape, work_dir / f"{n}{backend.artifact_suffix}") for n in names]
        ms = proto.measure_many(arts)
        return {n: {"median_ms": m.median_ms, "p10_ms": m.stats.p10_ms, "p90_ms": m.stats.p90_ms,
                    "ratio_to_reference": m.ratio, "windows": m.stats.count}
                for n, m in zip(names, ms, strict=True)}
    finally:
        backend.close()

"""Which channel step a device rewards: probe it before profiling a table.

CPU kernels work on blocks of channels as wide as a vector register (onnxruntime's NCHWc layout: 16
floats with AVX-512, 8 with AVX2), so on an AVX-512 CPU a layer with an odd multiple of 8 channels can
pay for the next multiple of 16. Measured on an Intel Xeon with AVX-512 (bench/README, issue 9): the Fashion-MNIST
MobileNet-V1 at a uniform width with every layer at an odd multiple of 8 ran as fast as the same model
with every layer rounded UP to a multiple of 16 (18% more MACs), and 34% slower than the one rounded down.

A search that rounds kept channels to 8 on such a device wastes latency, and a table whose grid
mixes both kinds of counts interpolates across the zigzag. The probe measures, at a few uniform widths,
the model with every group at an odd multiple of 8 against the same model with those groups widened by 8
channels (to multiples of 16), interleaved with the reference in two rounds. When the wider models are
no slower (within :data:`FREE_STEP`), the device rewards steps of 16: the table is profiled on a
16-channel grid, and searches with that table keep multiples of 16 (:func:`amc_mobile.search.problem.
table_multiple`).
"""

from __future__ import annotations

import time
from statistics import median
from typing import Any

from torch import nn

from amc_mobile.latency.profiling import ModelConfig

PROBE_WIDTHS = (0.35, 0.6)  # uniform keep ratios probed
FREE_STEP = 1.02  # the models widened to multiples of 16 may measure at most this much slower


def probe_configs(model: nn.Module, input_size: int, widths: tuple[float, ...] = PROBE_WIDTHS) -> list[ModelConfig]:
    """Pairs of configs per width: every group at an odd multiple of 8, then those groups + 8 channels."""
    from amc_mobile.pruning import find_groups, round_channels

    groups = find_groups(model, input_size)
    out = []
    for r in widths:
        odd, wide = [], []
        for g in groups:
            c = round_channels(g.width, r, 8)
            if c % 16 == 0 and c > 8:
                c -= 8
            odd.append(c)
            wide.append(c + 8 if c % 16 and c + 8 <= g.width else c)
        out += [ModelConfig(f"step8-{r:g}", tuple(odd)), ModelConfig(f"step16-{r:g}", tuple(wide))]
    return out


def probe_channel_step(profile: Any, model: nn.Module, input_size: int,
                       widths: tuple[float, ...] = PROBE_WIDTHS) -> dict[str, Any]:
    """Measure the probe pairs on ``profile``'s device; returns ``step`` (16 or 8), ``slowdown`` (median
    time of the widened models over the odd-8 ones) and the per-width figures."""
    from amc_mobile.latency.adapt import measure_models

    t0 = time.perf_counter()
    cfgs = probe_configs(model, input_size, widths)
    measured = measure_models(profile, model, input_size, cfgs, rounds=2)
    pairs: list[dict[str, Any]] = []
    for lo, hi in zip(measured[::2], measured[1::2], strict=True):
        pairs.append({"width": lo.config.config_id.split("-", 1)[1], "step8_ratio": lo.ratio,
                      "step16_ratio": hi.ratio, "slowdown": hi.ratio / max(lo.ratio, 1e-12),
                      "step8_macs": lo.desc.macs, "step16_macs": hi.desc.macs})
    slowdown = float(median(float(p["slowdown"]) for p in pairs))
    return {"step": 16 if slowdown <= FREE_STEP else 8, "slowdown": slowdown, "free_step": FREE_STEP,
            "pairs": pairs, "seconds": time.perf_counter() - t0}


def describe_probe(probe: dict[str, Any]) -> str:
    """One line: what was measured and the step chosen."""
    extra = 100 * (median(p["step16_macs"] / max(p["step8_macs"], 1) for p in probe["pairs"]) - 1)
    verdict = ("this device rewards multiples of 16 channels: profiling a 16-channel grid" if probe["step"] == 16
               else "profiling an 8-channel grid")
    return (f"channel step probe: widening odd multiples of 8 to multiples of 16 (+{extra:.0f}% MACs) measured "
            f"{probe['slowdown']:.3f}x the time; {verdict} ({probe['seconds']:.0f} s)")

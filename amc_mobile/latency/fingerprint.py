"""Device fingerprints: the stable facts that decide whether a latency table fits the device in use.

A table measured on one CPU/runtime is wrong on another (issue 11: a MobileNet-V2 table carried to a
machine of "the same kind" was off by 25% median). A fingerprint records what changes kernels and
timings: for host devices the CPU model, the ISA features that select kernels (AVX2, AVX-512, VNNI,
AMX, ...), core count, maximum frequency, and the runtime + version, threads, provider/delegate; for
phones the backend's stable identity (model, SoC, build fingerprint). Live readings (temperature,
current frequency) are never part of it: they are recorded per row, not compared.

:func:`identity_of` turns a table's stored device record (old tables have no fingerprint) into a
comparable flat dict; :func:`differences` names what differs in one short line.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

# ISA flags (from /proc/cpuinfo) that change which kernels a runtime picks.
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16",
             "asimd", "asimddp", "sve", "sve2", "i8mm", "bf16")
# Facts of a backend's device record that are live readings or labels, never compared.
LIVE_KEYS = frozenset({"host", "live", "thermal", "thermal_status", "temperature_c", "cur_freq_khz",
                       "cpu_mhz", "battery", "measured_at", "device"})
UNKNOWN = "?"


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


@lru_cache(maxsize=1)
def host_facts() -> dict[str, Any]:
    """Stable facts of this machine's CPU: model name, kernel-selecting ISA flags, cores, max MHz."""
    info = _read("/proc/cpuinfo")
    model, flags = "", set[str]()
    for line in info.splitlines():
        key, _, val = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = val.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(val.split())
    max_khz = _read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").strip()
    return {
        "cpu_model": model or platform.processor() or platform.machine(),
        "arch": platform.machine(),
        "isa": ",".join(f for f in ISA_FLAGS if f in flags),
        "cores": os.cpu_count() or 0,
        "cpu_max_mhz": int(max_khz) // 1000 if max_khz.isdigit() else None,
    }


def _flat(value: Any) -> Any:
    """JSON-stable form: tuples become lists (a table read back from JSON holds lists)."""
    if isinstance(value, tuple | list):
        return [_flat(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _flat(v) for k, v in value.items()}
    return value


def identity_of(device: Mapping[str, Any] | None) -> dict[str, Any]:
    """The comparable identity in a table's or backend's device record.

    New records carry ``identity`` (the backend's stable facts, see ``LatencyBackend.identity``);
    older ones are reduced to their non-live keys, and lack the host fingerprint.
    """
    if not device:
        return {}
    if isinstance(device.get("identity"), Mapping):
        return _flat(device["identity"])
    return {k: _flat(v) for k, v in device.items() if k not in LIVE_KEYS and k != "cpu"}


def _fmt(v: Any) -> str:
    if v is None:
        return UNKNOWN
    text = ",".join(map(str, v)) if isinstance(v, list) else str(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _isa_difference(table: str, here: str) -> str:
    """The flags on one side only (two long flag lists cut to a prefix would look equal)."""
    a, b = set(filter(None, table.split(","))), set(filter(None, here.split(",")))
    parts = [f"table only {','.join(f for f in ISA_FLAGS if f in a - b)}" if a - b else "",
             f"here only {','.join(f for f in ISA_FLAGS if f in b - a)}" if b - a else ""]
    return "isa: " + "; ".join(p for p in parts if p)


def differences(table: Mapping[str, Any], here: Mapping[str, Any]) -> list[str]:
    """``key table_value != here_value`` for each identity key that differs (missing counts as '?').

    Keys present on one side only count when the table side is missing a fact this device has (an
    older table without a fingerprint cannot be trusted to match); an extra fact recorded in the table
    but unknown here (e.g. max frequency inside a VM) is not a difference.
    """
    out, lacking = [], []
    for key in sorted(set(table) | set(here)):
        a, b = _flat(table.get(key)), _flat(here.get(key))
        if key not in here or b is None or a == b:
            continue
        if key not in table or a is None:
            lacking.append(key)
        elif key == "isa" and isinstance(a, str) and isinstance(b, str):
            out.append(_isa_difference(a, b))
        else:
            out.append(f"{key} {_fmt(a)} != {_fmt(b)}")
    if lacking:
        out.append(f"table lacks {', '.join(lacking)}")
    return out


def describe_differences(diffs: list[str], limit: int = 4) -> str:
    """One short phrase: the first ``limit`` differences and how many more."""
    head = "; ".join(diffs[:limit])
    return head + (f"; +{len(diffs) - limit} more" if len(diffs) > limit else "")

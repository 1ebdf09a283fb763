"""Device facts recorded with every measurement: model, SoC, Android version, fingerprint, cores and
their max/current frequencies (-> big-core mask), thermal status."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from android_harness.transport import AdbTransport

THERMAL_NAMES = ("none", "light", "moderate", "severe", "critical", "emergency", "shutdown")
_PROP = re.compile(r"^\[(?P<k>[^\]]+)\]: \[(?P<v>.*)\]\s*$", re.MULTILINE)


@dataclass(frozen=True)
class ThermalSnapshot:
    """Android thermal status (0 none … 6 shutdown; -1 unknown) and current CPU frequencies (kHz)."""

    status: int
    cur_freq_khz: tuple[int, ...]

    @property
    def name(self) -> str:
        return THERMAL_NAMES[self.status] if 0 <= self.status < len(THERMAL_NAMES) else "unknown"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (lists, not tuples): a live reading, recorded per measurement, never compared."""
        return {"status": self.status, "cur_freq_khz": list(self.cur_freq_khz)}


@dataclass(frozen=True)
class DeviceFacts:
    model: str
    manufacturer: str
    soc: str
    android_version: str
    sdk: str
    fingerprint: str
    abi: str
    cpu_max_freq_khz: tuple[int, ...]
    thermal: ThermalSnapshot | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def big_core_mask(self) -> str:
        """The mask for one thread (the fastest cluster); the runner sizes it to its thread count."""
        return big_core_mask(self.cpu_max_freq_khz)

    def identity(self) -> dict[str, Any]:
        """Stable facts: equal for every run on this phone with this build (JSON types only).

        Serial number and live readings (thermal status, current frequencies) are not part of it."""
        return {"model": self.model, "manufacturer": self.manufacturer, "soc": self.soc,
                "android_version": self.android_version, "sdk": self.sdk, "fingerprint": self.fingerprint,
                "abi": self.abi, "cpu_max_freq_khz": list(self.cpu_max_freq_khz)}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cpu_max_freq_khz"] = list(self.cpu_max_freq_khz)
        if self.thermal is not None:
            d["thermal"] = self.thermal.to_dict()
        d["big_core_mask"] = self.big_core_mask
        return d


def big_core_mask(max_freq_khz: tuple[int, ...] | list[int], threads: int = 1) -> str:
    """Hex ``taskset`` mask of the fastest cores, whole clusters at a time, enough for ``threads``.

    A cluster is the cores sharing one max frequency. Clusters are taken from the fastest down until
    they hold at least ``threads`` cores: one thread on a 1+3+4 SoC gets the prime core (``80``), four
    threads get the prime and big cores (``f0``); Pixel 1 (2+2) gets ``c`` for one or two threads.
    Unknown frequencies (all zero): every core."""
    freqs = list(max_freq_khz)
    if not freqs:
        return "1"
    if not any(f > 0 for f in freqs):
        return f"{(1 << len(freqs)) - 1:x}"
    mask = 0
    for level in sorted({f for f in freqs if f > 0}, reverse=True):
        mask |= sum(1 << i for i, f in enumerate(freqs) if f == level)
        if bin(mask).count("1") >= threads:
            break
    return f"{mask:x}"


def mask_cores(mask: str) -> int:
    """Number of CPUs in a hex ``taskset`` mask."""
    return bin(int(mask.removeprefix("0x"), 16)).count("1")


def parse_getprop(text: str) -> dict[str, str]:
    return {m["k"]: m["v"] for m in _PROP.finditer(text.replace("\r\n", "\n"))}


def parse_cpu_range(text: str) -> list[int]:
    """``/sys/devices/system/cpu/possible`` ("0-3", "0-3,6") -> [0, 1, 2, 3]."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


def parse_thermal_status(dumpsys: str) -> int:
    m = re.search(r"Thermal Status:\s*(\d+)", dumpsys)
    return int(m.group(1)) if m else -1


def _cpu_freqs(transport: AdbTransport, cpus: list[int], which: str) -> tuple[int, ...]:
    # One echo marker per core so a missing file (offline core) keeps the others aligned.
    cmd = "; ".join(f"echo @{i}; cat /sys/devices/system/cpu/cpu{i}/cpufreq/{which} 2>/dev/null" for i in cpus)
    out = transport.shell(cmd).output
    values = dict.fromkeys(cpus, 0)
    for m in re.finditer(r"@(\d+)\s*\n\s*(\d+)", out):
        values[int(m.group(1))] = int(m.group(2))
    return tuple(values[i] for i in cpus)


def thermal_snapshot(transport: AdbTransport, cpus: list[int] | None = None) -> ThermalSnapshot:
    status = parse_thermal_status(transport.shell("dumpsys thermalservice 2>/dev/null").output)
    if cpus is None:
        cpus = parse_cpu_range(transport.shell("cat /sys/devices/system/cpu/possible").output or "0")
    return ThermalSnapshot(status=status, cur_freq_khz=_cpu_freqs(transport, cpus, "scaling_cur_freq"))


def collect_facts(transport: AdbTransport) -> DeviceFacts:
    props = parse_getprop(transport.shell("getprop").output)
    cpus = parse_cpu_range(transport.shell("cat /sys/devices/system/cpu/possible").output or "0")
    hw = re.search(r"^Hardware\s*:\s*(.+)$", transport.shell("cat /proc/cpuinfo").output, re.MULTILINE)
    soc = props.get("ro.soc.model") or (hw.group(1).strip() if hw else "") or props.get("ro.board.platform", "")
    return DeviceFacts(
        model=props.get("ro.product.model", ""), manufacturer=props.get("ro.product.manufacturer", ""),
        soc=soc, android_version=props.get("ro.build.version.release", ""),
        sdk=props.get("ro.build.version.sdk", ""), fingerprint=props.get("ro.build.fingerprint", ""),
        abi=props.get("ro.product.cpu.abi", ""),
        cpu_max_freq_khz=_cpu_freqs(transport, cpus, "cpuinfo_max_freq"),
        thermal=thermal_snapshot(transport, cpus),
        extra={"board": props.get("ro.board.platform", ""), "serial": props.get("ro.serialno", "")})

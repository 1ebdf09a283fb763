"""Latency on real runtimes: device profiles, backends, the noise-robust protocol, per-unit tables.

Interface (stable): :class:`LatencyStats`, :class:`LatencyBackend`, :func:`register_backend`,
:func:`get_backend`, :class:`DeviceProfile`, :func:`load_profile`, :func:`list_profiles`.
Tables and prediction live in :mod:`amc_mobile.latency.lut` (``LatencyTable.predict``).
"""

from amc_mobile.latency.base import (
    BackendOptions,
    LatencyBackend,
    LatencyStats,
    format_samples,
    get_backend,
    list_backends,
    parse_samples,
    register_backend,
)
from amc_mobile.latency.profiles import DeviceProfile, list_profiles, load_profile, profile_dirs

__all__ = [
    "BackendOptions", "DeviceProfile", "LatencyBackend", "LatencyStats", "format_samples", "get_backend",
    "list_backends", "list_profiles", "load_profile", "parse_samples", "profile_dirs", "register_backend",
]

"""Latency on real runtimes: device profiles, backends, the noise-robust protocol, per-unit tables.

Interface (stable): :class:`LatencyStats`, :class:`LatencyBackend`, :func:`register_backend`,
:func:`get_backend`, :class:`DeviceProfile`, :func:`load_profile`, :func:`list_profiles`.
Tables: :mod:`~amc_mobile.latency.profiling` measures them (resumable, locked), :mod:`~amc_mobile.latency.table`
predicts (``LatencyTable.predict``), :mod:`~amc_mobile.latency.store` finds the table a job should use
(``open_table_for``: fingerprint check, validation on use, adaptation, building in the user store),
:mod:`~amc_mobile.latency.adapt` validates and adapts, :mod:`~amc_mobile.latency.fingerprint` identifies devices.
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

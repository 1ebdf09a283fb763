"""Latency backends, one module each; registered lazily by name in :mod:`amc_mobile.latency.base`."""

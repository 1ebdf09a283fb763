"""Layering: the library reaches the Android harness only through the backend registry's lazy import,
and the harness never imports the library (no import cycle between them)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _modules_after_import(module: str) -> list[str]:
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("module", ["amc_mobile", "amc_mobile.latency", "amc_mobile.farm", "amc_mobile.cli.bench",
                                    "amc_mobile.latency.backends.android"])
def test_library_does_not_import_the_harness_at_import_time(module: str) -> None:
    loaded = _modules_after_import(module)
    assert not [m for m in loaded if m == "android_harness" or m.startswith("android_harness.")]


@pytest.mark.parametrize("module", ["android_harness.transport", "android_harness.runner", "android_harness.batch",
                                    "android_harness.loopback", "android_harness.loopback.smoke"])
def test_harness_never_imports_the_library(module: str) -> None:
    loaded = _modules_after_import(module)
    assert not [m for m in loaded if m == "amc_mobile" or m.startswith("amc_mobile.")]


def test_android_backend_is_found_through_the_registry() -> None:
    from amc_mobile.latency import get_backend

    assert get_backend("android").__module__ == "amc_mobile.latency.backends.android"

"""Shared test configuration: hardware markers skip cleanly where the hardware is absent."""

from __future__ import annotations

import os

import pytest
import torch


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    has_cuda = torch.cuda.is_available()
    has_phone = bool(os.environ.get("AMC_DEVICE_SERIAL") or os.environ.get("AMC_DEVICE_ADDRESS"))
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU (none found)"))
        if "device" in item.keywords and not has_phone:
            item.add_marker(pytest.mark.skip(reason="needs a phone: set AMC_DEVICE_SERIAL or AMC_DEVICE_ADDRESS"))


@pytest.fixture(autouse=True, scope="session")
def _limit_threads() -> None:
    """Tests share a 2-core machine: one torch thread avoids oversubscription (measured 5-15x faster
    than two threads for the pruning tests when the other core is busy)."""
    torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _user_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every test session gets its own per-user store (tables, caches): tests never write into the
    checkout, the installed package or the real home directory."""
    os.environ["AMC_MOBILE_HOME"] = str(tmp_path_factory.mktemp("amc_home"))
    os.environ.setdefault("AMC_ARTIFACT_CACHE", str(tmp_path_factory.mktemp("amc_cache")))

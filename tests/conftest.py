"""Shared test configuration and fixtures: hardware markers skip cleanly where the hardware is absent;
one deterministic latency backend, one toy teacher and one IDX (Fashion-MNIST layout) writer for all.

Tests never import each other: what two test files need lives here. A subprocess that needs the toy
data set imports this module (``sys.path`` = tests/) and calls :func:`register_toy`.
"""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from amc_mobile.latency.base import (
    BackendOptions,
    LatencyBackend,
    LatencyStats,
    format_samples,
    parse_samples,
    register_backend,
)


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


# --- a deterministic latency backend --------------------------------------------------------------
@dataclass(frozen=True)
class FakeOptions(BackendOptions):
    ms_per_kmac: float = 0.001  # any artefact: 0.01 ms + this per 1000 (parameters x input pixels)
    baseline_ms: float = 2.0  # an artefact named "baseline" (the farm's A side)
    candidate_ms: float = 1.0  # an artefact named "candidate" (the farm's B side)
    unplugged: bool = False  # check_available says the device is not connected


@register_backend("fake-test")
class FakeBackend(LatencyBackend):
    """A 'device' whose latency is known: read from the artefact (MAC-proportional, written by
    ``prepare``) or fixed by artefact name; records the order it ran things in (``FakeBackend.order``)."""

    artifact_suffix = ".fake"
    Options = FakeOptions
    options: FakeOptions
    order: ClassVar[list[str]] = []

    def check_available(self) -> str | None:
        return "fake phone unplugged (connect it)" if self.options.unplugged else None

    def prepare(self, model: Any, input_shape: tuple[int, ...], path: str | Path) -> Path:
        p = self.artifact_path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        params = sum(q.numel() for q in model.parameters())
        p.write_text(str(self.latency_ms(params, input_shape[-1] * input_shape[-2], self.options.ms_per_kmac)))
        return p

    @staticmethod
    def latency_ms(params: int, pixels: int, ms_per_kmac: float = FakeOptions.ms_per_kmac) -> float:
        """What the fake device measures for a model of ``params`` parameters on ``pixels`` input pixels."""
        return 0.01 + ms_per_kmac * params * pixels / 1e3

    def run(self, artifact: str | Path, warmup_runs: int, runs: int) -> str:
        stem = Path(artifact).stem
        FakeBackend.order.append(f"{self.profile.name}:{stem}")
        ms = {"baseline": self.options.baseline_ms, "candidate": self.options.candidate_ms}.get(stem)
        return format_samples([float(Path(artifact).read_text()) if ms is None else ms] * runs)

    def parse(self, raw: str) -> LatencyStats:
        return parse_samples(raw)


FAKE_PROFILE = {"name": "fake", "backend": "fake-test", "runs": 2, "repeats": 2, "warmup_runs": 0,
                "min_window_ms": 0.0}


@pytest.fixture()
def fake_backend() -> type[FakeBackend]:
    """The shared fake backend class (profiles use ``backend: fake-test``), its run log cleared."""
    FakeBackend.order.clear()
    return FakeBackend


@pytest.fixture()
def fake_profile() -> Any:
    """A quick device profile on the fake backend (2 runs x 2 repeats, no warm-up)."""
    from amc_mobile.latency.profiles import profile_from_dict

    return profile_from_dict(dict(FAKE_PROFILE), "fake.yaml")


# --- a tiny IDX data set (the Fashion-MNIST file layout) ------------------------------------------
def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file (uint8), gzipped when ``path`` ends in .gz."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def make_fake_fmnist(root: Path, n_train: int = 600, n_test: int = 100, gz: bool = True) -> Path:
    """Genuine IDX files of random 28x28 images, labels cycling through the 10 classes."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 256, (n, 28, 28)) // 4 + labels[:, None, None] * 19  # learnable signal
        write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
    return root


@pytest.fixture()
def idx_writer() -> Callable[[Path, np.ndarray], None]:
    """:func:`write_idx`: one IDX file from an array."""
    return write_idx


@pytest.fixture()
def fake_fmnist() -> Callable[..., Path]:
    """:func:`make_fake_fmnist` ``(root, n_train=600, n_test=100, gz=True) -> root``."""
    return make_fake_fmnist


# --- a toy data set and an (untrained, seeded) teacher on it, for the search tests ---------------
TOY = "toy-search"


def register_toy(root: Path, name: str = TOY, n_train: int = 2000) -> None:
    """A 4-class, 1-channel, 12 px data set ``name``: a bright square whose position gives the class."""
    from amc_mobile.data.datasets import DatasetEntry, RawData, register_dataset

    def reader(_: Path) -> RawData:
        gen = torch.Generator().manual_seed(0)

        def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
            y = torch.randint(0, 4, (n,), generator=gen)
            x = torch.randint(0, 60, (n, 1, 12, 12), generator=gen, dtype=torch.uint8)
            for c in range(4):
                r, q = divmod(c, 2)
                x[y == c, :, 6 * r:6 * r + 6, 6 * q:6 * q + 6] += 150
            return x, y

        xtr, ytr = make(n_train)
        xte, yte = make(200)
        return RawData(xtr, ytr, xte, yte, ["a", "b", "c", "d"])

    root.mkdir(parents=True, exist_ok=True)
    register_dataset(DatasetEntry(name, "toy", reader, (str(root),), "generated", None, None, val_size=300))


def save_toy_teacher(path: Path, name: str = TOY, model: str = "mobilenet_v1_cifar", width_mult: float = 0.25) -> Path:
    """A seeded, untrained ``model`` (4 classes, 1 channel, 12 px) checkpoint recording data set ``name``."""
    from amc_mobile.data import get_dataset
    from amc_mobile.models import create_model
    from amc_mobile.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    net = create_model(model, num_classes=4, in_chans=1, width_mult=width_mult, input_size=12)
    return save_checkpoint(path, net, data=get_dataset(name, split="val").data_info())


def toy_search_config(**overrides: Any) -> Any:
    """A SearchConfig small enough for the toy (6 episodes, 3 warm-up, 150 val images, BN re-estimated
    on 200 training images, no measuring)."""
    from amc_mobile.search.config import SearchConfig

    base = {"episodes": 6, "warmup": 3, "val_size": 150, "calib_batches": 2, "calib_batch_size": 20,
            "eval_batch_size": 150, "measure": False, "bn_images": 200}
    return SearchConfig(**{**base, **overrides})


class MacsLatency:
    """A stand-in latency table: ms = 1e-5 * MACs + 0.002 * channels + 0.05 (monotone, non-linear in
    MACs), so the latency path runs without measuring anything."""

    def predict(self, desc: Any) -> float:
        return 0.05 + 1e-5 * desc.macs + 0.002 * sum(s.out_channels for s in desc.layers)


@pytest.fixture(scope="session")
def toy_data() -> Callable[..., None]:
    """:func:`register_toy` ``(root, name="toy-search", n_train=2000)``."""
    return register_toy


@pytest.fixture()
def toy(tmp_path: Path) -> Path:
    """The toy data set registered under ``tmp_path/data`` and its teacher at ``tmp_path/teacher.pt``."""
    register_toy(tmp_path / "data")
    return save_toy_teacher(tmp_path / "teacher.pt")


@pytest.fixture()
def search_cfg() -> Callable[..., Any]:
    """:func:`toy_search_config` ``(**overrides) -> SearchConfig``."""
    return toy_search_config


@pytest.fixture()
def macs_latency() -> MacsLatency:
    """A latency predictor for searches without a device (:class:`MacsLatency`)."""
    return MacsLatency()

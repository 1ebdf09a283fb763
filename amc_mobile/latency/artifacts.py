"""Artefact export shared by backends: a content-hash cache of exported models (ONNX, TFLite...).

The cache lives in the user's cache directory (``<user cache>/artifacts``, or ``$AMC_ARTIFACT_CACHE``),
never in the package or a checkout. It is capped (``$AMC_ARTIFACT_CACHE_MAX_MB``, default 2048 MB):
after each insertion the least recently used files go until it fits; ``amc-bench clean`` empties it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from torch import nn

CACHE_ENV = "AMC_ARTIFACT_CACHE"
CACHE_MAX_ENV = "AMC_ARTIFACT_CACHE_MAX_MB"
DEFAULT_CACHE_MAX_MB = 2048


def cache_root() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    from amc_mobile.storage import user_cache_dir

    return user_cache_dir() / "artifacts"


def cache_limit_bytes() -> int:
    try:
        return int(float(os.environ.get(CACHE_MAX_ENV, DEFAULT_CACHE_MAX_MB)) * 1024 * 1024)
    except ValueError:
        return DEFAULT_CACHE_MAX_MB * 1024 * 1024


def trim_cache(limit_bytes: int | None = None) -> tuple[int, int]:
    """Delete least recently used cached artefacts until the cache fits ``limit_bytes`` (default: the
    cap). Returns (files removed, bytes freed)."""
    limit = cache_limit_bytes() if limit_bytes is None else limit_bytes
    root = cache_root()
    if not root.is_dir():
        return 0, 0
    entries = []
    for e in os.scandir(root):
        if e.is_file(follow_symlinks=False):
            st = e.stat()
            entries.append((st.st_mtime, st.st_size, e.path))
    total = sum(size for _, size, _ in entries)
    removed = freed = 0
    for _, size, path in sorted(entries):
        if total <= limit:
            break
        try:
            os.unlink(path)
        except OSError:
            continue
        total -= size
        removed += 1
        freed += size
    return removed, freed


def model_digest(model: nn.Module, input_shape: tuple[int, ...], tag: str) -> str:
    """Content hash of a model (structure + every tensor) at an input shape, for one exporter ``tag``."""
    h = hashlib.sha256(f"{tag}|{tuple(input_shape)}|{model!r}".encode())
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def cached_export(export: Callable[[nn.Module, Path, tuple[int, ...]], object], model: nn.Module,
                  path: str | Path, input_shape: tuple[int, ...], tag: str, use_cache: bool = True) -> Path:
    """Run ``export(model, path, input_shape)`` unless an identical artefact is in the cache."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not use_cache:
        export(model, path, input_shape)
        return path
    cached = cache_root() / f"{model_digest(model, input_shape, tag)}{path.suffix}"
    if cached.exists():
        if cached.resolve() != path.resolve():
            shutil.copyfile(cached, path)
        os.utime(cached)  # least recently used goes first when trimming
        return path
    export(model, path, input_shape)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(cached.name + f".{os.getpid()}.tmp")
    shutil.copyfile(path, tmp)
    tmp.replace(cached)
    trim_cache()
    return path

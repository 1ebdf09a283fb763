"""Artefact export shared by backends: ONNX export with a numeric check, and a content-hash cache."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from torch import nn

CACHE_ENV = "AMC_ARTIFACT_CACHE"


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "amc-mobile" / "artifacts"))


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
        return path
    export(model, path, input_shape)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(cached.name + f".{os.getpid()}.tmp")
    shutil.copyfile(path, tmp)
    tmp.replace(cached)
    return path

"""Device profiles: one YAML per device, loaded into a typed :class:`DeviceProfile`.

Search path (first match wins): directories in ``$AMC_DEVICE_PROFILES`` (``os.pathsep``-separated),
the repository's ``device_profiles/`` (a checkout), the copy shipped inside the installed package
(``amc_mobile/device_profiles``, package data built from the top-level folder by setup.py), then
``<sys.prefix>/share/amc-mobile/device_profiles``. Tables measured for a device sit next to its YAML
(``<folder>/<device>/``, read-only); see :mod:`amc_mobile.latency.store` for the user's own tables. Unknown keys, at the top level or in ``options`` (checked by the backend's own
typed Options record), are rejected with their names.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from amc_mobile.errors import UserError, unknown_name
from amc_mobile.records import reject_unknown

SCHEMA_VERSION = 1
REPO_PROFILES = Path(__file__).resolve().parents[2] / "device_profiles"
PACKAGE_PROFILES = Path(__file__).resolve().parents[1] / "device_profiles"
INSTALLED_PROFILES = Path(sys.prefix) / "share" / "amc-mobile" / "device_profiles"
ENV_VAR = "AMC_DEVICE_PROFILES"


@dataclass(frozen=True)
class DeviceProfile:
    """One device + runtime + measurement protocol (see ``device_profiles/TEMPLATE.yaml``)."""

    name: str
    backend: str  # registered backend: onnxruntime | tflite | cuda | android
    description: str = ""
    threads: int = 1  # runtime threads
    batch_size: int = 1  # images per inference
    warmup_runs: int = 10  # untimed runs before each timed window
    runs: int = 30  # timed runs per window
    repeats: int = 5  # windows per artefact, interleaved with the reference workload
    min_window_ms: float = 30.0  # raise ``runs`` for fast models so a window lasts at least this long
    calibrate_overhead: bool = True  # measure a null model and subtract the per-invocation overhead
    schema_version: int = SCHEMA_VERSION
    options: dict[str, Any] = field(default_factory=dict)  # backend-specific, see its Options
    path: str = ""  # where it was loaded from (not a YAML key)

    def backend_class(self) -> type:
        from amc_mobile.latency.base import get_backend

        return get_backend(self.backend)

    def create_backend(self) -> Any:
        """A ready ``LatencyBackend`` for this profile (availability not checked)."""
        return self.backend_class()(self)

    def availability(self) -> str | None:
        """None when usable here, else one line why not and how to fix it."""
        try:
            return self.create_backend().check_available()
        except UserError as exc:
            return str(exc)


def profile_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    dirs = [*extra, REPO_PROFILES, PACKAGE_PROFILES, INSTALLED_PROFILES]
    seen: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [s.resolve() for s in seen]:
            seen.append(d)
    return seen


def _profile_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in profile_dirs():
        for p in sorted(d.glob("*.yaml")):
            if "TEMPLATE" in p.stem.upper():  # TEMPLATE.yaml, android-TEMPLATE.yaml: not devices
                continue
            found.setdefault(p.stem, p)
    return found


def list_profiles() -> list[str]:
    return sorted(_profile_files())


def profile_from_dict(data: dict[str, Any], where: str) -> DeviceProfile:
    """Validate a parsed YAML mapping into a :class:`DeviceProfile` (one-line errors)."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: a device profile must be a YAML mapping")
    reject_unknown(data, DeviceProfile, where, skip=("path",))
    for req in ("name", "backend"):
        if req not in data:
            raise UserError(f"{where}: missing required key '{req}'")
    if data.get("schema_version", SCHEMA_VERSION) > SCHEMA_VERSION:
        raise UserError(f"{where}: schema_version {data['schema_version']} is newer than this amc-mobile "
                        f"reads ({SCHEMA_VERSION})")
    for key in ("threads", "batch_size", "warmup_runs", "runs", "repeats"):
        if key in data and (not isinstance(data[key], int) or isinstance(data[key], bool)
                            or data[key] < (0 if key == "warmup_runs" else 1)):
            raise UserError(f"{where}: '{key}' must be a positive integer, got {data[key]!r}")
    for key in ("name", "backend", "description"):
        if key in data and not isinstance(data[key], str):
            raise UserError(f"{where}: '{key}' must be a string, got {data[key]!r}")
    from amc_mobile.storage import safe_name

    safe_name(data["name"], f"device name in {where}")
    if "min_window_ms" in data and (isinstance(data["min_window_ms"], bool)
                                    or not isinstance(data["min_window_ms"], int | float) or data["min_window_ms"] < 0):
        raise UserError(f"{where}: 'min_window_ms' must be a number >= 0, got {data['min_window_ms']!r}")
    if "calibrate_overhead" in data and not isinstance(data["calibrate_overhead"], bool):
        raise UserError(f"{where}: 'calibrate_overhead' must be true or false, got {data['calibrate_overhead']!r}")
    if data.get("options") is not None and not isinstance(data["options"], dict):
        raise UserError(f"{where}: 'options' must be a mapping, got {data['options']!r}")
    profile = DeviceProfile(**{**data, "options": dict(data.get("options") or {}), "path": where})
    from amc_mobile.latency.base import get_backend

    get_backend(profile.backend).validate_options(profile.options, f"options of {where}")
    return profile


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """Load a profile by name (search path above) or by a path to a ``.yaml`` file."""
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith((".yaml", ".yml")) and path.exists()):
        files = _profile_files()
        if text not in files:
            raise unknown_name("device", text, files)
        path = files[text]
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    return profile_from_dict(data, str(path))


def table_dir(profile: DeviceProfile) -> Path:
    """Where ``amc-bench profile`` writes this device's tables: the user's store (never the package)."""
    from amc_mobile.latency.store import user_tables_dir

    return user_tables_dir(profile.name)

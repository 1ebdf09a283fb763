"""Farm files: which devices, which profile and options each, the speedup threshold, ABBA rounds."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from amc_mobile.errors import UserError
from amc_mobile.records import reject_unknown
from amc_mobile.storage import safe_name

SCHEMA_VERSION = 1
ModelSpec = tuple[Any, tuple[int, ...]]  # (torch model in eval mode, input shape NCHW with N = 1)


@dataclass(frozen=True)
class FarmDevice:
    """One farm entry; ``name`` names the device everywhere (report rows, facts, artefact folder)."""

    name: str
    profile: str | dict[str, Any]            # profile name, path to a .yaml, or an inline profile mapping
    required: bool = False                   # unreachable/failed -> the job fails only when required
    threshold: float | None = None           # overrides the farm's threshold for this device
    options: dict[str, Any] = field(default_factory=dict)  # merged over the profile's options


@dataclass(frozen=True)
class FarmSpec:
    name: str
    devices: tuple[FarmDevice, ...]
    threshold: float = 1.0                   # minimum speedup (baseline ms / candidate ms) on each device
    rounds: int = 4                          # ABBA blocks per device
    schema_version: int = SCHEMA_VERSION
    path: str = ""                           # the farm file (relative profile paths resolve against it)


def _number(data: dict[str, Any], key: str, default: float, where: str) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{where}: '{key}' must be a number, got {value!r}")
    return float(value)


def load_farm(path: str | Path) -> FarmSpec:
    """Read and validate a farm YAML: unknown keys rejected with their names, device names must be
    usable as one path component (they name the artefact folder under ``--out``)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"farm file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path}: a farm file must be a YAML mapping")
    reject_unknown(data, FarmSpec, str(path), skip=("path",))
    version = data.get("schema_version", SCHEMA_VERSION)
    if not isinstance(version, int) or isinstance(version, bool):
        raise UserError(f"{path}: 'schema_version' must be an integer, got {version!r}")
    if version > SCHEMA_VERSION:
        raise UserError(f"{path}: schema_version {version} is newer than this reader ({SCHEMA_VERSION})")
    raw_devices = data.get("devices")
    if not isinstance(raw_devices, list) or not raw_devices:
        raise UserError(f"{path}: 'devices' must be a non-empty list")
    devices = []
    for i, d in enumerate(raw_devices):
        where = f"{path}: devices[{i}]"
        if not isinstance(d, dict):
            raise UserError(f"{where} must be a mapping")
        reject_unknown(d, FarmDevice, where)
        if "name" not in d or "profile" not in d:
            raise UserError(f"{where} needs 'name' and 'profile'")
        safe_name(d["name"], f"farm device name in {where}")
        if not isinstance(d["profile"], (str, dict)):
            raise UserError(f"{where}: 'profile' must be a profile name, a .yaml path or a mapping")
        if not isinstance(d.get("options") or {}, dict):
            raise UserError(f"{where}: 'options' must be a mapping")
        if not isinstance(d.get("required", False), bool):
            raise UserError(f"{where}: 'required' must be true or false, got {d['required']!r}")
        threshold = None if d.get("threshold") is None else _number(d, "threshold", 0.0, where)
        devices.append(FarmDevice(name=d["name"], profile=d["profile"], required=bool(d.get("required", False)),
                                  threshold=threshold, options=dict(d.get("options") or {})))
    names = [d.name for d in devices]
    if len(set(names)) != len(names):
        raise UserError(f"{path}: device names must be unique")
    rounds = data.get("rounds", 4)
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 2:
        raise UserError(f"{path}: rounds must be an integer of at least 2 (a confidence interval needs two pairs)")
    return FarmSpec(name=str(data.get("name", path.stem)), devices=tuple(devices),
                    threshold=_number(data, "threshold", 1.0, str(path)), rounds=rounds,
                    schema_version=version, path=str(path))


def resolve_profile(device: FarmDevice, farm_path: str = "") -> Any:
    """The :class:`DeviceProfile` of a farm entry, named after the entry, with its option overrides.

    The profile takes the farm entry's name so errors, device facts and reports name the farm device
    (two phones sharing ``pixel1.yaml`` stay apart)."""
    from amc_mobile.latency.profiles import load_profile, profile_from_dict

    if isinstance(device.profile, dict):
        data = {**device.profile, "name": device.name}
        data["options"] = {**dict(data.get("options") or {}), **device.options}
        return profile_from_dict(data, f"inline profile of farm device '{device.name}'")
    text = device.profile
    rel = Path(farm_path).parent / text if farm_path else Path(text)
    base = load_profile(str(rel) if text.endswith((".yaml", ".yml")) and rel.exists() else text)
    if device.options:
        data = {f.name: getattr(base, f.name) for f in fields(base) if f.name != "path"}
        data["name"] = device.name
        data["options"] = {**dict(base.options), **device.options}
        return profile_from_dict(data, base.path)
    return dataclasses.replace(base, name=device.name)


def load_model(spec: str) -> ModelSpec:
    """A model from ``zoo:NAME``, a checkpoint path, or ``REGISTRY_NAME[@WIDTH]``; with its input shape."""
    from amc_mobile.models import create_model, list_models
    from amc_mobile.models.arch import require_arch
    from amc_mobile.models.checkpoint import load_checkpoint

    if spec.startswith("zoo:") or Path(spec).exists():
        model, _meta = load_checkpoint(spec)
    else:
        name, _, width = spec.partition("@")
        if name not in list_models():
            raise UserError(f"model '{spec}' is neither a checkpoint (path or zoo:NAME) nor a registered model; "
                            f"registered: {', '.join(list_models())}")
        try:
            width_mult = float(width) if width else 1.0
        except ValueError:
            raise UserError(f"model '{spec}': the width after '@' must be a number") from None
        model = create_model(name, width_mult=width_mult)
    return model.eval(), tuple(require_arch(model).input_shape)

"""Checkpoints = architecture description + state_dict, loadable with ``weights_only=True``.

The architecture records the registry name and constructor arguments plus the actual shape of
every Conv2d / BatchNorm2d / Linear, so a physically pruned model reloads without the original.
Shipped teachers are addressed as ``zoo:NAME`` (files in ``amc_mobile/zoo/``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from amc_mobile.errors import UserError, unknown_name
from amc_mobile.models.arch import ArchSpec, require_arch, set_arch
from amc_mobile.models.registry import create_model, get_entry
from amc_mobile.storage import atomic_torch_save

FORMAT = "amc-mobile-checkpoint"
VERSION = 1
ZOO_DIR = Path(__file__).resolve().parent.parent / "zoo"


def module_shapes(model: nn.Module) -> dict[str, list[int]]:
    """name -> [in, out, groups] for Conv2d, [in, out] for Linear, [features] for BatchNorm2d."""
    shapes: dict[str, list[int]] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            shapes[name] = [m.in_channels, m.out_channels, m.groups]
        elif isinstance(m, nn.Linear):
            shapes[name] = [m.in_features, m.out_features]
        elif isinstance(m, nn.BatchNorm2d):
            shapes[name] = [m.num_features]
    return shapes


def arch_of(model: nn.Module) -> dict[str, Any]:
    """The architecture description stored in checkpoints: the :class:`ArchSpec` as JSON plus the
    shape of every layer (so a pruned model reloads at its widths)."""
    return {**require_arch(model).to_dict(), "shapes": module_shapes(model)}


def replace_module(root: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` at the dotted module path ``name`` inside ``root``."""
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def build_from_arch(arch: dict[str, Any]) -> nn.Module:
    """Create the registered model, then resize every layer to the recorded (possibly pruned) shape.

    ``arch`` is a checkpoint's ``arch`` dict (:meth:`ArchSpec.to_dict` plus ``shapes``)."""
    spec = ArchSpec.from_dict(arch, "checkpoint architecture")
    model = create_model(spec.name, num_classes=spec.num_classes, in_chans=spec.in_chans,
                         width_mult=spec.width_mult, input_size=spec.input_size)
    if spec.removed:  # DDC block removal: the removed units become identities (search/ddc/units.py)
        from amc_mobile.search.ddc.units import apply_removal

        apply_removal(model, spec.removed)
    modules = dict(model.named_modules())
    for name, shape in arch.get("shapes", {}).items():
        old = modules.get(name)
        if old is None:
            raise UserError(f"checkpoint names layer '{name}' which model '{spec.name}' does not have")
        if isinstance(old, nn.Conv2d):
            cin, cout, groups = shape
            if [old.in_channels, old.out_channels, old.groups] != shape:
                # same geometry as the layer it replaces (torch types these fields loosely)
                conv = nn.Conv2d(cin, cout, old.kernel_size, old.stride, old.padding,  # type: ignore[arg-type]
                                 old.dilation, groups, old.bias is not None)  # type: ignore[arg-type]
                replace_module(model, name, conv)
        elif isinstance(old, nn.Linear):
            if [old.in_features, old.out_features] != shape:
                replace_module(model, name, nn.Linear(shape[0], shape[1], old.bias is not None))
        elif isinstance(old, nn.BatchNorm2d):
            if old.num_features != shape[0]:
                replace_module(model, name, nn.BatchNorm2d(shape[0], old.eps, old.momentum))
    set_arch(model, spec)
    return model


def save_checkpoint(path: str | Path, model: nn.Module, half: bool = False, **extra: Any) -> Path:
    """Write architecture + state_dict (+ JSON-able ``extra`` such as metrics or optimizer state).

    ``half=True`` stores floating tensors as float16 (for the shipped zoo); they load as float32.
    """
    path = Path(path)
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "version": VERSION, "arch": arch_of(model), "state_dict": state, **extra}
    # atomic (unique temp + fsync + rename): a kill or a full disk never leaves a truncated checkpoint
    atomic_torch_save(path, payload)
    return path


def list_zoo() -> list[str]:
    return sorted(p.stem for p in ZOO_DIR.glob("*.pt"))


def resolve_checkpoint(spec: str | Path) -> Path:
    """Map ``zoo:NAME`` to the shipped file; check that a plain path exists."""
    text = str(spec)
    if text.startswith("zoo:"):
        name = text[4:]
        path = ZOO_DIR / f"{name}.pt"
        if not path.exists():
            raise unknown_name("zoo checkpoint", name, list_zoo())
        return path
    path = Path(text)
    if not path.exists():
        raise UserError(f"checkpoint not found: {path}")
    return path


def read_checkpoint(spec: str | Path) -> dict[str, Any]:
    """Load the raw payload safely (``weights_only=True``); one-line errors for bad files."""
    path = resolve_checkpoint(spec)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to unpickle untrusted bytes means "corrupt"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"corrupt or unreadable checkpoint {path} ({type(exc).__name__}: {first[:200]})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or "arch" not in payload:
        raise UserError(f"{path} is not an amc-mobile checkpoint (no architecture description); "
                        "create one with 'amc-mobile train' or 'amc-mobile prune'")
    version = payload.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise UserError(f"malformed checkpoint {path}: 'version' must be an integer, got {version!r}")
    if version > VERSION:
        raise UserError(f"{path} has checkpoint version {payload['version']}; this amc-mobile reads <= {VERSION}")
    _check_payload(path, payload)
    return payload


def _check_payload(path: Path, payload: dict[str, Any]) -> None:
    """Types of the parts a checkpoint is rebuilt from; a damaged or hand-made file is one line."""
    def bad(what: str) -> UserError:
        return UserError(f"malformed checkpoint {path}: {what}")

    arch = payload["arch"]
    if not isinstance(arch, dict):
        raise bad(f"'arch' must be a mapping, got {type(arch).__name__}")
    if not isinstance(arch.get("name"), str):
        raise bad("'arch' has no model name")
    shapes = arch.get("shapes", {})
    if not isinstance(shapes, dict):
        raise bad(f"'arch.shapes' must be a mapping, got {type(shapes).__name__}")
    for name, shape in shapes.items():
        if (not isinstance(shape, (list, tuple)) or not 1 <= len(shape) <= 3
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape)):
            raise bad(f"layer shape of '{name}' must be 1-3 positive integers, got {shape!r}")
    if "state_dict" not in payload:
        raise bad("no 'state_dict' (weights)")
    state = payload["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise bad("'state_dict' must map parameter names to tensors")
    for key in ("data", "metrics", "train_state", "finetune_state"):
        if key in payload and payload[key] is not None and not isinstance(payload[key], dict):
            raise bad(f"'{key}' must be a mapping, got {type(payload[key]).__name__}")


def load_checkpoint(spec: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model (at its stored, possibly pruned, widths) and load its weights."""
    payload = read_checkpoint(spec)
    arch = payload["arch"]
    get_entry(arch.get("name", "?"))  # unknown model name -> one line listing valid ones
    model = build_from_arch(arch)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in payload["state_dict"].items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise UserError(f"checkpoint {spec} does not match its architecture description "
                        f"({str(exc).splitlines()[0][:160]})") from exc
    model.eval()
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return model, meta

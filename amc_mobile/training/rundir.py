"""The output directory of a training or fine-tuning run: one writer, no silent overwrite, strict resume.

``train`` and ``finetune`` share the meaning of ``--resume``: without it, a directory that already holds
a run is refused (one line: pass ``--resume`` or choose another ``--out``); with it, the run continues
after its last finished epoch, but only if the model, the data and the settings are the ones it was
started with (a mismatch is refused, naming the fields that differ). The epoch count may change.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from amc_mobile.errors import UserError
from amc_mobile.storage import ExclusiveLock, ensure_dir

RUN_FILES = ("last.pt", "metrics.json", "final.pt")


def open_run_dir(out_dir: str | Path, resume: bool, what: str = "training") -> tuple[Path, ExclusiveLock]:
    """Create ``out_dir``, take its lock (a second run into it gets one line naming the holder's PID)
    and refuse to start over an existing run unless ``resume``. Caller releases the lock."""
    out = ensure_dir(out_dir)
    lock = ExclusiveLock(out / "run.lock", what=f"{what} directory {out}").acquire()
    try:
        existing = [name for name in RUN_FILES if (out / name).exists()]
        if existing and not resume:
            raise UserError(f"{out} already holds a {what} run ({', '.join(existing)}); pass --resume to "
                            "continue it, or choose another --out")
    except BaseException:
        lock.release()
        raise
    return out, lock


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def differing_fields(saved: Mapping[str, Any], current: Mapping[str, Any], prefix: str = "",
                     ignore: tuple[str, ...] = ()) -> list[str]:
    """``"name saved != current"`` for every key both sides record with different values.

    Keys only one side has are skipped, so runs written by an older version (with fewer recorded
    facts) still resume.
    """
    diffs = []
    for key, value in current.items():
        if key in ignore or key not in saved:
            continue
        old = saved[key]
        if isinstance(old, (list, tuple)) and isinstance(value, (list, tuple)):
            same = list(old) == list(value)
        else:
            same = old == value
        if not same:
            diffs.append(f"{prefix}{key} {_short(old)} != {_short(value)}")
    return diffs


def check_resume(path: Path, saved: Mapping[str, Mapping[str, Any]], current: Mapping[str, Mapping[str, Any]],
                 ignore: tuple[str, ...] = ()) -> None:
    """Refuse to resume ``path`` when any recorded section (model, data, config) differs."""
    diffs: list[str] = []
    for section, values in current.items():
        old = saved.get(section)
        if isinstance(old, Mapping):
            diffs += differing_fields(old, values, f"{section}.", ignore)
    if diffs:
        raise UserError(f"cannot resume {path}: it was started with different settings ({'; '.join(diffs[:6])}"
                        f"{'; ...' if len(diffs) > 6 else ''}); use the same ones, or another --out")


def _option(field: str) -> str:
    return "--" + field.replace("_", "-")


def check_positive_int(cfg: object, *fields: str) -> None:
    """Config validation: each field an integer >= 1 (one line naming the CLI option otherwise)."""
    for field in fields:
        value = getattr(cfg, field)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{_option(field)} must be a positive integer, got {value!r}")


def check_range(cfg: object, field: str, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> None:
    """Config validation: a finite number within [low, high] (open ends where asked)."""
    value = getattr(cfg, field)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        interval = f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
        raise UserError(f"{_option(field)} must be a number in {interval}, got {value!r}")

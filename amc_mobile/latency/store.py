"""The latency-table store: where tables are found and written, and the table a job should use.

Lookup order for a device and model (first that fits wins):

1. ``<user data>/tables/<device>/<stem>.csv`` - measured on this machine (``amc-bench profile``);
2. ``<user data>/adapted/<device>/<stem>.csv`` - a carried table adapted to this device (copy of its
   rows, the adaptation in its metadata);
3. the shipped table next to the device's profile YAML (read-only package data, never written).

``<user data>`` is :func:`amc_mobile.storage.user_data_dir` (``$AMC_MOBILE_HOME/data`` in tests/CI).
A table "fits" when its device fingerprint (:mod:`amc_mobile.latency.fingerprint`) equals this
device's. :func:`open_table_for` is what jobs call: it picks the table, says in one line what differs
when it was measured elsewhere, validates it on the device (teacher + a few configs), adapts it with at
most 10 measurements when validation fails, and builds or resumes a table in the user store when no
table exists or adaptation cannot reach the tolerance.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from torch import nn

from amc_mobile.errors import UserError
from amc_mobile.latency.fingerprint import describe_differences, differences
from amc_mobile.latency.table import LatencyTable, calib_path, meta_path, table_stem
from amc_mobile.models.arch import require_arch
from amc_mobile.storage import ExclusiveLock, atomic_write_figure, atomic_write_json, safe_name, user_data_dir

Log = Callable[[str], None]


def user_tables_dir(device: str) -> Path:
    """Tables measured on this machine for ``device``."""
    return user_data_dir() / "tables" / safe_name(device, "device name")


def user_adapted_dir(device: str) -> Path:
    """Carried tables adapted to this machine for ``device``."""
    return user_data_dir() / "adapted" / safe_name(device, "device name")


def shipped_dir(profile: Any) -> Path | None:
    """The read-only tables next to the profile's YAML (``<folder>/<device>/``), if any."""
    if not getattr(profile, "path", ""):
        return None
    d = Path(profile.path).parent / profile.name
    return d if d.is_dir() else None


def candidates(profile: Any, stem: str) -> list[tuple[str, Path]]:
    """(kind, path) of every existing table for ``stem`` on the device, in lookup order."""
    out = [("user", user_tables_dir(profile.name) / f"{stem}.csv"),
           ("adapted", user_adapted_dir(profile.name) / f"{stem}.csv")]
    sd = shipped_dir(profile)
    if sd is not None:
        out.append(("shipped", sd / f"{stem}.csv"))
    return [(k, p) for k, p in out if p.exists() and not (k == "adapted" and _stale_adaptation(p))]


def _stale_adaptation(adapted_csv: Path) -> bool:
    """An adapted copy whose source table has changed since (e.g. a newer release shipped a new table):
    its rows no longer match the source's, so it is skipped and the source is validated afresh."""
    try:
        source = Path(json.loads(meta_path(adapted_csv).read_text()).get("source", {}).get("path", ""))
        return source.is_file() and source.read_bytes() != adapted_csv.read_bytes()
    except (OSError, ValueError, AttributeError):
        return False


def device_identity(profile: Any) -> tuple[dict[str, Any] | None, str | None]:
    """(identity of the device here, None) or (None, why it is not reachable)."""
    try:
        backend = profile.create_backend()
    except UserError as exc:
        return None, str(exc)
    try:
        reason = backend.check_available()
        if reason:
            return None, reason
        return backend.identity(), None
    except UserError as exc:
        return None, str(exc)
    finally:
        backend.close()


def fingerprint_differences(table: LatencyTable, here: dict[str, Any] | None, profile: Any = None) -> list[str]:
    """What differs between the table's device and this one; with ``profile``, also a table whose units
    were timed in another layout than this backend times them (tables before the field: NCHW)."""
    if here is None:
        return []
    diffs = differences(table.identity, here)
    if profile is not None:
        from amc_mobile.latency.base import get_backend
        from amc_mobile.latency.profiling import table_unit_layout

        want = get_backend(profile.backend).unit_layout
        have = table_unit_layout(table.meta)
        if have != want:
            diffs.append(f"unit_layout {have} != {want}")
    return diffs


def save_adapted(table: LatencyTable, adaptation: dict[str, Any], profile: Any, device_record: dict[str, Any],
                 source_kind: str) -> Path:
    """Store ``adaptation`` with the table: in its own metadata when the table lives in the user's
    ``tables/`` store, otherwise in a copy under ``adapted/`` (a shipped file is never touched)."""
    src = Path(table.path)
    if source_kind == "user":
        dest = src
    else:
        dest = user_adapted_dir(profile.name) / src.name
    meta = dict(table.meta)
    with ExclusiveLock(dest, f"latency table {dest}"):
        if dest != src:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest.with_name(dest.name + ".part"))
            dest.with_name(dest.name + ".part").replace(dest)
            if calib_path(src).exists():
                shutil.copyfile(calib_path(src), calib_path(dest))
            meta["source"] = {"path": str(src), "kind": source_kind, "device": table.meta.get("device")}
            meta["device"] = device_record
        meta["adaptation"] = adaptation
        atomic_write_json(meta_path(dest), meta, indent=1)
    return dest


def _complete(table: LatencyTable) -> bool:
    return not table.incomplete


def _build(profile: Any, model: nn.Module, input_size: int, path: Path, log: Log,
           progress: Callable[[int, int], None] | None, reprofile: bool = False,
           options: dict[str, Any] | None = None) -> LatencyTable:
    from amc_mobile.latency.profiling import AUTO_GRANULARITY, profile_table

    if reprofile and path.exists():
        try:
            old = LatencyTable.load(path)
            complete = not old.incomplete
        except UserError:
            complete = False
        if complete:  # keep the old measurements, start a fresh table
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
            for p in (path, meta_path(path), calib_path(path)):
                if p.exists():
                    p.replace(p.with_name(f"{p.name}.replaced-{stamp}"))
    log(f"profiling {path.name} on {profile.name} into the user store ({path.parent}); resumable")
    # the channel step the device rewards unless the caller chose one (amc-bench profile --granularity)
    opts = {"granularity": AUTO_GRANULARITY, **(options or {})}
    summary = profile_table(profile, model, path, input_size=input_size, progress=progress, log=log, **opts)
    log(f"{path}: {summary.rows}/{summary.grid_points} grid points ({summary.new_rows} measured now "
        f"in {summary.seconds:.0f} s)")
    return LatencyTable.load(path)


def open_table_for(device: str, model: nn.Module, input_size: int | None = None, checkpoint: str | None = None,
                   table_path: str | Path | None = None, *, validate: bool = True, adapt: bool = True,
                   build: bool = True, reprofile: bool = False, configs: int = 4, tolerance: float = 0.05,
                   seed: int | None = None, log: Log | None = None,
                   progress: Callable[[int, int], None] | None = None,
                   profile_options: dict[str, Any] | None = None) -> tuple[LatencyTable, dict[str, Any]]:
    """The latency table a job should use for ``model`` on ``device``, and a report of what was done.

    ``table_path``: use that file (a fingerprint mismatch is a warning). Otherwise the store's lookup
    order (module docstring). ``validate``: measure the teacher and ``configs`` configs on the device
    and compare (skipped, and said, when the device is unreachable); a table measured elsewhere is
    always validated when the device is reachable. ``adapt``: when validation misses ``tolerance``
    (median |error|), refit with <= 10 measurements into the user store. ``build``: profile (or resume)
    a table in the user store when none exists or adaptation cannot reach the tolerance;
    ``reprofile``: do that even when a table exists; ``profile_options``: keyword arguments of
    :func:`~amc_mobile.latency.profiling.profile_table` for such a build (points, granularity...).
    ``log`` receives one-line messages.
    Report keys: table, source, fingerprint_differences, validation, adaptation, actions, messages.
    """
    from amc_mobile.latency.adapt import DeviceUnavailable, adapt_table, validate_table
    from amc_mobile.latency.profiles import load_profile

    messages: list[str] = []

    def say(text: str) -> None:
        messages.append(text)
        if log:
            log(text)

    profile = load_profile(device)
    arch = require_arch(model)
    size = int(input_size or arch.input_size)
    stem = table_stem(arch, size)
    here, unreachable = device_identity(profile)
    record: dict[str, Any] | None = None
    if here is not None:
        backend = profile.create_backend()
        try:
            record = backend.device_record()
        finally:
            backend.close()
    report: dict[str, Any] = {"device": device, "actions": [], "messages": messages, "validation": None,
                              "adaptation": None, "fingerprint_differences": []}
    user_path = user_tables_dir(profile.name) / f"{stem}.csv"
    source = "file"
    source_arg = f"--checkpoint {checkpoint}" if checkpoint else f"--model {arch.name}"

    if reprofile:
        if here is None:
            raise UserError(f"cannot re-profile: device '{device}' is not reachable here: {unreachable}")
        table = _build(profile, model, size, user_path, say, progress, reprofile=True, options=profile_options)
        report["actions"].append("profiled")
        source = "user"
    elif table_path is not None:
        table = LatencyTable.load(table_path)
        diffs = fingerprint_differences(table, here, profile)
        if diffs:
            say(f"warning: {table_path} was measured on another device or setup ({describe_differences(diffs)})")
        report["fingerprint_differences"] = diffs
    else:
        found = candidates(profile, stem)
        chosen: LatencyTable | None = None
        carried: tuple[str, LatencyTable, list[str]] | None = None
        for kind, path in found:
            t = LatencyTable.load(path)
            if kind == "user" and t.incomplete:
                if here is not None and build:
                    say(f"resuming the unfinished table {path}")
                    t = _build(profile, model, size, path, say, progress, options=profile_options)
                    report["actions"].append("resumed")
                else:
                    continue
            if t.incomplete:
                continue
            diffs = fingerprint_differences(t, here, profile)
            if not diffs:
                chosen, source = t, kind
                break
            if carried is None:
                carried = (kind, t, diffs)
        if chosen is None and carried is not None:
            kind, chosen, diffs = carried
            source = kind
            report["fingerprint_differences"] = diffs
            way = ("validating and adapting it on this device (user store)" if here is not None and adapt else
                   f"fit it to this device with: amc-bench profile --device {device} {source_arg}")
            say(f"the {kind} table {chosen.path} was measured on another device or setup "
                f"({describe_differences(diffs)}); {way}")
        if chosen is None:
            if here is None or not build:
                why = f" (device not reachable: {unreachable})" if here is None else ""
                raise UserError(f"no latency table for {arch.name} (width {arch.width_mult:g}, {size} px) on device "
                                f"'{device}'{why}; build it with: amc-bench profile --device {device} {source_arg}")
            chosen = _build(profile, model, size, user_path, say, progress, options=profile_options)
            report["actions"].append("profiled")
            source = "user"
            validate = False  # just measured here
        table = chosen
    if table.incomplete:
        raise UserError(f"latency table {table.path} is incomplete ({', '.join(table.incomplete)}); finish it with: "
                        f"amc-bench profile --device {device} {source_arg}")

    must_check = bool(report["fingerprint_differences"]) and adapt
    if (validate or must_check) and here is None:
        report["validation"] = {"validated": False, "reason": f"device not reachable: {unreachable}"}
        say(f"table {table.path} is unvalidated: device '{device}' is not reachable ({unreachable})")
    elif validate or must_check:
        try:
            # two rounds: the noise floor they give bounds how closely a table can be judged here
            val, measured = validate_table(table, profile, model, size, configs, tolerance, seed, rounds=2)
        except DeviceUnavailable as exc:
            report["validation"] = {"validated": False, "reason": str(exc)}
            say(f"table {table.path} is unvalidated: {exc}")
        else:
            report["validation"] = val
            say(f"validated {Path(table.path).name} on {device} with the teacher + {len(measured) - 1} configs: "
                f"median |error| {100 * val['median_abs_error']:.1f}%, worst {100 * val['worst_abs_error']:.1f}% "
                f"(ratios: {100 * val['ratio_median_abs_error']:.1f}%); tolerance {_tolerance_text(val)}: "
                f"{'ok' if val['passed'] else 'missed'}")
            need = not val["passed"] or (bool(report["fingerprint_differences"]) and source != "file")
            if need and adapt and record is not None:
                ratio_ok = val["ratio_median_abs_error"] <= val["effective_tolerance"]
                ad = adapt_table(table, profile, model, size, measured, tolerance=val["effective_tolerance"],
                                 ratio_ok=ratio_ok)
                if val["passed"] and not ad["accepted"]:  # it fits as it is: record that it was checked here
                    ad = {**ad, "method": "validated", "accepted": True, "reaches_tolerance": True,
                          "coef": table.coef.to_dict(), "ref_ms": table.ref_ms, "overhead_ms": table.overhead_ms,
                          "after": ad["before"]}
                report["adaptation"] = ad
                if ad["accepted"]:
                    dest = save_adapted(table, ad, profile, record, source)
                    table = LatencyTable.load(dest)
                    source = "user" if source == "user" else "adapted"
                    report["actions"].append("adapted")
                    say(f"adapted the table to this device ({ad['method']}, {ad['measurements']} measurements): "
                        f"held-out median |error| {100 * ad['before']['combined_median_abs_error']:.1f}% -> "
                        f"{100 * ad['after']['combined_median_abs_error']:.1f}%; saved to {dest}")
                else:
                    say(f"adaptation rejected ({ad['method']}): held-out median |error| would go "
                        f"{100 * ad['before']['combined_median_abs_error']:.1f}% -> "
                        f"{100 * ad['after']['combined_median_abs_error']:.1f}% (it must fall by a tenth and "
                        "at least one point)")
                if not ad["reaches_tolerance"] and not val["passed"]:
                    if build and table_path is None and source != "user":  # own tables are never replaced unasked
                        say("adaptation cannot reach the tolerance: re-profiling this device (resumable)")
                        table = _build(profile, model, size, user_path, say, progress, reprofile=True,
                                       options=profile_options)
                        report["actions"].append("profiled")
                        source = "user"
                    elif measured_here(source, report):
                        # measured here, on this fingerprint: profiling again measures the same thing
                        when = str(table.meta.get("created", ""))[:16].replace("T", " ")
                        say(f"warning: the table measured on this device{' (' + when + ' UTC)' if when else ''} "
                            f"misses whole models here by {100 * val['median_abs_error']:.1f}%: its per-layer sum "
                            "does not capture this network on this device; searches measure their final pick "
                            f"on the device (re-profile with --reprofile if the device has changed since)")
                    else:
                        say(f"warning: the table misses the tolerance on this device; re-profile with: "
                            f"amc-bench profile --device {device} {source_arg} --reprofile")
    report["table"] = table.path
    report["source"] = source
    return table, report


def measured_here(source: str, report: dict[str, Any]) -> bool:
    """The table in use was measured on this device: profiled in this call, or a user table whose
    fingerprint matches (re-profiling would measure the same thing)."""
    return source == "user" and ("profiled" in (report.get("actions") or [])
                                 or not report.get("fingerprint_differences"))


def _tolerance_text(val: dict[str, Any]) -> str:
    """'5%', or '6.2% (the noise floor here; 5% asked)' when the device measures less steadily."""
    asked, eff = val["tolerance"], val.get("effective_tolerance", val["tolerance"])
    return f"{100 * asked:.0f}%" if eff <= asked else f"{100 * eff:.1f}% (the noise floor here; {100 * asked:.0f}% asked)"


def load_latency_table(device: str, model: Any, input_size: int, checkpoint: str | None = None,
                       table_path: str | Path | None = None, log: Log | None = None) -> LatencyTable:
    """The table of ``model`` on ``device`` without measuring anything (no validation, adaptation or
    building); a missing table is one line naming the command that builds it. A table measured on
    another device or setup is used with a one-line warning (to ``log``, default stderr)."""
    import sys

    table, _ = open_table_for(device, model, input_size, checkpoint, table_path, validate=False, adapt=False,
                              build=False, log=log or (lambda text: print(text, file=sys.stderr)))
    return table


def ensure_table(device: str, model: nn.Module, input_size: int | None = None, checkpoint: str | None = None,
                 reprofile: bool = False, log: Log | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 profile_options: dict[str, Any] | None = None) -> tuple[LatencyTable, dict[str, Any]]:
    """Make sure ``device`` has a table that fits for ``model`` (what ``amc-bench profile`` does without
    ``--out``): a matching table is used as is; one measured elsewhere is validated and adapted in the
    user store; none, or one adaptation cannot fix, is profiled (resumed) in the user store."""
    return open_table_for(device, model, input_size, checkpoint, validate=False, adapt=True, build=True,
                          reprofile=reprofile, log=log, progress=progress, profile_options=profile_options)


def validate_device_table(device: str, model: nn.Module, input_size: int | None = None,
                          checkpoint: str | None = None, table_path: str | Path | None = None, configs: int = 10,
                          seed: int | None = None, plot: str | Path | None = None) -> dict[str, Any]:
    """``amc-bench validate``: the table a job would use, checked on fresh random configs in two rounds.

    Returns ``median_abs_error``, ``within_10pct``, ``worst_abs_error`` and ``noise_floor`` (fractions;
    errors in ms at the reference speed now, noise = median |round 1 / round 2 - 1|), the ratio-based
    figures, per-config rows and the plot path; on an unreachable device ``validated`` False and why.
    """
    from amc_mobile.latency.adapt import DeviceUnavailable, validate_table
    from amc_mobile.latency.profiles import load_profile

    arch = require_arch(model)
    size = int(input_size or arch.input_size)
    table, rep = open_table_for(device, model, size, checkpoint, table_path, validate=False, adapt=False,
                                build=False)
    base = {"device": device, "table": table.path, "fingerprint_differences": rep["fingerprint_differences"]}
    here, why = device_identity(load_profile(device))
    if here is None:
        return {**base, "validated": False, "reason": f"device not reachable: {why}"}
    try:
        val, _ = validate_table(table, load_profile(device), model, size, configs, seed=seed, rounds=2)
    except DeviceUnavailable as exc:
        return {**base, "validated": False, "reason": str(exc)}
    out = {**base, **val}
    if plot is None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        name = safe_name(load_profile(device).name, "device name")
        plot = user_data_dir() / "validation" / name / f"{table_stem(arch, size)}-{stamp}.png"
    out["plot"] = str(_plot_validation(out, Path(plot)))
    return out


def _plot_validation(rep: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    rows = rep["per_config"]
    xs = [r["measured_ms"] for r in rows]
    ys = [r["predicted_ms"] for r in rows]
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    removed = [bool(r["removed"]) for r in rows]
    ax.scatter([x for x, rm in zip(xs, removed, strict=True) if not rm],
               [y for y, rm in zip(ys, removed, strict=True) if not rm], s=16, label="pruned")
    if any(removed):
        ax.scatter([x for x, rm in zip(xs, removed, strict=True) if rm],
                   [y for y, rm in zip(ys, removed, strict=True) if rm], s=30, marker="x", c="r",
                   label="blocks removed")
    hi = max(xs + ys) * 1.05
    ax.plot([0, hi], [0, hi], "k-", lw=0.8)
    ax.plot([0, hi], [0, hi * 1.1], "k:", lw=0.6)
    ax.plot([0, hi], [0, hi * 0.9], "k:", lw=0.6)
    ax.set_xlabel("measured (ms)")
    ax.set_ylabel("predicted (ms)")
    ax.set_title(f"{rep['device']}: median |err| {100 * rep['median_abs_error']:.1f}%, "
                 f"noise {100 * rep.get('noise_floor', float('nan')):.1f}%", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return atomic_write_figure(path, fig)


def clean_caches(cache: bool = True, scratch: bool = True) -> dict[str, Any]:
    """Empty the artefact cache and the scratch export folders (measured tables are never touched);
    folders in use by a running job are skipped when they cannot be removed."""
    from amc_mobile.latency.artifacts import cache_root
    from amc_mobile.storage import user_cache_dir

    dirs, files, size = [], 0, 0
    targets = ([cache_root()] if cache else []) + ([user_cache_dir() / "work"] if scratch else [])
    for d in targets:
        if not d.is_dir():
            continue
        for p in sorted(d.rglob("*"), reverse=True):
            try:
                if p.is_file() or p.is_symlink():
                    size += p.stat().st_size
                    p.unlink()
                    files += 1
                elif p.is_dir():
                    p.rmdir()
            except OSError:
                continue
        dirs.append(str(d))
    return {"files": files, "bytes": size, "dirs": dirs}

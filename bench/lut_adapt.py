"""Side by side in one run: a table built on this machine, and a table carried from another machine
before and after adaptation with <= 10 measurements.

For each device x model: build or resume this machine's table (``--own-dir``; its build time is the
profiling cost), load the table measured elsewhere (``--carried-dir``, default the shipped one in
device_profiles/<device>/), measure 30 random pruned configs + 3 block-removed models on this machine
in two rounds (held out: they never enter any fit), adapt the carried table with at most 10 fresh
whole-model measurements (amc_mobile.latency.adapt: the correction refitted, reference/overhead
re-measured; the adaptation sees 5 of the held-out models, as validation on use gives it the teacher + 4,
and every figure is on the others), and report median |error| and share within +-10% for the own table
and the carried one before/after, on ratios to the reference and on ms, with the noise floor (round 1
vs round 2). The earlier adaptation default (the refit with the lowest leave-one-out error on the fit
models) is judged on the same measurements.
Writes JSON and a scatter PNG (own | carried before | carried after).

    python bench/lut_adapt.py --devices host-cpu --models mobilenet_v1 mobilenet_v2 --own-dir /tmp/own
    python bench/lut_adapt.py --devices host-tflite --models mobilenet_v1 --configs 20 --points 3
    python bench/lut_adapt.py --models mobilenet_v2 --own-dir /tmp/own --compare-points 7   # a denser grid too
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import lut_fidelity  # noqa: E402

from amc_mobile.latency.adapt import (  # noqa: E402
    FIT_WIDTHS,
    PREFERRED,
    adapt_table,
    adaptation_configs,
    measure_models,
)
from amc_mobile.latency.profiles import REPO_PROFILES, load_profile  # noqa: E402
from amc_mobile.latency.profiling import profile_table, table_step  # noqa: E402
from amc_mobile.latency.store import fingerprint_differences  # noqa: E402
from amc_mobile.latency.table import LatencyTable, default_table_path  # noqa: E402
from amc_mobile.models import create_model  # noqa: E402
from amc_mobile.models.arch import require_arch  # noqa: E402
from amc_mobile.pruning import find_groups  # noqa: E402


def run_one(device: str, model_name: str, args: argparse.Namespace) -> dict:
    prof = load_profile(device)
    model = create_model(model_name, input_size=args.resolution)
    size = args.resolution
    own: LatencyTable | None = None
    build: dict = {}
    if args.own_dir:
        own_path = default_table_path(Path(args.own_dir) / device, require_arch(model), size)
        build = profile_table(prof, model, own_path, input_size=size, points=args.points,
                              granularity=args.granularity, log=print).to_dict()
        own = LatencyTable.load(own_path)
        print(f"[{device} {model_name}] own table {own_path}: {build['grid_points']} points, {build['new_rows']} "
              f"measured now in {build['seconds']:.0f} s", flush=True)
    denser: dict[int, tuple[LatencyTable, dict]] = {}  # --compare-points: other grids, the same held-out models
    for pts in args.compare_points if args.own_dir else []:
        p_path = default_table_path(Path(args.own_dir) / f"points{pts}" / device, require_arch(model), size)
        p_build = profile_table(prof, model, p_path, input_size=size, points=pts, granularity=args.granularity,
                                log=print).to_dict()
        denser[pts] = (LatencyTable.load(p_path), p_build)
        print(f"[{device} {model_name}] own table with {pts} values per axis: {p_build['grid_points']} points, "
              f"{p_build['new_rows']} measured now in {p_build['seconds']:.0f} s", flush=True)
    path = default_table_path(Path(args.carried_dir) / device, require_arch(model), size)
    table = LatencyTable.load(path)
    backend = prof.create_backend()
    here = backend.identity()
    backend.close()
    diffs = fingerprint_differences(table, here, prof)  # hardware, runtime and unit layout
    # held-out models keep channels on the own table's step: what a search with that table would keep
    step = table_step(own.meta) if own is not None else 8
    configs = lut_fidelity.configs_for(model, find_groups(model, size), args.configs, args.seed, size, step)
    t0 = time.perf_counter()
    held = measure_models(prof, model, size, configs, rounds=2, seed=7)
    t_held = time.perf_counter() - t0
    # The adaptation sees --seen of the held-out models, as validation on use gives it the teacher + 4
    # (they renew the reference time and decide rescale vs refit and acceptance); every figure below is
    # on the others, which nothing was fitted or chosen on.
    seen_idx = set(random.Random(args.seed).sample(range(len(held)), min(args.seen, len(held)))) if args.seen else set()
    seen = [m for i, m in enumerate(held) if i in seen_idx] if seen_idx else held
    judged = [m for i, m in enumerate(held) if i not in seen_idx]
    before = lut_fidelity.evaluate(table, judged, device, model_name)

    def adapt_and_evaluate(fit_widths: tuple[float, ...] = FIT_WIDTHS, fit: list | None = None,
                           prefer: tuple[str, ...] | None = PREFERRED) -> tuple[dict, dict]:
        """Adapt the carried table (fresh measurements unless ``fit``) and judge it on the held-out models."""
        record = adapt_table(table, prof, model, size, seen, n_measurements=args.measurements, seed=args.fit_seed,
                             fit_widths=fit_widths, fit=fit, prefer=prefer)
        adapted = LatencyTable.load(path)
        if record["accepted"]:  # a rejected adaptation leaves the table as it was, as the store does
            adapted.apply_adaptation(record)
        return record, lut_fidelity.evaluate(adapted, judged, device, model_name)

    fit = measure_models(prof, model, size, adaptation_configs(model, size, args.measurements, args.fit_seed,
                                                               FIT_WIDTHS, table_step(table.meta)))
    ad, after = adapt_and_evaluate(fit=fit)
    # the earlier default on the same fit measurements: the refit with the lowest leave-one-out error
    ad_loo, after_loo = adapt_and_evaluate(fit=fit, prefer=None)
    print(f"[{device} {model_name}] adaptation choosing by leave-one-out (earlier default): {ad_loo['method']}, "
          f"ratio median |err| {100 * after_loo['median_abs_err']:.1f}%, within +-10% "
          f"{100 * after_loo['within_10pct']:.0f}%; ms {100 * after_loo['median_abs_err_ms']:.1f}% / "
          f"{100 * after_loo['within_10pct_ms']:.0f}%", flush=True)
    alt: dict = {}
    for widths in args.compare_fit_widths:
        # another set of adaptation measurements, judged on the same held-out models
        ad_w, ev = adapt_and_evaluate(fit_widths=tuple(float(x) for x in widths.split(",")))
        alt[widths] = {"adaptation": ad_w, "after": ev}
        print(f"[{device} {model_name}] adaptation with uniform widths {widths}: {ad_w['method']}, ratio median |err| "
              f"{100 * ev['median_abs_err']:.1f}%, within +-10% {100 * ev['within_10pct']:.0f}%; ms "
              f"{100 * ev['median_abs_err_ms']:.1f}% / {100 * ev['within_10pct_ms']:.0f}%", flush=True)
    res = {"device": device, "model": model_name, "table": str(path), "fingerprint_differences": diffs,
           "held_out_multiple": step, "seen_by_adaptation": [m.config.config_id for m in seen] if seen_idx else "all",
           "held_out_configs": len(judged), "held_out_measure_seconds": t_held, "adaptation": ad,
           "adaptation_lowest_loo": {"adaptation": ad_loo, "after": after_loo},
           "before": before, "after": after, "own_build": build, "fit_width_variants": alt}
    if own is not None:
        res["own"] = lut_fidelity.evaluate(own, judged, device, model_name)
        o = res["own"]
        print(f"[{device} {model_name}] own table: ratio median |err| {100 * o['median_abs_err']:.1f}%, within +-10% "
              f"{100 * o['within_10pct']:.0f}%; ms {100 * o['median_abs_err_ms']:.1f}% / "
              f"{100 * o['within_10pct_ms']:.0f}%; block-removed {100 * o['removed_median_abs_err']:.1f}%; "
              f"built in {build.get('seconds', 0):.0f} s ({build.get('new_rows', 0)} rows now)", flush=True)
    res["own_points"] = {}
    for pts, (p_table, p_build) in denser.items():
        o = lut_fidelity.evaluate(p_table, judged, device, model_name)
        res["own_points"][pts] = {**o, "build": p_build}
        print(f"[{device} {model_name}] own table, {pts} values per axis: ratio median |err| "
              f"{100 * o['median_abs_err']:.1f}%, within +-10% {100 * o['within_10pct']:.0f}%; ms "
              f"{100 * o['median_abs_err_ms']:.1f}% / {100 * o['within_10pct_ms']:.0f}%; built in "
              f"{p_build['seconds']:.0f} s ({p_build['grid_points']} points)", flush=True)
    print(f"[{device} {model_name}] carried table ({'; '.join(diffs) or 'same fingerprint'}): "
          f"ratio median |err| {100 * before['median_abs_err']:.1f}% -> {100 * after['median_abs_err']:.1f}%, "
          f"within +-10% {100 * before['within_10pct']:.0f}% -> {100 * after['within_10pct']:.0f}%; "
          f"ms median |err| {100 * before['median_abs_err_ms']:.1f}% -> {100 * after['median_abs_err_ms']:.1f}% "
          f"(within +-10% {100 * before['within_10pct_ms']:.0f}% -> {100 * after['within_10pct_ms']:.0f}%); "
          f"noise floor {100 * before['noise_floor_median_abs']:.1f}%; {ad['method']} from {ad['measurements']} "
          f"measurements in {ad['seconds']:.0f} s, accepted={ad['accepted']}", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", nargs="+", default=["host-cpu"])
    ap.add_argument("--models", nargs="+", default=["mobilenet_v1", "mobilenet_v2"])
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--configs", type=int, default=30, help="held-out random configs per model")
    ap.add_argument("--seen", type=int, default=5,
                    help="held-out models the adaptation sees, as validation on use does (the teacher + 4); "
                         "all figures are on the others (0: it sees all, and is judged on them: optimistic)")
    ap.add_argument("--measurements", type=int, default=10, help="adaptation measurements (<= 10)")
    ap.add_argument("--seed", type=int, default=2026, help="seed of the held-out configs")
    ap.add_argument("--fit-seed", type=int, default=4242, help="seed of the adaptation configs")
    ap.add_argument("--carried-dir", default=str(REPO_PROFILES), help="where the carried tables are")
    ap.add_argument("--own-dir", default=None, help="build/resume this machine's tables here (and compare)")
    ap.add_argument("--points", type=int, default=5, help="grid values per axis of the own table")
    ap.add_argument("--granularity", type=int, default=8,
                    help="channel step of the own table's grid (0: probe the device, as amc-bench profile does); "
                         "held-out models keep channels on that step")
    ap.add_argument("--compare-points", nargs="*", type=int, default=[], metavar="P",
                    help="with --own-dir: also build own tables with P values per axis (judged on the same models)")
    ap.add_argument("--compare-fit-widths", nargs="*", default=[], metavar="W1,W2,...",
                    help="also adapt with these uniform widths among the measurements (same held-out models)")
    ap.add_argument("--out-dir", default=str(ROOT / "bench" / "results" / "lut_adapt"))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    load, t0 = os.getloadavg(), time.perf_counter()
    results = [run_one(d, m, args) for d in args.devices for m in args.models]
    meta = {"command": "python " + " ".join(sys.argv), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "loadavg_start": load, "loadavg_end": os.getloadavg(), "cpus": os.cpu_count(),
            "seconds": time.perf_counter() - t0}
    tag = "_".join(args.devices) + "__" + "_".join(args.models)
    (out / f"lut_adapt_{tag}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1, default=str))
    panels = []
    for r in results:
        if "own" in r:
            panels.append({**r["own"], "device": f"{r['device']} OWN"})
        panels += [{**r["before"], "device": f"{r['device']} BEFORE"}, {**r["after"], "device": f"{r['device']} AFTER"}]
    lut_fidelity.scatter(panels, out / f"lut_adapt_{tag}.png")
    print(f"done in {meta['seconds'] / 60:.1f} min; load average {load[0]:.1f} -> {meta['loadavg_end'][0]:.1f} on "
          f"{meta['cpus']} cores; wrote {out}/lut_adapt_{tag}.{{json,png}}")


if __name__ == "__main__":
    main()

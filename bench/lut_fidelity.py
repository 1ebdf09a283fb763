"""Latency-table fidelity: predicted vs measured whole-model latency on random pruned configs.

For each device x model: build (or resume) the per-unit table, then measure 30 random pruned
configurations (seed differs from the table's calibration configs), 3 models with removable blocks
dropped (DDC) and AMC's published MobileNet-V1 configs, all interleaved with the reference workload, in two independent rounds. Reports, side by
side: median |error| of the prediction, share within +-10%, and the noise floor (median |difference|
between the two rounds' measurements of the same model). Errors are computed on ratios to the
reference workload (drift-free); the ms-based error is reported too. Writes CSV/JSON and a scatter PNG.

    python bench/lut_fidelity.py                       # host-cpu + host-tflite, V1 + V2 at 224
    python bench/lut_fidelity.py --devices host-cpu --models mobilenet_v1 --configs 10

Expected run time on a quiet 2-core machine: host-cpu ~15 min (tables included), host-tflite ~40 min
(litert-torch conversions, ~3-5 s per artefact, dominate); under heavy load 2-3x longer. Tables are
resumable and artefacts cached, so a re-run continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from amc_mobile.latency.adapt import measure_models  # noqa: E402
from amc_mobile.latency.profiles import load_profile, table_dir  # noqa: E402
from amc_mobile.latency.profiling import ModelConfig, profile_table  # noqa: E402
from amc_mobile.latency.table import LatencyTable, default_table_path  # noqa: E402
from amc_mobile.models import create_model  # noqa: E402
from amc_mobile.models.arch import require_arch  # noqa: E402
from amc_mobile.pruning import find_groups, round_channels  # noqa: E402

# AMC_NOTES.md: conv1 + 13 pointwise output channels (= the 14 prunable groups of mobilenet_v1).
AMC_V1 = {
    "v1-1.0": [32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024],
    "v1-0.75-uniform": [24, 48, 96, 96, 192, 192, 384, 384, 384, 384, 384, 384, 768, 768],
    "amc-50%-flops": [24, 48, 96, 80, 192, 200, 328, 352, 368, 360, 328, 400, 736, 752],
    "amc-50%-time": [16, 48, 88, 80, 192, 168, 336, 360, 360, 352, 352, 368, 768, 680],
}


def configs_for(model, groups: list, n: int, seed: int, size: int, multiple: int = 8) -> list[ModelConfig]:
    """``n`` random pruned configs, 3 with removable blocks dropped (DDC), AMC's published V1 configs
    (those only at ``multiple`` 8: their counts are multiples of 8); channels rounded to ``multiple``."""
    from amc_mobile.latency.profiling import model_configs

    name = require_arch(model).name
    rng = random.Random(seed)
    out = [ModelConfig(f"random-{i}", tuple(round_channels(g.width, rng.uniform(0.2, 1.0), multiple) for g in groups))
           for i in range(n)]
    out += [c for c in model_configs(model, size, uniform=(), n_random=0, n_removed=3, seed=seed, multiple=multiple)]
    if name == "mobilenet_v1" and multiple == 8:
        out += [ModelConfig(k, tuple(v)) for k, v in AMC_V1.items()]
    return out


def run_one(device: str, model_name: str, args: argparse.Namespace, log: list[str]) -> dict:
    prof = load_profile(device)
    reason = prof.availability()
    if reason:
        print(f"skip {device}: {reason}")
        return {}
    model = create_model(model_name, input_size=args.resolution)
    size = args.resolution
    table_path = (Path(args.tables_dir) / device / default_table_path(Path("."), require_arch(model), size).name
                  if args.tables_dir else default_table_path(table_dir(prof), require_arch(model), size))
    points = args.points if device != "host-tflite" else args.points_tflite
    t0 = time.perf_counter()
    summary = profile_table(prof, model, table_path, input_size=size, points=points)
    print(f"[{device} {model_name}] table {table_path}: {summary.grid_points} grid points of "
          f"{summary.full_grid_points} ({summary.new_rows} measured now, {time.perf_counter() - t0:.0f} s)",
          flush=True)
    table = LatencyTable.load(table_path)
    groups = find_groups(model, size)
    configs = configs_for(model, groups, args.configs, args.seed, size)
    print(f"[{device} {model_name}] measuring {len(configs)} models, {args.rounds} rounds", flush=True)
    measured = measure_models(prof, model, size, configs, rounds=args.rounds, seed=7)
    res = evaluate(table, measured, device, model_name)
    res.update({"table_grid_points": summary.grid_points, "table_full_grid_points": summary.full_grid_points,
                "table_new_rows": summary.new_rows, "table_build_seconds": summary.seconds,
                "table_build_cpu_seconds": summary.cpu_seconds, "table_path": str(table_path)})
    line = (f"[{device} {model_name}] median |err| {100 * res['median_abs_err']:.1f}%  within +-10% "
            f"{100 * res['within_10pct']:.0f}%  | noise floor (round-to-round) median {100 * res['noise_floor_median_abs']:.1f}%"
            f", within +-10% {100 * res['noise_within_10pct']:.0f}%  | ms-based median |err| "
            f"{100 * res['median_abs_err_ms']:.1f}%  | block-removed median |err| "
            f"{100 * res['removed_median_abs_err']:.1f}%  | raw unit sum median |err| on calib "
            f"{100 * table.calibration.get('raw_sum_median_abs_err', float('nan')):.1f}%")
    print(line, flush=True)
    log.append(line)
    return res


def evaluate(table: LatencyTable, measured: list, device: str, model_name: str) -> dict:
    """Errors of ``table`` on measured models: on drift-free ratios (the headline) and on ms."""
    from amc_mobile.latency.adapt import errors

    e = errors(table, measured)
    rows = []
    for m, er, ems in zip(measured, e["ratio"], e["ms"], strict=True):
        rows.append({"device": device, "model": model_name, "config": m.config.config_id, "macs": m.desc.macs,
                     "removed": " ".join(m.config.removed), "keep_channels": " ".join(map(str, m.config.keep)),
                     "pred_ratio": table.model_ratio(m.desc), "meas_ratio": m.ratio,
                     "pred_ms": table.predict(m.desc), "meas_ms": m.ms + m.overhead_ms, "err": er, "err_ms": ems,
                     "noise": (m.rounds[0] / m.rounds[1] - 1) if len(m.rounds) > 1 else float("nan"),
                     "meas_ratio_rounds": m.rounds})
    errs = [abs(r["err"]) for r in rows]
    noise = [abs(r["noise"]) for r in rows]
    removed = [abs(r["err"]) for r in rows if r["removed"]]
    res = {"device": device, "model": model_name, "configs": len(rows),
           "median_abs_err": median(errs), "within_10pct": sum(x <= 0.10 for x in errs) / len(errs),
           "median_abs_err_ms": median(abs(r["err_ms"]) for r in rows),
           "within_10pct_ms": sum(abs(r["err_ms"]) <= 0.10 for r in rows) / len(rows),
           "noise_floor_median_abs": median(noise), "noise_within_10pct": sum(x <= 0.10 for x in noise) / len(noise),
           "removed_median_abs_err": median(removed) if removed else float("nan"),
           "calibration": table.calibration, "ref_ms": table.ref_ms, "rows": rows}
    amc = [r for r in rows if r["config"] in AMC_V1]
    if amc:
        res["amc_configs"] = {r["config"]: {"pred_ms": r["pred_ms"], "meas_ms": r["meas_ms"], "err": r["err"]}
                              for r in amc}
    return res


def scatter(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, max(1, len(results)), figsize=(4.2 * max(1, len(results)), 4.2), squeeze=False)
    for ax, res in zip(axes[0], results, strict=False):
        xs = [r["meas_ratio"] * res["ref_ms"] for r in res["rows"]]
        ys = [r["pred_ratio"] * res["ref_ms"] for r in res["rows"]]
        kinds = ["amc" if r["config"] in AMC_V1 else "removed" if r.get("removed") else "random" for r in res["rows"]]
        for kind, style in (("random", {"s": 14}), ("removed", {"s": 26, "marker": "^", "c": "g"}),
                            ("amc", {"s": 30, "marker": "x", "c": "r"})):
            pts = [(x, y) for x, y, k in zip(xs, ys, kinds, strict=True) if k == kind]
            if pts:
                label = {"random": "random", "removed": "blocks removed", "amc": "AMC published"}[kind]
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], label=label, **style)
        lo, hi = 0.0, max(xs + ys) * 1.05
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax.plot([lo, hi], [lo * 1.1, hi * 1.1], "k:", lw=0.6)
        ax.plot([lo, hi], [lo * 0.9, hi * 0.9], "k:", lw=0.6)
        ax.set_title(f"{res['device']} {res['model']}\nmed |err| {100 * res['median_abs_err']:.1f}%, "
                     f"noise {100 * res['noise_floor_median_abs']:.1f}%", fontsize=9)
        ax.set_xlabel("measured (ms, at table ref speed)")
        ax.set_ylabel("predicted (ms)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", nargs="+", default=["host-cpu", "host-tflite"])
    ap.add_argument("--models", nargs="+", default=["mobilenet_v1", "mobilenet_v2"])
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--configs", type=int, default=30, help="random pruned configs per model")
    ap.add_argument("--rounds", type=int, default=2, help="independent measurement rounds (noise floor)")
    ap.add_argument("--points", type=int, default=5, help="grid values per channel axis (onnxruntime)")
    ap.add_argument("--points-tflite", type=int, default=3, help="grid values per axis on host-tflite")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--tables-dir", default=None, help="table folder (default: the user store, amc-bench profile's)")
    ap.add_argument("--out-dir", default=str(ROOT / "bench" / "results" / "lut_fidelity"))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)  # torch only exports and calibrates here; keep it off the timed core
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    import os

    load = os.getloadavg()
    log: list[str] = []
    results = [r for d in args.devices for m in args.models if (r := run_one(d, m, args, log))]
    meta = {"command": "python " + " ".join(sys.argv), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "loadavg_start": load, "loadavg_end": os.getloadavg(), "cpus": os.cpu_count(),
            "seconds": time.perf_counter() - t0}
    tag = "_".join(args.devices) + "__" + "_".join(args.models)
    (out / f"lut_fidelity_{tag}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    import pandas as pd

    pd.DataFrame([r for res in results for r in res["rows"]]).to_csv(out / f"lut_fidelity_{tag}.csv", index=False)
    if results:
        scatter(results, out / f"lut_fidelity_{tag}.png")
    print(f"done in {meta['seconds'] / 60:.1f} min; load average {load[0]:.1f} -> {meta['loadavg_end'][0]:.1f} "
          f"on {meta['cpus']} cores; wrote {out}/lut_fidelity_{tag}.{{json,csv,png}}")
    for line in log:
        print(line)


if __name__ == "__main__":
    main()

"""Latency-table fidelity: predicted vs measured whole-model latency on random pruned configs.

For each device x model: build (or resume) the per-unit table, then measure 30 random pruned
configurations (seed differs from the table's calibration configs) plus AMC's published MobileNet-V1
configs, all interleaved with the reference workload, in two independent rounds. Reports, side by
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
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from amc_mobile.latency.lut import LatencyTable, default_table_path, profile_table  # noqa: E402
from amc_mobile.latency.profiles import load_profile, table_dir  # noqa: E402
from amc_mobile.latency.protocol import Protocol, ProtocolSettings  # noqa: E402
from amc_mobile.models import create_model, describe_model  # noqa: E402
from amc_mobile.models.bn import calibrate_bn  # noqa: E402
from amc_mobile.pruning import ChannelPruner, find_groups, pruned_description, round_channels  # noqa: E402

# AMC_NOTES.md: conv1 + 13 pointwise output channels (= the 14 prunable groups of mobilenet_v1).
AMC_V1 = {
    "v1-1.0": [32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024],
    "v1-0.75-uniform": [24, 48, 96, 96, 192, 192, 384, 384, 384, 384, 384, 384, 768, 768],
    "amc-50%-flops": [24, 48, 96, 80, 192, 200, 328, 352, 368, 360, 328, 400, 736, 752],
    "amc-50%-time": [16, 48, 88, 80, 192, 168, 336, 360, 360, 352, 352, 368, 768, 680],
}


def configs_for(model_name: str, groups: list, n: int, seed: int) -> list[tuple[str, list[int]]]:
    rng = random.Random(seed)
    out = [(f"random-{i}", [round_channels(g.width, rng.uniform(0.2, 1.0)) for g in groups]) for i in range(n)]
    if model_name == "mobilenet_v1":
        out += list(AMC_V1.items())
    return out


def run_one(device: str, model_name: str, args: argparse.Namespace, log: list[str]) -> dict:
    prof = load_profile(device)
    reason = prof.availability()
    if reason:
        print(f"skip {device}: {reason}")
        return {}
    model = create_model(model_name, input_size=args.resolution)
    size = args.resolution
    table_path = (Path(args.tables_dir) / device / default_table_path(Path("."), model.arch_kwargs, size).name
                  if args.tables_dir else default_table_path(table_dir(prof), model.arch_kwargs, size))
    points = args.points if device != "host-tflite" else args.points_tflite
    t0 = time.perf_counter()
    summary = profile_table(prof, model, table_path, input_size=size, points=points)
    print(f"[{device} {model_name}] table {table_path}: {summary['grid_points']} grid points of "
          f"{summary['full_grid_points']} ({summary['new_rows']} measured now, {time.perf_counter() - t0:.0f} s)",
          flush=True)
    table = LatencyTable.load(table_path)
    desc = describe_model(model, size)
    groups = find_groups(model, size)
    pruner = ChannelPruner(model, size, reconstruct=False)
    configs = configs_for(model_name, groups, args.configs, args.seed)
    backend = prof.create_backend()
    work = Path(getattr(args, "work_dir", None) or Path(tempfile.gettempdir()) / "amc-lut-fidelity") / device
    arts, preds = [], []
    for cid, keep in configs:
        pdesc = pruned_description(desc, groups, keep)
        preds.append((table.predict_ratio(pdesc), table.predict(pdesc), pdesc.macs))
        net = calibrate_bn(pruner.prune(keep), (2, 3, size, size))
        arts.append(backend.prepare(net, (prof.batch_size, 3, size, size), work / f"{model_name}-{cid}"))
    print(f"[{device} {model_name}] {len(arts)} models exported; measuring {args.rounds} rounds", flush=True)
    proto = Protocol(backend, ProtocolSettings.from_profile(prof, seed=7), work)
    rounds = [proto.measure_many(arts) for _ in range(args.rounds)]
    backend.close()
    rows = []
    for i, (cid, keep) in enumerate(configs):
        ratios = [r[i].ratio for r in rounds]
        ms = [r[i].median_ms for r in rounds]
        meas_ratio, meas_ms = median(ratios), median(ms)
        pr, pms, macs = preds[i]
        rows.append({"device": device, "model": model_name, "config": cid, "macs": macs,
                     "keep_channels": " ".join(map(str, keep)), "pred_ratio": pr, "meas_ratio": meas_ratio,
                     "pred_ms": pms, "meas_ms": meas_ms, "err": pr / meas_ratio - 1, "err_ms": pms / meas_ms - 1,
                     "noise": (ratios[0] / ratios[1] - 1) if len(ratios) > 1 else float("nan"),
                     "meas_ratio_rounds": ratios, "meas_ms_rounds": ms})
    errs = [abs(r["err"]) for r in rows]
    noise = [abs(r["noise"]) for r in rows]
    res = {"device": device, "model": model_name, "configs": len(rows),
           "median_abs_err": median(errs), "within_10pct": sum(e <= 0.10 for e in errs) / len(errs),
           "median_abs_err_ms": median(abs(r["err_ms"]) for r in rows),
           "noise_floor_median_abs": median(noise), "noise_within_10pct": sum(x <= 0.10 for x in noise) / len(noise),
           "table_grid_points": summary["grid_points"], "table_full_grid_points": summary["full_grid_points"],
           "table_new_rows": summary["new_rows"], "table_build_seconds": summary["seconds"],
           "table_build_cpu_seconds": summary.get("cpu_seconds"), "table_path": str(table_path),
           "calibration": table.calibration, "ref_ms": table.ref_ms, "rows": rows}
    amc = [r for r in rows if not r["config"].startswith("random")]
    if amc:
        res["amc_configs"] = {r["config"]: {"pred_ms": r["pred_ms"], "meas_ms": r["meas_ms"], "err": r["err"]}
                              for r in amc}
    line = (f"[{device} {model_name}] median |err| {100 * res['median_abs_err']:.1f}%  within +-10% "
            f"{100 * res['within_10pct']:.0f}%  | noise floor (round-to-round) median {100 * res['noise_floor_median_abs']:.1f}%"
            f", within +-10% {100 * res['noise_within_10pct']:.0f}%  | ms-based median |err| "
            f"{100 * res['median_abs_err_ms']:.1f}%  | raw unit sum median |err| on calib "
            f"{100 * table.calibration.get('raw_sum_median_abs_err', float('nan')):.1f}%")
    print(line, flush=True)
    log.append(line)
    return res


def scatter(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, max(1, len(results)), figsize=(4.2 * max(1, len(results)), 4.2), squeeze=False)
    for ax, res in zip(axes[0], results, strict=False):
        xs = [r["meas_ratio"] * res["ref_ms"] for r in res["rows"]]
        ys = [r["pred_ratio"] * res["ref_ms"] for r in res["rows"]]
        amc = [not r["config"].startswith("random") for r in res["rows"]]
        ax.scatter([x for x, a in zip(xs, amc, strict=True) if not a], [y for y, a in zip(ys, amc, strict=True) if not a],
                   s=14, label="random")
        if any(amc):
            ax.scatter([x for x, a in zip(xs, amc, strict=True) if a], [y for y, a in zip(ys, amc, strict=True) if a],
                       s=30, marker="x", c="r", label="AMC published")
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
    ap.add_argument("--tables-dir", default=None, help="table folder (default device_profiles/<device>/)")
    ap.add_argument("--out-dir", default=str(ROOT / "bench" / "results" / "lut_fidelity"))
    ap.add_argument("--work-dir", default=None, help="exported models (default: $TMPDIR/amc-lut-fidelity)")
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

"""Profiling cost: build the full MobileNet-V2 (224 px) table on host-cpu from scratch, then check its
fidelity on random pruned configs (same method as bench/lut_fidelity.py).

Reports wall-clock minutes, CPU minutes of this process, rows measured vs the full grid of every
multiple of 8 (interpolation is what makes the difference), and median |error| / share within +-10%.

    python bench/lut_cost.py --configs 10 --seed 2027    # table ~3-4 min + fidelity on a quiet 2-core machine
    python bench/lut_cost.py --points 4 --configs 10

Target (issue 11): the full V2 224 px host-cpu table in <= 5 min on a quiet 2-core machine. Set
AMC_ARTIFACT_CACHE to an empty folder to include the ONNX exports in the cost.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import lut_fidelity  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="host-cpu")
    ap.add_argument("--model", default="mobilenet_v2")
    ap.add_argument("--points", type=int, default=5)
    ap.add_argument("--configs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=2027, help="seed of the random evaluation configs")
    ap.add_argument("--tables-dir", default=None, help="keep the new table here (default: a temp dir)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "lut_cost.json"))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="lut-cost-") as tmp:
        tables = args.tables_dir or tmp
        if args.tables_dir and any(Path(tables).glob(f"{args.device}/{args.model}_*.csv")):
            sys.exit(f"{tables} already holds a {args.model} table: the cost must be measured from scratch")
        ns = argparse.Namespace(resolution=224, configs=args.configs, rounds=2, points=args.points,
                                points_tflite=args.points, seed=args.seed, tables_dir=tables, out_dir=tmp)
        load0, cpu0, t0 = os.getloadavg(), time.process_time(), time.perf_counter()
        res = lut_fidelity.run_one(args.device, args.model, ns, [])
        wall = time.perf_counter() - t0
    out = {"command": "python " + " ".join(sys.argv), "device": args.device, "model": args.model,
           "table_build_minutes": res["table_build_seconds"] / 60,
           "table_build_cpu_minutes": (res.get("table_build_cpu_seconds") or 0) / 60, "table_rows": res["table_grid_points"],
           "full_grid_points": res["table_full_grid_points"],
           "share_of_full_grid": res["table_grid_points"] / res["table_full_grid_points"],
           "median_abs_err": res["median_abs_err"], "within_10pct": res["within_10pct"],
           "noise_floor_median_abs": res["noise_floor_median_abs"], "calibration": res["calibration"],
           "total_wall_minutes": wall / 60, "process_cpu_minutes": (time.process_time() - cpu0) / 60,
           "loadavg_start": load0, "loadavg_end": os.getloadavg(), "cpus": os.cpu_count()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({**out, "result": res}, indent=1))
    lut_fidelity.scatter([res], Path(args.out).with_suffix(".png"))
    print(f"{args.model} table on {args.device}: {out['table_build_minutes']:.1f} min wall ({out['table_build_cpu_minutes']:.1f} min CPU) for {out['table_rows']} rows "
          f"= {100 * out['share_of_full_grid']:.2f}% of the full grid ({out['full_grid_points']} points); "
          f"fidelity on {args.configs} random configs: median |err| {100 * out['median_abs_err']:.1f}%, "
          f"{100 * out['within_10pct']:.0f}% within +-10% (noise floor {100 * out['noise_floor_median_abs']:.1f}%); "
          f"load average {load0[0]:.1f} on {out['cpus']} cores")


if __name__ == "__main__":
    main()

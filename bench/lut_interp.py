"""Where does a per-unit table's error come from: the grid's interpolation or measuring units in isolation?

For ``--configs`` random pruned configs of one model, in one run on this machine:
  1. measure each whole model (two rounds, interleaved with the reference: the noise floor);
  2. measure every unit of every config at its EXACT (cin, cout) in isolation, as the table's grid
     points are measured (same protocol, same reference);
  3. predict each model's ratio from (a) the table's interpolated unit ratios and (b) the exact unit
     ratios, each with the whole-model correction ``a * S + beta * B + delta`` fitted on the other
     configs (leave-one-out), so both get the same calibration freedom.
If (b) is much better than (a), a denser grid would pay off; if (b) is as bad as (a), the isolation
itself (what a unit costs inside a model vs alone) limits the table, and more grid points would not help.

    python bench/lut_interp.py --device host-cpu --model mobilenet_v2 --table TABLE.csv --configs 12
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import lut_fidelity  # noqa: E402

from amc_mobile.latency.adapt import measure_models  # noqa: E402
from amc_mobile.latency.profiles import load_profile  # noqa: E402
from amc_mobile.latency.profiling import unit_artifacts  # noqa: E402
from amc_mobile.latency.protocol import Protocol, ProtocolSettings  # noqa: E402
from amc_mobile.latency.table import LatencyTable, fit_coefficients, slot_kind  # noqa: E402
from amc_mobile.models import create_model  # noqa: E402
from amc_mobile.pruning import find_groups  # noqa: E402
from amc_mobile.storage import user_cache_dir  # noqa: E402


def loo_errors(feats: list[tuple[dict[str, float], float]], target: list[float], offset: float) -> list[float]:
    """Leave-one-out relative errors of the shared-coefficient correction (offset: overhead / ref)."""
    out = []
    for i in range(len(target)):
        coef = fit_coefficients(feats[:i] + feats[i + 1:], target[:i] + target[i + 1:])
        if coef is None:
            raise SystemExit("too few configs to fit the correction (use --configs >= 6)")
        s, b = feats[i]
        out.append((coef.apply(s, b) + offset) / (target[i] + offset) - 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="host-cpu")
    ap.add_argument("--model", default="mobilenet_v2")
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--table", required=True, help="a table of this model built on this machine")
    ap.add_argument("--configs", type=int, default=12)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--out", default="bench/results/lut_interp")
    args = ap.parse_args()

    prof = load_profile(args.device)
    model = create_model(args.model, input_size=args.resolution)
    size = args.resolution
    table = LatencyTable.load(args.table)
    # the random pruned configs of the fidelity benchmarks (they come first, before removed/AMC ones)
    configs = lut_fidelity.configs_for(model, find_groups(model, size), args.configs, args.seed, size)[:args.configs]
    t0 = time.perf_counter()
    measured = measure_models(prof, model, size, configs, rounds=2, seed=7)
    print(f"measured {len(measured)} whole models in {time.perf_counter() - t0:.0f} s", flush=True)

    # every distinct unit (slot, cin, cout) of these configs, measured in isolation at its exact size
    per_model = [[(u.slot, u.cin, u.cout) for u in table.units(m.desc)] for m in measured]
    distinct = sorted({u for units in per_model for u in units})
    backend = prof.create_backend()
    work = Path(tempfile.mkdtemp(prefix="lut_interp.", dir=user_cache_dir()))
    t1 = time.perf_counter()
    exact: dict[tuple[str, int, int], float] = {}
    try:
        proto = Protocol(backend, ProtocolSettings.from_profile(prof, seed=7), work)
        for k in range(0, len(distinct), 6):
            batch = distinct[k:k + 6]
            arts = unit_artifacts(backend, batch, prof.batch_size, work)
            for u, r in zip(batch, proto.measure_many(arts), strict=True):
                exact[u] = r.ratio
            print(f"  units {min(k + 6, len(distinct))}/{len(distinct)}", flush=True)
    finally:
        backend.close()
        shutil.rmtree(work, ignore_errors=True)
    t_units = time.perf_counter() - t1

    def table_features(units: list[tuple[str, int, int]]) -> tuple[dict[str, float], float]:
        """The table's features of a model: per-kind sums of interpolated unit ratios, boundary activations."""
        return table.features([u[0] for u in units], [u[1] for u in units], [u[2] for u in units])

    def exact_features(units: list[tuple[str, int, int]]) -> tuple[dict[str, float], float]:
        """The same with each unit's interpolated ratio replaced by its exact measurement."""
        _, b_sum = table_features(units)
        by_kind: dict[str, float] = {}
        for u in units:
            by_kind[slot_kind(u[0])] = by_kind.get(slot_kind(u[0]), 0.0) + exact[u]
        return by_kind, b_sum

    offset = table.overhead_ms / table.ref_ms
    target = [m.ratio - offset for m in measured]
    f_interp = [table_features(u) for u in per_model]
    f_exact = [exact_features(u) for u in per_model]
    e_interp = loo_errors(f_interp, target, offset)
    e_exact = loo_errors(f_exact, target, offset)
    e_table = [table.predict_ratio(m.desc) / m.ratio - 1 for m in measured]
    noise = [m.rounds[0] / m.rounds[1] - 1 for m in measured]
    interp = {u: table._interp(*u) for u in distinct}
    unit_err = [interp[u] / exact[u] - 1 for u in distinct]

    def summ(e: list[float]) -> dict[str, float]:
        return {"median_abs": median(abs(x) for x in e), "within_10pct": sum(abs(x) <= 0.10 for x in e) / len(e)}

    res = {"device": args.device, "model": args.model, "table": args.table, "configs": len(measured),
           "distinct_units": len(distinct), "unit_seconds": t_units,
           "table_as_is": summ(e_table), "interpolated_loo": summ(e_interp), "exact_units_loo": summ(e_exact),
           "noise_floor": summ(noise), "unit_interp_vs_exact": summ(unit_err),
           "units": [{"slot": u[0], "cin": u[1], "cout": u[2], "exact": exact[u], "interpolated": interp[u]}
                     for u in distinct],
           "rows": [{"config": m.config.config_id, "keep": list(m.config.keep), "meas_ratio": m.ratio,
                     "err_table": a, "err_interp_loo": b, "err_exact_loo": c, "noise": n}
                    for m, a, b, c, n in zip(measured, e_table, e_interp, e_exact, noise, strict=True)],
           "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    for key in ("table_as_is", "interpolated_loo", "exact_units_loo", "noise_floor", "unit_interp_vs_exact"):
        print(f"{key:22s} median |err| {100 * res[key]['median_abs']:.1f}%  "
              f"within +-10% {100 * res[key]['within_10pct']:.0f}%")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"lut_interp_{args.device}_{args.model}.json"
    path.write_text(json.dumps(res, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""Adaptation estimators compared offline, on held-out models already measured by ``bench/lut_adapt.py``.

A carried table is adapted from <= 10 whole-model measurements. Which refit of its correction
generalises best cannot be settled by one run on a noisy machine (run-to-run noise is 1-6%), but the
``bench/lut_adapt.py`` result files hold 13-37 measured models per run on several machines, each with
its kept channels. This script rebuilds those models' descriptions, repeatedly splits each run's models
into 10 "fit" models and the rest, adapts the shipped table on the fit models with each estimator, and
scores it on the rest (median |error| on drift-free ratios, share within +-10%), averaged over many
random splits. No measurement is taken: the numbers are deterministic for a given seed.

    python bench/lut_adapt_offline.py bench/results/lut_adapt/avx512_vnni/run1.json ... [--splits 200]

Only results whose carried table is the shipped one of this checkout are used (the table file must
not have changed since the run: pass ``--since`` with the table's last change, ISO date).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from statistics import mean, median, pstdev

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from amc_mobile.latency.adapt import (  # noqa: E402
    ESTIMATORS,
    Measured,
    _candidates,
    choose_refit,
    errors,
    summarize,
)
from amc_mobile.latency.profiling import ModelConfig, build_config_model  # noqa: E402
from amc_mobile.latency.table import Coefficients, LatencyTable, default_table_path  # noqa: E402
from amc_mobile.models import create_model  # noqa: E402
from amc_mobile.models.arch import require_arch  # noqa: E402
from amc_mobile.models.describe import describe_model  # noqa: E402
from amc_mobile.pruning import ChannelPruner  # noqa: E402

SHIPPED = ROOT / "device_profiles"


def measured_rows(result: dict, table: LatencyTable) -> list[Measured]:
    """The run's held-out models as :class:`Measured` (descriptions rebuilt from their kept channels)."""
    size = int(table.meta["model"]["input_size"])
    model = create_model(result["model"], input_size=size)
    pruner = ChannelPruner(model, size, reconstruct=False)
    out = []
    for r in result["before"]["rows"]:
        cfg = ModelConfig(r["config"], tuple(int(x) for x in r["keep_channels"].split()), tuple(r["removed"].split()))
        desc = describe_model(build_config_model(model, size, cfg, pruner), size)
        out.append(Measured(cfg, desc, float(r["meas_ratio"]), float(r["meas_ms"]), 1.0, 0.0,
                            list(r.get("meas_ratio_rounds", []))))
    return out


def score(table: LatencyTable, coef: Coefficients, rows: Sequence[Measured]) -> tuple[float, float]:
    """(median |error|, share within +-10%) of the table with ``coef`` on the rows' ratios."""
    res = summarize(errors(table, rows, coef)["ratio"])
    return res["median_abs_error"], res["within_10pct"]


def methods(table: LatencyTable) -> dict[str, Callable[[Sequence[Measured], Sequence[Measured]], Coefficients]]:
    """Each estimator as a function of the fit models (and the ``seen`` validation models, for the guard):
    the table as shipped, every single estimator, the earlier default (the estimator with the lowest
    leave-one-out error on the fit models), and with ``--seen`` what ``adapt_table`` does: ``refit``,
    unless the table as it is predicts the seen models better (then it is kept)."""
    out: dict[str, Callable[[Sequence[Measured], Sequence[Measured]], Coefficients]] = {
        "keep": lambda fit, seen: table.coef}
    for name in ESTIMATORS:
        def one(fit: Sequence[Measured], seen: Sequence[Measured], name: str = name) -> Coefficients:
            return _candidates(table, fit)[name](list(range(len(fit)))) or table.coef
        out[name] = one
    out["lowest LOO"] = lambda fit, seen: choose_refit(table, fit, prefer=None)[1]

    def guarded(fit: Sequence[Measured], seen: Sequence[Measured]) -> Coefficients:
        refit = choose_refit(table, fit)[1]
        return table.coef if score(table, table.coef, seen)[0] < score(table, refit, seen)[0] else refit
    out["refit unless keep fits the seen better"] = guarded
    return out


def _cells(by_method: dict[str, dict[str, float]]) -> str:
    return "  ".join(f"{k} {100 * v['median_abs_error']:.1f}%/{100 * v['within_10pct']:.0f}%"
                     for k, v in by_method.items())


def _summary(vals: Sequence[tuple[float, float]]) -> dict[str, float]:
    return {"median_abs_error": mean(v[0] for v in vals), "median_abs_error_std": pstdev([v[0] for v in vals]),
            "within_10pct": mean(v[1] for v in vals)}


def run(files: Sequence[str], splits: int, n_fit: int, seed: int, since: str | None,
        across_only: bool = False, n_seen: int = 0) -> dict:
    """Same session: fit and test models from one run. Across sessions: runs that measured the same
    models (same command and seed, minutes apart) fit on one run's models and test on the other
    models as another run measured them, as a table adapted now is used later."""
    report: dict = {"splits": splits, "n_fit": n_fit, "n_seen": n_seen, "seed": seed, "same_session": [], "across_sessions": []}
    loaded: list[tuple[str, dict, LatencyTable, list[Measured]]] = []
    for f in files:
        data = json.loads(Path(f).read_text())
        date = data.get("meta", {}).get("date")
        if since and date and datetime.fromisoformat(date) < datetime.fromisoformat(since):
            print(f"{f}: run of {date} predates the shipped table ({since}); skipped", flush=True)
            continue
        for result in data["results"]:
            model = create_model(result["model"], input_size=224)
            table = LatencyTable.load(default_table_path(SHIPPED / result["device"], require_arch(model), 224))
            rows = measured_rows(result, table)
            if len(rows) >= n_fit + n_seen + 3:
                loaded.append((f"{Path(f).parent.name}/{Path(f).stem}", result, table, rows))
    pairs = [] if across_only else [(a, a) for a in range(len(loaded))]
    # across sessions: the same models measured on the same machine (same fingerprint differences)
    pairs += [(a, b) for a in range(len(loaded)) for b in range(len(loaded)) if a != b
              and loaded[a][1].get("fingerprint_differences") == loaded[b][1].get("fingerprint_differences")
              and [m.config.keep + m.config.removed for m in loaded[a][3]]
              == [m.config.keep + m.config.removed for m in loaded[b][3]]]
    for a, b in pairs:
        name_a, result, table, fit_rows = loaded[a]
        test_rows = loaded[b][3]
        rng = random.Random(seed)
        ms = methods(table)
        per: dict[str, list[tuple[float, float]]] = {k: [] for k in ms}
        for _ in range(splits):
            idx = list(range(len(fit_rows)))
            rng.shuffle(idx)
            fit = [fit_rows[i] for i in idx[:n_fit]]
            seen = [fit_rows[i] for i in idx[n_fit:n_fit + n_seen]]  # measured with the fit models
            test = [test_rows[i] for i in idx[n_fit + n_seen:]]
            for name, fn in ms.items():
                per[name].append(score(table, fn(fit, seen), test))
        if a == b:
            noise = [abs(m.rounds[0] / m.rounds[1] - 1) for m in fit_rows if len(m.rounds) > 1]
        else:
            noise = [abs(m.ratio / t.ratio - 1) for m, t in zip(fit_rows, test_rows, strict=True)]
        entry = {"fit_run": name_a, "test_run": loaded[b][0], "device": result["device"], "model": result["model"],
                 "models": len(fit_rows), "noise_floor": median(noise) if noise else None,
                 "methods": {k: _summary(v) for k, v in per.items()}}
        report["same_session" if a == b else "across_sessions"].append(entry)
        cells = _cells(entry["methods"])
        where = name_a if a == b else f"fit {name_a} -> test {loaded[b][0]}"
        print(f"{where} {result['device']} {result['model']} ({len(fit_rows)} models, noise "
              f"{100 * (entry['noise_floor'] or 0):.1f}%): {cells}", flush=True)
    for kind in ("same_session", "across_sessions"):
        for model in sorted({e["model"] for e in report[kind]}):
            es = [e for e in report[kind] if e["model"] == model]
            avg = {k: {"median_abs_error": mean(e["methods"][k]["median_abs_error"] for e in es),
                       "within_10pct": mean(e["methods"][k]["within_10pct"] for e in es)} for k in es[0]["methods"]}
            report.setdefault("averages", {}).setdefault(kind, {})[model] = avg
            cells = _cells(avg)
            print(f"average over {len(es)} ({kind.replace('_', ' ')}) {model}: {cells}", flush=True)
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", help="bench/lut_adapt.py result JSON files")
    ap.add_argument("--splits", type=int, default=200)
    ap.add_argument("--fit", type=int, default=10, help="fit models per split (the adaptation's budget)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--since", default=None, help="skip runs before this ISO date (the shipped table's last change)")
    ap.add_argument("--seen", type=int, default=0,
                    help="validation models per split (measured with the fit models, never tested on): the "
                         "guard that keeps the table when it predicts them better than the refit")
    ap.add_argument("--across-only", action="store_true", help="only fit on one run, test on another")
    ap.add_argument("--out", default=None, help="write the report JSON here")
    args = ap.parse_args()
    report = run(args.files, args.splits, args.fit, args.seed, args.since, args.across_only, args.seen)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

"""Search quality over teachers, latency budgets and seeds: uniform vs greedy vs FLOPs-AMC vs latency-AMC (vs ddc+amc).

    python bench/search_quality.py --teachers zoo:mobilenet_v1-fmnist,zoo:mobilenet_v2-fmnist \
        --budgets 50,40,30 --seeds 3 --episodes 400 --device host-cpu --out runs/bench_search_quality

For every (teacher, budget, seed):
1. uniform: the widest single keep ratio meeting the latency budget (predicted by the device's table);
2. greedy: NetAdapt-style, shrink the group losing the least accuracy per ms saved (``--method greedy``);
3. latency-AMC: the DDPG search under the latency budget;
4. FLOPs-AMC: the same agent under a MACs budget equal to latency-AMC's result (so the two are at equal
   MACs and only latency-awareness differs);
With ``--correct-budget-at F`` uniform and latency-AMC run closed-loop (after a share F of the episodes
the best candidates are measured and the table-scale budget corrected, amc_mobile.search.correction);
``uniform-open`` and ``latency-AMC-open`` (only when named in ``--methods``) are the same searches
open-loop, for the ablation.
5. ddc+amc (only when named in ``--methods``): DDC's Bi-LSTM agent removes whole blocks
   (``--ddc-episodes`` iterations), then the same AMC channel search (latency-AMC's settings) meets the
   budget on what is left; its row is the channel stage's final model (DDC's student when the removal alone
   met the budget; its "BN re-est." column is then DDC's score after its short KD pass).
Every candidate is scored with BN re-estimation and picked on a second held-out slice (the search
defaults); each final model gets the SAME knowledge-distillation fine-tune (``--finetune-epochs`` over
``--finetune-images`` training images) and is scored on the TEST split; the teacher and the four
models are then measured on the device in ONE interleaved run. Each finished (teacher, budget, seed)
appends its four rows to ``rows.jsonl`` (atomic line appends under a lock); a rerun skips finished
rows, and unfinished searches / fine-tunes resume from their own directories. Writes
``results.json``, ``results.csv``, ``accuracy_vs_latency.png`` and prints a mean +- std table in
Markdown (ready for bench/README). Timings of every step are printed as it runs.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

METHODS = ("uniform", "greedy", "FLOPs-AMC", "latency-AMC", "ddc+amc", "uniform-open", "latency-AMC-open")
DEFAULT_METHODS = METHODS[:4]
# where each method's final model (pruned.pt) and summary.json are; ddc+amc: its channel stage's
DIRS = {"uniform": "uniform", "greedy": "greedy", "FLOPs-AMC": "flops_amc", "latency-AMC": "latency_amc",
        "ddc+amc": "ddc_amc/amc", "uniform-open": "uniform_open", "latency-AMC-open": "latency_amc_open"}
OPEN_LOOP = {"uniform-open": "uniform", "latency-AMC-open": "amc"}  # ablations: --correct-budget-at 0


def _log(msg: str) -> None:
    print(msg, flush=True)


def _search(d: Path, inputs: Any, cfg: Any, tag: str) -> Any:
    """The finished search in ``d`` (run or resumed here); its summary as a plain dict."""
    from amc_mobile.search.runner import run_search

    if (d / "summary.json").exists():
        return json.loads((d / "summary.json").read_text())
    t0 = time.perf_counter()
    run_search(inputs, cfg, d, resume=(d / "search_state.pt").exists(), progress=False,
               log=lambda m: _log(f"  [{tag}] {m}"), command=f"bench/search_quality.py ({tag})")
    _log(f"  [{tag}] search finished in {time.perf_counter() - t0:.0f} s")
    return json.loads((d / "summary.json").read_text())


def _ddc_amc(d: Path, teacher_spec: str, lat: str, common: dict[str, Any], amc_cfg: Any, args: argparse.Namespace,
             seed: int, tag: str) -> dict[str, Any]:
    """DDC's block removal, then the channel stage with ``amc_cfg``: the channel stage's summary (or, when the
    removal alone met the budget, one built from DDC's), its search wall time counting both stages."""
    from amc_mobile.search.ddc import DDCConfig, DDCInputs, run_ddc_search

    t0 = time.perf_counter()
    cfg = DDCConfig(episodes=args.ddc_episodes, seed=seed, val_size=args.val_size, measure=False)
    s = run_ddc_search(DDCInputs(teacher_spec, device=common["device"], latency_table=common["latency_table"],
                                 latency_budget=lat, method="ddc+amc"), cfg, d, log=lambda m: _log(f"  [{tag}] {m}"),
                       amc_config=amc_cfg, resume=(d / "ddc_state.pt").exists())
    amc = s.get("amc") or {}
    if amc.get("skipped", True):  # the removal alone met the budget: DDC's student is the final model
        st = s["student"]
        summary = {"final": {**{k: st[k] for k in ("macs", "params", "predicted_latency_ms", "val_top1")},
                             "val_top1_teacher_bn": None, "select_top1": None},
                   "teacher": s["teacher"], "search_wall_s": float(s["search_wall_s"]), "setup_s": s.get("setup_s", 0.0),
                   "episodes": s["iterations"], "measured_vs_budget": None, "checkpoint": str(d / "student.pt"),
                   "notes": [f"removed {', '.join(st['removed'])}; block removal alone met the budget"]}
    else:
        summary = dict(json.loads((d / "amc" / "summary.json").read_text()))
        summary["search_wall_s"] = float(s["search_wall_s"]) + float(summary["search_wall_s"])
        summary["notes"] = [f"removed {', '.join(s['student']['removed']) or 'nothing'}", *(summary.get("notes") or [])]
    _log(f"  [{tag}] ddc+amc finished in {time.perf_counter() - t0:.0f} s ({summary['notes'][0]})")
    return summary


def _finetune(d: Path, teacher_spec: str, epochs: int, images: int, seed: int, tag: str,
              checkpoint: str | None = None) -> dict[str, Any]:
    """The common KD fine-tune of the final model (``d/pruned.pt`` or ``checkpoint``) into ``d/finetune``."""
    from amc_mobile.data import teacher_data
    from amc_mobile.distill import FinetuneConfig, finetune
    from amc_mobile.models.checkpoint import load_checkpoint

    ft = d / "finetune"
    if (ft / "metrics.json").exists() and (ft / "final.pt").exists():
        return dict(json.loads((ft / "metrics.json").read_text()))
    t0 = time.perf_counter()
    student, meta = load_checkpoint(checkpoint or d / "pruned.pt")
    teacher, tmeta = load_checkpoint(teacher_spec)
    cfg = FinetuneConfig(epochs=epochs, seed=seed, max_train_images=images)
    out = finetune(student, teacher, teacher_data(tmeta, "train"), teacher_data(tmeta, "val"), ft, cfg,
                   test_data=teacher_data(tmeta, "test"), resume=(ft / "last.pt").exists(), progress=False,
                   log=lambda m: None)
    _log(f"  [{tag}] KD fine-tune in {time.perf_counter() - t0:.0f} s: test top-1 "
         f"{(out.get('test') or {}).get('top1', float('nan')):.2f}%")
    return dict(out)


_TABLES: dict[tuple[str, str], str] = {}


def _table_for(device: str, teacher_spec: str) -> str:
    """The latency table every method of this teacher uses: the store's table, validated (and adapted,
    or re-profiled where adaptation misses the tolerance: what `make quickstart`'s `amc-bench profile`
    does) on the device ONCE per benchmark run, so all methods and seeds see the same budget."""
    from amc_mobile.latency.store import open_table_for
    from amc_mobile.models.checkpoint import load_checkpoint

    key = (device, teacher_spec)
    if key not in _TABLES:
        teacher, _ = load_checkpoint(teacher_spec)
        table, _ = open_table_for(device, teacher, None, teacher_spec, validate=True, adapt=True, build=True,
                                  log=lambda m: _log(f"  [table] {m}"))
        _TABLES[key] = str(table.path)
    return _TABLES[key]


def _done_keys(rows_path: Path) -> set[tuple[str, str, int, str]]:
    if not rows_path.exists():
        return set()
    keys = set()
    for line in rows_path.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill: that group is simply redone
            continue
        keys.add((r["teacher"], r["budget"], int(r["seed"]), r["method"]))
    return keys


def run_group(args: argparse.Namespace, teacher_spec: str, budget: str, seed: int, out: Path) -> list[dict[str, Any]]:
    """Search, fine-tune and measure the methods (``--methods``, default all four) of one (teacher, budget, seed)."""
    from amc_mobile.latency.measure import measure_on_device
    from amc_mobile.models.arch import require_arch
    from amc_mobile.models.checkpoint import load_checkpoint
    from amc_mobile.search.config import SearchConfig, SearchInputs

    t_group = time.perf_counter()
    name = teacher_spec.replace("zoo:", "").replace("/", "_")
    g = out / name / f"budget{budget}" / f"seed{seed}"
    lat = f"{budget}%"

    def cfg(amc: bool = False, open_loop: bool = False) -> SearchConfig:
        # the search defaults a user gets, incl. the end-of-search measurement: every method's final
        # model must measure within 1.05x its latency budget (else the next candidate is taken)
        extra = {"correct_budget_at": 0.0 if open_loop else args.correct_budget_at}
        return SearchConfig(episodes=args.episodes, seed=seed, measure=not args.no_search_measure,
                            val_size=args.val_size, bn_images=args.bn_images,
                            finetune_top_k=args.finetune_top_k if amc else 0, **extra)

    common = {"device": args.device, "latency_table": args.latency_table or _table_for(args.device, teacher_spec)}
    methods = args.methods
    summaries: dict[str, Any] = {}
    for m in ("uniform", "greedy"):
        if m in methods:
            summaries[m] = _search(g / DIRS[m], SearchInputs(teacher_spec, latency_budget=lat, method=m, **common),
                                   cfg(), f"{name} {lat} s{seed} {m}")
    summaries["latency-AMC"] = _search(g / DIRS["latency-AMC"], SearchInputs(teacher_spec, latency_budget=lat, **common),
                                       cfg(amc=True), f"{name} {lat} s{seed} latency-AMC")
    for m, method in OPEN_LOOP.items():
        if m in methods:
            summaries[m] = _search(g / DIRS[m], SearchInputs(teacher_spec, latency_budget=lat, method=method, **common),
                                   cfg(amc=method == "amc", open_loop=True), f"{name} {lat} s{seed} {m}")
    if "ddc+amc" in methods:
        summaries["ddc+amc"] = _ddc_amc((g / DIRS["ddc+amc"]).parent, teacher_spec, lat, common, cfg(amc=True), args, seed,
                                        f"{name} {lat} s{seed} ddc+amc")
    if "FLOPs-AMC" in methods:
        macs = summaries["latency-AMC"]["final"]["macs"]
        summaries["FLOPs-AMC"] = _search(g / DIRS["FLOPs-AMC"], SearchInputs(teacher_spec, flops_budget=str(macs),
                                                                             **common),
                                         cfg(amc=True), f"{name} {lat} s{seed} FLOPs-AMC")
    ft = {m: _finetune(g / DIRS[m], teacher_spec, args.finetune_epochs, args.finetune_images, seed,
                       f"{name} {lat} s{seed} {m}", summaries[m].get("checkpoint")) for m in methods}
    t0 = time.perf_counter()
    teacher, _ = load_checkpoint(teacher_spec)
    models = {"teacher": teacher, **{m: load_checkpoint(g / DIRS[m] / "finetune" / "final.pt")[0] for m in methods}}
    measured = measure_on_device(args.device, models, require_arch(teacher).input_shape, g / ".measure")
    _log(f"  [{name} {lat} s{seed}] teacher + {len(methods)} models measured interleaved in "
         f"{time.perf_counter() - t0:.0f} s")
    budget_ms = next(b["value"] for b in summaries["latency-AMC"]["budgets"] if b["kind"] == "latency")
    pred_teacher = summaries["latency-AMC"]["teacher"]["predicted_latency_ms"]
    t_ratio = measured["teacher"]["ratio_to_reference"]
    rows = []
    for m in methods:
        s, f = summaries[m], summaries[m]["final"]
        rel = measured[m]["ratio_to_reference"] / t_ratio
        rows.append({
            "teacher": teacher_spec, "budget": budget, "seed": seed, "method": m,
            "val_top1_teacher_bn": f.get("val_top1_teacher_bn"), "val_top1_bn": f["val_top1"],
            "select_top1_bn": f.get("select_top1"),
            "val_top1_after_ft": ft[m]["history"][-1].get("val_top1") if ft[m].get("history") else None,
            "test_top1_after_ft": (ft[m].get("test") or {}).get("top1"),
            "teacher_val_top1": s["teacher"]["val_top1"], "macs": f["macs"], "params": f["params"],
            "predicted_ms": f["predicted_latency_ms"], "measured_ms": measured[m]["median_ms"],
            "teacher_measured_ms": measured["teacher"]["median_ms"], "measured_speedup": 1.0 / rel,
            "measured_vs_budget": rel * pred_teacher / budget_ms,
            "search_wall_s": float(s["search_wall_s"]) + float(s["setup_s"]), "episodes": s["episodes"],
            "search_measured_vs_budget": s.get("measured_vs_budget"), "search_notes": s.get("notes") or [],
            "budget_correction": s.get("budget_correction"),
        })
    _log(f"  [{name} {lat} s{seed}] group done in {time.perf_counter() - t_group:.0f} s")
    return rows


def _mean_std(values: list[float]) -> str:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.2f}"
    return f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    cols = [("val top-1, teacher BN", "val_top1_teacher_bn"), ("val top-1, BN re-est.", "val_top1_bn"),
            ("test top-1 after KD", "test_top1_after_ft"), ("measured speedup", "measured_speedup"),
            ("measured / budget", "measured_vs_budget"), ("MACs (M)", "macs_m"), ("search wall (s)", "search_wall_s")]
    lines = ["| teacher | budget | method | seeds | " + " | ".join(c for c, _ in cols) + " |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in cols) + " |"]
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["teacher"], r["budget"], r["method"]), []).append({**r, "macs_m": r["macs"] / 1e6})
    order = {m: i for i, m in enumerate(METHODS)}
    for (t, b, m), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], -float(kv[0][1]), order[kv[0][2]])):
        cells = []
        for _, key in cols:
            cells.append(_mean_std([r[key] for r in rs]))
        lines.append(f"| {t.replace('zoo:', '')} | {b}% | {m} | {len(rs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Per (teacher, budget): latency-AMC minus each other method, paired by seed (test top-1 after KD),
    and FLOPs-AMC's measured latency over latency-AMC's (equal MACs)."""
    by: dict[tuple[str, str, int], dict[str, dict[str, Any]]] = {}
    for r in rows:
        by.setdefault((r["teacher"], r["budget"], int(r["seed"])), {})[r["method"]] = r
    out = []
    for t, b in sorted({(k[0], k[1]) for k in by}, key=lambda tb: (tb[0], -float(tb[1]))):
        groups = [v for k, v in by.items() if k[:2] == (t, b) and "latency-AMC" in v]
        name = f"{t.replace('zoo:', '')} {b}%"
        for other in ("uniform", "greedy", "FLOPs-AMC", "ddc+amc", "uniform-open", "latency-AMC-open"):
            d = [v["latency-AMC"]["test_top1_after_ft"] - v[other]["test_top1_after_ft"] for v in groups if other in v]
            if d:
                spread = f", std {statistics.stdev(d):.2f}" if len(d) > 1 else ""
                out.append(f"{name}: latency-AMC - {other}: {statistics.mean(d):+.2f} points (n={len(d)}{spread}; "
                           f"per seed {', '.join(f'{x:+.2f}' for x in d)})")
        q = [v["FLOPs-AMC"]["measured_ms"] / v["latency-AMC"]["measured_ms"] for v in groups if "FLOPs-AMC" in v]
        if q:
            out.append(f"{name}: FLOPs-AMC / latency-AMC measured latency at equal MACs: {statistics.mean(q):.3f} "
                       f"(per seed {', '.join(f'{x:.3f}' for x in q)})")
    return out


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    teachers = sorted({r["teacher"] for r in rows})
    fig, axes = plt.subplots(1, len(teachers), figsize=(6 * len(teachers), 4.5), squeeze=False)
    markers = {"uniform": "s", "greedy": "^", "FLOPs-AMC": "D", "latency-AMC": "o", "ddc+amc": "v",
               "uniform-open": "x", "latency-AMC-open": "+"}
    for ax, t in zip(axes[0], teachers, strict=True):
        for m in METHODS:
            rs = [r for r in rows if r["teacher"] == t and r["method"] == m and r["test_top1_after_ft"] is not None]
            ax.scatter([r["measured_ms"] for r in rs], [r["test_top1_after_ft"] for r in rs], marker=markers[m],
                       label=m, alpha=0.75)
        ax.set_title(t.replace("zoo:", ""))
        ax.set_xlabel("measured latency (ms), one point per method and seed")
        ax.set_ylabel("test top-1 (%) after the same KD fine-tune")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--teachers", default="zoo:mobilenet_v1-fmnist,zoo:mobilenet_v2-fmnist")
    p.add_argument("--budgets", default="50,40,30", help="latency budgets in percent of the teacher")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (0..N-1)")
    p.add_argument("--episodes", type=int, default=400)
    p.add_argument("--device", default="host-cpu")
    p.add_argument("--latency-table", default=None, help="default: the device's table for each teacher")
    p.add_argument("--val-size", type=int, default=3000)
    p.add_argument("--bn-images", type=int, default=1000)
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--finetune-images", type=int, default=10000)
    p.add_argument("--finetune-top-k", type=int, default=0,
                   help="AMC searches: a short KD pass on this many images for each top-k candidate before picking")
    p.add_argument("--no-search-measure", action="store_true",
                   help="skip each search's own end-of-search measurement (round 2 ran this way)")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated, of {', '.join(METHODS)}; latency-AMC always runs (FLOPs-AMC takes its MACs)")
    p.add_argument("--correct-budget-at", type=float, default=0.0,
                   help="uniform and latency-AMC searches: the closed loop's first check (a share of the episodes); "
                        "0: open-loop, the search default; uniform-open / latency-AMC-open always run open-loop")
    p.add_argument("--ddc-episodes", type=int, default=40, help="ddc+amc: DDC iterations of the block-removal stage")
    p.add_argument("--out", default="runs/bench_search_quality")
    p.add_argument("--aggregate", nargs="+", metavar="DIR", default=None,
                   help="only merge the rows.jsonl of these benchmark directories (e.g. one per teacher, run side by "
                        "side) into --out's results, table and plot")
    args = p.parse_args()
    chosen = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in METHODS]
    if unknown:
        p.error(f"unknown method(s) {', '.join(unknown)}; valid: {', '.join(METHODS)}")
    args.methods = [m for m in METHODS if m in chosen or m == "latency-AMC"]

    import torch

    from amc_mobile.errors import UserError
    from amc_mobile.storage import append_line, atomic_write_json, atomic_write_text, ensure_dir, locked

    torch.set_num_threads(1)  # fair to every method, and the way the searches were timed
    out = ensure_dir(args.out)
    rows_path = out / "rows.jsonl"
    t_all = time.perf_counter()
    with locked(out / "bench", f"benchmark directory {out}"):
        infeasible: dict[str, str] = {}
        for teacher in [t for t in args.teachers.split(",") if t] if not args.aggregate else []:
            for budget in [b.strip().rstrip("%") for b in args.budgets.split(",") if b.strip()]:
                for seed in range(args.seeds):
                    done = _done_keys(rows_path)
                    if all((teacher, budget, seed, m) in done for m in args.methods):
                        _log(f"[{teacher} {budget}% seed {seed}] done earlier")
                        continue
                    _log(f"[{teacher} {budget}% seed {seed}] ...")
                    try:
                        group = run_group(args, teacher, budget, seed, out)
                    except UserError as exc:  # e.g. a budget no channel count reaches: say so, go on
                        infeasible[f"{teacher} {budget}%"] = str(exc)
                        _log(f"[{teacher} {budget}%] skipped: {exc}")
                        break
                    for r in group:
                        if (teacher, budget, seed, r["method"]) not in done:
                            append_line(rows_path, json.dumps(r))
        sources = [Path(d) / "rows.jsonl" for d in args.aggregate] if args.aggregate else [rows_path]
        rows = [json.loads(line) for src in sources if src.exists() for line in src.read_text().splitlines()
                if line.strip()]
        if not rows:
            raise SystemExit(f"no finished rows in {', '.join(map(str, sources))}"
                             + (f" ({'; '.join(infeasible.values())})" if infeasible else ""))
        for src in sources if args.aggregate else []:  # the runs' own infeasible budgets
            res = Path(src).with_name("results.json")
            if res.exists():
                infeasible.update(json.loads(res.read_text()).get("infeasible") or {})
        table = markdown_table(rows)
        paired = paired_lines(rows)
        atomic_write_json(out / "results.json", {"args": vars(args), "rows": rows, "table_markdown": table,
                                                 "paired": paired, "infeasible": infeasible,
                                                 "wall_s_this_run": time.perf_counter() - t_all})
        import pandas as pd

        atomic_write_text(out / "results.csv", pd.DataFrame(rows).to_csv(index=False))
        plot(rows, out / "accuracy_vs_latency.png")
    _log(table)
    _log("\n" + "\n".join(paired))
    for k, v in infeasible.items():
        _log(f"infeasible: {k}: {v}")
    _log(f"\n{len(rows)} rows; plot {out / 'accuracy_vs_latency.png'}; this run {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()

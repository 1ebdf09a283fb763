"""Search quality: uniform width vs FLOPs-only AMC vs latency-aware AMC, side by side in one run.

    python bench/search_quality.py --checkpoint zoo:mobilenet_v1-fmnist --device host-cpu \
        --latency-budget 50% --episodes 400 --finetune-epochs 1 --out runs/bench_search

1. latency-AMC: ``amc-mobile search --latency-budget 50%`` (budget on the device's latency table).
2. FLOPs-AMC: the same agent with a MACs budget equal to the latency-AMC result's MACs.
3. uniform: one keep ratio for every group, the widest meeting the same latency budget.
Each candidate is then fine-tuned with the SAME short knowledge-distillation schedule, and the
teacher and the three models are measured on the device in ONE interleaved run (ratios to a
reference workload cancel machine drift). Re-running the command resumes unfinished searches and
skips finished steps. Writes ``results.json`` and ``results.csv`` in ``--out`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def _log(msg: str) -> None:
    print(msg, flush=True)


def _search(name: str, out: Path, inputs: Any, cfg: Any) -> dict[str, Any]:
    from amc_mobile.search.runner import run_search

    d = out / name
    if (d / "summary.json").exists():
        _log(f"[{name}] done earlier: {d / 'summary.json'}")
        return json.loads((d / "summary.json").read_text())
    resume = (d / "search_state.pt").exists()
    t0 = time.perf_counter()
    summary = run_search(inputs, cfg, d, resume=resume, progress=True, log=lambda m: _log(f"[{name}] {m}"),
                         command=f"bench/search_quality.py ({name})")
    _log(f"[{name}] finished in {time.perf_counter() - t0:.0f} s")
    return summary


def _finetune(name: str, out: Path, teacher_spec: str, epochs: int, max_images: int, seed: int) -> dict[str, Any]:
    from amc_mobile.data import get_dataset
    from amc_mobile.distill import FinetuneConfig, finetune
    from amc_mobile.models.checkpoint import load_checkpoint

    d = out / name / "finetune"
    if (d / "metrics.json").exists() and (d / "final.pt").exists():
        return json.loads((d / "metrics.json").read_text())
    student, meta = load_checkpoint(out / name / "pruned.pt")
    teacher, _ = load_checkpoint(teacher_spec)
    info = meta["data"]

    def split(s: str) -> Any:
        ds = get_dataset(info["dataset"], split=s)
        ds.mean, ds.std = tuple(info["mean"]), tuple(info["std"])
        return ds

    cfg = FinetuneConfig(epochs=epochs, seed=seed, max_train_images=max_images)
    return finetune(student, teacher, split("train"), split("val"), d, cfg, test_data=split("test"),
                    resume=(d / "last.pt").exists(), progress=True, log=lambda m: _log(f"[{name} finetune] {m}"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="zoo:mobilenet_v1-fmnist")
    p.add_argument("--device", default="host-cpu")
    p.add_argument("--latency-budget", default="50%")
    p.add_argument("--latency-table", default=None, help="default: the device's table for the model")
    p.add_argument("--episodes", type=int, default=400)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--val-size", type=int, default=3000)
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--finetune-images", type=int, default=0, help="0: the whole training split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/bench_search")
    args = p.parse_args()

    from amc_mobile.models.checkpoint import load_checkpoint
    from amc_mobile.search.runner import SearchConfig, SearchInputs, measure_on_device

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def cfg() -> SearchConfig:
        return SearchConfig(episodes=args.episodes, warmup=args.warmup, val_size=args.val_size, seed=args.seed,
                            measure=False)

    t_all = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    results["latency-AMC"] = _search("latency_amc", out, SearchInputs(args.checkpoint, args.device,
                                     latency_budget=args.latency_budget, latency_table=args.latency_table), cfg())
    macs = results["latency-AMC"]["final"]["macs"]
    results["FLOPs-AMC"] = _search("flops_amc", out, SearchInputs(args.checkpoint, args.device,
                                   flops_budget=str(macs), latency_table=args.latency_table), cfg())
    results["uniform"] = _search("uniform", out, SearchInputs(args.checkpoint, args.device,
                                 latency_budget=args.latency_budget, method="uniform",
                                 latency_table=args.latency_table), cfg())
    dirs = {"latency-AMC": "latency_amc", "FLOPs-AMC": "flops_amc", "uniform": "uniform"}
    ft = {k: _finetune(v, out, args.checkpoint, args.finetune_epochs, args.finetune_images, args.seed)
          for k, v in dirs.items()}

    _log("measuring the teacher and the three models interleaved on the device ...")
    teacher, _ = load_checkpoint(args.checkpoint)
    models = {"teacher": teacher}
    for k, v in dirs.items():
        models[k] = load_checkpoint(out / v / "pruned.pt")[0]
    size = teacher.arch_kwargs["input_size"]
    measured = measure_on_device(args.device, models, (1, teacher.arch_kwargs["in_chans"], size, size),
                                 out / ".measure")
    t_meas = measured["teacher"]
    budget_ms = next(b["value"] for b in results["latency-AMC"]["budgets"] if b["kind"] == "latency")
    pred_teacher = results["latency-AMC"]["teacher"]["predicted_latency_ms"]
    rows = []
    for k, s in results.items():
        m = measured[k]
        rel = m["ratio_to_reference"] / t_meas["ratio_to_reference"]  # measured latency / teacher's
        hist = ft[k]["history"]
        rows.append({
            "method": k, "val_top1_before_ft": s["final"]["val_top1"],
            "val_top1_after_ft": hist[-1].get("val_top1"), "test_top1_after_ft": (ft[k].get("test") or {}).get("top1"),
            "macs": s["final"]["macs"], "params": s["final"]["params"],
            "predicted_ms": s["final"]["predicted_latency_ms"], "measured_ms": m["median_ms"],
            "measured_speedup": 1.0 / rel, "measured_vs_budget": rel * pred_teacher / budget_ms,
            "search_wall_s": s["search_wall_s"], "setup_s": s["setup_s"],
            "episode_s": s["timing_s_per_episode"].get("episode_s"),
        })
    report = {"args": vars(args), "teacher": {"val_top1": results["latency-AMC"]["teacher"]["val_top1"],
                                              "measured_ms": t_meas["median_ms"],
                                              "predicted_ms": pred_teacher},
              "budget_ms": budget_ms, "rows": rows, "measurement": measured,
              "total_wall_s": time.perf_counter() - t_all}
    (out / "results.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    import pandas as pd

    df = pd.DataFrame(rows)
    df.to_csv(out / "results.csv", index=False)
    _log(f"teacher: val top-1 {report['teacher']['val_top1']:.2f}%, measured {t_meas['median_ms']:.3f} ms, "
         f"predicted {pred_teacher:.3f} ms; budget {budget_ms:.3f} ms (predicted scale)")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        _log(df.round(3).to_string(index=False))


if __name__ == "__main__":
    main()

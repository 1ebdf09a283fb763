"""DDC quality benchmark (issue 12): teacher vs ddc vs ddc+amc vs latency-AMC alone, and DDC's
class-subset policy transfer.

Part 1, for each teacher and each target ("default" = DDC's thresholds 0.9/0.3/0.6 and, for the AMC
searches, a latency budget of T_th = 30%; "40%" = a 40% latency budget): run each method's search,
give every final model the SAME KD fine-tune (--finetune-epochs on --finetune-images training images,
lambda 0.7), report test top-1, params ratio, predicted latency, MEASURED latency (all models of a
(teacher, target) in ONE interleaved run on --device) and search wall time.

Part 2 (subset, --subset-classes): on a 4-6-class subset, compare after --subset-iterations
iterations: the full-data policy's architecture (re-trained on the subset), a DDC search from scratch on
the subset, and one transferred from the full-data search (--transfer-from); writes both reward curves.

Resumable: every finished row is appended to OUT/rows.jsonl (a rerun skips it) and every search
resumes from its own directory under OUT. Needs the teachers' latency tables on --device (the error
names the ``amc-bench profile`` command).

    python bench/ddc_quality.py --out runs/ddc_quality                  # full (hours on 2 cores)
    python bench/ddc_quality.py --out /tmp/ddc_smoke --smoke            # tiny sizes, minutes
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch


def _log(msg: str) -> None:
    print(msg, flush=True)


def _rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _append(path: Path, row: dict[str, Any]) -> None:
    from amc_mobile.storage import append_line

    append_line(path, json.dumps(row, default=str))


def _finetune_test(student_path: Path, teacher: Any, meta: dict[str, Any], out: Path, args: argparse.Namespace,
                   classes: list[str] | None = None) -> dict[str, float]:
    """The same KD fine-tune for every method; returns test/val top-1 after it."""
    from amc_mobile.data import teacher_data
    from amc_mobile.distill import FinetuneConfig, finetune
    from amc_mobile.models.checkpoint import load_checkpoint

    student, smeta = load_checkpoint(student_path)
    info_meta = {**meta, "data": {**(meta.get("data") or {}), **({"classes": classes} if classes else {})},
                 "arch": smeta["arch"]}
    split = {s: teacher_data(info_meta, s, args.data_dir) for s in ("train", "val", "test")}
    cfg = FinetuneConfig(epochs=args.finetune_epochs, max_train_images=args.finetune_images, seed=0)
    if (out / "metrics.json").exists():
        m = json.loads((out / "metrics.json").read_text())
    else:
        m = finetune(student, teacher, split["train"], split["val"], out, cfg, test_data=split["test"],
                     resume=(out / "last.pt").exists(), progress=False, log=lambda s: None)
    test = m.get("test") or {}
    return {"val_top1": float(m.get("final_val_top1") or float("nan")),
            "test_top1": float(test.get("top1", float("nan")))}


def _run_method(method: str, teacher_spec: str, budget: str | None, base: Path, args: argparse.Namespace,
                finals: dict[str, Path], results: dict[str, dict[str, Any]]) -> None:
    """One method's search into ``base/method``; records its final checkpoint and search facts."""
    from amc_mobile.search import SearchConfig, SearchInputs, run_search
    from amc_mobile.search.ddc import DDCConfig, DDCInputs, run_ddc_search

    if method in ("ddc", "ddc+amc"):
        cfg = DDCConfig(episodes=args.episodes, samples_per_iteration=args.samples,
                        student_images=args.student_images, val_size=args.val_size,
                        amc_episodes=args.amc_episodes, measure=False, seed=args.seed)
        s = run_ddc_search(DDCInputs(teacher_spec, device=args.device, latency_budget=budget,
                                     data_dir=args.data_dir, method=method), cfg, base / method, log=_log)
        amc = s.get("amc") or {}
        final = Path(amc["final_checkpoint"]) if amc and not amc["skipped"] else base / method / "student.pt"
        results[method] = {"search_wall_s": s["search_wall_s"] + (amc.get("summary", {}).get("search_wall_s") or 0.0),
                           "removed": s["student"]["removed"],
                           "predicted_latency_ms": s["student"]["predicted_latency_ms"]}
    else:  # latency-AMC alone; without a budget at DDC's T_th (30%)
        inputs = SearchInputs(checkpoint=teacher_spec, device=args.device, latency_budget=budget or "30%",
                              data_dir=args.data_dir, method="amc")
        run_search(inputs, SearchConfig(episodes=args.amc_episodes, measure=False, val_size=args.val_size,
                                        seed=args.seed),
                   base / "amc", progress=False, log=_log)
        final = base / "amc" / "pruned.pt"
        results[method] = {"search_wall_s": json.loads((base / "amc" / "summary.json").read_text())["search_wall_s"]}
    finals[method] = final


def part1(args: argparse.Namespace, out: Path, rows_path: Path) -> None:
    from amc_mobile.errors import UserError
    from amc_mobile.models.checkpoint import load_checkpoint

    done = {(r["teacher"], r["target"], r["method"]) for r in _rows(rows_path) if r.get("part") == 1}
    skipped = {(r["teacher"], r["target"], r["method"]) for r in _rows(rows_path) if r.get("part") == 1
               and r.get("skipped")}
    for teacher_spec in args.teachers.split(","):
        teacher, meta = load_checkpoint(teacher_spec)
        tname = teacher_spec.replace("zoo:", "").replace("/", "_")
        for target in args.targets.split(","):
            budget = None if target == "default" else target
            base = out / tname / target.replace("%", "pct")
            finals: dict[str, Path] = {}
            results: dict[str, dict[str, Any]] = {}
            methods = args.methods.split(",")
            # ddc+amc first: without a latency budget its removal stage IS the ddc search (same seed, reward
            # and pick), so the ddc row reuses that student instead of searching twice
            for method in sorted(methods, key=lambda m: m != "ddc+amc"):
                t0 = time.perf_counter()
                if method == "teacher":
                    finals[method], results[method] = Path("-"), {"search_wall_s": 0.0}
                    continue
                if (teacher_spec, target, method) in skipped:
                    continue
                if method == "ddc" and budget is None and "ddc+amc" in finals:
                    s = json.loads((base / "ddc+amc" / "summary.json").read_text())
                    finals[method] = base / "ddc+amc" / "student.pt"
                    results[method] = {"search_wall_s": s["search_wall_s"], "removed": s["student"]["removed"],
                                       "predicted_latency_ms": s["student"]["predicted_latency_ms"],
                                       "note": "removal stage of the ddc+amc search"}
                    continue
                try:
                    _run_method(method, teacher_spec, budget, base, args, finals, results)
                except UserError as exc:  # e.g. a budget channel pruning or removal alone cannot reach
                    _log(f"{tname} {target} {method}: skipped: {exc}")
                    skipped.add((teacher_spec, target, method))
                    _append(rows_path, {"part": 1, "teacher": teacher_spec, "target": target, "method": method,
                                        "skipped": str(exc)})
                    continue
                results[method]["wall_s_this_call"] = time.perf_counter() - t0
                _log(f"{tname} {target} {method}: search done ({results[method]['search_wall_s']:.0f}s)")
            if all((teacher_spec, target, m) in done for m in finals):
                continue
            # one interleaved latency run for every model of this (teacher, target)
            from amc_mobile.latency.measure import measure_on_device

            models = {"teacher": teacher}
            for m, p in finals.items():
                if m != "teacher":
                    models[m] = load_checkpoint(p)[0]
            from amc_mobile.models.arch import require_arch

            measured = measure_on_device(args.device, models, require_arch(teacher).input_shape, base / ".measure")
            t_params = sum(p.numel() for p in teacher.parameters())
            for m, p in finals.items():
                if (teacher_spec, target, m) in done:
                    continue
                if m == "teacher":
                    from amc_mobile.data import TensorLoader, teacher_data
                    from amc_mobile.training import evaluate

                    test = teacher_data(meta, "test", args.data_dir)
                    acc = {"test_top1": evaluate(teacher, TensorLoader(test, 1000))["top1"], "val_top1": float("nan")}
                    params = t_params
                else:
                    acc = _finetune_test(p, teacher, meta, base / f"{m}_ft", args)
                    params = sum(q.numel() for q in models[m].parameters())
                row = {"part": 1, "teacher": teacher_spec, "target": target, "method": m, **acc,
                       "params": params, "params_ratio": params / t_params,
                       "measured_latency_ms": measured[m]["median_ms"],
                       "measured_speedup": measured["teacher"]["ratio_to_reference"]
                       / measured[m]["ratio_to_reference"], **results[m]}
                _append(rows_path, row)
                _log(json.dumps(row, default=str))


def part2(args: argparse.Namespace, out: Path, rows_path: Path) -> None:
    """Subset: full-data policy vs subset scratch vs transferred, after --subset-iterations."""
    from amc_mobile.search.ddc import DDCConfig, DDCInputs, run_ddc_search
    from amc_mobile.search.ddc.search import build_ddc_problem, evaluate_student

    done = {(r["teacher"], r["method"]) for r in _rows(rows_path) if r.get("part") == 2}
    teacher_spec = args.teachers.split(",")[0]
    tname = teacher_spec.replace("zoo:", "")
    base = out / tname / "subset"
    kw = {"samples_per_iteration": args.samples, "student_images": args.student_images, "val_size": args.val_size,
          "measure": False}
    full_dir = base / "full"
    full = run_ddc_search(DDCInputs(teacher_spec, device=args.device, data_dir=args.data_dir),
                          DDCConfig(episodes=args.episodes, **kw), full_dir, log=_log)
    sub_in = {"device": args.device, "data_dir": args.data_dir, "classes": args.subset_classes}
    curves = {}
    n = args.subset_iterations
    scratch_n = args.subset_scratch_iterations or args.episodes
    for method, extra, iters in (("scratch", {}, scratch_n),
                                 ("transfer", {"transfer_from": str(full_dir)}, n)):
        s = run_ddc_search(DDCInputs(teacher_spec, **sub_in, **extra),
                           DDCConfig(episodes=iters, **kw), base / method, log=_log)
        curves[method] = [json.loads(json.dumps(r)) for r in _iterations(base / method)]
        best = [float(r["best_so_far"]) for r in curves[method]]
        if (teacher_spec, method) not in done:
            _append(rows_path, {"part": 2, "teacher": teacher_spec, "method": method, "reward": s["reward"],
                                f"best_reward_at_{n}": best[min(n, len(best)) - 1], "best_reward_final": best[-1],
                                "val_top1": s["student"]["val_top1"], "params_ratio": s["params_ratio"],
                                "removed": s["student"]["removed"], "search_wall_s": s["search_wall_s"],
                                "iterations": s["iterations"]})
    if (teacher_spec, "full-policy") not in done:
        problem = build_ddc_problem(DDCInputs(teacher_spec, **sub_in),
                                    DDCConfig(episodes=1, **kw), log=_log)
        res = evaluate_student(problem.ctx, full["student"]["removed"])
        reward = problem.reward(res, problem.latency_ms(tuple(full["student"]["removed"])))
        _append(rows_path, {"part": 2, "teacher": teacher_spec, "method": "full-policy", "reward": reward,
                            "val_top1": res["top1"], "params_ratio": res["params"] / problem.teacher_params,
                            "removed": full["student"]["removed"], "search_wall_s": 0.0})
    _plot_curves(curves, out / "subset_curves.png")


def _iterations(d: Path) -> list[dict[str, Any]]:
    import csv

    with open(d / "iterations.csv") as f:
        return list(csv.DictReader(f))


def _plot_curves(curves: dict[str, list[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, rows in curves.items():
        it = [int(r["iteration"]) for r in rows]
        ax.plot(it, [float(r["best_so_far"]) for r in rows], "-", label=f"{name}: best so far")
        ax.plot(it, [float(r["mean_reward"]) for r in rows], ":", label=f"{name}: mean of samples")
    ax.set_xlabel("iteration")
    ax.set_ylabel("DDC reward")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(rows_path: Path) -> str:
    lines = ["| teacher | target | method | test top-1 % | params ratio | measured ms | speedup | search s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in _rows(rows_path):
        if r.get("part") == 1 and r.get("skipped"):
            lines.append(f"| {r['teacher']} | {r['target']} | {r['method']} | not run: {r['skipped']} | | | | |")
        elif r.get("part") == 1:
            lines.append(f"| {r['teacher']} | {r['target']} | {r['method']} | {r['test_top1']:.2f} | "
                         f"{r['params_ratio']:.3f} | {r['measured_latency_ms']:.3f} | {r['measured_speedup']:.2f}x | "
                         f"{(r.get('search_wall_s') or 0):.0f} |")
    lines += ["", "| subset method | iterations | best reward after the transfer's iterations | best reward at the "
              "end | picked reward | val top-1 % | params ratio | search s |", "|---|---|---|---|---|---|---|---|"]
    for r in _rows(rows_path):
        if r.get("part") == 2:
            at = next((v for k, v in r.items() if k.startswith("best_reward_at_")), r["reward"])
            lines.append(f"| {r['method']} | {r.get('iterations', '-')} | {at:.4g} | "
                         f"{r.get('best_reward_final', r['reward']):.4g} | {r['reward']:.4g} | {r['val_top1']:.2f} | "
                         f"{r['params_ratio']:.3f} | {r['search_wall_s']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="results directory (resumable)")
    p.add_argument("--teachers", default="zoo:mobilenet_v2-fmnist,zoo:resnet18-fmnist")
    p.add_argument("--device", default="host-cpu")
    p.add_argument("--targets", default="default,40%", help="'default' (DDC thresholds) and/or latency budgets")
    p.add_argument("--methods", default="teacher,ddc,ddc+amc,amc")
    p.add_argument("--episodes", type=int, default=100, help="DDC iterations of the full-data searches")
    p.add_argument("--samples", type=int, default=5, help="DDC samples per iteration")
    p.add_argument("--student-images", type=int, default=2000)
    p.add_argument("--val-size", type=int, default=2000)
    p.add_argument("--amc-episodes", type=int, default=100)
    p.add_argument("--seed", type=int, default=0, help="search seed of every method (the KD fine-tune keeps seed 0); "
                   "one --out per seed")
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--finetune-images", type=int, default=10000)
    p.add_argument("--subset-classes", default="Sandal,Sneaker,Bag,Ankle boot")
    p.add_argument("--subset-iterations", type=int, default=20, help="iterations of the transferred search")
    p.add_argument("--subset-scratch-iterations", type=int, default=0,
                   help="iterations of the scratch subset search (0: --episodes, DDC's 100); both curves are plotted")
    p.add_argument("--skip-subset", action="store_true", help="part 1 only")
    p.add_argument("--subset-only", action="store_true", help="part 2 only (on the first of --teachers)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--smoke", action="store_true", help="tiny sizes (minutes): checks the pipeline, not quality")
    args = p.parse_args(argv)
    if args.smoke:
        args.episodes, args.samples, args.student_images, args.val_size = 2, 2, 256, 500
        args.amc_episodes, args.finetune_images, args.subset_iterations = 4, 512, 2
        args.subset_scratch_iterations = 3
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "rows.jsonl"
    from amc_mobile.errors import UserError

    try:
        if not args.subset_only:
            part1(args, out, rows_path)
        if not args.skip_subset:
            part2(args, out, rows_path)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = table(rows_path)
    (out / "table.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

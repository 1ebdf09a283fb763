"""How fast should DDC's policy commit? (issue 12; justifies the Bi-LSTM agent's defaults)

Step 1 (``--oracle``, minutes): score EVERY removal set of a teacher once with a cheap student
(BN re-estimation + one KD step, ``--student-images`` images; val on ``--val-size`` images), the
latency from the device's table and the exact params, i.e. the DDC reward R1*R2*R3 of each of the
2^n architectures. Step 2: run the REINFORCE agent against that table for many seeds per setting
(policy learning rate, entropy bonus) without training anything, and report after 20/50/100
iterations (5 samples each): the best reward found relative to the global optimum, the distinct
architectures tried, and the greedy architecture's rank at the end.

    python bench/ddc_agent_tuning.py --out runs/ddc_agent --teacher zoo:mobilenet_v2-fmnist
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import torch


def build_oracle(args: argparse.Namespace, path: Path) -> dict[str, object]:
    from amc_mobile.search.ddc.search import DDCConfig, DDCInputs, build_ddc_problem, evaluate_student

    cfg = DDCConfig(episodes=1, student_images=args.student_images, val_size=args.val_size, bn_images=500,
                    measure=False)
    problem = build_ddc_problem(DDCInputs(args.teacher, device=args.device), cfg, log=lambda s: None)
    names = problem.removable
    done = {}
    if path.exists():
        done = {r["key"]: r for r in map(json.loads, path.read_text().splitlines())}
    t0 = time.perf_counter()
    with open(path, "a") as f:
        for k in range(len(names) + 1):
            for gone in itertools.combinations(names, k):
                key = ",".join(gone)
                if key in done:
                    continue
                res = evaluate_student(problem.ctx, list(gone))
                lat = problem.latency_ms(gone)
                row = {"key": key, "top1": res["top1"], "params": res["params"], "latency_ms": lat,
                       "reward": problem.reward(res, lat)}
                f.write(json.dumps(row) + "\n")
                f.flush()
                done[key] = row
        print(f"oracle: {len(done)} architectures ({time.perf_counter() - t0:.0f} s this call)", flush=True)
    # only the students' accuracy is cached: latency and reward come from this call's table, so rows
    # written by earlier calls (a table adapted or re-profiled since) stay consistent with each other
    for key, row in done.items():
        gone = tuple(k for k in key.split(",") if k)
        row["latency_ms"] = problem.latency_ms(gone)
        row["reward"] = problem.reward({"top1": row["top1"], "params": row["params"], "macs": row.get("macs", 0.0)},
                                       row["latency_ms"])  # DDC's reward does not read MACs
    return {"names": names, "rows": done, "features": problem.features.tolist(),
            "removable": [e.removable for e in problem.elements]}


def simulate(oracle: dict[str, object], lr: float, entropy: float, seed: int, iterations: int,
             samples: int) -> dict[str, float]:
    from amc_mobile.search.ddc.agent import PolicyConfig, ReinforceAgent

    names: list[str] = oracle["names"]  # type: ignore[assignment]
    rows: dict[str, dict[str, float]] = oracle["rows"]  # type: ignore[assignment]
    best_all = max(r["reward"] for r in rows.values())
    ranked = sorted(rows, key=lambda k: -rows[k]["reward"])
    agent = ReinforceAgent(torch.tensor(oracle["features"]), oracle["removable"],  # type: ignore[arg-type]
                           PolicyConfig(lr=lr, entropy_weight=entropy), seed=seed)
    seen: dict[str, float] = {}
    out: dict[str, float] = {}
    for it in range(1, iterations + 1):
        actions = agent.sample(samples)
        keys = [",".join(n for n, a in zip(names, act.tolist(), strict=True) if a) for act in actions]
        rewards = [rows[k]["reward"] for k in keys]
        seen.update(zip(keys, rewards, strict=True))
        agent.update(actions, rewards)
        if it in (20, 50, 100, iterations):
            out[f"best@{it}"] = max(seen.values()) / best_all
            out[f"distinct@{it}"] = len(seen)
    g = ",".join(n for n, a in zip(names, agent.greedy().tolist(), strict=True) if a)
    out["greedy_rank"] = ranked.index(g) + 1
    out["greedy_rel"] = rows[g]["reward"] / best_all
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--teacher", default="zoo:mobilenet_v2-fmnist")
    p.add_argument("--device", default="host-cpu")
    p.add_argument("--student-images", type=int, default=128)
    p.add_argument("--val-size", type=int, default=500)
    p.add_argument("--lrs", default="0.02,0.01,0.005,0.002")
    p.add_argument("--entropies", default="0,0.01,0.03")
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--samples", type=int, default=5)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    oracle = build_oracle(args, out / f"oracle_{args.teacher.replace('zoo:', '')}.jsonl")
    rows = []
    for lr in map(float, args.lrs.split(",")):
        for ent in map(float, args.entropies.split(",")):
            runs = [simulate(oracle, lr, ent, s, args.iterations, args.samples) for s in range(args.seeds)]
            row = {"lr": lr, "entropy": ent}
            for k in runs[0]:
                v = [r[k] for r in runs]
                row[k] = statistics.mean(v)
                row[k + "_std"] = statistics.pstdev(v)
            row["greedy_is_best"] = sum(r["greedy_rank"] == 1 for r in runs) / len(runs)
            rows.append(row)
            print(json.dumps(row), flush=True)
    (out / "tuning.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

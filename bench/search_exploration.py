"""Exploration schedules of the AMC agent: AMC's decaying noise vs the same with a noise floor.

    python bench/search_exploration.py --episodes 250 --warmup 50 --floors 0,0.1 --seeds 1 --out /tmp/explore

Runs one latency-AMC search per (floor, seed) on the shipped MobileNet-V1 teacher and prints the best
reward, the episode that found it, and the policy spread of the last episodes (mean over groups of
the standard deviation of the applied keep ratio: ~0 when the agent re-evaluates one policy).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--checkpoint", default="zoo:mobilenet_v1-fmnist")
    p.add_argument("--device", default="host-cpu")
    p.add_argument("--latency-budget", default="40%")
    p.add_argument("--latency-table", default=None)
    p.add_argument("--episodes", type=int, default=250)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--floors", default="0,0.1")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--val-size", type=int, default=500)
    p.add_argument("--last", type=int, default=50, help="episodes the policy spread is taken over")
    p.add_argument("--out", default="runs/bench_exploration")
    args = p.parse_args()

    import torch

    from amc_mobile.search.config import SearchConfig, SearchInputs
    from amc_mobile.search.runner import run_search

    torch.set_num_threads(1)
    results = {}
    for floor in [float(f) for f in args.floors.split(",")]:
        for seed in range(args.seeds):
            out = f"{args.out}/floor{floor:g}_s{seed}"
            t0 = time.perf_counter()
            cfg = SearchConfig(episodes=args.episodes, warmup=args.warmup, val_size=args.val_size, select_size=500,
                               top_k=1, measure=False, sigma_floor=floor, seed=seed)
            run_search(SearchInputs(args.checkpoint, device=args.device, latency_budget=args.latency_budget,
                                    latency_table=args.latency_table), cfg, out, progress=False, log=lambda m: None)
            df = pd.read_csv(f"{out}/episodes.csv")
            ratios = np.array([[float(v) for v in s.split()] for s in df["keep_ratios"]])
            r = {"floor": floor, "seed": seed, "best_reward": float(df["reward"].max()),
                 "best_episode": int(df["reward"].idxmax()), "best_top1": float(df["top1"].max()),
                 "policy_spread_last": float(ratios[-args.last:].std(axis=0).mean()),
                 "wall_s": time.perf_counter() - t0}
            results[f"floor{floor:g}_s{seed}"] = r
            print(json.dumps(r), flush=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

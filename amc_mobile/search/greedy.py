"""NetAdapt-style greedy baseline (Yang et al., ECCV 2018, sec. 3): the algorithm users would pick
instead of reinforcement learning, and the one the AMC search is compared against.

Each step proposes, for every channel group, the widest channel count whose cut brings the
constrained cost (latency when budgeted) down by one step of ``(teacher cost - budget) / greedy_steps``
(or the group's minimum when no count reaches the step); every proposal is pruned, reconstructed,
BatchNorm re-estimated and scored (:class:`~amc_mobile.search.evaluate.Evaluator`, no fine-tuning,
unlike NetAdapt's short-term fine-tune), and the one losing the least accuracy per unit of cost saved
is kept. Steps repeat until every budget is met. Proposals of a step are independent, so
``map_fn`` may evaluate them in parallel (same result as serial). Deterministic: a resumed run replays
the same path and reuses every candidate it evaluated before (``cache``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from amc_mobile.errors import UserError
from amc_mobile.search.budgets import format_cost
from amc_mobile.search.evaluate import EvalResult
from amc_mobile.search.problem import Problem


def _unmet(problem: Problem, keep: list[int]) -> tuple[str, float] | None:
    """(cost kind, budget) of the first budget ``keep`` does not meet, latency first."""
    order = sorted(problem.budgets, key=lambda bv: ("latency", "macs", "params").index(bv[0].kind))
    for b, v in order:
        if problem.costs[b.kind](keep) > v * (1 + 1e-9):
            return b.kind, v
    return None


def greedy_proposals(problem: Problem, keep: list[int], kind: str, target: float) -> list[list[int]]:
    """For each group, the widest smaller width whose cut reaches ``target`` (else its minimum, if that
    lowers the cost at all)."""
    cost = problem.costs[kind]
    now = cost(keep)
    out = []
    for i, choices in enumerate(problem.env.choices):
        smaller = [c for c in choices if c < keep[i]]
        if not smaller:
            continue
        pick = None
        for c in reversed(smaller):  # widest first
            cand = [*keep[:i], c, *keep[i + 1:]]
            if cost(cand) <= target * (1 + 1e-12):
                pick = cand
                break
        if pick is None:
            pick = [*keep[:i], smaller[0], *keep[i + 1:]]
        if cost(pick) < now:  # a non-monotone table must not propose a "cut" that costs more
            out.append(pick)
    return out


def run_greedy(problem: Problem, rows: list[dict[str, Any]], make_row: Callable[..., dict[str, Any]],
               save: Callable[[], None], log: Callable[[str], None], map_fn: Any = None,
               progress: Any = None) -> list[int]:
    """Run (or replay) the greedy search; appends one row per NEW evaluated candidate to ``rows`` and
    calls ``save`` after each step. Returns the final keep vector (meets every budget)."""
    cfg = problem.cfg
    cache: dict[tuple[int, ...], dict[str, float]] = {
        tuple(int(k) for k in str(r["keep_channels"]).split()): {"top1": float(r["top1"]), "top5": float(r["top5"]),
                                                                 "loss": float(r["loss"]), "n": 0.0}
        for r in rows}

    def score(keeps: list[list[int]], step: int) -> list[dict[str, float]]:
        new = [k for k in keeps if tuple(k) not in cache]

        def add(k: list[int], res: EvalResult, seconds: float) -> None:
            cache[tuple(k)] = res.metrics()
            row = make_row(len(rows), k, [kk / w for kk, w in zip(k, problem.full, strict=True)], res,
                           f"greedy step {step}")
            row["episode_s"] = seconds
            rows.append(row)

        if new and map_fn is None:  # serial: saved after each candidate, a kill loses at most one
            for k in new:
                t0 = time.perf_counter()
                add(k, problem.evaluator.evaluate(k), time.perf_counter() - t0)
                save()
                if progress is not None:
                    progress.update(1)
        elif new:
            t0 = time.perf_counter()
            results: list[EvalResult] = problem.evaluator.evaluate_many(new, "search", map_fn)
            each = (time.perf_counter() - t0) / len(new)
            for k, res in zip(new, results, strict=True):
                add(k, res, each)
            save()
            if progress is not None:
                progress.update(len(new))
        return [cache[tuple(k)] for k in keeps]

    keep = list(problem.full)
    first = _unmet(problem, keep)
    if first is None:
        return keep
    kind0, budget0 = first
    step_size = (problem.costs[kind0](keep) - budget0) / cfg.greedy_steps
    now_metrics = score([keep], 0)[0]
    step = 0
    while True:
        unmet = _unmet(problem, keep)
        if unmet is None:
            return keep
        step += 1
        kind, budget = unmet
        cost = problem.costs[kind]
        now = cost(keep)
        size = step_size if kind == kind0 else (now - budget) / max(1, cfg.greedy_steps - step + 1)
        target = max(budget, now - size)
        props = greedy_proposals(problem, keep, kind, target)
        if not props:
            lowest = cost(problem.env.min_keep)
            raise UserError(f"infeasible {kind} budget {format_cost(kind, budget)}: the minimum reachable {kind} is "
                            f"{format_cost(kind, lowest)} (every group at keep ratio {cfg.min_ratio:g}); raise the "
                            "budget or lower --min-ratio")
        metrics = score(props, step)
        acc_now = now_metrics[cfg.metric]
        ranking = [((acc_now - m[cfg.metric]) / (now - cost(p)), -m[cfg.metric], i)
                   for i, (p, m) in enumerate(zip(props, metrics, strict=True))]
        best = min(ranking)[2]
        group = next(i for i, (a, b) in enumerate(zip(keep, props[best], strict=True)) if a != b)
        keep, now_metrics = props[best], metrics[best]
        log(f"greedy step {step}: {problem.groups[group].name} -> {keep[group]} channels; {kind} "
            f"{format_cost(kind, cost(keep))} (budget {format_cost(kind, budget)}), "
            f"val {cfg.metric} {now_metrics[cfg.metric]:.2f}%")

"""Baselines in the same tool and output format as the search.

* uniform width: one keep ratio for every group, the largest that meets every budget (bisection).
* FLOPs-only AMC is not a separate code path: it is the same agent run with a MACs budget
  (``amc-mobile search --flops-budget ...``).
"""

from __future__ import annotations

from amc_mobile.errors import UserError
from amc_mobile.search.env import ChannelSearchEnv


def uniform_keep(env: ChannelSearchEnv, iterations: int = 40) -> tuple[list[int], float]:
    """(kept channels, ratio) of the widest uniform policy that meets every budget of ``env``."""

    def keep_at(r: float) -> list[int]:
        return [env.rounder(w, r, env.multiple) for w in env.full]

    def ok(r: float) -> bool:
        k = keep_at(r)
        return all(cost(k) <= budget * (1 + 1e-9) for cost, budget in env.budgets)

    lo, hi = env.min_ratio, env.max_ratio
    if not ok(lo):
        env.check_feasible()  # names the minimum reachable cost
        raise UserError(f"no uniform keep ratio >= {lo:g} meets the budgets")
    if ok(hi):
        return keep_at(hi), hi
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return keep_at(lo), lo

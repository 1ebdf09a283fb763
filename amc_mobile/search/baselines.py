"""Baselines in the same tool and output format as the search, and the policies seeded into it.

* uniform width: one keep ratio for every group, the largest that meets every budget (bisection);
  with a latency budget also the widest uniform widths under 4%, 8% and 12% tighter latency budgets,
  so that the measured-budget check at the end of a search can fall back to the next-widest uniform
  width (the same rule every method's final model obeys).
* FLOPs-proportional: each group keeps ``1 - alpha * (its share of removable MACs) / (largest share)``,
  with the smallest ``alpha`` that meets every budget: groups holding most MACs shrink most.
Both are evaluated as the first episodes of an AMC search (and stored in the agent's replay buffer),
so the search's best can never be below uniform width on the same slice.
* FLOPs-only AMC is not a separate code path: it is the same agent run with a MACs budget
  (``amc-mobile search --flops-budget ...``); the NetAdapt-style greedy baseline is in
  :mod:`amc_mobile.search.greedy`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from amc_mobile.errors import UserError
from amc_mobile.search.env import ChannelSearchEnv, CostModel


def _meets(env: ChannelSearchEnv, keep: Sequence[int], latency_scale: float = 1.0) -> bool:
    """``keep`` meets every budget of ``env``, the latency budget scaled by ``latency_scale``."""
    return all(cost(keep) <= budget * (latency_scale if cost.kind == "latency" else 1.0) * (1 + 1e-9)
               for cost, budget in env.budgets)


def _widest(env: ChannelSearchEnv, keep_at: Callable[[float], list[int]], lo: float, hi: float,
            iterations: int = 40, latency_scale: float = 1.0) -> float:
    """Largest x in [lo, hi] with keep_at(x) meeting the budgets (keep_at shrinks as x falls)."""
    if not _meets(env, keep_at(lo), latency_scale):
        env.check_feasible()  # names the minimum reachable cost
        raise UserError("no policy of this family meets the budgets")
    if _meets(env, keep_at(hi), latency_scale):
        return hi
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if _meets(env, keep_at(mid), latency_scale):
            lo = mid
        else:
            hi = mid
    return lo


def _uniform_at(env: ChannelSearchEnv) -> Callable[[float], list[int]]:
    def keep_at(r: float) -> list[int]:
        return [env.rounder(w, r, env.multiple) for w in env.full]

    return keep_at


def uniform_keep(env: ChannelSearchEnv, iterations: int = 40) -> tuple[list[int], float]:
    """(kept channels, ratio) of the widest uniform policy that meets every budget of ``env``."""
    keep_at = _uniform_at(env)
    ratio = _widest(env, keep_at, env.min_ratio, env.max_ratio, iterations)
    return keep_at(ratio), ratio


UNIFORM_STEP_DOWN = (0.96, 0.92, 0.88)  # fractions of the latency budget for the fall-back widths


def uniform_candidates(env: ChannelSearchEnv, fractions: Sequence[float] = UNIFORM_STEP_DOWN,
                       iterations: int = 40) -> list[tuple[list[int], float]]:
    """(kept channels, ratio) of the widest uniform policy meeting every budget, then, with a latency
    budget, of the widest one under each tighter latency budget (``fractions`` of it), narrowest last,
    without repeats. A fraction no uniform width can meet ends the list."""
    widest = uniform_keep(env, iterations)
    out = [widest]
    if not any(cost.kind == "latency" for cost, _ in env.budgets):
        return out
    keep_at = _uniform_at(env)
    seen = {str(widest[0])}
    for f in fractions:
        if not _meets(env, keep_at(env.min_ratio), f):
            break
        ratio = _widest(env, keep_at, env.min_ratio, env.max_ratio, iterations, latency_scale=f)
        keep = keep_at(ratio)
        if str(keep) not in seen:
            seen.add(str(keep))
            out.append((keep, ratio))
    return out


def flops_proportional_keep(env: ChannelSearchEnv, macs: CostModel, iterations: int = 40) -> list[int]:
    """Kept channels of the widest FLOPs-proportional policy meeting every budget (module docstring)."""
    full = env.full
    base = macs(full)
    share = []
    for i in range(len(full)):
        at_min = list(full)
        at_min[i] = env.min_keep[i]
        share.append(max(0.0, base - macs(at_min)))
    top = max(share) or 1.0
    rel = [s / top for s in share]

    def keep_at(x: float) -> list[int]:  # x = 1 - alpha: 1 keeps everything, 0 shrinks to the floor
        alpha = 1.0 - x
        return [env.rounder(w, max(env.min_ratio, min(env.max_ratio, 1.0 - alpha * r)), env.multiple)
                for w, r in zip(full, rel, strict=True)]

    # alpha beyond 1 pushes the biggest groups to the floor first; scan x down to a value where all are at min
    lo = min(0.0, 1.0 - 1.0 / max(min(r for r in rel if r > 0) if any(rel) else 1.0, 1e-6))
    x = _widest(env, keep_at, lo, 1.0, iterations)
    return keep_at(x)

"""Closed-loop latency budget: measure the search's best candidates mid-way, correct the table's scale.

A latency table predicts a whole model within a few percent on the machine that built it, but what
decides the final model is its error on the candidates near the budget, and that error is local: on an
AVX-512 CPU the table over-predicted the search's picks (layers on multiples of 16 channels) by 15-25%
and left that share of the budget unused; on an AVX2 CPU it under-predicted them by 7%, and the picks
measured over the budget (bench/README, "closed loop"). The end-of-search measurement can only fall
back to a narrower candidate; it cannot spend what is left.

So after ``correct_budget_at`` of the episodes (default half) the search measures its ``MEASURED``
best distinct candidates next to the teacher on the device, interleaved (the same protocol as the
final measurement), and takes the median of measured over predicted latency, ``share``. When ``share``
is off by more than ``TOLERANCE``, the latency budget on the table's scale becomes ``budget / share``
for the rest of the search: the action wall, the baselines seeded again at the corrected budget, and
which candidates count as within budget at the end. The user's budget is what the final measurement
is still judged against (at most 1.05x, with the same fall-back). The correction is bounded: at most
half-way to the teacher's own latency (a model that wide measures like the teacher, share 1), never
below the smallest reachable latency, and ``share`` is clipped to ``LIMITS`` (beyond it the table is
too far off to steer by: re-profile).

Methods: the DDPG search (its agent and replay buffer carry on; the reward does not read the budget)
and uniform width (it adds the widest uniform width at the corrected budget and its fall-backs, so
both sides of a benchmark get the same loop). The greedy baseline walks down to the budget once and
stays open-loop. Without a device to measure (``--no-measure``, a table file without ``--device``, an
unreachable device) the search runs open-loop and the summary says why.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from amc_mobile.errors import UserError
from amc_mobile.search.problem import Problem

TOLERANCE = 0.05  # measured/predicted within 1 +- this: the budget stays
MEASURED = 3  # best distinct candidates measured for the correction
LIMITS = (0.67, 1.5)  # the share used is clipped to this range


def wanted(problem: Problem) -> bool:
    """The settings ask for a closed loop and the search has a latency budget on a device."""
    cfg, inputs = problem.cfg, problem.inputs
    return (cfg.correct_budget_at > 0 and cfg.measure and bool(inputs.device)
            and (inputs.method == "uniform" or (inputs.method == "amc" and cfg.episodes >= 2))
            and latency_budget(problem) is not None)


def switch_episode(episodes: int, at: float) -> int:
    """The episode after which the budget is corrected (at least one episode on each side when possible)."""
    return max(1, min(episodes - 1, round(episodes * at))) if episodes > 1 else 1


def latency_budget(problem: Problem, requested: bool = True) -> float | None:
    """The latency budget on the table's scale: as the user asked (``requested``) or as now in force."""
    pairs = (problem.requested_budgets or problem.budgets) if requested else problem.budgets
    return next((float(v) for b, v in pairs if b.kind == "latency"), None)


def apply(problem: Problem, record: dict[str, Any] | None) -> None:
    """Put a correction's budget in force (the environment's wall and the problem's budget check)."""
    if not record or not record.get("applied"):
        return
    value = float(record["budget_ms_after"])
    problem.budgets = [(b, value if b.kind == "latency" else v) for b, v in problem.budgets]
    problem.env.budgets = [(c, value if c.kind == "latency" else v) for c, v in problem.env.budgets]
    problem.budget_correction = record


def measure(problem: Problem, keeps: Sequence[Sequence[int]], after_episode: int, out: Path,
            log: Callable[[str], None]) -> dict[str, Any]:
    """Measure ``keeps`` next to the teacher and derive the corrected budget (the record saved in the
    search state and the summary). An unreachable device gives an unapplied record with the reason."""
    from amc_mobile.latency.measure import measure_on_device

    budget = latency_budget(problem)
    assert budget is not None
    record: dict[str, Any] = {"after_episode": after_episode, "applied": False, "budget_ms_before": budget,
                              "budget_ms_after": budget, "tolerance": TOLERANCE, "candidates": []}
    models = {"teacher": problem.teacher, **{f"c{i}": problem.evaluator.build(list(k)) for i, k in enumerate(keeps)}}
    log(f"closed loop: measuring the {len(keeps)} best candidate(s) so far and the teacher on "
        f"{problem.inputs.device} (interleaved) ...")
    try:
        got = measure_on_device(str(problem.inputs.device), models, problem.input_shape, out / ".measure_loop")
    except UserError as exc:
        record["reason"] = f"not measured ({exc}); the search stays open-loop"
        log(f"closed loop: {record['reason']}")
        return record
    teacher_ms = problem.cost_row(problem.full)["latency_ms"]
    t = got["teacher"]
    shares = []
    for i, keep in enumerate(keeps):
        predicted = problem.cost_row(list(keep))["latency_ms"]
        m = got[f"c{i}"]
        share = m["ratio_to_reference"] / t["ratio_to_reference"] * teacher_ms / predicted
        shares.append(share)
        record["candidates"].append({"keep_channels": [int(k) for k in keep], "predicted_ms": predicted,
                                     "measured_ms": m["median_ms"], "measured_over_predicted": share})
    share = statistics.median(shares)
    record["share"] = share
    spread = f" ({min(shares):.3f}-{max(shares):.3f})" if len(shares) > 1 else ""
    if not math.isfinite(share) or abs(share - 1.0) <= TOLERANCE:
        record["reason"] = f"measured {share:.3f}x their predicted latency{spread}: within {TOLERANCE:.0%}, budget kept"
        log(f"closed loop: the best candidates {record['reason']}")
        return record
    used = min(max(share, LIMITS[0]), LIMITS[1])
    lowest = problem.costs["latency"](problem.env.min_keep)
    after = min(budget / used, 0.5 * (budget + teacher_ms))
    after = max(after, lowest)
    record.update(applied=True, share_used=used, budget_ms_after=after)
    record["reason"] = (f"measured {share:.3f}x their predicted latency{spread}: latency budget on the table's scale "
                        f"{budget:.4g} -> {after:.4g} ms for the rest of the search")
    log(f"closed loop: the best candidates {record['reason']}")
    return record


def skipped(problem: Problem) -> dict[str, Any] | None:
    """Why a search with a latency budget ran open-loop (for the summary); None without a latency budget."""
    if latency_budget(problem) is None:
        return None
    cfg, inputs = problem.cfg, problem.inputs
    why = ("--correct-budget-at 0" if cfg.correct_budget_at <= 0 else "--no-measure" if not cfg.measure
           else "no device to measure on" if not inputs.device
           else "a single episode" if inputs.method == "amc" else f"method {inputs.method} is open-loop")
    return {"applied": False, "reason": f"open-loop: {why}"}

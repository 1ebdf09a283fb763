"""Closed-loop latency budget: measure the search's best candidates mid-way, correct the table's scale.

A latency table predicts a whole model within a few percent on the machine that built it, but what
decides the final model is its error on the candidates near the budget, and that error is local: on an
AVX-512 CPU the table over-predicted the search's picks (layers on multiples of 16 channels) by 15-25%
and left that share of the budget unused; on an AVX2 CPU it under-predicted them by 7%, and the picks
measured over the budget (bench/README, "closed loop"). The end-of-search measurement can only fall
back to a narrower candidate; it cannot spend what is left.

So after ``correct_budget_at`` of the episodes (``--correct-budget-at 0.5``; 0, the default, is
open-loop: with a table built on the machine in use the loop gained nothing, bench/README "Closed
loop") the search measures its ``MEASURED`` best distinct candidates next to the teacher on the device,
interleaved (the same protocol as the final measurement), ``ROUNDS`` times, and takes the median of
measured over predicted latency, ``share``. On a shared VM the same small model measured 1.05x, 1.23x
and 1.15x its prediction minutes apart, so when the rounds disagree by more than ``TOLERANCE`` the
device is too noisy to steer by and the budget stays. When a model at the budget in force would
measure more than ``TOLERANCE`` off the user's budget, the latency budget on the table's scale becomes
``budget / share`` for the rest of the search: the action wall, the baselines seeded again at the new
budget, and which candidates count as within budget at the end. Half-way from there to the end it
checks again on the candidates found under the new budget. A table's error can change with width (on
an AVX-512 CPU, layers on odd multiples of 8 channels cost what the next multiple of 16 costs, so
narrow uniform widths measured 0.75x their prediction and wider ones 1.0x), so that second step takes
the secant through the two (budget, measured latency) points instead of scaling again. A step within
tolerance ends the loop. The user's budget is what the final measurement is judged against (at most
1.05x, with the same fall-back). Each step moves the budget by at most ``MAX_STEP`` either way, at
most half-way to the teacher's own latency, and never below the smallest reachable latency.

Methods: the DDPG search (its agent and replay buffer carry on; the reward does not read the budget)
and uniform width (after each step it adds the widest uniform width at the new budget and its
fall-backs, so both sides of a benchmark get the same loop). The greedy baseline walks down to the
budget once and stays open-loop. Without a device to measure (``--no-measure``, a table file without ``--device``, an
unreachable device) the search runs open-loop and the summary says why.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from amc_mobile.errors import UserError
from amc_mobile.search.outputs import on_table_scale
from amc_mobile.search.problem import Problem

TOLERANCE = 0.05  # a model at the budget in force measuring within 1 +- this of the user's budget: kept
MEASURED = 3  # best distinct candidates measured for the correction
ROUNDS = 2  # independent measurements per step; disagreeing by more than TOLERANCE: no step
STEPS = 2  # checks at most (uniform width; an AMC search: one per checkpoint)
MAX_STEP = 1.5  # one step moves the budget by at most this factor either way


def wanted(problem: Problem) -> bool:
    """The settings ask for a closed loop and the search has a latency budget on a device."""
    cfg, inputs = problem.cfg, problem.inputs
    return (cfg.correct_budget_at > 0 and cfg.measure and bool(inputs.device)
            and (inputs.method == "uniform" or (inputs.method == "amc" and cfg.episodes >= 2))
            and latency_budget(problem) is not None)


def checkpoints(episodes: int, at: float) -> list[int]:
    """Episodes after which the budget is checked: ``episodes * at`` and half-way from there to the end
    (fewer when the search is too short for two)."""
    if episodes < 2:
        return [1]
    points = [round(episodes * at), round(episodes * (1 + at) / 2)][:STEPS]
    return sorted({max(1, min(episodes - 1, p)) for p in points})


def latency_budget(problem: Problem) -> float | None:
    """The latency budget as the user asked it, on the table's scale (None without one)."""
    return next((float(v) for b, v in problem.requested_budgets or problem.budgets if b.kind == "latency"), None)


def in_force(steps: Sequence[dict[str, Any]], requested: float) -> float:
    """The table-scale budget after ``steps``: the last applied step's, else the requested one."""
    applied = [s for s in steps if s.get("applied")]
    return float(applied[-1]["budget_ms_after"]) if applied else requested


def converged(steps: Sequence[dict[str, Any]]) -> bool:
    """No further step: the last one found the budget right, or could not measure."""
    return bool(steps) and not steps[-1].get("applied")


def apply(problem: Problem, steps: Sequence[dict[str, Any]]) -> None:
    """Put the budget of ``steps`` in force (the environment's wall and the problem's budget check) and
    record the loop for the summary."""
    requested = latency_budget(problem)
    assert requested is not None
    value = in_force(steps, requested)
    problem.budgets = [(b, value if b.kind == "latency" else v) for b, v in problem.budgets]
    problem.env.budgets = [(c, value if c.kind == "latency" else v) for c, v in problem.env.budgets]
    problem.budget_correction = {"applied": any(s.get("applied") for s in steps), "budget_ms_requested": requested,
                                 "budget_ms_in_force": value, "steps": list(steps)}


def measure(problem: Problem, keeps: Sequence[Sequence[int]], after_episode: int,
            steps: Sequence[dict[str, Any]], out: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Measure ``keeps`` (found under the budget now in force) next to the teacher and derive the next
    budget: the first step scales it by the measured/predicted ratio, later ones take the secant through
    the last two (budget in force, measured latency at it) points, so a table whose error changes with
    width converges instead of overshooting. An unreachable device gives an unapplied step with the reason."""
    from amc_mobile.latency.measure import measure_on_device

    requested = latency_budget(problem)
    assert requested is not None
    budget = in_force(steps, requested)
    record: dict[str, Any] = {"after_episode": after_episode, "applied": False, "budget_ms_before": budget,
                              "budget_ms_after": budget, "tolerance": TOLERANCE, "candidates": []}
    if not keeps:
        record["reason"] = "no candidate within the budget to measure; budget kept"
        return record
    models = {"teacher": problem.teacher, **{f"c{i}": problem.evaluator.build(list(k)) for i, k in enumerate(keeps)}}
    log(f"closed loop: measuring the {len(keeps)} best candidate(s) so far and the teacher on "
        f"{problem.inputs.device} (interleaved) ...")
    try:
        rounds = [measure_on_device(str(problem.inputs.device), models, problem.input_shape,
                                    out / ".measure_loop" / str(len(steps)) / f"round{r}") for r in range(ROUNDS)]
    except UserError as exc:
        record["reason"] = f"not measured ({exc}); the search stays open-loop"
        log(f"closed loop: {record['reason']}")
        return record
    teacher_ms = problem.costs["latency"](problem.full)
    predicted = [problem.costs["latency"](list(k)) for k in keeps]
    # [round][candidate] measured / predicted latency
    per_round = [[on_table_scale(got[f"c{i}"], got["teacher"], teacher_ms) / predicted[i] for i in range(len(keeps))]
                 for got in rounds]
    shares = [statistics.mean(r[i] for r in per_round) for i in range(len(keeps))]
    for i, keep in enumerate(keeps):
        record["candidates"].append({"keep_channels": [int(k) for k in keep], "predicted_ms": predicted[i],
                                     "measured_ms": statistics.mean(got[f"c{i}"]["median_ms"] for got in rounds),
                                     "measured_over_predicted": shares[i],
                                     "rounds": [r[i] for r in per_round]})
    share = statistics.median(shares)
    round_medians = [statistics.median(r) for r in per_round]
    record["round_shares"] = round_medians
    if len(round_medians) > 1 and max(round_medians) / min(round_medians) - 1 > TOLERANCE:
        record["reason"] = (f"two rounds disagree ({' vs '.join(f'{v:.3f}x' for v in round_medians)} the predicted "
                            "latency): the device is too noisy right now to steer by; budget kept")
        log(f"closed loop: {record['reason']}")
        return record
    at = share * budget  # what a candidate at the budget in force measures, on the table's scale
    record.update(share=share, measured_at_budget_ms=at)
    spread = f" ({min(shares):.3f}-{max(shares):.3f})" if len(shares) > 1 else ""
    what = f"measured {share:.3f}x their predicted latency{spread}, {at / requested:.3f}x the budget"
    if not math.isfinite(share) or abs(at / requested - 1.0) <= TOLERANCE:
        record["reason"] = f"{what}: within {TOLERANCE:.0%}, budget kept"
        log(f"closed loop: the best candidates {record['reason']}")
        return record
    prev = [s for s in steps if s.get("applied") and "measured_at_budget_ms" in s]
    after = budget * requested / at  # scale by the measured ratio
    how = "scaled"
    if prev:
        b0, y0 = float(prev[-1]["budget_ms_before"]), float(prev[-1]["measured_at_budget_ms"])
        if (at - y0) * (budget - b0) > 0:  # measured latency grows with the budget: the secant
            after = budget + (requested - at) * (budget - b0) / (at - y0)
            how = "secant"
    lowest = problem.costs["latency"](problem.env.min_keep)
    after = min(max(after, budget / MAX_STEP), budget * MAX_STEP, 0.5 * (requested + teacher_ms))
    after = max(after, lowest)
    record.update(applied=True, method=how, budget_ms_after=after)
    record["reason"] = f"{what}: latency budget on the table's scale {budget:.4g} -> {after:.4g} ms ({how})"
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

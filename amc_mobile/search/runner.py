"""``run_search``: the latency-aware AMC episode loop (and the greedy / uniform baselines) with resume.

One episode = the agent picks a keep ratio for every channel group (action wall: every budget met),
the teacher is pruned to those widths with least-squares reconstruction, its BatchNorm statistics are
re-estimated on training images, and the candidate is scored on a slice of the held-out ``val``
split (:mod:`amc_mobile.search.evaluate`). The first episodes are seeded with the uniform-width and a
FLOPs-proportional policy (stored in the replay buffer like any episode), so the best candidate is
never below uniform width on that slice. The final candidate is then picked honestly on a second
slice (:mod:`amc_mobile.search.outputs`).

Pieces: settings (:mod:`.config`), problem assembly (:mod:`.problem`), evaluation (:mod:`.evaluate`),
resume/transfer state (:mod:`.state`), outputs (:mod:`.outputs`), greedy baseline (:mod:`.greedy`).
``search_state.pt`` is rewritten atomically after every episode and every re-scored candidate, and
one process at a time may write a search directory (a lock naming the holder's PID).
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amc_mobile.errors import UserError
from amc_mobile.search import correction
from amc_mobile.search.config import SearchConfig, SearchInputs
from amc_mobile.search.ddpg import DDPGAgent, DDPGConfig
from amc_mobile.search.env import N_STATE_FEATURES
from amc_mobile.search.evaluate import EvalResult
from amc_mobile.search.outputs import (
    SearchProgress,
    SearchSummary,
    finalize,
    parse_keep,
    top_candidates,
    write_log_csv,
)
from amc_mobile.search.problem import Problem, build_problem
from amc_mobile.search.state import (
    agent_signature,
    check_same_settings,
    load_saved_settings,
    load_transferred_agent,
    read_state,
    save_state,
    state_path,
)
from amc_mobile.storage import ExclusiveLock, ensure_dir
from amc_mobile.threads import torch_threads

__all__ = ["SearchConfig", "SearchInputs", "SearchSummary", "load_saved_settings", "load_transferred_agent",
           "run_search"]


def episode_row(problem: Problem, ep: int, keep: Sequence[int], raw: Sequence[float], res: EvalResult,
                source: str, agent_s: float = 0.0) -> dict[str, Any]:
    """One line of ``episodes.csv``."""
    m = res.metrics()
    costs = problem.cost_row(keep)
    widths = problem.full
    return {"episode": ep, "source": source, "reward": problem.reward(m, keep),
            "accuracy": m[problem.cfg.metric] / 100.0, "top1": m["top1"], "top5": m["top5"], "loss": m["loss"],
            "latency_ms": costs["latency_ms"], "macs": int(costs["macs"]), "params": int(costs["params"]),
            "keep_ratios": " ".join(f"{k / w:.4f}" for k, w in zip(keep, widths, strict=True)),
            "keep_channels": " ".join(str(int(k)) for k in keep),
            "agent_actions": " ".join(f"{a:.4f}" for a in raw), "best": 0,
            "agent_s": agent_s, "prune_s": res.prune_s, "bn_s": res.bn_s, "eval_s": res.eval_s, "update_s": 0.0,
            "episode_s": 0.0}


def seeded_policies(problem: Problem) -> list[tuple[str, list[float]]]:
    """(name, per-group keep ratios) of the policies evaluated as the first episodes."""
    from amc_mobile.search.baselines import flops_proportional_keep, uniform_keep

    env = problem.env
    keep, ratio = uniform_keep(env)
    out = [("uniform", [ratio] * len(keep))]
    try:
        fp = flops_proportional_keep(env, problem.costs["macs"])
        out.append(("flops-proportional", [k / w for k, w in zip(fp, env.full, strict=True)]))
    except UserError:  # no member of that family meets the budgets: uniform alone
        pass
    return out


@contextlib.contextmanager
def _search_dir(out: Path) -> Iterator[None]:
    """Create ``out`` and hold its lock; a search refused before it wrote anything leaves no directory."""
    existed = out.exists()
    ensure_dir(out, "search directory")
    lock = ExclusiveLock(out / "search", what=f"search directory {out}")
    lock.acquire()
    try:
        yield
    except UserError:
        lock.release()
        if not existed and {p.name for p in out.iterdir()} <= {"search.lock"}:
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        lock.release()


def _progress(total: int | None, initial: int, enabled: bool, desc: str) -> Any:
    from amc_mobile.progress import progress_bar

    return progress_bar(total=total, desc=desc, unit="ep", initial=initial, enabled=enabled)


def run_search(inputs: SearchInputs, cfg: SearchConfig, out_dir: str | Path, resume: bool = False,
               progress: bool = True, log: Callable[[str], None] = print, latency_predictor: Any = None,
               command: str | None = None, stop_after: int | None = None,
               map_fn: Any = None) -> SearchSummary | SearchProgress:
    """Run (or resume) a search into ``out_dir``; returns the summary (also ``out_dir/summary.json``).

    ``stop_after`` ends this call after that many NEW episodes without finalising (tests/benchmarks);
    ``map_fn(fn, items)`` evaluates independent candidates (greedy steps, top-k re-scoring) elsewhere.
    """
    out = Path(out_dir)
    path = state_path(out)
    if resume and not path.exists():
        raise UserError(f"nothing to resume: {path} does not exist")
    inputs.check()
    cfg.check()
    with _search_dir(out):
        state = read_state(path) if path.exists() else None
        if state is not None:
            check_same_settings(state, inputs, cfg, out)
        import torch

        torch.manual_seed(cfg.seed)
        problem = build_problem(inputs, cfg, latency_predictor, log)
        run = _Run(list(state["rows"]) if state else [], float(state["wall_s"]) if state else 0.0,
                   dict(state.get("selection") or {}) if state else {},
                   steps=_saved_steps(state))
        rows = run.rows
        if state is not None:
            log(f"resuming {out}: {len(rows)} episode(s) done")
            write_log_csv(out / "episodes.csv", rows)  # drop any row written after the last state save
        signature = agent_signature(problem.arch.name, [g.name for g in problem.groups])
        closed_loop = correction.wanted(problem)

        def save() -> None:
            save_state(path, inputs, cfg, run.rows, run.wall_s, run.agent, signature, run.selection, run.steps)

        def check(k: int, keeps: list[list[int]]) -> None:
            """Closed-loop step ``k`` on ``keeps`` (a resumed search reuses a saved step), then its budget in force."""
            if len(run.steps) <= k:
                run.steps.append(correction.measure(problem, keeps, len(rows), run.steps, out, log))
                save()
            correction.apply(problem, run.steps[:k + 1])

        uniform_ratios: dict[int, float] | None = None
        if inputs.method == "uniform":
            from amc_mobile.search.baselines import uniform_keep

            uniform_ratios = {}
            _uniform(problem, run, uniform_ratios, save, corrected=False)
            for k in range(correction.STEPS if closed_loop else 0):
                check(k, [uniform_keep(problem.env)[0]])  # the widest width under the budget in force
                if correction.converged(run.steps[:k + 1]):
                    break
                _uniform(problem, run, uniform_ratios, save, corrected=True)
        elif inputs.method == "greedy":
            from amc_mobile.search.greedy import run_greedy

            t0 = time.perf_counter()
            bar = _progress(None, len(rows), progress, "greedy")
            try:
                def make_row(i: int, keep: list[int], raw: list[float], res: EvalResult, source: str) -> dict[str, Any]:
                    return episode_row(problem, i, keep, raw, res, source)

                def save_greedy() -> None:
                    run.wall_s += time.perf_counter() - t_last[0]
                    t_last[0] = time.perf_counter()
                    save()
                    write_log_csv(out / "episodes.csv", rows)

                t_last = [t0]
                run_greedy(problem, rows, make_row, save_greedy, log, map_fn, bar)
            finally:
                bar.close()
        else:
            run.agent = _make_agent(problem, inputs, cfg, state, log, signature)
            until = cfg.episodes if stop_after is None else min(cfg.episodes, len(rows) + stop_after)
            seed_at = 0  # where the seeded baselines start: 0, or the last step that moved the budget
            for k, point in enumerate(correction.checkpoints(cfg.episodes, cfg.correct_budget_at) if closed_loop else []):
                if len(rows) < point:
                    _episodes(problem, run, out, progress, min(until, point), save, seed_at)
                if len(rows) < point:
                    break
                check(k, [parse_keep(r["keep_channels"])
                          for r in top_candidates(problem, rows[seed_at:point], correction.MEASURED)])
                if run.steps[k].get("applied"):
                    seed_at = point
                if correction.converged(run.steps[:k + 1]):
                    break
            if len(rows) < until:
                _episodes(problem, run, out, progress, until, save, seed_at)
            if len(rows) < cfg.episodes:
                return SearchProgress(len(rows))
        if not closed_loop:
            problem.budget_correction = correction.skipped(problem)
        write_log_csv(out / "episodes.csv", rows)
        return finalize(problem, out, rows, run.wall_s, log, command, run.selection, save, uniform_ratios, map_fn)


@dataclass
class _Run:
    """What the state file saves, kept current by the loops."""

    rows: list[dict[str, Any]]
    wall_s: float
    selection: dict[str, Any]
    agent: DDPGAgent | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)  # the closed loop's (amc_mobile.search.correction)


def _saved_steps(state: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The closed-loop steps a resumed search already took (a list; one record in earlier versions)."""
    saved = (state or {}).get("correction")
    return [saved] if isinstance(saved, dict) else list(saved or [])


def _uniform(problem: Problem, run: _Run, ratios: dict[int, float], save: Callable[[], None],
             corrected: bool) -> None:
    """Evaluate the widest uniform width within the budget in force and its fall-backs that were not
    evaluated yet (at the requested budget, or ``corrected`` after a closed-loop step); episode numbers
    continue, ``ratios`` maps each episode to its keep ratio (a resumed search recomputes the same lists)."""
    from amc_mobile.search.baselines import uniform_candidates

    rows = run.rows
    done = {str(r["keep_channels"]): int(r["episode"]) for r in rows}
    for j, (keep, ratio) in enumerate(uniform_candidates(problem.env)):  # the widest + fall-backs
        key = " ".join(str(int(k)) for k in keep)
        if key in done:
            ratios.setdefault(done[key], ratio)
            continue
        i = len(rows)
        t0 = time.perf_counter()
        res = problem.evaluator.evaluate(keep)
        if j == 0:
            label = f"uniform, {ratio:.3f} (corrected budget)" if corrected else "uniform"
        else:
            label = f"uniform, {ratio:.3f} (fall-back{', corrected budget' if corrected else ''})"
        rows.append(episode_row(problem, i, keep, [ratio] * len(keep), res, label))
        rows[-1]["episode_s"] = time.perf_counter() - t0
        run.wall_s += rows[-1]["episode_s"]
        ratios[i] = ratio
        done[key] = i
        save()


def _make_agent(problem: Problem, inputs: SearchInputs, cfg: SearchConfig, state: dict[str, Any] | None,
                log: Callable[[str], None], signature: dict[str, Any]) -> DDPGAgent:
    transfer = bool(inputs.transfer_from)
    agent = DDPGAgent(N_STATE_FEATURES, len(problem.env.groups),
                      DDPGConfig(warmup=cfg.warmup_episodes(transfer), init_sigma=cfg.sigma0(transfer),
                                 sigma_decay=cfg.sigma_decay, sigma_floor=cfg.sigma_floor), seed=cfg.seed)
    if state is not None and state.get("agent"):
        agent.load_state_dict(state["agent"])
    elif transfer:
        load_transferred_agent(agent, str(inputs.transfer_from), signature)
        log(f"agent (actor + critic) transferred from {inputs.transfer_from}")
    return agent


def _episodes(problem: Problem, run: _Run, out: Path, progress: bool, stop: int, save: Callable[[], None],
              seed_at: int = 0) -> None:
    """Run AMC episodes up to episode ``stop``; ``run`` grows in place and the state is saved after every
    episode. The seeded baselines are the episodes from ``seed_at`` (0, or where a closed-loop correction
    put a new budget in force)."""
    cfg, env, rows, agent = problem.cfg, problem.env, run.rows, run.agent
    assert agent is not None
    seeds = seeded_policies(problem) if cfg.seed_baselines else []
    start = len(rows)
    best = max(range(len(rows)), key=lambda i: float(rows[i]["reward"])) if rows else -1
    bar = _progress(cfg.episodes, start, progress, "search")
    try:
        for ep in range(start, stop):
            t_ep = time.perf_counter()
            s = env.reset()
            transitions, raw = [], []
            seeded = 0 <= ep - seed_at < len(seeds)
            source = (seeds[ep - seed_at][0] + (" (corrected budget)" if seed_at else "") if seeded
                      else "random" if ep < agent.cfg.warmup else "agent")
            while not env.done:
                if seeded:
                    a = float(seeds[ep - seed_at][1][env.t])
                else:
                    with torch_threads(1):
                        a = agent.act(s, ep)
                s2, _applied, done = env.step(a)
                raw.append(a)
                transitions.append((s, a, s2, done))  # the RAW action: the wall is part of the environment
                s = s2
            agent_s = time.perf_counter() - t_ep
            keep = list(env.keep)
            res = problem.evaluator.evaluate(keep)
            row = episode_row(problem, ep, keep, raw, res, source, agent_s)
            t_up = time.perf_counter()
            agent.observe_episode(transitions, row["reward"])
            if ep >= agent.cfg.warmup:
                with torch_threads(1):  # tiny MLPs: a second thread only adds contention (10x slower)
                    for _ in transitions:
                        agent.update()
            row["update_s"] = time.perf_counter() - t_up
            if best < 0 or row["reward"] > rows[best]["reward"]:
                best = ep
            row["best"] = int(best == ep)
            row["episode_s"] = time.perf_counter() - t_ep
            rows.append(row)
            run.wall_s += row["episode_s"]
            save()
            write_log_csv(out / "episodes.csv", rows)
            b = rows[best]
            bar.set_postfix_str(f"best {b['reward']:.4f} (acc {b['accuracy']:.3f}, ep {best})", refresh=False)
            bar.update(1)
    finally:
        bar.close()

"""Outputs of a search: the episode log, honest selection of the final candidate, the summary, the plot.

Selection (why two slices): the search ranks candidates on the slice it optimised, so the best
score there is optimistic. The top-k distinct candidates (that meet every budget) are re-scored on a
second, disjoint held-out slice, optionally after a short knowledge-distillation pass each (as DDC
scores students after distillation), and the final one is picked there. When the device measurement
at the end finds the pick more than 5% over a latency budget, the best top-k candidate that meets the
measured budget replaces it, and the summary says so.

Files in ``out_dir`` (all written atomically): ``policy.json``, ``pruned.pt``, ``episodes.csv``,
``summary.json`` (a :class:`SearchSummary`), ``search.png``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from amc_mobile.search.budgets import format_cost
from amc_mobile.search.problem import Problem
from amc_mobile.storage import atomic_write_figure, atomic_write_json, atomic_write_text

SUMMARY_SCHEMA = 2
MEASURED_TOLERANCE = 1.05  # a final model may measure at most 5% over its latency budget
UNDER_PREDICTED_NOTE = 0.90  # a pick measuring below this share of its PREDICTED latency: the table is off
LOG_COLUMNS = ["episode", "source", "reward", "accuracy", "top1", "top5", "loss", "latency_ms", "macs", "params",
               "keep_ratios", "keep_channels", "agent_actions", "best", "agent_s", "prune_s", "bn_s", "eval_s",
               "update_s", "episode_s"]


@dataclass
class ModelReport:
    """One model (teacher or final) in the summary: accuracies in percent, costs, latencies in ms."""

    val_top1: float
    val_top5: float
    val_images: int
    macs: int
    params: int
    predicted_latency_ms: float | None
    select_top1: float | None = None  # on the second held-out slice
    val_top1_teacher_bn: float | None = None  # val top-1 with the teacher's BN statistics (no re-estimation)
    select_images: int | None = None
    measured_latency_ms: float | None = None
    measurement: dict[str, Any] | None = None


@dataclass
class Selected:
    """One top-k candidate re-scored on the selection slice."""

    episode: int
    keep_channels: list[int]
    search_top1: float
    search_reward: float
    select_top1: float
    select_top5: float
    select_reward: float
    finetuned: bool = False
    measured_latency_ms: float | None = None
    measured_vs_budget: float | None = None  # the mean over its measurement sessions (see finalize)
    measured_sessions: list[float] = field(default_factory=list)  # measured / budget in each session


@dataclass
class SearchSummary:
    """What a finished search returns and writes to ``summary.json`` (:meth:`to_dict`)."""

    command: str | None
    method: str
    inputs: dict[str, Any]
    config: dict[str, Any]
    data: dict[str, Any]
    classes: list[str]
    num_classes: int
    budgets: list[dict[str, Any]]
    episodes: int
    best_episode: int
    best_reward: float
    keep_channels: list[int]
    group_names: list[str]
    teacher: ModelReport
    final: ModelReport
    top_k: list[Selected]
    search_wall_s: float
    setup_s: float
    timing_s_per_episode: dict[str, float]
    bn_images: int
    transfer_from: str | None = None
    measured_speedup: float | None = None
    measured_vs_budget: float | None = None
    uniform_keep_ratio: float | None = None
    notes: list[str] = field(default_factory=list)
    latency_table: dict[str, Any] | None = None  # which table, and its validation/adaptation on this device
    budget_correction: dict[str, Any] | None = None  # the closed loop (amc_mobile.search.correction)
    note: str = ("val_* accuracies are on the search's held-out val slice (from the training set), select_* on "
                 "a second disjoint slice; after pruning + reconstruction + BatchNorm re-estimation on training "
                 "images, before fine-tuning (unless finetune_top_k); MACs = conv+linear multiply-accumulates")
    schema_version: int = SUMMARY_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SearchProgress:
    """What a search call returns when it stopped early (``stop_after``) without finalising."""

    episodes_done: int
    finished: bool = False


def write_log_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, LOG_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())


def parse_keep(text: str) -> list[int]:
    return [int(k) for k in str(text).split()]


def top_candidates(problem: Problem, rows: Sequence[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """The k best rows by search reward with distinct keep vectors that meet every budget."""
    seen: set[str] = set()
    out = []
    for r in sorted(rows, key=lambda r: (-float(r["reward"]), int(r["episode"]))):
        key = str(r["keep_channels"])
        if key in seen or not problem.meets_budgets(parse_keep(key)):
            continue
        seen.add(key)
        out.append(r)
        if len(out) == k:
            break
    return out


def rescore_top_k(problem: Problem, out: Path, rows: Sequence[dict[str, Any]], cache: dict[str, Any],
                  save: Callable[[], None], log: Callable[[str], None], map_fn: Any = None) -> list[Selected]:
    """Re-score the top-k on the selection slice (after a KD pass each with ``finetune_top_k``); results
    already in ``cache`` (a resumed search) are reused, each new one is saved through ``save``."""
    cfg = problem.cfg
    top = top_candidates(problem, rows, cfg.top_k)
    todo = [r for r in top if str(r["keep_channels"]) not in cache]
    if todo:
        log(f"re-scoring the top {len(top)} candidate(s) on the second held-out slice"
            f"{' after a KD pass each' if cfg.finetune_top_k else ''} ...")
    if cfg.finetune_top_k:
        for r in todo:
            cache[str(r["keep_channels"])] = _finetuned_metrics(problem, out, parse_keep(r["keep_channels"]),
                                                                int(r["episode"]), log)
            save()
    elif todo and map_fn is None:  # serial: save after each candidate, a kill loses at most one
        for r in todo:
            cache[str(r["keep_channels"])] = problem.evaluator.evaluate(parse_keep(r["keep_channels"]), "select").metrics()
            save()
    elif todo:
        results = problem.evaluator.evaluate_many([parse_keep(r["keep_channels"]) for r in todo], "select", map_fn)
        for r, res in zip(todo, results, strict=True):
            cache[str(r["keep_channels"])] = res.metrics()
        save()
    chosen = []
    for r in top:
        m = cache[str(r["keep_channels"])]
        keep = parse_keep(r["keep_channels"])
        chosen.append(Selected(int(r["episode"]), keep, float(r["top1"]), float(r["reward"]), float(m["top1"]),
                               float(m["top5"]), problem.reward(m, keep), bool(cfg.finetune_top_k)))
    return chosen


def _finetuned_metrics(problem: Problem, out: Path, keep: list[int], episode: int,
                       log: Callable[[str], None]) -> dict[str, float]:
    """Metrics on the selection slice of candidate ``keep`` after a 1-epoch KD pass (resumable)."""
    from amc_mobile.distill import FinetuneConfig, finetune
    from amc_mobile.training import evaluate

    student = problem.evaluator.build(keep)
    d = out / "topk" / f"episode_{episode}"
    cfg = FinetuneConfig(epochs=1, max_train_images=problem.cfg.finetune_top_k, seed=problem.cfg.seed)
    # the selection slice is the validation data of the KD pass: nothing of it is trained on
    finetune(student, problem.teacher, problem.train_data, problem.select_data, d, cfg,
             resume=(d / "last.pt").exists(), progress=False, log=lambda m: None)
    return {k: float(v) for k, v in evaluate(student, problem.evaluator.slices["select"]).items()}


def on_table_scale(m: dict[str, Any], t: dict[str, Any], teacher_ms: float) -> float:
    """A model's measured latency on the table's scale: its speed relative to the teacher in one interleaved
    run (``m`` and ``t`` from measure_on_device) times the teacher's PREDICTED latency ``teacher_ms``."""
    return float(m["ratio_to_reference"] / t["ratio_to_reference"] * teacher_ms)


def _measured_vs_predicted(pick: Selected, budget_ms: float, problem: Problem) -> float:
    """The pick's measured latency over its predicted one (1.0 when either is unknown)."""
    predicted = problem.cost_row(pick.keep_channels)["latency_ms"]
    if pick.measured_vs_budget is None or not predicted or math.isnan(predicted):
        return 1.0
    return pick.measured_vs_budget * budget_ms / predicted


def finalize(problem: Problem, out: Path, rows: list[dict[str, Any]], wall_s: float, log: Callable[[str], None],
             command: str | None, selection_cache: dict[str, Any], save_selection: Callable[[], None],
             uniform_ratios: dict[int, float] | None = None, map_fn: Any = None) -> SearchSummary:
    """Pick the final candidate (selection slice, then measured budget) and write every output.

    ``uniform_ratios`` (method uniform: episode -> its keep ratio): the candidates are ranked widest
    first instead of by score, so the pick is the widest uniform width that meets the measured budget."""
    from amc_mobile.latency.measure import measure_on_device
    from amc_mobile.models.checkpoint import save_checkpoint
    from amc_mobile.pruning import policy_from_channels

    cfg, inputs = problem.cfg, problem.inputs
    transfer = bool(inputs.transfer_from)
    notes: list[str] = []
    top = rescore_top_k(problem, out, rows, selection_cache, save_selection, log, map_fn)
    if uniform_ratios is None:
        ranked = sorted(top, key=lambda s: (-s.select_reward, -s.search_reward, s.episode))
    else:
        ranked = sorted(top, key=lambda s: (-uniform_ratios.get(s.episode, 0.0), s.episode))
    pick = ranked[0]
    models = {f"top{i}": problem.evaluator.build(s.keep_channels) for i, s in enumerate(ranked)}
    # the user's budget (a closed-loop correction moves only the table-scale budget the search steered by)
    lat_budget = [v for b, v in problem.requested_budgets or problem.budgets if b.kind == "latency"]
    full = problem.full
    teacher_costs = problem.cost_row(full)
    runs: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}  # candidate index -> (its, teacher's) measurement

    def measure(indices: list[int]) -> None:
        log(f"measuring the teacher and {len(indices)} candidate(s) on {inputs.device} (interleaved) ...")
        got = measure_on_device(str(inputs.device), {"teacher": problem.teacher,
                                                     **{f"top{i}": models[f"top{i}"] for i in indices}},
                                problem.input_shape, out / ".measure")
        for i in indices:
            m, t = got[f"top{i}"], got["teacher"]
            runs[i] = (m, t)
            ranked[i].measured_latency_ms = m["median_ms"]
            if lat_budget:  # the budget was set on PREDICTED latency: compare on the same scale
                ranked[i].measured_sessions.append(on_table_scale(m, t, teacher_costs["latency_ms"]) / lat_budget[0])
                ranked[i].measured_vs_budget = sum(ranked[i].measured_sessions) / len(ranked[i].measured_sessions)

    if cfg.measure and inputs.device:
        measure([0])  # the pick next to the teacher; the other top-k only when the pick is over budget
        if lat_budget and pick.measured_vs_budget is not None and pick.measured_vs_budget > MEASURED_TOLERANCE:
            # a second session with the other top-k, the pick included: one session on a shared machine can be
            # disturbed as a whole (the same model measured 1.05x, 1.23x, 1.15x its prediction minutes apart), so
            # the pick is judged on the mean of its two sessions, not replaced for one bad one
            first = pick.measured_vs_budget
            measure(list(range(len(ranked))))
            ok = [s for s in ranked if s.measured_vs_budget is not None and s.measured_vs_budget <= MEASURED_TOLERANCE]
            again = f"measured {first:.3f}x the latency budget, then {pick.measured_sessions[-1]:.3f}x"
            if ok and ok[0] is pick:
                msg = (f"the pick (episode {pick.episode}) {again} next to the other top-k candidates: "
                       f"{pick.measured_vs_budget:.3f}x over both sessions, within {MEASURED_TOLERANCE}x; kept")
            elif ok:
                msg = (f"the pick (episode {pick.episode}) {again} (> {MEASURED_TOLERANCE}x over both sessions); "
                       f"taking episode {ok[0].episode} instead ({ok[0].measured_vs_budget:.3f}x, the best top-k "
                       "candidate within the measured budget)")
                pick = ok[0]
            else:
                msg = (f"warning: every top-k candidate measured over {MEASURED_TOLERANCE}x the latency budget "
                       f"(the pick: {pick.measured_vs_budget:.3f}x); the latency table over-estimates the speed-up "
                       "on this device (re-profile it)")
            log(msg)
            notes.append(msg)
        elif lat_budget and (share := _measured_vs_predicted(pick, lat_budget[0], problem)) < UNDER_PREDICTED_NOTE:
            from amc_mobile.latency.store import measured_here

            rep = problem.table_report or {}
            here = measured_here(str(rep.get("source")), rep)
            msg = (f"note: the pick measured {pick.measured_vs_budget:.3f}x the latency budget and {share:.3f}x its "
                   "predicted latency: the latency table over-predicts on this device, so part of the budget is "
                   f"unused; to spend it, search again with --latency-budget {lat_budget[0] / share:.4g}ms (on the "
                   "table's scale)" + ("" if here else " or measure a table here (`amc-bench profile --device "
                                       f"{inputs.device} --checkpoint {inputs.checkpoint} --reprofile`)"))
            log(msg)
            notes.append(msg)
    pick_index = ranked.index(pick)
    pruned = models[f"top{pick_index}"]
    if cfg.finetune_top_k:  # the pick's distilled weights are its output
        from amc_mobile.models.checkpoint import load_checkpoint

        pruned = load_checkpoint(out / "topk" / f"episode_{pick.episode}" / "final.pt")[0]
    keep = pick.keep_channels
    best_row = next(r for r in rows if int(r["episode"]) == pick.episode)
    arch = problem.arch
    classes = list(problem.data_info.get("classes") or [])
    policy = policy_from_channels(problem.groups, keep, arch.name, arch.input_size, problem.env.multiple,
                                  source=f"amc-mobile search ({inputs.method})", episode=pick.episode,
                                  reward=pick.select_reward, reward_name=cfg.reward, classes=classes,
                                  num_classes=int(arch.num_classes))
    policy.save(out / "policy.json")
    final_costs = problem.cost_row(keep)

    def report(costs: dict[str, float], top1: float, top5: float, n: int, sel: tuple[float | None, int | None],
               m: dict[str, Any] | None) -> ModelReport:
        return ModelReport(val_top1=top1, val_top5=top5, val_images=n, macs=int(costs["macs"]),
                           params=int(costs["params"]),
                           predicted_latency_ms=None if math.isnan(costs["latency_ms"]) else costs["latency_ms"],
                           select_top1=sel[0], select_images=sel[1], measured_latency_ms=m["median_ms"] if m else None,
                           measurement=m)

    tm = problem.teacher_metrics
    n_select = sum(int(y.shape[0]) for _, y in problem.evaluator.slices["select"])
    summary = SearchSummary(
        command=command, method=inputs.method, inputs=asdict(inputs),
        config={**asdict(cfg), "warmup": cfg.warmup_episodes(transfer), "init_sigma": cfg.sigma0(transfer),
                "multiple": problem.env.multiple},
        data=problem.data_info,
        classes=classes, num_classes=int(arch.num_classes),
        budgets=[{"kind": b.kind, "text": b.text, "value": v, "unit": "ms" if b.kind == "latency" else b.kind}
                 for b, v in problem.requested_budgets or problem.budgets],
        episodes=len(rows), best_episode=pick.episode, best_reward=float(best_row["reward"]), keep_channels=keep,
        group_names=[g.name for g in problem.groups],
        teacher=report(teacher_costs, tm["top1"], tm["top5"], int(tm["n"]), (None, None),
                       runs[pick_index][1] if pick_index in runs else None),
        final=report(final_costs, float(best_row["top1"]), float(best_row["top5"]), int(tm["n"]),
                     (pick.select_top1, n_select), runs[pick_index][0] if pick_index in runs else None),
        top_k=ranked, search_wall_s=wall_s, setup_s=problem.setup_s, timing_s_per_episode=_timing(rows),
        bn_images=int(problem.evaluator.bn_images.shape[0]) if problem.evaluator.bn_images.numel() else 0,
        transfer_from=inputs.transfer_from, notes=notes,
        uniform_keep_ratio=uniform_ratios.get(pick.episode) if uniform_ratios is not None else None,
        latency_table=problem.table_report, budget_correction=problem.budget_correction)
    if problem.evaluator.bn_images.numel():
        summary.final.val_top1_teacher_bn = problem.evaluator.evaluate(keep, "search", bn=False).top1
    else:
        summary.final.val_top1_teacher_bn = summary.final.val_top1
    if pick_index in runs:
        f, t = runs[pick_index]
        summary.measured_speedup = t["ratio_to_reference"] / max(f["ratio_to_reference"], 1e-12)
        summary.measured_vs_budget = pick.measured_vs_budget
    save_checkpoint(out / "pruned.pt", pruned, data=problem.meta.get("data") or problem.data_info,
                    search=json.loads(json.dumps({"policy": policy.to_dict(), "val_top1": best_row["top1"],
                                                  "select_top1": pick.select_top1})))
    atomic_write_json(out / "summary.json", json.loads(json.dumps(summary.to_dict(), default=str)))
    try:
        plot_search(rows, problem, out / "search.png", pick.episode)
    except Exception as exc:  # noqa: BLE001 - a plot must never lose a finished search
        log(f"warning: could not draw the plot ({type(exc).__name__}: {exc})")
    return summary


def _timing(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    keys = ("agent_s", "prune_s", "bn_s", "eval_s", "update_s", "episode_s")
    return {k: float(np.mean([float(r.get(k, 0.0)) for r in rows])) for k in keys} if rows else {}


def plot_search(rows: Sequence[dict[str, Any]], problem: Problem, path: Path, best_episode: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = np.array([r["episode"] for r in rows])
    reward = np.array([float(r["reward"]) for r in rows])
    acc = np.array([float(r["accuracy"]) for r in rows]) * 100
    use_latency = "latency" in problem.costs
    x = np.array([float(r["latency_ms"] if use_latency else r["macs"]) for r in rows])
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    a1.plot(ep, reward, ".", ms=3, alpha=0.6, label="episode")
    a1.plot(ep, np.maximum.accumulate(reward), "-", lw=1.5, label="best so far")
    warmup = problem.cfg.warmup_episodes(bool(problem.inputs.transfer_from))
    if problem.inputs.method == "amc" and warmup and len(ep) > warmup:
        a1.axvline(warmup - 0.5, color="grey", ls=":", lw=1, label="end of warm-up")
    a1.set_xlabel("episode" if problem.inputs.method == "amc" else "evaluated candidate")
    a1.set_ylabel(f"reward ({problem.cfg.reward})")
    a1.legend(loc="lower right", fontsize=8)
    sc = a2.scatter(x, acc, c=ep, s=8, cmap="viridis")
    fig.colorbar(sc, ax=a2, label="episode")
    idx = [i for i, r in enumerate(rows) if int(r["episode"]) == best_episode]
    if idx:
        a2.plot([x[idx[0]]], [acc[idx[0]]], "r*", ms=12, label="final")
    kind = "latency" if use_latency else "macs"
    for b, v in problem.requested_budgets or problem.budgets:
        if b.kind == kind:
            a2.axvline(v, color="red", ls="--", lw=1, label=f"budget {format_cost(kind, v)}")
    corr = problem.budget_correction or {}
    if kind == "latency" and corr.get("applied"):
        v = float(corr["budget_ms_in_force"])
        a2.axvline(v, color="orange", ls=":", lw=1, label=f"corrected budget {format_cost(kind, v)} (table scale)")
    a2.set_xlabel("predicted latency (ms)" if use_latency else "MACs")
    a2.set_ylabel(f"val {problem.cfg.metric} (%) before fine-tuning")
    a2.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"{problem.arch.name}: {problem.inputs.method} search")
    fig.tight_layout()
    atomic_write_figure(path, fig)

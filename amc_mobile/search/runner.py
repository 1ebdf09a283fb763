"""The latency-aware AMC search loop and its outputs (``amc-mobile search``).

One episode = the agent picks a keep ratio for every channel group (action wall: every budget met),
the teacher is pruned to those widths with least-squares reconstruction and NO fine-tuning, and the
candidate is scored on a slice of the held-out ``val`` split (carved out of the TRAINING set).

Outputs in ``out_dir``: ``policy.json`` (best policy), ``pruned.pt`` (best model, reconstructed, not
fine-tuned), ``episodes.csv`` (one row per episode), ``summary.json`` (accuracy, MACs, params,
predicted and MEASURED latency of the final model and of the teacher, measured in the same run,
interleaved), ``search.png`` (reward over episodes; accuracy vs latency of every candidate with the
budget line). ``search_state.pt`` holds everything needed to resume (agent, replay buffer, noise
schedule, generators, episode rows); it is rewritten atomically after every episode, so a killed
search resumed with ``resume=True`` loses and repeats no episode.

DDC options: ``SearchInputs.classes`` searches for a class subset (the teacher's classifier is cut
to those rows first, :mod:`amc_mobile.search.subset`); ``SearchInputs.transfer_from`` warm-starts the
agent's actor and critic from a finished search's ``search_state.pt`` (DDC's policy transfer).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from amc_mobile.errors import UserError
from amc_mobile.search.budgets import Budget, format_cost, parse_budgets
from amc_mobile.search.ddpg import DDPGAgent, DDPGConfig
from amc_mobile.search.env import N_STATE_FEATURES, ChannelSearchEnv, CostModel
from amc_mobile.search.rewards import Candidate, DDCThresholds, get_reward
from amc_mobile.threads import torch_threads

STATE_SCHEMA = 1
SUMMARY_SCHEMA = 1
LOG_COLUMNS = ["episode", "reward", "accuracy", "top1", "top5", "loss", "latency_ms", "macs", "params",
               "keep_ratios", "keep_channels", "agent_actions", "best", "agent_s", "prune_s", "eval_s",
               "update_s", "episode_s"]


@dataclass
class SearchConfig:
    """Settings of one search (field comments double as CLI help)."""

    episodes: int = 400  # episodes in total (warm-up included)
    warmup: int = 100  # episodes of uniform random actions before the agent learns (AMC: 100)
    reward: str = "err"  # reward name: err | flops | params | latency | ddc
    metric: str = "top1"  # accuracy the reward sees: top1 | top5
    val_size: int = 3000  # held-out val images scoring each candidate (AMC: 3,000-5,000)
    min_ratio: float = 0.2  # smallest keep ratio of a group
    max_ratio: float = 1.0  # largest keep ratio of a group
    multiple: int = 8  # kept channels are rounded up to a multiple of this
    criterion: str = "l1"  # channel selection criterion of the pruner
    reconstruct: bool = True  # least-squares reconstruction of the consuming layers (AMC sec. 3.3)
    calib_batches: int = 20  # calibration batches for reconstruction
    calib_batch_size: int = 50  # images per calibration batch
    points_per_image: int = 10  # random spatial points per image and layer
    eval_batch_size: int = 1000  # images per forward pass when scoring
    ddc_thresholds: tuple[float, float, float] = (0.9, 0.3, 0.6)  # DDC A_th, T_th, C_th
    seed: int = 0  # agent, calibration sample and val subset
    measure: bool = True  # measure final model and teacher on the device at the end
    init_sigma: float = 0.5  # exploration noise after the warm-up: sigma = init_sigma * 0.95^(episode - warmup)

    def check(self) -> None:
        if self.metric not in ("top1", "top5"):
            raise UserError(f"unknown metric '{self.metric}'; valid metrics: top1, top5")
        if self.episodes < 1:
            raise UserError("--episodes must be >= 1")
        if self.warmup < 0:
            raise UserError("--warmup must be >= 0")
        if not 0.0 <= self.init_sigma <= 1.0:
            raise UserError(f"--init-sigma must be in [0, 1], got {self.init_sigma}")
        get_reward(self.reward)


@dataclass
class SearchInputs:
    """What a search runs on (saved in the state so ``--resume DIR`` needs nothing else)."""

    checkpoint: str
    device: str | None = None
    latency_budget: str | None = None
    flops_budget: str | None = None
    params_budget: str | None = None
    latency_table: str | None = None
    dataset: str | None = None  # default: the data set recorded in the checkpoint
    data_dir: str | None = None
    method: str = "amc"  # "amc" (DDPG search) | "uniform" (baseline)
    classes: str | None = None  # class subset (DDC): names / indices of the teacher's outputs / a preset
    transfer_from: str | None = None  # directory of a finished search whose agent starts this one (DDC)

    def budgets(self) -> list[Budget]:
        return parse_budgets(self.latency_budget, self.flops_budget, self.params_budget)


# ---------------------------------------------------------------------------------------------------
# The problem: teacher, pruner, data, costs
# ---------------------------------------------------------------------------------------------------

@dataclass
class Problem:
    """Everything an episode needs, built once per search."""

    inputs: SearchInputs
    cfg: SearchConfig
    teacher: nn.Module
    meta: dict[str, Any]
    pruner: Any  # amc_mobile.pruning.ChannelPruner
    val_batches: list[tuple[torch.Tensor, torch.Tensor]]
    data_info: dict[str, Any]
    costs: dict[str, CostModel]  # "macs", "params", and "latency" when a device/table is given
    budgets: list[tuple[Budget, float]]  # (budget, absolute value in the cost's unit)
    env: ChannelSearchEnv
    teacher_metrics: dict[str, float]
    setup_s: float = 0.0
    latency_predictor: Any = None

    @property
    def groups(self) -> list[Any]:
        return self.pruner.groups

    def evaluate_keep(self, keep: Sequence[int]) -> tuple[dict[str, float], float, float]:
        """(metrics, prune seconds, eval seconds) of the candidate pruned to ``keep``."""
        from amc_mobile.training import evaluate

        t0 = time.perf_counter()
        model = self.pruner.prune(list(keep)).to(memory_format=torch.channels_last)
        t1 = time.perf_counter()
        metrics = evaluate(model, self.val_batches)
        return metrics, t1 - t0, time.perf_counter() - t1

    def cost_row(self, keep: Sequence[int]) -> dict[str, float]:
        row = {k: self.costs[k](keep) for k in ("macs", "params")}
        row["latency_ms"] = self.costs["latency"](keep) if "latency" in self.costs else float("nan")
        return row

    def candidate(self, metrics: dict[str, float], costs: dict[str, float]) -> Candidate:
        full = tuple(g.width for g in self.groups)
        t = self.teacher_metrics
        lat_full = self.costs["latency"](full) if "latency" in self.costs else 1.0
        return Candidate(accuracy=metrics[self.cfg.metric] / 100.0, macs=costs["macs"], params=costs["params"],
                         latency_ms=costs["latency_ms"] if "latency" in self.costs else 1.0,
                         teacher_accuracy=t[self.cfg.metric] / 100.0, teacher_macs=self.costs["macs"](full),
                         teacher_params=self.costs["params"](full), teacher_latency_ms=lat_full)


def _normalised_batches(data: Any, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    from amc_mobile.data import TensorLoader

    return list(TensorLoader(data, batch_size, shuffle=False, channels_last=True))


def _data_for(teacher_meta: dict[str, Any], inputs: SearchInputs) -> tuple[Any, Any, dict[str, Any]]:
    """(val split, train split, data info) of the data set the teacher was trained on."""
    from amc_mobile.data import get_dataset

    info = dict(teacher_meta.get("data") or {})
    name = inputs.dataset or info.get("dataset")
    if not name:
        raise UserError("the checkpoint does not record its data set; pass --dataset NAME")
    classes = info.get("classes")
    val = get_dataset(name, inputs.data_dir, split="val")
    if classes and list(classes) != list(val.classes):  # the teacher was trained on a class subset
        val = get_dataset(name, inputs.data_dir, split="val", classes=list(classes))
        train = get_dataset(name, inputs.data_dir, split="train", classes=list(classes))
    else:
        train = get_dataset(name, inputs.data_dir, split="train")
    if info.get("mean") and info.get("std"):  # normalise exactly as the teacher was trained
        val.mean = train.mean = tuple(info["mean"])
        val.std = train.std = tuple(info["std"])
    return val, train, {**val.data_info(), "split": "val"}


def build_problem(inputs: SearchInputs, cfg: SearchConfig, latency_predictor: Any = None,
                  log: Callable[[str], None] = print) -> Problem:
    """Load the teacher, data, pruner (with calibration features) and cost models; check budgets."""
    from amc_mobile.models.checkpoint import load_checkpoint
    from amc_mobile.pruning import ChannelPruner, round_channels
    from amc_mobile.search.costs import group_infos, latency_cost, load_latency_table, macs_cost, params_cost
    from amc_mobile.training import evaluate

    t0 = time.perf_counter()
    cfg.check()
    budgets = inputs.budgets()
    teacher, meta = load_checkpoint(inputs.checkpoint)
    input_size = int(teacher.arch_kwargs.get("input_size") or getattr(teacher, "input_size", 224))
    needs_latency = any(b.kind == "latency" for b in budgets) or cfg.reward in ("latency", "ddc")
    if latency_predictor is None and (inputs.device or inputs.latency_table):
        latency_predictor = load_latency_table(inputs.device or "?", teacher, input_size, inputs.checkpoint,
                                               inputs.latency_table)
    if needs_latency and latency_predictor is None:
        raise UserError("a latency budget or the latency/ddc reward needs --device NAME (its latency table)")
    if inputs.classes:
        from amc_mobile.search.subset import subset_teacher

        teacher, meta, names = subset_teacher(teacher, meta, inputs.classes, inputs.data_dir)
        log(f"class subset: {', '.join(names)} (classifier cut to {len(names)} outputs; latency predicted "
            "from the full model's table, interpolated at the smaller classifier)")
    val, train, data_info = _data_for(meta, inputs)
    val = val.subset(cfg.val_size, cfg.seed)
    n_calib = cfg.calib_batches * cfg.calib_batch_size
    calib = torch.cat([x for x, _ in _normalised_batches(train.subset(n_calib, cfg.seed + 1), 1000)])
    calib = calib.contiguous()
    pruner = ChannelPruner(teacher, input_size, calib if cfg.reconstruct else None, criterion=cfg.criterion,
                           reconstruct=cfg.reconstruct, calib_batches=cfg.calib_batches,
                           calib_batch_size=cfg.calib_batch_size, points_per_image=cfg.points_per_image,
                           seed=cfg.seed)
    desc = pruner.base_description
    costs = {"macs": macs_cost(desc, pruner.groups), "params": params_cost(desc, pruner.groups)}
    if latency_predictor is not None:
        costs["latency"] = latency_cost(latency_predictor, desc, pruner.groups)
    full = tuple(g.width for g in pruner.groups)
    resolved = [(b, b.resolve(costs[b.kind](full))) for b in budgets]
    env = ChannelSearchEnv(group_infos(desc, pruner.groups), [(costs[b.kind], v) for b, v in resolved],
                           min_ratio=cfg.min_ratio, max_ratio=cfg.max_ratio, multiple=cfg.multiple,
                           latency=costs.get("latency"), rounder=round_channels)
    val_batches = _normalised_batches(val, cfg.eval_batch_size)
    teacher_metrics = evaluate(teacher.to(memory_format=torch.channels_last), val_batches)
    teacher.to(memory_format=torch.contiguous_format)
    problem = Problem(inputs, cfg, teacher, meta, pruner, val_batches, data_info, costs, resolved, env,
                      teacher_metrics, time.perf_counter() - t0, latency_predictor)
    for b, _ in resolved:
        log(f"budget: {b.describe(costs[b.kind](full))}")
    return problem


# ---------------------------------------------------------------------------------------------------
# Atomic files
# ---------------------------------------------------------------------------------------------------

def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def _atomic_write_text(path: Path, text: str) -> None:
    _atomic_write_bytes(path, text.encode())


def write_log_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, LOG_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    _atomic_write_text(path, buf.getvalue())


def _save_state(path: Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    _atomic_write_bytes(path, buf.getvalue())


def _fingerprint(inputs: SearchInputs, cfg: SearchConfig) -> dict[str, Any]:
    """Settings that must not change on resume (everything but the episode count and measuring)."""
    d = {**asdict(inputs), **{k: v for k, v in asdict(cfg).items() if k not in ("episodes", "measure")}}
    return json.loads(json.dumps(d))


# ---------------------------------------------------------------------------------------------------
# The search loop
# ---------------------------------------------------------------------------------------------------

def _progress(total: int, initial: int, enabled: bool) -> Any:
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    return tqdm(total=total, initial=initial, desc="search", unit="ep", disable=not enabled, leave=tty,
                dynamic_ncols=True, mininterval=0.5 if tty else 30.0, file=sys.stderr)


def run_search(inputs: SearchInputs, cfg: SearchConfig, out_dir: str | Path, resume: bool = False,
               progress: bool = True, log: Callable[[str], None] = print, latency_predictor: Any = None,
               command: str | None = None, stop_after: int | None = None) -> dict[str, Any]:
    """Run (or resume) a search; returns the summary (also written to ``out_dir/summary.json``).

    ``stop_after`` ends this call after that many NEW episodes without finalising (tests/benchmarks).
    """
    out = Path(out_dir)
    state_path = out / "search_state.pt"
    state: dict[str, Any] | None = None
    if resume and not state_path.exists():
        raise UserError(f"nothing to resume: {state_path} does not exist")
    if state_path.exists():  # re-running the same command continues it; other settings are refused
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if state.get("schema_version") != STATE_SCHEMA:
            raise UserError(f"{state_path}: search state schema {state.get('schema_version')}; "
                            f"this amc-mobile reads {STATE_SCHEMA}")
        saved = state["fingerprint"]
        now = _fingerprint(inputs, cfg)
        diff = [k for k in saved if saved.get(k) != now.get(k)]
        if diff:
            raise UserError(f"{out} already holds a search with other settings ({', '.join(diff)}); continue it "
                            f"with 'amc-mobile search --resume {out}' or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    problem = build_problem(inputs, cfg, latency_predictor, log)
    if inputs.method == "uniform":
        from amc_mobile.search.baselines import uniform_keep

        keep, ratio = uniform_keep(problem.env)
        t0 = time.perf_counter()
        metrics, prune_s, eval_s = problem.evaluate_keep(keep)
        row = _episode_row(problem, 0, keep, [ratio] * len(keep), metrics, (0.0, prune_s, eval_s, 0.0))
        row["best"] = 1
        rows = [row]
        write_log_csv(out / "episodes.csv", rows)
        return finalize(problem, out, rows, 0, time.perf_counter() - t0, log, command,
                        extra={"uniform_keep_ratio": ratio})
    env = problem.env
    agent = DDPGAgent(N_STATE_FEATURES, len(env.groups), DDPGConfig(warmup=cfg.warmup, init_sigma=cfg.init_sigma),
                      seed=cfg.seed)
    signature = _agent_signature(problem)
    rows: list[dict[str, Any]] = []
    best_episode = -1
    wall_s = 0.0
    if state is not None:
        agent.load_state_dict(state["agent"])
        rows = list(state["rows"])
        best_episode = int(state["best_episode"])
        wall_s = float(state["wall_s"])
        log(f"resuming {out}: {len(rows)} episode(s) done")
        write_log_csv(out / "episodes.csv", rows)  # drop any row written after the last state save
    elif inputs.transfer_from:
        load_transferred_agent(agent, inputs.transfer_from, signature)
        log(f"agent (actor + critic) transferred from {inputs.transfer_from}")
    start = len(rows)
    stop = cfg.episodes if stop_after is None else min(cfg.episodes, start + stop_after)
    bar = _progress(cfg.episodes, start, progress)
    try:
        for ep in range(start, stop):
            t_ep = time.perf_counter()
            s = env.reset()
            transitions, raw = [], []
            while not env.done:
                with torch_threads(1):
                    a = agent.act(s, ep)
                s2, applied, done = env.step(a)
                raw.append(a)
                transitions.append((s, applied, s2, done))
                s = s2
            agent_s = time.perf_counter() - t_ep
            keep = list(env.keep)
            metrics, prune_s, eval_s = problem.evaluate_keep(keep)
            row = _episode_row(problem, ep, keep, raw, metrics, (agent_s, prune_s, eval_s, 0.0))
            t_up = time.perf_counter()
            agent.observe_episode(transitions, row["reward"])
            if ep >= cfg.warmup:
                with torch_threads(1):  # tiny MLPs: a second thread only adds contention (10x slower)
                    for _ in transitions:
                        agent.update()
            row["update_s"] = time.perf_counter() - t_up
            if best_episode < 0 or row["reward"] > rows[best_episode]["reward"]:
                best_episode = ep
            row["best"] = int(best_episode == ep)
            row["episode_s"] = time.perf_counter() - t_ep
            rows.append(row)
            wall_s += row["episode_s"]
            _save_state(state_path, {
                "schema_version": STATE_SCHEMA, "fingerprint": _fingerprint(inputs, cfg), "agent": agent.state_dict(),
                "rows": rows, "best_episode": best_episode, "wall_s": wall_s, "episodes": cfg.episodes,
                "measure": cfg.measure, "signature": signature})
            write_log_csv(out / "episodes.csv", rows)
            best = rows[best_episode]
            bar.set_postfix_str(f"best {best['reward']:.4f} (acc {best['accuracy']:.3f}, ep {best_episode})",
                                refresh=False)
            bar.update(1)
    finally:
        bar.close()
    if len(rows) < cfg.episodes:
        return {"episodes_done": len(rows), "finished": False}
    return finalize(problem, out, rows, best_episode, wall_s, log, command)


def _agent_signature(problem: Problem) -> dict[str, Any]:
    """What an agent is tied to: the model, its channel groups and the state size."""
    return {"model": str(problem.teacher.arch_kwargs["name"]), "n_groups": len(problem.groups),
            "n_states": N_STATE_FEATURES, "group_names": [g.name for g in problem.groups]}


def _saved_signature(state: dict[str, Any]) -> dict[str, Any]:
    """The signature of a saved search (derived from the agent for states written before it was stored)."""
    if "signature" in state:
        return dict(state["signature"])
    sd = state["agent"]
    n_groups = int(sd["buffer"]["capacity"]) // int(sd["config"]["replay_per_layer"])
    model = None
    try:
        from amc_mobile.models.checkpoint import read_checkpoint

        model = read_checkpoint(state["fingerprint"]["checkpoint"])["arch"]["name"]
    except UserError:
        pass
    return {"model": model, "n_groups": n_groups, "n_states": int(sd["n_states"])}


def load_transferred_agent(agent: DDPGAgent, source_dir: str | Path, signature: dict[str, Any]) -> None:
    """DDC policy transfer: start ``agent`` from the actor, critic and their targets of the search in
    ``source_dir``. Its replay buffer, reward baseline and optimiser moments are NOT copied: they hold
    rewards of the source's data (another class set, another accuracy scale), which would bias the
    critic and the baseline of the new search; the new search fills its own buffer from episode 0."""
    path = Path(source_dir) / "search_state.pt"
    if not path.exists():
        raise UserError(f"--transfer-from {source_dir}: no search_state.pt there (not a search directory)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("schema_version") != STATE_SCHEMA:
        raise UserError(f"{path}: search state schema {state.get('schema_version')}; this amc-mobile reads "
                        f"{STATE_SCHEMA}")
    saved = _saved_signature(state)
    diff = [f"{k} {saved.get(k)} vs {signature[k]}" for k in ("model", "n_groups", "n_states")
            if saved.get(k) is not None and saved.get(k) != signature[k]]
    hidden = int(state["agent"]["config"].get("hidden", agent.cfg.hidden))
    if hidden != agent.cfg.hidden:
        diff.append(f"hidden {hidden} vs {agent.cfg.hidden}")
    if diff:
        raise UserError(f"--transfer-from {source_dir}: its search used another setup ({'; '.join(diff)}); "
                        "transfer needs the same model, channel groups and state size")
    sd = state["agent"]
    for name in ("actor", "critic", "actor_target", "critic_target"):
        getattr(agent, name).load_state_dict(sd[name])


def _episode_row(problem: Problem, ep: int, keep: Sequence[int], raw: Sequence[float], metrics: dict[str, float],
                 times: tuple[float, float, float, float]) -> dict[str, Any]:
    costs = problem.cost_row(keep)
    reward = float(get_reward(problem.cfg.reward, DDCThresholds(*problem.cfg.ddc_thresholds))(
        problem.candidate(metrics, costs)))
    widths = [g.width for g in problem.groups]
    return {"episode": ep, "reward": reward, "accuracy": metrics[problem.cfg.metric] / 100.0,
            "top1": metrics["top1"], "top5": metrics["top5"], "loss": metrics["loss"],
            "latency_ms": costs["latency_ms"], "macs": int(costs["macs"]), "params": int(costs["params"]),
            "keep_ratios": " ".join(f"{k / w:.4f}" for k, w in zip(keep, widths, strict=True)),
            "keep_channels": " ".join(str(int(k)) for k in keep),
            "agent_actions": " ".join(f"{a:.4f}" for a in raw), "best": 0,
            "agent_s": times[0], "prune_s": times[1], "eval_s": times[2], "update_s": times[3], "episode_s": 0.0}


# ---------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------

def measure_on_device(device: str, models: dict[str, nn.Module], input_shape: tuple[int, ...],
                      work_dir: Path) -> dict[str, dict[str, Any]]:
    """Measure several models on ``device`` in one interleaved run of the latency protocol."""
    from amc_mobile.latency.profiles import load_profile
    from amc_mobile.latency.protocol import Protocol, ProtocolSettings

    profile = load_profile(device)
    backend = profile.create_backend()
    try:
        reason = backend.check_available()
        if reason:
            raise UserError(f"device '{device}' is not usable here: {reason}")
        shape = (profile.batch_size, *input_shape[1:])
        work_dir.mkdir(parents=True, exist_ok=True)
        proto = Protocol(backend, ProtocolSettings.from_profile(profile), work_dir)
        names = list(models)
        arts = [backend.prepare(models[n].eval(), shape, work_dir / f"{n}{backend.artifact_suffix}") for n in names]
        ms = proto.measure_many(arts)
        return {n: {"median_ms": m.median_ms, "p10_ms": m.stats.p10_ms, "p90_ms": m.stats.p90_ms,
                    "ratio_to_reference": m.ratio, "windows": m.stats.count}
                for n, m in zip(names, ms, strict=True)}
    finally:
        backend.close()


def finalize(problem: Problem, out: Path, rows: list[dict[str, Any]], best_episode: int, wall_s: float,
             log: Callable[[str], None], command: str | None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write policy.json, pruned.pt, summary.json and search.png for the best episode."""
    from amc_mobile.models.checkpoint import save_checkpoint
    from amc_mobile.pruning import policy_from_channels

    cfg, inputs = problem.cfg, problem.inputs
    best = rows[best_episode]
    keep = [int(k) for k in str(best["keep_channels"]).split()]
    arch = problem.teacher.arch_kwargs
    size = int(arch.get("input_size") or problem.pruner.input_size)
    classes = list(problem.data_info.get("classes") or [])
    policy = policy_from_channels(problem.groups, keep, arch["name"], size, cfg.multiple,
                                  source=f"amc-mobile search ({inputs.method})", episode=best_episode,
                                  reward=best["reward"], reward_name=cfg.reward, classes=classes,
                                  num_classes=int(arch["num_classes"]))
    policy.save(out / "policy.json")
    pruned = problem.pruner.prune(keep)
    full = tuple(g.width for g in problem.groups)
    teacher_costs, final_costs = problem.cost_row(full), problem.cost_row(keep)
    measured: dict[str, dict[str, Any]] = {}
    if cfg.measure and inputs.device:
        log(f"measuring the final model and the teacher on {inputs.device} (interleaved) ...")
        measured = measure_on_device(inputs.device, {"teacher": problem.teacher, "final": pruned},
                                     (1, problem.teacher.arch_kwargs["in_chans"], size, size), out / ".measure")
    budgets = [{"kind": b.kind, "text": b.text, "value": v,
                "unit": "ms" if b.kind == "latency" else b.kind} for b, v in problem.budgets]

    def block(costs: dict[str, float], metrics: dict[str, float], m: dict[str, Any] | None) -> dict[str, Any]:
        return {"val_top1": metrics["top1"], "val_top5": metrics["top5"], "val_images": metrics["n"],
                "macs": int(costs["macs"]), "params": int(costs["params"]),
                "predicted_latency_ms": None if math.isnan(costs["latency_ms"]) else costs["latency_ms"],
                "measured_latency_ms": m["median_ms"] if m else None, "measurement": m}

    final_metrics = {"top1": best["top1"], "top5": best["top5"], "n": problem.teacher_metrics["n"]}
    summary: dict[str, Any] = {
        "schema_version": SUMMARY_SCHEMA, "command": command, "method": inputs.method,
        "inputs": asdict(inputs), "config": asdict(cfg), "data": problem.data_info,
        "classes": classes, "num_classes": int(arch["num_classes"]), "transfer_from": inputs.transfer_from,
        "budgets": budgets, "episodes": len(rows), "best_episode": best_episode, "best_reward": best["reward"],
        "keep_channels": keep, "group_names": [g.name for g in problem.groups],
        "teacher": block(teacher_costs, problem.teacher_metrics, measured.get("teacher")),
        "final": block(final_costs, final_metrics, measured.get("final")),
        "note": "accuracies are on the held-out val images (from the training set), after pruning + "
                "reconstruction, before fine-tuning; MACs = conv+linear multiply-accumulates",
        "search_wall_s": wall_s, "setup_s": problem.setup_s, "timing_s_per_episode": _timing(rows),
    }
    if measured.get("teacher") and measured.get("final"):
        t, f = measured["teacher"], measured["final"]
        summary["measured_speedup"] = t["ratio_to_reference"] / max(f["ratio_to_reference"], 1e-12)
        lat_budget = [v for b, v in problem.budgets if b.kind == "latency"]
        if lat_budget:
            # the budget was set on PREDICTED latency; compare measured/predicted on the same scale
            pred_t = teacher_costs["latency_ms"]
            summary["measured_vs_budget"] = (f["ratio_to_reference"] / t["ratio_to_reference"]) * pred_t / lat_budget[0]
    summary.update(extra or {})
    save_checkpoint(out / "pruned.pt", pruned, data=problem.meta.get("data") or problem.data_info,
                    search=json.loads(json.dumps({"policy": policy.to_dict(), "val_top1": best["top1"]})))
    _atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    try:
        plot_search(rows, problem, out / "search.png", best_episode)
    except Exception as exc:  # noqa: BLE001 - a plot must never lose a finished search
        log(f"warning: could not draw the plot ({type(exc).__name__}: {exc})")
    return summary


def _timing(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    keys = ("agent_s", "prune_s", "eval_s", "update_s", "episode_s")
    return {k: float(np.mean([float(r[k]) for r in rows])) for k in keys} if rows else {}


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
    if problem.cfg.warmup and len(ep) > problem.cfg.warmup:
        a1.axvline(problem.cfg.warmup - 0.5, color="grey", ls=":", lw=1, label="end of warm-up")
    a1.set_xlabel("episode")
    a1.set_ylabel(f"reward ({problem.cfg.reward})")
    a1.legend(loc="lower right", fontsize=8)
    sc = a2.scatter(x, acc, c=ep, s=8, cmap="viridis")
    fig.colorbar(sc, ax=a2, label="episode")
    a2.plot([x[best_episode]], [acc[best_episode]], "r*", ms=12, label="best")
    kind = "latency" if use_latency else "macs"
    for b, v in problem.budgets:
        if b.kind == kind:
            a2.axvline(v, color="red", ls="--", lw=1, label=f"budget {format_cost(kind, v)}")
    a2.set_xlabel("predicted latency (ms)" if use_latency else "MACs")
    a2.set_ylabel(f"val {problem.cfg.metric} (%) before fine-tuning")
    a2.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"{problem.teacher.arch_kwargs['name']}: {problem.inputs.method} search")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    _atomic_write_bytes(path, buf.getvalue())


def load_saved_settings(out_dir: str | Path) -> tuple[SearchInputs, SearchConfig]:
    """The inputs and config a search in ``out_dir`` was started with (for ``--resume DIR`` alone)."""
    state_path = Path(out_dir) / "search_state.pt"
    if not state_path.exists():
        raise UserError(f"nothing to resume: {state_path} does not exist")
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    fp = {**state["fingerprint"], "episodes": state.get("episodes", 400), "measure": state.get("measure", True)}
    names_in = {f.name for f in fields(SearchInputs)}
    inputs = SearchInputs(**{k: v for k, v in fp.items() if k in names_in})
    cfg_kw = {k: v for k, v in fp.items() if k in {f.name for f in fields(SearchConfig)}}
    cfg_kw["ddc_thresholds"] = tuple(cfg_kw.get("ddc_thresholds", (0.9, 0.3, 0.6)))
    return inputs, SearchConfig(**cfg_kw)


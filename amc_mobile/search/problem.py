"""Problem assembly of a search: teacher, data slices, pruner, cost models, budgets and environment.

Built once per search by :func:`build_problem`; everything an episode (or a greedy step, or the final
selection) needs hangs off the returned :class:`Problem`. Data: the search scores candidates on
``val_size`` images of the held-out ``val`` split (carved out of the TRAINING set), picks the final
one on a disjoint second slice of that split (``select_size``), and re-estimates BatchNorm statistics
and fits the reconstruction on images of the ``train`` split; ``test`` is never touched.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from amc_mobile.errors import UserError
from amc_mobile.search.budgets import Budget
from amc_mobile.search.config import SearchConfig, SearchInputs
from amc_mobile.search.env import ChannelSearchEnv, CostModel
from amc_mobile.search.evaluate import Batches, Evaluator
from amc_mobile.search.rewards import Candidate, DDCThresholds, get_reward, reward_inputs


@dataclass
class Problem:
    """Everything an episode needs, built once per search."""

    inputs: SearchInputs
    cfg: SearchConfig
    teacher: nn.Module
    meta: dict[str, Any]
    arch: Any  # amc_mobile.models.arch.ArchSpec of the (possibly class-cut) teacher
    pruner: Any  # amc_mobile.pruning.ChannelPruner
    evaluator: Evaluator
    data_info: dict[str, Any]
    costs: dict[str, CostModel]  # "macs", "params", and "latency" when a device/table is given
    budgets: list[tuple[Budget, float]]  # (budget, absolute value in the cost's unit)
    env: ChannelSearchEnv
    teacher_metrics: dict[str, float]  # on the search slice
    setup_s: float = 0.0
    latency_predictor: Any = None
    train_data: Any = None  # the train split (KD passes of --finetune-top-k)
    select_data: Any = None  # the selection slice as a data set
    table_report: dict[str, Any] | None = None  # what open_table_for did: source, validation, adaptation
    requested_budgets: list[tuple[Budget, float]] | None = None  # as asked; ``budgets`` may be corrected
    budget_correction: dict[str, Any] | None = None  # the closed loop's correction in force (.correction)

    def __post_init__(self) -> None:
        if self.requested_budgets is None:
            self.requested_budgets = list(self.budgets)

    @property
    def groups(self) -> list[Any]:
        return list(self.pruner.groups)

    @property
    def full(self) -> tuple[int, ...]:
        return tuple(g.width for g in self.pruner.groups)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, int(self.arch.in_chans), int(self.arch.input_size), int(self.arch.input_size))

    def cost_row(self, keep: Sequence[int]) -> dict[str, float]:
        row = {k: self.costs[k](keep) for k in ("macs", "params")}
        row["latency_ms"] = self.costs["latency"](keep) if "latency" in self.costs else float("nan")
        return row

    def meets_budgets(self, keep: Sequence[int]) -> bool:
        return all(self.costs[b.kind](keep) <= v * (1 + 1e-9) for b, v in self.budgets)

    def reward(self, metrics: dict[str, float], keep: Sequence[int]) -> float:
        """The configured reward of a candidate with ``metrics`` (percent accuracies) pruned to ``keep``."""
        costs = self.cost_row(keep)
        t = self.teacher_metrics
        has_lat = "latency" in self.costs
        full = self.full
        cand = Candidate(accuracy=metrics[self.cfg.metric] / 100.0, macs=costs["macs"], params=costs["params"],
                         latency_ms=costs["latency_ms"] if has_lat else 1.0,
                         teacher_accuracy=t[self.cfg.metric] / 100.0, teacher_macs=self.costs["macs"](full),
                         teacher_params=self.costs["params"](full),
                         teacher_latency_ms=self.costs["latency"](full) if has_lat else 1.0)
        return float(get_reward(self.cfg.reward, DDCThresholds(*self.cfg.ddc_thresholds))(cand))


def open_teacher_data(meta: dict[str, Any], dataset: str | None, data_dir: str | None) -> tuple[Any, Any]:
    """(val split, train split) of the data set ``meta`` records, with its classes and normalisation."""
    from amc_mobile.data import teacher_data

    return teacher_data(meta, "val", data_dir, dataset), teacher_data(meta, "train", data_dir, dataset)


def _rows(data: Any, idx: torch.Tensor) -> Any:
    from amc_mobile.data.datasets import Dataset

    return Dataset(data.name, data.split, data.images[idx], data.labels[idx], data.classes, data.mean, data.std,
                   data.data_dir)


def split_val(val: Any, val_size: int, select_size: int, seed: int) -> tuple[Any, Any]:
    """Two disjoint seeded slices of the val split: (search slice, selection slice). A split too small
    for ``val_size`` plus a selection slice gives a third of its images to the selection."""
    n = len(val)
    if n < 2:
        raise UserError(f"the val split has {n} image(s); a search needs at least 2 (one to search, one to select)")
    if val_size >= n:
        val_size = n - max(1, min(select_size, n // 3))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    search_idx = order[:val_size].sort().values
    select_idx = order[val_size:val_size + select_size].sort().values
    return _rows(val, search_idx), _rows(val, select_idx)


def normalised_batches(data: Any, batch_size: int) -> Batches:
    from amc_mobile.data import TensorLoader

    return list(TensorLoader(data, batch_size, shuffle=False, channels_last=True))


def normalised_images(data: Any, n: int, seed: int) -> torch.Tensor:
    """``n`` seeded training images, normalised, channels-last, as one tensor (no labels)."""
    if n <= 0:
        return torch.empty(0)
    sub = data.subset(n, seed)
    return torch.cat([x for x, _ in normalised_batches(sub, 1000)]).contiguous(memory_format=torch.channels_last)


def needs_latency(inputs: SearchInputs, cfg: SearchConfig) -> bool:
    """A latency budget, or a reward that declares it reads latency."""
    return any(b.kind == "latency" for b in inputs.budgets()) or "latency" in reward_inputs(cfg.reward)


def build_problem(inputs: SearchInputs, cfg: SearchConfig, latency_predictor: Any = None,
                  log: Callable[[str], None] = print) -> Problem:
    """Load the teacher, data, pruner (with calibration features) and cost models; check budgets."""
    from amc_mobile.models.arch import require_arch
    from amc_mobile.models.checkpoint import load_checkpoint
    from amc_mobile.pruning import ChannelPruner, round_channels
    from amc_mobile.search.costs import group_infos, latency_cost, macs_cost, params_cost
    from amc_mobile.training import evaluate

    t0 = time.perf_counter()
    inputs.check()
    cfg.check()
    budgets = inputs.budgets()
    teacher, meta = load_checkpoint(inputs.checkpoint)
    arch = require_arch(teacher)
    table_report: dict[str, Any] | None = None
    if latency_predictor is None and (inputs.device or inputs.latency_table):
        from amc_mobile.latency.store import open_table_for

        # the store's table for this device, validated on the device when reachable (adapted if off)
        # (built or resumed in the user store when none exists for this device)
        latency_predictor, table_report = open_table_for(
            inputs.device or "?", teacher, arch.input_size, inputs.checkpoint, inputs.latency_table,
            validate=inputs.latency_table is None, adapt=inputs.latency_table is None,
            build=inputs.latency_table is None, log=log)
    if needs_latency(inputs, cfg) and latency_predictor is None:
        raise UserError(f"a latency budget or the '{cfg.reward}' reward needs --device NAME (its latency table)")
    if inputs.classes:
        from amc_mobile.search.subset import subset_teacher

        teacher, meta, names = subset_teacher(teacher, meta, inputs.classes, inputs.data_dir)
        arch = require_arch(teacher)
        log(f"class subset: {', '.join(names)} (classifier cut to {len(names)} outputs; latency predicted "
            "from the full model's table, interpolated at the smaller classifier)")
    val, train = open_teacher_data(meta, inputs.dataset, inputs.data_dir)
    data_info = {**val.data_info(), "split": "val"}
    n_bn = cfg.bn_images_used(len(train))
    if n_bn > len(train):
        raise UserError(f"--bn-images {cfg.bn_images}: the training split has {len(train)} images; "
                        f"valid range: 0..{len(train)} (0: no BatchNorm re-estimation)")
    search_slice, select_slice = split_val(val, cfg.val_size, cfg.select_size, cfg.seed)
    n_calib = cfg.calib_batches * cfg.calib_batch_size
    calib = normalised_images(train, n_calib, cfg.seed + 1).contiguous() if cfg.reconstruct else None
    pruner = ChannelPruner(teacher, arch.input_size, calib, criterion=cfg.criterion,
                           reconstruct=cfg.reconstruct, calib_batches=cfg.calib_batches,
                           calib_batch_size=cfg.calib_batch_size, points_per_image=cfg.points_per_image,
                           seed=cfg.seed)
    desc = pruner.base_description
    costs = {"macs": macs_cost(desc, pruner.groups), "params": params_cost(desc, pruner.groups)}
    if latency_predictor is not None:
        costs["latency"] = latency_cost(latency_predictor, desc, pruner.groups)
    full = tuple(g.width for g in pruner.groups)
    resolved = [(b, b.resolve(costs[b.kind](full))) for b in budgets]
    for b, v in resolved:
        if not b.relative and v >= costs[b.kind](full) * (1 - 1e-9):
            from amc_mobile.search.budgets import format_cost

            raise UserError(f"--{_flag(b.kind)} {b.text} is not below the teacher's {b.kind} "
                            f"({format_cost(b.kind, costs[b.kind](full))}): nothing to prune; give a smaller "
                            "budget or a percentage below 100%")
    env = ChannelSearchEnv(group_infos(desc, pruner.groups), [(costs[b.kind], v) for b, v in resolved],
                           min_ratio=cfg.min_ratio, max_ratio=cfg.max_ratio,
                           multiple=cfg.multiple or table_multiple(latency_predictor),
                           latency=costs.get("latency"), rounder=round_channels)
    bn_images = normalised_images(train, n_bn, cfg.seed + 2)
    evaluator = Evaluator(pruner, {"search": normalised_batches(search_slice, cfg.eval_batch_size),
                                   "select": normalised_batches(select_slice, cfg.eval_batch_size)},
                          bn_images)
    teacher_metrics = evaluate(teacher.to(memory_format=torch.channels_last),  # type: ignore[call-overload]
                               evaluator.slices["search"])
    teacher.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    problem = Problem(inputs, cfg, teacher, meta, arch, pruner, evaluator, data_info, costs, resolved, env,
                      teacher_metrics, time.perf_counter() - t0, latency_predictor, train, select_slice,
                      _jsonable_report(table_report))
    for b, _ in resolved:
        log(f"budget: {b.describe(costs[b.kind](full))}")
    log(f"scoring on {len(search_slice)} val images, selecting on {len(select_slice)} others, BatchNorm "
        f"re-estimated on {n_bn} training images" if n_bn else
        f"scoring on {len(search_slice)} val images, selecting on {len(select_slice)} others, no BN re-estimation")
    return problem


def table_multiple(predictor: Any) -> int:
    """The channel step a latency table was measured at (its grid granularity): kept channels rounded
    to it are what the table measured, not interpolated across kernels' vector widths; 8 without one."""
    from amc_mobile.latency.profiling import table_step

    meta = getattr(predictor, "meta", None)
    return table_step(meta) if isinstance(meta, dict) else 8


def _jsonable_report(report: dict[str, Any] | None) -> dict[str, Any] | None:
    """The table report as plain JSON (paths as strings) for summary.json."""
    if report is None:
        return None
    import json

    return dict(json.loads(json.dumps(report, default=str)))


def _flag(kind: str) -> str:
    return {"latency": "latency-budget", "macs": "flops-budget", "params": "params-budget"}[kind]

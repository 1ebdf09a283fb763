"""DDC's search (Pahwa et al., papers/004, sec. 3-4): a Bi-LSTM REINFORCE policy removes whole
layers/blocks of a teacher; every sampled student is distilled briefly (KD, lambda = 0.7, eq. 12-14)
and scored by R = R1(A) * R2(T) * R3(C) (eq. 3-6, :mod:`amc_mobile.search.rewards`).

One iteration samples N architectures (DDC: 5, ``samples_per_iteration``) from the policy; each new
architecture is built (removed units -> identities), its BatchNorm statistics re-estimated on training
images, trained for a short KD pass on ``student_images`` training images, re-estimated again and
scored on a held-out val slice (carved out of the training set). Students are cached by architecture,
so a repeated sample is never retrained. T is the latency on the target device PREDICTED by its table
for every candidate; before the final pick the best ``measure_top`` candidates and the teacher are
MEASURED on the device in one interleaved run, and the pick uses the measured latency ratio (the
summary says which number is which).

``method="ddc+amc"`` (DDC's two stages): after the removal, the AMC channel search
(:func:`amc_mobile.search.run_search`) compresses the removed model (as its teacher) under the
remaining latency budget (``--latency-budget``, else DDC's T_th of the teacher's latency).

State (``ddc_state.pt``: policy weights, optimiser, EMA baseline, sampling RNG, student cache, rows) is
rewritten atomically after every iteration under a lock on the output directory; re-running the same
call resumes and gives the same result as an uninterrupted run with the same seed.
"""

from __future__ import annotations

import copy
import csv
import functools
import io
import json
import math
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from amc_mobile.errors import UserError
from amc_mobile.search.ddc.agent import PolicyConfig, ReinforceAgent
from amc_mobile.search.ddc.units import TrunkElement, apply_removal, trunk_elements
from amc_mobile.storage import (
    ExclusiveLock,
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    ensure_dir,
)

STATE_SCHEMA = 1
METHODS = ("ddc", "ddc+amc")
SAMPLE_COLUMNS = ["iteration", "sample", "reward", "accuracy", "top1", "top5", "latency_ms", "params", "macs",
                  "n_removed", "removed", "cached", "over_budget", "train_s"]
ITERATION_COLUMNS = ["iteration", "mean_reward", "best_reward", "best_so_far", "baseline", "new_students",
                     "remove_probs", "iteration_s"]


@dataclass
class DDCInputs:
    """What a DDC search runs on (saved in the state, so a resume needs nothing else)."""

    checkpoint: str
    device: str | None = None  # target device profile: its table predicts T; the best candidates are measured
    latency_table: str | None = None  # use this latency table file instead of the device's
    latency_budget: str | None = None  # hard cap on predicted latency (e.g. 40% or 2ms); ddc+amc: final model
    dataset: str | None = None
    data_dir: str | None = None
    method: str = "ddc"  # ddc (removal only) | ddc+amc (removal, then the AMC channel search)
    classes: str | None = None  # class subset (DDC sec. 3.6): the teacher's classifier is cut to these rows
    transfer_from: str | None = None  # a finished DDC search directory whose policy weights start this one

    def check(self) -> None:
        if not self.checkpoint:
            raise UserError("give --checkpoint FILE|zoo:NAME")
        if self.method not in METHODS:
            raise UserError(f"unknown DDC method '{self.method}'; valid: {', '.join(METHODS)}")


@dataclass
class DDCConfig:
    """Settings of a DDC search (field comments double as help)."""

    episodes: int = 100  # REINFORCE iterations (DDC: 100)
    samples_per_iteration: int = 5  # architectures sampled per iteration (DDC: 5)
    thresholds: tuple[float, float, float] = (0.9, 0.3, 0.6)  # DDC A_th, T_th, C_th (eq. 3-5), each in (0, 1]
    metric: str = "top1"  # accuracy R1 sees: top1 | top5
    student_images: int = 2000  # training images of each student's KD pass
    student_epochs: int = 1  # passes over them
    student_lr: float = 0.01  # peak SGD learning rate of the KD pass (cosine decay)
    student_batch_size: int = 128
    kd_lambda: float = 0.7  # weight of the soft term, DDC eq. 12
    temperature: float = 4.0  # softmax temperature of the soft term
    bn_images: int = 1000  # training images re-estimating BatchNorm statistics (before and after KD); 0: off
    val_size: int = 2000  # held-out val images scoring each student
    measure_top: int = 3  # best candidates measured on the device before the final pick (0: predicted only)
    policy_hidden: int = 32  # Bi-LSTM hidden size per direction
    policy_lr: float = 0.005  # Adam learning rate of the policy (measured in bench/ddc_agent_tuning.py)
    policy_entropy: float = 0.0  # weight of an entropy bonus on the policy (0: plain REINFORCE, as DDC)
    baseline_decay: float = 0.8  # EMA factor of the REINFORCE baseline (eq. 11)
    amc_episodes: int = 100  # ddc+amc: episodes of the AMC channel search
    seed: int = 0
    measure: bool = True  # measure on the device (needs a device profile)
    threads: int = 1  # torch threads of a student's training and scoring

    def __post_init__(self) -> None:
        self.thresholds = tuple(float(v) for v in self.thresholds)  # type: ignore[assignment]

    def check(self) -> None:
        if self.episodes < 1:
            raise UserError(f"--episodes must be >= 1 (REINFORCE iterations), got {self.episodes}")
        if self.samples_per_iteration < 1:
            raise UserError(f"--samples-per-iteration must be >= 1, got {self.samples_per_iteration}")
        if len(self.thresholds) != 3:
            raise UserError("--ddc-thresholds: expected three numbers A,T,C like 0.9,0.3,0.6")
        for name, v in zip(("A_th", "T_th", "C_th"), self.thresholds, strict=True):
            if not (isinstance(v, float) and 0.0 < v <= 1.0):
                raise UserError(f"--ddc-thresholds: {name} = {v} is outside (0, 1]")
        if self.metric not in ("top1", "top5"):
            raise UserError(f"unknown metric '{self.metric}'; valid metrics: top1, top5")
        for name in ("student_images", "student_epochs", "student_batch_size", "val_size", "amc_episodes", "threads"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.bn_images < 0 or self.measure_top < 0:
            raise UserError("--bn-images and --measure-top must be >= 0 (0: off)")
        if not 0.0 <= self.kd_lambda <= 1.0:
            raise UserError(f"--kd-lambda must be in [0, 1], got {self.kd_lambda}")
        if not self.student_lr > 0 or not self.temperature > 0:
            raise UserError("--student-lr and --temperature must be positive")
        self.policy_config().check()

    def policy_config(self) -> PolicyConfig:
        return PolicyConfig(hidden=self.policy_hidden, lr=self.policy_lr, baseline_decay=self.baseline_decay,
                            entropy_weight=self.policy_entropy)


# ---------------------------------------------------------------------------------------------------
# Students: a pure, picklable evaluation (H7's Ray workers run it with map_fn)
# ---------------------------------------------------------------------------------------------------

@dataclass
class StudentContext:
    """Everything a student's evaluation needs; picklable, never modified."""

    teacher: nn.Module
    train_x: torch.Tensor  # normalised training images of the KD pass
    train_y: torch.Tensor
    teacher_logits: torch.Tensor  # the teacher's logits on train_x (computed once)
    bn_x: torch.Tensor  # training images re-estimating BN statistics
    val_batches: list[tuple[torch.Tensor, torch.Tensor]]
    cfg: DDCConfig


def student_seed(seed: int, removed: Sequence[str]) -> int:
    """A student's seed depends only on the search seed and its architecture (order-free, worker-free)."""
    return (int(seed) * 1_000_003 + zlib.crc32(",".join(removed).encode())) % (2**31 - 1)


def removed_copy(teacher: nn.Module, removed: Sequence[str]) -> nn.Module:
    """The teacher without ``removed`` (identities), recording them in its ArchSpec."""
    from amc_mobile.models.arch import get_arch, set_arch

    student = copy.deepcopy(teacher)
    apply_removal(student, removed)
    spec = get_arch(teacher)
    if spec is not None:
        set_arch(student, spec.replace(removed=tuple(sorted({*spec.removed, *removed}))))
    return student


def train_student(ctx: StudentContext, removed: Sequence[str]) -> nn.Module:
    """Build the student and run its short KD pass (eq. 12-14) with BN re-estimation before and after."""
    from amc_mobile.distill.loss import kd_loss
    from amc_mobile.models.bn import reestimate_bn
    from amc_mobile.training import lr_at

    cfg = ctx.cfg
    seed = student_seed(cfg.seed, removed)
    torch.manual_seed(seed)  # dropout
    student = removed_copy(ctx.teacher, removed)
    if cfg.bn_images:
        reestimate_bn(student, ctx.bn_x)
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in student.parameters():
        (decay if p.dim() > 1 else no_decay).append(p)
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}],
                          lr=cfg.student_lr, momentum=0.9, nesterov=True)
    gen = torch.Generator().manual_seed(seed)
    n, bs = len(ctx.train_x), cfg.student_batch_size
    steps = max(1, math.ceil(n / bs))
    total = steps * cfg.student_epochs
    student.train()
    step = 0
    for _ in range(cfg.student_epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(steps):
            idx = order[i * bs:(i + 1) * bs]
            if len(idx) < 2:
                continue
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, max(1, total // 10), cfg.student_lr)
            loss = kd_loss(student(ctx.train_x[idx]), ctx.teacher_logits[idx], ctx.train_y[idx],
                           cfg.kd_lambda, cfg.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    if cfg.bn_images:
        reestimate_bn(student, ctx.bn_x)
    return student.eval()


def evaluate_student(ctx: StudentContext, removed: Sequence[str]) -> dict[str, Any]:
    """Pure: train the student without ``removed`` briefly and score it on the val slice.

    Same inputs, same result, in any process and any order (seeded by architecture)."""
    from amc_mobile.models.describe import describe_model
    from amc_mobile.threads import torch_threads
    from amc_mobile.training import evaluate

    t0 = time.perf_counter()
    with torch_threads(ctx.cfg.threads):
        student = train_student(ctx, removed)
        metrics = evaluate(student, ctx.val_batches)
        desc = describe_model(student)
    return {"removed": list(removed), "top1": metrics["top1"], "top5": metrics["top5"], "loss": metrics["loss"],
            "macs": int(desc.macs), "params": int(desc.params), "train_s": time.perf_counter() - t0}


def evaluate_students(ctx: StudentContext, architectures: Sequence[Sequence[str]],
                      map_fn: Callable[..., Iterable[Any]] | None = None) -> list[dict[str, Any]]:
    """Evaluate independent students (N per iteration); ``map_fn(fn, items)`` (e.g. a Ray pool's map)
    runs them elsewhere; the default is the builtin ``map``. Same result either way."""
    fn = functools.partial(evaluate_student, ctx)
    items = [list(a) for a in architectures]
    return list((map_fn or map)(fn, items))


# ---------------------------------------------------------------------------------------------------
# Latency: the teacher's table predicts block-removed (and channel-pruned) descriptions directly
# ---------------------------------------------------------------------------------------------------

def _load_predictor(inputs: DDCInputs, teacher: nn.Module, checkpoint: str,
                    log: Callable[[str], None] = print) -> Any:
    if not (inputs.device or inputs.latency_table):
        return None
    from amc_mobile.models.arch import require_arch
    from amc_mobile.search.costs import load_latency_table

    if inputs.latency_table and not inputs.device:  # a table file alone: no device profile to look up
        from amc_mobile.latency.table import LatencyTable

        return LatencyTable.load(inputs.latency_table)
    spec = require_arch(teacher)
    if inputs.latency_table:  # the user's file: used as given (a fingerprint mismatch is a warning)
        return load_latency_table(inputs.device or "?", teacher, spec.input_size, checkpoint, inputs.latency_table)
    from amc_mobile.latency.store import open_table_for

    # the store's table for this device: validated on the device, adapted or built in the user store
    table, _ = open_table_for(inputs.device or "?", teacher, spec.input_size, checkpoint, None,
                              validate=True, adapt=True, build=True, log=log)
    return table


def _measure(device: str, models: dict[str, nn.Module], input_shape: tuple[int, ...], work: Path) -> dict[str, Any]:
    try:
        from amc_mobile.latency.measure import measure_on_device
    except ImportError:  # before the move out of the search runner
        from amc_mobile.search.runner import measure_on_device  # type: ignore[attr-defined,no-redef]
    return dict(measure_on_device(device, models, input_shape, work))


# ---------------------------------------------------------------------------------------------------
# The problem and the loop
# ---------------------------------------------------------------------------------------------------

@dataclass
class DDCProblem:
    inputs: DDCInputs
    cfg: DDCConfig
    teacher: nn.Module
    meta: dict[str, Any]
    elements: list[TrunkElement]
    features: torch.Tensor
    ctx: StudentContext
    teacher_metrics: dict[str, float]
    teacher_macs: int
    teacher_params: int
    teacher_latency_ms: float | None
    predictor: Any
    budget_ms: float | None
    data_info: dict[str, Any]
    thresholds: tuple[float, float, float] = (0.9, 0.3, 0.6)  # in use: T_th follows a latency budget
    setup_s: float = 0.0
    latency_cache: dict[tuple[str, ...], float] = field(default_factory=dict)

    @property
    def removable(self) -> list[str]:
        return [e.name for e in self.elements if e.removable]

    def latency_ms(self, removed: Sequence[str]) -> float | None:
        if self.predictor is None:
            return None
        key = tuple(removed)
        if key not in self.latency_cache:
            from amc_mobile.models.describe import describe_model

            self.latency_cache[key] = float(self.predictor.predict(describe_model(removed_copy(self.teacher, key))))
        return self.latency_cache[key]

    def reward(self, result: dict[str, Any], latency_ms: float | None, teacher_latency_ms: float | None = None) -> float:
        from amc_mobile.search.rewards import Candidate, DDCThresholds, get_reward

        t_lat = self.teacher_latency_ms if teacher_latency_ms is None else teacher_latency_ms
        lat = 1.0 if latency_ms is None or t_lat is None else float(latency_ms)
        t_lat = 1.0 if latency_ms is None or t_lat is None else float(t_lat)
        cand = Candidate(accuracy=result[self.cfg.metric] / 100.0, macs=result["macs"], params=result["params"],
                         latency_ms=lat,
                         teacher_accuracy=self.teacher_metrics[self.cfg.metric] / 100.0,
                         teacher_macs=self.teacher_macs, teacher_params=self.teacher_params,
                         teacher_latency_ms=t_lat)
        return float(get_reward("ddc", DDCThresholds(*self.thresholds))(cand))

    def over_budget(self, latency_ms: float | None, slack: float = 1e-9) -> bool:
        return self.budget_ms is not None and latency_ms is not None and latency_ms > self.budget_ms * (1 + slack)


def _tensors(data: Any, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    from amc_mobile.data import TensorLoader

    xs, ys = zip(*TensorLoader(data, batch_size, shuffle=False), strict=True)
    return torch.cat(xs).contiguous(), torch.cat(ys)


def build_ddc_problem(inputs: DDCInputs, cfg: DDCConfig, latency_predictor: Any = None,
                      log: Callable[[str], None] = print) -> DDCProblem:
    """Load the teacher (cut to --classes), find its units, prepare data, teacher logits and latency."""
    from amc_mobile.data import teacher_data
    from amc_mobile.models.arch import require_arch
    from amc_mobile.models.checkpoint import load_checkpoint
    from amc_mobile.models.describe import describe_model
    from amc_mobile.search.budgets import parse_budget
    from amc_mobile.threads import torch_threads
    from amc_mobile.training import evaluate

    t0 = time.perf_counter()
    inputs.check()
    cfg.check()
    teacher, meta = load_checkpoint(inputs.checkpoint)
    if latency_predictor is None:
        latency_predictor = _load_predictor(inputs, teacher, inputs.checkpoint, log)
    if latency_predictor is None:
        raise UserError(f"--method {inputs.method} needs --device NAME (its latency table predicts T, DDC eq. 4) "
                        "or --latency-table FILE")
    if inputs.classes:
        from amc_mobile.search.subset import subset_teacher

        teacher, meta, names = subset_teacher(teacher, meta, inputs.classes, inputs.data_dir)
        log(f"class subset: {', '.join(names)} (classifier cut to {len(names)} outputs)")
    spec = require_arch(teacher)
    elements = trunk_elements(teacher, spec.input_size)
    removable = [e for e in elements if e.removable]
    if not removable:
        found = ", ".join(f"{e.name} ({e.kind} {e.in_channels}->{e.out_channels}, stride {e.stride})"
                          for e in elements)
        raise UserError(f"model '{spec.name}' has no removable units (none keeps its input shape), so "
                        f"--method {inputs.method} has nothing to remove; its trunk: {found}")
    max_ch = max(e.out_channels for e in elements)
    features = torch.tensor([e.features(len(elements), max_ch) for e in elements], dtype=torch.float32)
    meta_cut = {**meta, "arch": {**(meta.get("arch") or {}), "num_classes": spec.num_classes}}
    train = teacher_data(meta_cut, "train", inputs.data_dir, inputs.dataset)
    val = teacher_data(meta_cut, "val", inputs.data_dir, inputs.dataset)
    for name, n, have in (("--student-images", cfg.student_images, len(train)), ("--val-size", cfg.val_size, len(val))):
        if n > have:
            raise UserError(f"{name} {n}: the split has {have} images; valid range: 1..{have}")
    if cfg.bn_images > len(train):
        raise UserError(f"--bn-images {cfg.bn_images}: the train split has {len(train)} images; valid range: "
                        f"0..{len(train)}")
    train_x, train_y = _tensors(train.subset(cfg.student_images, cfg.seed + 1))
    bn_x = _tensors(train.subset(cfg.bn_images, cfg.seed + 2))[0] if cfg.bn_images else torch.empty(0)
    from amc_mobile.data import TensorLoader

    val_batches = list(TensorLoader(val.subset(cfg.val_size, cfg.seed), 1000, shuffle=False))
    teacher.eval()
    with torch_threads(cfg.threads), torch.no_grad():
        logits = torch.cat([teacher(x) for x in train_x.split(500)])
        teacher_metrics = evaluate(teacher, val_batches)
    desc = describe_model(teacher)
    ctx = StudentContext(teacher, train_x, train_y, logits, bn_x, val_batches, cfg)
    predictor = latency_predictor
    t_lat = float(predictor.predict(desc))
    budget_ms = None
    problem = DDCProblem(inputs, cfg, teacher, meta, elements, features, ctx, teacher_metrics, int(desc.macs),
                         int(desc.params), t_lat, predictor, budget_ms, {**val.data_info(), "split": "val"},
                         tuple(cfg.thresholds))  # type: ignore[arg-type]
    if inputs.latency_budget:
        assert t_lat is not None
        budget = parse_budget("latency", inputs.latency_budget)
        budget_ms = budget.resolve(t_lat)
        problem.budget_ms = budget_ms
        if inputs.method == "ddc":
            floor = problem.latency_ms(tuple(problem.removable))
            assert floor is not None
            if floor > budget_ms:
                raise UserError(f"latency budget {budget.text} ({budget_ms:.3f} ms) is infeasible for --method ddc: "
                                f"removing all {len(removable)} removable units reaches {floor:.3f} ms "
                                f"({100 * floor / t_lat:.1f}% of the teacher's {t_lat:.3f} ms) at best; "
                                "allow at least that, or use --method ddc+amc")
        a_th, _, c_th = cfg.thresholds
        problem.thresholds = (a_th, min(1.0, budget_ms / t_lat), c_th)
        log(f"latency budget: {budget_ms:.3f} ms ({budget.text}; teacher {t_lat:.3f} ms predicted); the reward's "
            f"T_th follows it ({problem.thresholds[1]:.3f})" + ("" if inputs.method == "ddc" else
                                                               "; the channel stage enforces it"))
    problem.setup_s = time.perf_counter() - t0
    log(f"{len(removable)} removable units: {', '.join(problem.removable)}")
    return problem


# DDC-only options of ``amc-mobile search`` (name -> help); the others are shared with the AMC search.
CLI_OPTIONS: dict[str, tuple[type, str]] = {
    "samples_per_iteration": (int, "DDC: architectures sampled per REINFORCE iteration (DDC: 5); --episodes "
                                   "counts iterations [default: 5; --episodes default 100]."),
    "student_images": (int, "DDC: training images of each sampled student's KD pass [default: 2000]."),
    "student_epochs": (int, "DDC: passes of each student's KD pass over its images [default: 1]."),
    "measure_top": (int, "DDC: best candidates measured on the device before the final pick [default: 3]."),
    "amc_episodes": (int, "ddc+amc: episodes of the AMC channel search after the removal [default: 100]."),
    "policy_lr": (float, "DDC: Adam learning rate of the Bi-LSTM policy [default: 0.005]."),
    "policy_entropy": (float, "DDC: weight of an entropy bonus that keeps the policy exploring (0: plain "
                              "REINFORCE) [default: 0]."),
}
_SHARED = {"episodes": "episodes", "seed": "seed", "measure": "measure", "val_size": "val_size",
           "bn_images": "bn_images", "metric": "metric", "ddc_thresholds": "thresholds"}


def ddc_settings(options: dict[str, Any]) -> tuple[DDCInputs, DDCConfig]:
    """DDC inputs and config from ``amc-mobile search`` options that were given (names as in the AMC
    search's SearchInputs/SearchConfig plus :data:`CLI_OPTIONS`); an AMC-only option is one line."""
    from dataclasses import fields

    names_in = {f.name for f in fields(DDCInputs)}
    kw_in = {k: v for k, v in options.items() if k in names_in}
    kw_cfg = {_SHARED[k]: v for k, v in options.items() if k in _SHARED}
    kw_cfg.update({k: v for k, v in options.items() if k in CLI_OPTIONS})
    other = sorted(set(options) - names_in - set(_SHARED) - set(CLI_OPTIONS))
    if other:
        raise UserError(f"{', '.join('--' + k.replace('_', '-') for k in other)} do(es) not apply to --method "
                        f"{kw_in.get('method', 'ddc')} (AMC search options)")
    return DDCInputs(**kw_in), DDCConfig(**kw_cfg)


def load_ddc_settings(out_dir: str | Path) -> tuple[DDCInputs, DDCConfig]:
    """The inputs and config a DDC search in ``out_dir`` was started with (``--resume DIR`` alone)."""
    path = Path(out_dir) / "ddc_state.pt"
    if not path.exists():
        raise UserError(f"nothing to resume: {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        return DDCInputs(**state["inputs"]), DDCConfig(**state["config"])
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - damaged or foreign file
        raise UserError(f"{path} is damaged or not a DDC search state ({type(exc).__name__})") from exc


def is_ddc_dir(out_dir: str | Path) -> bool:
    return (Path(out_dir) / "ddc_state.pt").exists()


def _fingerprint(inputs: DDCInputs, cfg: DDCConfig) -> dict[str, Any]:
    d = {**asdict(inputs), **{k: v for k, v in asdict(cfg).items()
                              if k not in ("episodes", "measure", "measure_top", "amc_episodes", "threads")}}
    return dict(json.loads(json.dumps(d)))


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())


def _key(removed: Sequence[str]) -> str:
    return ",".join(removed)


def run_ddc_search(inputs: DDCInputs, cfg: DDCConfig, out_dir: str | Path, resume: bool = False,
                   log: Callable[[str], None] = print, latency_predictor: Any = None,
                   map_fn: Callable[..., Iterable[Any]] | None = None, stop_after: int | None = None,
                   command: str | None = None, amc_config: Any = None) -> dict[str, Any]:
    """Run (or resume) a DDC search into ``out_dir``; returns the summary (also ``summary.json``).

    Outputs: ``student.pt`` (the picked student after its short KD pass; ddc+amc: the channel search's
    outputs in ``amc/``, its final model ``amc/pruned.pt``), ``samples.csv`` (every sampled architecture), ``iterations.csv`` (reward curve,
    baseline, removal probabilities), ``summary.json``, ``ddc.png``. ``map_fn`` evaluates an iteration's
    students elsewhere (Ray); ``stop_after`` ends this call after that many new iterations (tests).
    ``amc_config`` (a :class:`~amc_mobile.search.SearchConfig`) overrides the ddc+amc channel stage's
    settings (default: ``amc_episodes`` episodes, this search's seed and val size).
    """
    inputs.check()
    cfg.check()
    out = Path(out_dir)
    state_path = out / "ddc_state.pt"
    state: dict[str, Any] | None = None
    if resume and not state_path.exists():
        raise UserError(f"nothing to resume: {state_path} does not exist")
    if state_path.exists():
        try:
            state = torch.load(state_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means a damaged file
            raise UserError(f"{state_path} is damaged ({type(exc).__name__}); remove it or use another --out") from exc
        if not isinstance(state, dict) or state.get("schema_version") != STATE_SCHEMA:
            raise UserError(f"{state_path} is not a DDC search state this amc-mobile reads")
        diff = [k for k, v in state["fingerprint"].items() if _fingerprint(inputs, cfg).get(k) != v]
        if diff:
            raise UserError(f"{out} already holds a DDC search with other settings ({', '.join(diff)}); continue it "
                            "with the same settings or choose another --out")
    existed = out.exists()
    ensure_dir(out)
    lock = ExclusiveLock(out / "ddc_search", f"DDC search {out}").acquire()
    try:
        try:
            problem = build_ddc_problem(inputs, cfg, latency_predictor, log)
        except UserError:
            lock.release()
            if not existed and not any(p for p in out.iterdir() if p.name != "ddc_search.lock"):
                (out / "ddc_search.lock").unlink(missing_ok=True)
                out.rmdir()
            raise
        return _search(problem, out, state, state_path, log, map_fn, stop_after, command, amc_config)
    finally:
        lock.release()


def _search(problem: DDCProblem, out: Path, state: dict[str, Any] | None, state_path: Path,
            log: Callable[[str], None], map_fn: Any, stop_after: int | None, command: str | None,
            amc_config: Any = None) -> dict[str, Any]:
    inputs, cfg = problem.inputs, problem.cfg
    removable = problem.removable
    agent = ReinforceAgent(problem.features, [e.removable for e in problem.elements], cfg.policy_config(), cfg.seed)
    cache: dict[str, dict[str, Any]] = {}
    samples: list[dict[str, Any]] = []
    iterations: list[dict[str, Any]] = []
    wall_s = 0.0
    if state is not None:
        agent.load_state_dict(state["agent"])
        cache = {k: dict(v) for k, v in state["cache"].items()}
        samples, iterations = list(state["samples"]), list(state["iterations"])
        wall_s = float(state["wall_s"])
        log(f"resuming {out}: {len(iterations)} iteration(s) done, {len(cache)} students cached")
    elif inputs.transfer_from:
        src = Path(inputs.transfer_from) / "ddc_state.pt"
        if not src.exists():
            raise UserError(f"--transfer-from {inputs.transfer_from}: no ddc_state.pt there (not a DDC search directory)")
        try:
            src_state = torch.load(src, map_location="cpu", weights_only=True)
            agent.load_policy_weights(src_state["agent"], inputs.transfer_from)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"--transfer-from {inputs.transfer_from}: unreadable DDC state ({type(exc).__name__})") from exc
        log(f"policy (Bi-LSTM weights) transferred from {inputs.transfer_from}")
    start = len(iterations)
    stop = cfg.episodes if stop_after is None else min(cfg.episodes, start + stop_after)
    for it in range(start, stop):
        t_it = time.perf_counter()
        actions = agent.sample(cfg.samples_per_iteration)
        archs = [tuple(removable[j] for j in range(len(removable)) if int(a[j]) == 1) for a in actions]
        new = [a for a in dict.fromkeys(archs) if _key(a) not in cache]
        for arch, res in zip(new, evaluate_students(problem.ctx, new, map_fn), strict=True):
            lat = problem.latency_ms(arch)
            over = inputs.method == "ddc" and problem.over_budget(lat)
            cache[_key(arch)] = {**res, "latency_ms": lat, "reward": problem.reward(res, lat), "over_budget": over,
                                 "first_iteration": it}
        rewards = [float(cache[_key(a)]["reward"]) for a in archs]
        stats = agent.update(actions, rewards)
        best_so_far = max(float(v["reward"]) for v in cache.values())
        fresh = set(map(_key, new))
        for i, arch in enumerate(archs):
            c = cache[_key(arch)]
            samples.append({"iteration": it, "sample": i, "reward": c["reward"], "accuracy": c[cfg.metric] / 100.0,
                            "top1": c["top1"], "top5": c["top5"],
                            "latency_ms": float("nan") if c["latency_ms"] is None else c["latency_ms"],
                            "params": c["params"], "macs": c["macs"], "n_removed": len(arch),
                            "removed": " ".join(arch), "cached": int(_key(arch) not in fresh or archs.index(arch) < i),
                            "over_budget": int(c["over_budget"]), "train_s": c["train_s"]})
        it_s = time.perf_counter() - t_it
        wall_s += it_s
        iterations.append({"iteration": it, "mean_reward": sum(rewards) / len(rewards), "best_reward": max(rewards),
                           "best_so_far": best_so_far, "baseline": stats["baseline"], "new_students": len(new),
                           "remove_probs": " ".join(f"{p:.3f}" for p in agent.remove_probs().tolist()),
                           "iteration_s": it_s})
        atomic_torch_save(state_path, {
            "schema_version": STATE_SCHEMA, "fingerprint": _fingerprint(inputs, cfg), "agent": agent.state_dict(),
            "inputs": json.loads(json.dumps(asdict(inputs))), "config": json.loads(json.dumps(asdict(cfg))),
            "cache": cache, "samples": samples, "iterations": iterations, "wall_s": wall_s,
            "removable": removable})
        _write_csv(out / "samples.csv", SAMPLE_COLUMNS, samples)
        _write_csv(out / "iterations.csv", ITERATION_COLUMNS, iterations)
        log(f"iteration {it + 1}/{cfg.episodes}: mean reward {stats['mean_reward']:.4g}, best so far "
            f"{best_so_far:.4g}, {len(new)} new student(s), {it_s:.1f}s")
    if len(iterations) < cfg.episodes:
        return {"iterations_done": len(iterations), "finished": False}
    return _finalize(problem, out, agent, cache, iterations, wall_s, log, map_fn, command, amc_config)


def _finalize(problem: DDCProblem, out: Path, agent: ReinforceAgent, cache: dict[str, dict[str, Any]],
              iterations: list[dict[str, Any]], wall_s: float, log: Callable[[str], None], map_fn: Any,
              command: str | None, amc_config: Any = None) -> dict[str, Any]:
    from amc_mobile.models.arch import require_arch
    from amc_mobile.models.checkpoint import save_checkpoint

    inputs, cfg = problem.inputs, problem.cfg
    spec = require_arch(problem.teacher)
    if inputs.method == "ddc" and problem.budget_ms is not None and all(c["over_budget"] for c in cache.values()):
        floor = tuple(problem.removable)  # meets the budget (checked when the search started)
        log("no sampled architecture met the latency budget; adding the one without every removable unit")
        res = evaluate_student(problem.ctx, floor)
        lat = problem.latency_ms(floor)
        cache[_key(floor)] = {**res, "latency_ms": lat, "reward": problem.reward(res, lat), "over_budget": False,
                              "first_iteration": -1}
    # within the budget first (ddc), then by reward
    ranked = sorted(cache.values(), key=lambda c: (bool(c["over_budget"]), -float(c["reward"]), c["params"],
                                                   _key(c["removed"])))
    measured: dict[str, Any] = {}
    candidates = [c for c in ranked if not c["over_budget"]][:max(1, cfg.measure_top)]
    pick = ranked[0]
    pick_basis = "predicted latency (table)" if problem.predictor is not None else "no latency (no device given)"
    if cfg.measure and inputs.device and cfg.measure_top > 0:
        log(f"measuring the teacher and the best {len(candidates)} candidate(s) on {inputs.device} (interleaved) ...")
        models = {"teacher": problem.teacher}
        for i, c in enumerate(candidates):
            models[f"candidate{i}"] = removed_copy(problem.teacher, c["removed"])
        measured = _measure(inputs.device, models, spec.input_shape, out / ".measure")
        t_ratio = float(measured["teacher"]["ratio_to_reference"])
        t_pred = problem.teacher_latency_ms or 1.0
        best_r = -float("inf")
        for i, c in enumerate(candidates):
            m = measured[f"candidate{i}"]
            rel = float(m["ratio_to_reference"]) / t_ratio  # measured latency relative to the measured teacher
            c["measured_latency_ms"] = float(m["median_ms"])
            c["measured_relative_latency"] = rel
            c["measured_reward"] = problem.reward(c, rel * t_pred, t_pred)
            c["measured_over_budget"] = inputs.method == "ddc" and problem.over_budget(rel * t_pred, 0.05)
            score = c["measured_reward"] - (2.0 if c["measured_over_budget"] else 0.0)  # over by > 5%: last
            if score > best_r:
                best_r, pick = score, c
        pick_basis = "measured latency (device, interleaved with the teacher)"
    student = train_student(problem.ctx, pick["removed"])
    from amc_mobile.training import evaluate

    final_metrics = evaluate(student, problem.ctx.val_batches)
    data_meta = {**(problem.meta.get("data") or {}), **({"classes": problem.data_info.get("classes")}
                                                           if inputs.classes else {})}
    save_checkpoint(out / "student.pt", student, data=data_meta,
                    search={"method": "ddc", "removed": list(pick["removed"]), "reward": float(pick["reward"])})

    def block(result: dict[str, Any] | None, metrics: dict[str, float], macs: int, params: int,
              pred: float | None, meas: dict[str, Any] | None) -> dict[str, Any]:
        return {"val_top1": metrics["top1"], "val_top5": metrics["top5"], "macs": macs, "params": params,
                "predicted_latency_ms": pred, "measured_latency_ms": meas["median_ms"] if meas else None,
                "removed": list(result["removed"]) if result else []}

    cand_meas = None
    if measured:
        cand_meas = measured[f"candidate{candidates.index(pick)}"]
    summary: dict[str, Any] = {
        "schema_version": 1, "command": command, "method": inputs.method, "inputs": asdict(inputs),
        "config": asdict(cfg), "data": problem.data_info, "iterations": len(iterations),
        "students_trained": len(cache), "samples": len(iterations) * cfg.samples_per_iteration,
        "removable_units": problem.removable, "trunk": [e.to_dict() for e in problem.elements],
        "latency_budget_ms": problem.budget_ms, "thresholds_used": list(problem.thresholds),
        "meets_budget": None if problem.budget_ms is None else not problem.over_budget(pick["latency_ms"]),
        "teacher": block(None, problem.teacher_metrics, problem.teacher_macs, problem.teacher_params,
                         problem.teacher_latency_ms, measured.get("teacher")),
        "student": block(pick, final_metrics, int(pick["macs"]), int(pick["params"]), pick["latency_ms"], cand_meas),
        "reward": float(pick["reward"]), "measured_reward": pick.get("measured_reward"),
        "pick_basis": pick_basis,
        "candidates": [{k: c.get(k) for k in ("removed", "reward", "top1", "params", "latency_ms", "over_budget",
                                               "measured_latency_ms", "measured_relative_latency", "measured_reward",
                                               "measured_over_budget")}
                       for c in candidates],
        "params_ratio": int(pick["params"]) / problem.teacher_params,
        "note": "every candidate's latency is PREDICTED by the device's table; 'measured_*' are device "
                "measurements of the best candidates and the teacher in one interleaved run, which decided the "
                "pick when present. Accuracies are on held-out val images (from the training set) after each "
                "student's short KD pass (student_images, student_epochs) with BN re-estimation.",
        "search_wall_s": wall_s, "setup_s": problem.setup_s,
        "final_policy_remove_probs": agent.remove_probs().tolist(),
    }
    if inputs.method == "ddc+amc":
        summary["amc"] = _amc_stage(problem, out, log, map_fn, amc_config)
    atomic_write_json(out / "summary.json", json.loads(json.dumps(summary, default=str)))
    try:
        _plot(iterations, list(cache.values()), out / "ddc.png", problem)
    except Exception as exc:  # noqa: BLE001 - a plot must never lose a finished search
        log(f"warning: could not draw the plot ({type(exc).__name__}: {exc})")
    return summary


def _amc_stage(problem: DDCProblem, out: Path, log: Callable[[str], None], map_fn: Any,
               amc_config: Any = None) -> dict[str, Any]:
    """DDC's second stage: AMC's channel search on the removed student (as its teacher) under the
    remaining latency budget; the final model is ``out/amc/pruned.pt``."""
    from amc_mobile.models.checkpoint import load_checkpoint
    from amc_mobile.models.describe import describe_model
    from amc_mobile.search import SearchConfig, SearchInputs, SearchSummary, run_search

    inputs, cfg = problem.inputs, problem.cfg
    t_lat = problem.teacher_latency_ms
    if t_lat is None:
        raise UserError("--method ddc+amc needs --device NAME (or --latency-table FILE): the channel stage searches "
                        "under a latency budget")
    budget_ms = problem.budget_ms if problem.budget_ms is not None else cfg.thresholds[1] * t_lat
    student, _ = load_checkpoint(out / "student.pt")
    assert problem.predictor is not None
    now = float(problem.predictor.predict(describe_model(student)))
    if now <= budget_ms:
        log(f"the removed model already meets the latency budget ({now:.3f} <= {budget_ms:.3f} ms); "
            "no channel search needed")
        return {"skipped": True, "budget_ms": budget_ms, "removed_latency_ms": now}
    log(f"channel search (AMC) on the removed model: {now:.3f} ms -> budget {budget_ms:.3f} ms")
    amc_inputs = SearchInputs(checkpoint=str(out / "student.pt"), device=inputs.device,
                              latency_budget=f"{budget_ms:.6f}ms", latency_table=inputs.latency_table,
                              dataset=inputs.dataset, data_dir=inputs.data_dir, method="amc")
    amc_cfg = amc_config or SearchConfig(episodes=cfg.amc_episodes, seed=cfg.seed, measure=cfg.measure,
                                         val_size=min(cfg.val_size, 3000))
    res = run_search(amc_inputs, amc_cfg, out / "amc", resume=(out / "amc" / "search_state.pt").exists(),
                     progress=False, log=log, latency_predictor=problem.predictor, map_fn=map_fn)
    assert isinstance(res, SearchSummary)  # no stop_after: the search finishes
    data: dict[str, Any] = res.to_dict()
    fin = data.get("final") or {}
    final = {k: fin.get(k) for k in ("val_top1", "params", "macs", "predicted_latency_ms", "measured_latency_ms")}
    return {"skipped": False, "budget_ms": budget_ms, "removed_latency_ms": now, "out": str(out / "amc"),
            "final_checkpoint": str(out / "amc" / "pruned.pt"), "final": final, "summary": data}


def _plot(iterations: Sequence[dict[str, Any]], students: Sequence[dict[str, Any]], path: Path,
          problem: DDCProblem) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    it = [r["iteration"] for r in iterations]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    a1.plot(it, [r["mean_reward"] for r in iterations], "-", lw=1, label="mean of the N samples")
    a1.plot(it, [r["best_so_far"] for r in iterations], "-", lw=1.5, label="best so far")
    a1.plot(it, [r["baseline"] for r in iterations], ":", lw=1, label="EMA baseline")
    a1.set_xlabel("iteration")
    a1.set_ylabel("DDC reward R1*R2*R3")
    a1.legend(loc="lower right", fontsize=8)
    use_lat = problem.predictor is not None
    xs = [float(s["latency_ms"] if use_lat else s["params"]) for s in students]
    a2.scatter(xs, [float(s[problem.cfg.metric]) for s in students], c=[float(s["reward"]) for s in students], s=12)
    a2.set_xlabel("predicted latency (ms)" if use_lat else "params")
    a2.set_ylabel(f"val {problem.cfg.metric} (%) after the short KD pass")
    spec_name = getattr(problem.teacher, "arch_spec", None)
    fig.suptitle(f"{getattr(spec_name, 'name', 'model')}: DDC block removal")
    fig.tight_layout()
    from amc_mobile.storage import atomic_write_figure

    atomic_write_figure(path, fig)

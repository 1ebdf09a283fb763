"""What a search runs on (:class:`SearchInputs`) and how (:class:`SearchConfig`).

These two dataclasses are the single source of every search option: its default, its validation
and its help text (``field(metadata={"help": ...})``). ``amc-mobile search`` generates its options
from them (:func:`amc_mobile.cli.search_cmds.search`), and a library caller gets the same defaults,
e.g. ``SearchConfig(episodes=50)`` warms up for 12 episodes (a quarter), not AMC's 100.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from amc_mobile.errors import UserError
from amc_mobile.search.budgets import Budget, parse_budgets

METHODS = ("amc", "uniform", "greedy")
WARMUP_AMC = 100  # AMC's warm-up episodes (reference code)
BN_IMAGES = 500  # default BN re-estimation images (bench/README: as accurate as 1,000-2,000, half the cost)


def opt(default: Any, help: str, flag: str | None = None, short: str | None = None,  # noqa: A002
        cli: bool = True) -> Any:
    """A dataclass field carrying its CLI help (``flag`` overrides ``--field-name``)."""
    return field(default=default, metadata={"help": help, "flag": flag, "short": short, "cli": cli})


@dataclass
class SearchInputs:
    """What a search runs on (saved in the state so ``--resume DIR`` needs nothing else)."""

    checkpoint: str = opt("", "Teacher checkpoint file or zoo:NAME.", short="-c")
    device: str | None = opt(None, "Target device profile (its latency table predicts latency; the final "
                                   "models are measured on it).", short="-d")
    latency_budget: str | None = opt(None, "e.g. 20ms, 1500us, or 50% of the teacher's latency on the device "
                                           "(predicted from its table).")
    flops_budget: str | None = opt(None, "MACs budget, e.g. 50% or 5M.")
    params_budget: str | None = opt(None, "Parameter budget, e.g. 60% or 400k.")
    latency_table: str | None = opt(None, "Use this latency table file instead of the device's.")
    dataset: str | None = opt(None, "Data set (default: the one recorded in the checkpoint).")
    data_dir: str | None = opt(None, "Directory holding the data set.")
    method: str = opt("amc", "amc (DDPG search) | greedy (NetAdapt-style: shrink the group losing the least "
                             "accuracy per ms saved until the budget is met) | uniform (one keep ratio) | ddc | "
                             "ddc+amc (DDC: a Bi-LSTM policy removes whole blocks, then for ddc+amc this "
                             "channel search; see --samples-per-iteration).")
    classes: str | None = opt(None, "Search for this class subset (DDC): names, indices of the teacher's outputs "
                                    "or a preset, e.g. 'Sandal,Sneaker,Ankle boot'; the teacher's classifier is "
                                    "cut to these rows.")
    transfer_from: str | None = opt(None, "Start the agent (actor + critic) from the finished search in this "
                                          "directory (DDC policy transfer).")

    def budgets(self) -> list[Budget]:
        return parse_budgets(self.latency_budget, self.flops_budget, self.params_budget)

    def check(self) -> None:
        if not self.checkpoint:
            raise UserError("give --checkpoint FILE|zoo:NAME")
        if self.method not in METHODS:
            raise UserError(f"unknown method '{self.method}'; valid methods: {', '.join(METHODS)}")
        if self.transfer_from and self.method != "amc":
            raise UserError("--transfer-from needs --method amc (it starts the DDPG agent)")
        self.budgets()


@dataclass
class SearchConfig:
    """Settings of one search; ``None`` fields are derived (see :meth:`warmup_episodes`, :meth:`sigma0`)."""

    episodes: int = opt(400, "Episodes in total (seeded baselines and warm-up included).", short="-n")
    warmup: int | None = opt(None, "Episodes of random actions before the agent learns [AMC's 100, at most a "
                                   "quarter of --episodes; 0 with --transfer-from].")
    reward: str = opt("err", "Reward (see amc_mobile.search.rewards): err | flops | params | latency | ddc.")
    metric: str = opt("top1", "Accuracy the reward sees: top1 | top5.")
    val_size: int = opt(3000, "Held-out val images (from the training set) scoring each candidate "
                              "(AMC: 3,000-5,000).")
    select_size: int = opt(2000, "A SECOND held-out slice (the val images not used for scoring) on which the "
                                 "top-k candidates are re-scored and the final one picked.")
    top_k: int = opt(5, "Candidates re-scored on the second slice before picking the final one (>= 1).")
    finetune_top_k: int = opt(0, "Give each top-k candidate a short KD pass (1 epoch on this many training "
                                 "images) before picking; 0: off.")
    bn_images: int | None = opt(None, "Training images re-estimating BatchNorm statistics of every candidate "
                                      "(EagleEye adaptive BN); 0: off [500, or the whole training split when "
                                      "smaller].")
    seed_baselines: bool = opt(True, "Evaluate the uniform and a FLOPs-proportional policy as the first "
                                     "episodes and put them in the agent's replay buffer.")
    min_ratio: float = opt(0.2, "Smallest keep ratio of a group.")
    max_ratio: float = opt(1.0, "Largest keep ratio of a group.", cli=False)
    multiple: int = opt(0, "Kept channels are rounded up to a multiple of this; 0: the latency table's channel "
                           "step (amc-bench profile --granularity; 16 suits CPUs with AVX-512), else 8.")
    criterion: str = opt("l1", "Channel selection criterion of the pruner.", cli=False)
    reconstruct: bool = opt(True, "Least-squares reconstruction of the consuming layers (AMC sec. 3.3).",
                            cli=False)
    calib_batches: int = opt(20, "Calibration batches for reconstruction.", cli=False)
    calib_batch_size: int = opt(50, "Images per calibration batch.", cli=False)
    points_per_image: int = opt(10, "Random spatial points per image and layer.", cli=False)
    eval_batch_size: int = opt(1000, "Images per forward pass when scoring.", cli=False)
    ddc_thresholds: tuple[float, float, float] = opt((0.9, 0.3, 0.6), "DDC thresholds A_th,T_th,C_th.")
    seed: int = opt(0, "Seed of agent, calibration sample and val subset.")
    measure: bool = opt(True, "Measure the final candidates and the teacher on the device at the end.")
    correct_budget_at: float = opt(0.0, "Closed loop: after this share of the episodes (e.g. 0.5), measure the best "
                                        "candidates on the device and move the latency budget on the table's "
                                        "scale by their measured/predicted latency, checked once more later (see "
                                        "amc_mobile.search.correction); 0: open-loop (default).")
    init_sigma: float | None = opt(None, "Exploration noise after the warm-up [0.5; 0.2 with --transfer-from].")
    sigma_decay: float = opt(0.95, "Per-episode decay of the exploration noise (AMC: 0.95).")
    sigma_floor: float = opt(0.1, "The exploration noise never decays below this (AMC: none); see "
                                  "bench/README for the measurement behind the default.")
    greedy_steps: int = opt(10, "Greedy method: the cost is cut in about this many equal steps (NetAdapt).")

    def __post_init__(self) -> None:
        self.ddc_thresholds = tuple(float(v) for v in self.ddc_thresholds)  # type: ignore[assignment]

    def warmup_episodes(self, transfer: bool = False) -> int:
        """Warm-up actually used: the given value, else 0 after a transfer, else min(100, episodes // 4)."""
        if self.warmup is not None:
            return self.warmup
        return 0 if transfer else min(WARMUP_AMC, self.episodes // 4)

    def bn_images_used(self, n_train: int) -> int:
        """BN re-estimation images: the given count (validated by the caller), else min(1000, n_train)."""
        return min(BN_IMAGES, n_train) if self.bn_images is None else self.bn_images

    def sigma0(self, transfer: bool = False) -> float:
        """Exploration noise right after the warm-up."""
        if self.init_sigma is not None:
            return self.init_sigma
        return 0.2 if transfer else 0.5

    def check(self) -> None:
        """One line per bad setting."""
        from amc_mobile.search.rewards import get_reward

        if self.metric not in ("top1", "top5"):
            raise UserError(f"unknown metric '{self.metric}'; valid metrics: top1, top5")
        if self.episodes < 1:
            raise UserError("--episodes must be >= 1")
        if self.warmup is not None and not 0 <= self.warmup < self.episodes:
            raise UserError(f"--warmup must be in [0, {self.episodes - 1}] (below --episodes {self.episodes}), "
                            f"got {self.warmup}")
        if self.val_size < 1:
            raise UserError(f"--val-size must be >= 1, got {self.val_size}")
        if self.select_size < 1:
            raise UserError(f"--select-size must be >= 1, got {self.select_size}")
        if self.top_k < 1:
            raise UserError(f"--top-k must be >= 1 (the number of candidates re-scored), got {self.top_k}")
        if (self.bn_images is not None and self.bn_images < 0) or self.finetune_top_k < 0:
            raise UserError("--bn-images and --finetune-top-k must be >= 0 (0: off)")
        for name in ("init_sigma", "sigma_floor"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= v <= 1.0:
                raise UserError(f"--{name.replace('_', '-')} must be in [0, 1], got {v}")
        if not 0.0 < self.sigma_decay <= 1.0:
            raise UserError(f"--sigma-decay must be in (0, 1], got {self.sigma_decay}")
        if not 0 < self.min_ratio <= self.max_ratio <= 1:
            raise UserError(f"need 0 < --min-ratio ({self.min_ratio}) <= max ratio ({self.max_ratio}) <= 1")
        if len(self.ddc_thresholds) != 3:
            raise UserError("--ddc-thresholds: expected three numbers A,T,C like 0.9,0.3,0.6")
        if self.multiple < 0:
            raise UserError(f"--multiple must be >= 1 (0: the latency table's channel step), got {self.multiple}")
        if not 0.0 <= self.correct_budget_at < 1.0:
            raise UserError(f"--correct-budget-at must be in [0, 1) (a share of the episodes; 0: open-loop), "
                            f"got {self.correct_budget_at}")
        if self.greedy_steps < 1:
            raise UserError(f"--greedy-steps must be >= 1, got {self.greedy_steps}")
        get_reward(self.reward)


RESUMABLE = ("episodes", "measure")  # settings a resumed search may change


def fingerprint(inputs: SearchInputs, cfg: SearchConfig) -> dict[str, Any]:
    """Settings that must not change on resume (everything but the episode count and measuring)."""
    import json

    d = {**asdict(inputs), **{k: v for k, v in asdict(cfg).items() if k not in RESUMABLE}}
    return dict(json.loads(json.dumps(d)))


def settings_from_fingerprint(fp: dict[str, Any]) -> tuple[SearchInputs, SearchConfig]:
    """Inverse of :func:`fingerprint` (+ the resumable settings): fields unknown to this version are
    dropped, fields it added take their defaults."""
    names_in = {f.name for f in fields(SearchInputs)}
    names_cfg = {f.name for f in fields(SearchConfig)}
    inputs = SearchInputs(**{k: v for k, v in fp.items() if k in names_in})
    cfg_kw = {k: v for k, v in fp.items() if k in names_cfg}
    if "ddc_thresholds" in cfg_kw:
        cfg_kw["ddc_thresholds"] = tuple(cfg_kw["ddc_thresholds"])
    return inputs, SearchConfig(**cfg_kw)

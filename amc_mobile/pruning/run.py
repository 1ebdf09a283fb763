"""Prune one model and save it: the workflow behind ``amc-mobile prune``, callable from Python.

Channel mode (AMC, He et al. 2018, Sec. 3.1/4.1): choose the kept channels of each group by a criterion
(L1 of the weights by default), refit the consuming layers by least squares on features sampled from
calibration images, and measure the accuracy change without fine-tuning. Fine-grained mode (AMC's
model-size protocol, Sec. 4.1): zero a fraction of every conv/linear weight, shapes unchanged.
:class:`PruneConfig` is the single source of the options' defaults, validation and help text.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from amc_mobile.errors import UserError
from amc_mobile.models.describe import ModelDescription
from amc_mobile.options import opt
from amc_mobile.pruning.fine_grained import SparsityReport

__all__ = ["PruneConfig", "PruneResult", "prune_model"]


def _parse_channels(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError as exc:
        raise UserError(f"--channels takes comma-separated integers, got '{text}'") from exc


@dataclass(frozen=True)
class PruneConfig:
    """How to prune: exactly one of ``policy``, ``uniform``, ``channels``, ``sparsity``; selection,
    reconstruction and data options (AMC's defaults: 60 batches x 50 images, 10 points per image)."""

    policy: str | None = opt(None, "Pruning policy JSON (from the search or --save-policy).")
    uniform: float | None = opt(None, "Keep this fraction of every group, in (0, 1].")
    channels: str | tuple[int, ...] | None = opt(None, "Kept width of each group, 'info --groups' order.")
    sparsity: float | None = opt(None, "Fine-grained mode: zero this fraction of every conv/linear weight "
                                 "(AMC's model-size protocol); shapes unchanged.")
    criterion: str = opt("l1", "Channel selection: l1 (AMC), l2, out_l1, bn_gamma, random.")
    reconstruct: bool = opt(True, "Least-squares refit of the consuming layers (needs data).")
    dataset: str | None = opt(None, "Data set for calibration and accuracy (default: the one the checkpoint "
                              "records).")
    data_dir: str | None = opt(None, "Where the data set lives.")
    use_data: bool = opt(True, "Use data for reconstruction and accuracy (--no-data: neither).", flag="--data")
    calib_batches: int = opt(60, "Calibration batches (AMC: 60).")
    calib_batch_size: int = opt(50, "Images per calibration batch (AMC: 50).")
    points_per_image: int = opt(10, "Random spatial points per image (AMC: 10).")
    ridge: float = opt(0.0, "Ridge term of the refit, relative to the mean feature energy.")
    multiple: int = opt(8, "Round kept channels (from ratios) to this multiple.")
    eval_split: str = opt("val", "Split for the accuracy check: val or test.")
    eval_images: int | None = opt(None, "Evaluate on at most this many images.")
    save_policy: str | None = opt(None, "Also write the policy used as JSON.")
    seed: int = opt(0, "Seed of the calibration sample and the random criterion.")

    def __post_init__(self) -> None:
        from amc_mobile.pruning.criteria import get_criterion

        chosen = [o for o in (self.policy, self.uniform, self.channels, self.sparsity) if o is not None]
        if len(chosen) != 1:
            raise UserError("give exactly one of --policy FILE, --uniform RATIO, --channels C1,C2,... "
                            "or --sparsity S (fine-grained)")
        if self.uniform is not None and not 0.0 < self.uniform <= 1.0:
            raise UserError(f"--uniform {self.uniform} is outside (0, 1]")
        if isinstance(self.channels, str):
            object.__setattr__(self, "channels", _parse_channels(self.channels))
        get_criterion(self.criterion)  # unknown name -> one line listing the valid ones


@dataclass(frozen=True)
class PruneResult:
    """What :func:`prune_model` did: sizes before and after, the kept channels or the sparsity, accuracy."""

    out: Path  # the pruned checkpoint
    before: ModelDescription
    after: ModelDescription
    keep_channels: tuple[int, ...] | None = None  # channel mode
    criterion: str | None = None  # channel mode
    reconstructed: bool = False  # channel mode: least-squares refit done
    reconstruct_skipped: bool = False  # refit asked for but no data
    sparsity: SparsityReport | None = None  # fine-grained mode
    metrics_before: dict[str, float] | None = None  # evaluate(): top1, top5, loss, n (with data)
    metrics_after: dict[str, float] | None = None
    eval_split: str | None = None
    dataset: str | None = None
    warnings: tuple[str, ...] = ()  # raised while analysing the model


def prune_model(net: nn.Module, meta: dict[str, Any], cfg: PruneConfig, out: str | Path,
                parent: str | None = None) -> PruneResult:
    """Prune ``net`` (checkpoint metadata ``meta``, possibly empty) as ``cfg`` says and save it to ``out``.

    Data are used when ``cfg.use_data`` and a data set is given or recorded in ``meta``. ``parent``
    (default: the architecture name) is recorded in the checkpoint.
    """
    from amc_mobile.models import describe_model, require_arch
    from amc_mobile.models.checkpoint import save_checkpoint
    from amc_mobile.pruning.engine import ChannelPruner
    from amc_mobile.pruning.fine_grained import fine_grained_prune
    from amc_mobile.pruning.policy import PruningPolicy, policy_from_channels, uniform_policy

    arch = require_arch(net)
    name, size = arch.name, int(arch.input_size)
    before = describe_model(net, size)

    data = None
    if cfg.use_data and (cfg.dataset is not None or bool((meta.get("data") or {}).get("dataset"))):
        from amc_mobile.pruning.data import load_pruning_data

        data = load_pruning_data(meta, cfg.dataset, cfg.data_dir, cfg.calib_batches * cfg.calib_batch_size,
                                 cfg.eval_split, cfg.eval_images, seed=cfg.seed)

    extra: dict[str, Any] = {"data": meta.get("data") or (data.info if data else None), "parent": parent or name}
    result: dict[str, Any] = {}
    if cfg.sparsity is not None:
        pruned, report = fine_grained_prune(net, cfg.sparsity)
        extra["fine_grained"] = report.to_dict()
        after = describe_model(pruned, size)
        result["sparsity"] = report
    else:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pruner = ChannelPruner(
                net, input_size=size, calib_images=data.calib_images if (data and cfg.reconstruct) else None,
                criterion=cfg.criterion, reconstruct=cfg.reconstruct, calib_batches=cfg.calib_batches,
                calib_batch_size=cfg.calib_batch_size, points_per_image=cfg.points_per_image, ridge=cfg.ridge,
                seed=cfg.seed)
        groups = pruner.groups
        if cfg.policy is not None:
            pol = PruningPolicy.load(cfg.policy)
            pol.validate(groups, name)
        elif cfg.uniform is not None:
            pol = uniform_policy(groups, cfg.uniform, name, size, cfg.multiple)
        else:
            counts = cfg.channels if isinstance(cfg.channels, tuple) else _parse_channels(cfg.channels or "")
            pol = policy_from_channels(groups, list(counts), name, size, cfg.multiple)
        pruned = pruner.prune(pol.keep_channels)
        after = pruner.describe(pol.keep_channels)
        extra["pruning"] = {**pol.to_dict(), "criterion": cfg.criterion, "reconstruct": pruner.reconstruct}
        if cfg.save_policy is not None:
            pol.save(cfg.save_policy)
        result.update(keep_channels=tuple(pol.keep_channels), criterion=cfg.criterion,
                      reconstructed=pruner.reconstruct, reconstruct_skipped=cfg.reconstruct and not pruner.reconstruct,
                      warnings=tuple(str(w.message) for w in caught))

    if data is not None:
        from amc_mobile.training import evaluate

        m0, m1 = evaluate(net, data.eval_batches), evaluate(pruned, data.eval_batches)
        extra["metrics"] = {"before": m0, "after": m1, "split": cfg.eval_split}
        result.update(metrics_before=m0, metrics_after=m1, eval_split=cfg.eval_split,
                      dataset=str(data.info["dataset"]))
    save_checkpoint(out, pruned, **{k: v for k, v in extra.items() if v is not None})
    return PruneResult(out=Path(out), before=before, after=after, **result)

"""Candidate evaluation, as one reusable and pure piece: keep-channels in, metrics out.

A candidate (channels kept per group) is pruned from the teacher with least-squares reconstruction
(AMC sec. 3.3), its BatchNorm statistics are re-estimated on a fixed set of training images
(EagleEye's adaptive BN, Li et al., ECCV 2020: the teacher's statistics no longer fit a pruned network,
and re-estimating them makes the score predict accuracy after fine-tuning far better), and it is
scored on a named data slice. Nothing is trained and nothing random happens, so the same candidate
gives the same metrics in any process: :meth:`Evaluator.evaluate_many` accepts a ``map_fn`` (e.g. a
Ray pool's map) for independent candidates (top-k re-scoring, greedy steps), equal to the serial loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

Batches = list[tuple[torch.Tensor, torch.Tensor]]
MapFn = Callable[[Callable[[tuple[int, ...]], "EvalResult"], list[tuple[int, ...]]], Iterable["EvalResult"]]


@dataclass(frozen=True)
class EvalResult:
    """Metrics of one candidate on one slice (accuracies in percent) and where the time went."""

    keep: tuple[int, ...]
    top1: float
    top5: float
    loss: float
    n: int
    prune_s: float
    bn_s: float
    eval_s: float

    def metrics(self) -> dict[str, float]:
        return {"top1": self.top1, "top5": self.top5, "loss": self.loss, "n": float(self.n)}


class Evaluator:
    """Prune + reconstruct + BN re-estimation + score, for any keep vector and any named slice.

    ``slices`` maps a name ("search", "select") to normalised (images, labels) batches;
    ``bn_images`` are the training images re-estimating BN statistics (empty: keep the teacher's).
    """

    def __init__(self, pruner: Any, slices: dict[str, Batches], bn_images: torch.Tensor,
                 bn_batch_size: int = 250) -> None:
        self.pruner = pruner
        self.slices = slices
        self.bn_images = bn_images
        self.bn_batch_size = bn_batch_size

    def build(self, keep: Sequence[int]) -> nn.Module:
        """The candidate model: pruned, reconstructed, BN re-estimated, channels-last, eval mode."""
        from amc_mobile.models.bn import reestimate_bn

        model = self.pruner.prune([int(k) for k in keep]).to(memory_format=torch.channels_last)
        if self.bn_images.numel():
            reestimate_bn(model, self.bn_images, self.bn_batch_size)
        return model.eval()

    def evaluate(self, keep: Sequence[int], slice_name: str = "search", bn: bool = True) -> EvalResult:
        """Metrics of the candidate ``keep`` on slice ``slice_name`` (``bn=False``: the teacher's BN
        statistics, to show what re-estimation changes)."""
        from amc_mobile.models.bn import reestimate_bn
        from amc_mobile.training import evaluate

        t0 = time.perf_counter()
        model = self.pruner.prune([int(k) for k in keep]).to(memory_format=torch.channels_last)
        t1 = time.perf_counter()
        if bn and self.bn_images.numel():
            reestimate_bn(model, self.bn_images, self.bn_batch_size)
        t2 = time.perf_counter()
        m = evaluate(model, self.slices[slice_name])
        t3 = time.perf_counter()
        return EvalResult(tuple(int(k) for k in keep), float(m["top1"]), float(m["top5"]), float(m["loss"]),
                          int(m["n"]), t1 - t0, t2 - t1, t3 - t2)

    def evaluate_many(self, policies: Sequence[Sequence[int]], slice_name: str = "search",
                      map_fn: MapFn | None = None) -> list[EvalResult]:
        """:meth:`evaluate` for each keep vector, in order; ``map_fn(fn, items)`` may run them elsewhere."""
        fn = partial(self.evaluate, slice_name=slice_name)
        items = [tuple(int(k) for k in p) for p in policies]
        if map_fn is None:
            return [fn(p) for p in items]
        return list(map_fn(fn, items))

"""BatchNorm statistics for randomly initialised models (latency studies, tests, benchmarks)."""

from __future__ import annotations

import torch
from torch import nn


def calibrate_bn(model: nn.Module, inputs: torch.Tensor | tuple[int, ...], seed: int = 0) -> nn.Module:
    """Set every BatchNorm's running statistics from ``inputs`` so activations stay O(1).

    ``inputs`` is a batch of images (fed in chunks of 64, statistics averaged over them) or a shape,
    for one seeded random batch. Randomly initialised deep nets otherwise shrink activations layer
    by layer into float32 denormals, which many CPUs process 10-100x slower: timings of such models
    are not those of trained ones. Returns ``model`` in eval mode.
    """
    if isinstance(inputs, tuple):
        inputs = torch.randn(*inputs, generator=torch.Generator().manual_seed(seed))
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [m.momentum for m in bns]
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average: the statistics of exactly these batches
            m.train()
        with torch.no_grad():
            for chunk in inputs.split(64):
                model(chunk)
    finally:
        for m, mom in zip(bns, saved, strict=True):
            m.momentum = mom
    return model.eval()

"""BatchNorm statistics: calibration of randomly initialised models, re-estimation of pruned ones."""

from __future__ import annotations

import torch
from torch import nn


def _enough_samples(shape: tuple[int, ...]) -> tuple[int, ...]:
    """``shape`` with a batch large enough for small inputs (at most 64): a 32-px MobileNet ends in
    1x1 maps, where two samples give near-zero variances, so the calibrated net amplifies rounding
    until float32 torch and onnxruntime disagree by 0.4-1% (the export check then refuses the model)."""
    if len(shape) < 4:
        return shape
    pixels = max(1, shape[-1] * shape[-2])
    return (min(64, max(shape[0], -(-(1 << 16) // pixels))), *shape[1:])


def calibrate_bn(model: nn.Module, inputs: torch.Tensor | tuple[int, ...], seed: int = 0) -> nn.Module:
    """Set every BatchNorm's running statistics from ``inputs`` so activations stay O(1).

    ``inputs`` is a batch of images (fed in chunks of 64, statistics averaged over them) or a shape,
    for one seeded random batch (enlarged for small inputs, see :func:`_enough_samples`). Randomly
    initialised deep nets otherwise shrink activations layer by layer into float32 denormals, which
    many CPUs process 10-100x slower: timings of such models are not those of trained ones. Returns
    ``model`` in eval mode (see :func:`reestimate_bn`).
    """
    if isinstance(inputs, tuple):
        inputs = torch.randn(*_enough_samples(inputs), generator=torch.Generator().manual_seed(seed))
    return reestimate_bn(model, inputs, batch_size=64)


def reestimate_bn(model: nn.Module, images: torch.Tensor, batch_size: int = 250) -> nn.Module:
    """Reset every BatchNorm's running statistics and re-estimate them on ``images`` (no gradient step).

    EagleEye's "adaptive BN" (Li et al., ECCV 2020): a pruned network's activations no longer follow
    the teacher's statistics, so its accuracy before fine-tuning mostly measures that mismatch.
    Cumulative average (``momentum=None``) over batches of ``batch_size``; only the BN layers run in
    train mode (dropout stays off). Returns ``model`` in eval mode; a model without BN is unchanged.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or images.shape[0] == 0:
        return model.eval()
    model.eval()
    saved = [m.momentum for m in bns]
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average: the statistics of exactly these batches
            m.train()
        with torch.no_grad():
            for chunk in images.split(batch_size):
                model(chunk)
    finally:
        for m, mom in zip(bns, saved, strict=True):
            m.momentum = mom
    return model.eval()

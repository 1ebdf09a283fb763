"""Least-squares weight reconstruction (AMC, He et al. 2018; channel pruning of He et al. 2017).

After keeping input channels S of a consuming layer with weights W, refit

    W'_S = argmin_W' || X_S W'^T - X W^T ||^2  (+ ridge * mean(diag) * ||W'||^2),

where the rows of X are the layer's inputs (im2col patches for k x k convs) at random spatial
points of calibration images run through the ORIGINAL model, and X W^T is the original output
(no intercept: a bias, if any, is kept as it is). With the Gram matrix G = X^T X / n the solution is

    W'_S^T = (G_SS + lambda I)^-1 G_S: W^T,

so calibration stores one Gram matrix per consumer (and G W^T), computed once and reused for any
set of kept channels: a refit costs one small Cholesky solve, not a pass over the data.
Defaults follow AMC: 60 batches x 50 images x 10 points per image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

JITTER = 1e-8  # relative diagonal jitter: keeps the solve defined when some channels are dead (all 0)
JITTER_FP32 = 1e-6


@dataclass
class LayerGram:
    """Second moments of one consuming layer's inputs: ``gram`` = X^T X / rows (float64)."""

    gram: torch.Tensor  # (D, D), D = in_channels * kh * kw
    gram_w: torch.Tensor  # (D, out) = gram @ W^T for the original weights
    rows: int
    kernel_area: int  # kh * kw (1 for Linear)


def _sample_patches(x: torch.Tensor, conv: nn.Conv2d, points: int, gen: torch.Generator) -> torch.Tensor:
    """``points`` random im2col rows per image: (N * points, C * kh * kw), channel-major like unfold."""
    n, c, h, w = x.shape
    kh, kw = conv.kernel_size
    sh, sw = conv.stride
    dh, dw = conv.dilation
    if isinstance(conv.padding, str):
        raise ValueError(f"string padding '{conv.padding}' is not supported for reconstruction")
    ph, pw = conv.padding
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if conv.padding_mode != "zeros" and (ph or pw):
        raise ValueError(f"padding mode '{conv.padding_mode}' is not supported for reconstruction")
    xp = F.pad(x, (pw, pw, ph, ph)) if (ph or pw) else x
    oy = torch.randint(0, oh, (n, points), generator=gen)
    ox = torch.randint(0, ow, (n, points), generator=gen)
    rows = oy[:, :, None] * sh + torch.arange(kh)[None, None, :] * dh  # (n, P, kh)
    cols = ox[:, :, None] * sw + torch.arange(kw)[None, None, :] * dw  # (n, P, kw)
    nidx = torch.arange(n)[:, None, None, None]
    patches = xp[nidx, :, rows[:, :, :, None], cols[:, :, None, :]]  # (n, P, kh, kw, C)
    return patches.permute(0, 1, 4, 2, 3).reshape(n * points, c * kh * kw)


def collect_grams(model: nn.Module, consumers: Sequence[str], images: torch.Tensor, batch_size: int = 50,
                  batches: int = 60, points_per_image: int = 10, seed: int = 0,
                  dtype: torch.dtype = torch.float64) -> dict[str, LayerGram]:
    """Run calibration images through the original ``model`` and accumulate each consumer's Gram.

    Uses ``min(len(images), batches * batch_size)`` images (a seeded random subset if there are more).
    Accumulates in float64; ``dtype`` is the precision the statistics are stored (and solved) in.
    """
    gen = torch.Generator().manual_seed(seed)
    modules = dict(model.named_modules())
    wanted = {modules[name]: name for name in consumers}
    total = min(len(images), batches * batch_size)
    if total < 1:
        raise ValueError("no calibration images")
    pick = torch.randperm(len(images), generator=gen)[:total] if len(images) > total else torch.arange(total)
    acc: dict[str, torch.Tensor] = {}
    rows: dict[str, int] = dict.fromkeys(consumers, 0)

    def hook(mod: nn.Module, inputs: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        name = wanted[mod]
        x = inputs[0].detach().float()
        if isinstance(mod, nn.Conv2d):
            feats = _sample_patches(x, mod, points_per_image, gen)
        else:
            feats = x.reshape(-1, x.shape[-1])
        g = (feats.T @ feats).double()
        acc[name] = acc[name] + g if name in acc else g
        rows[name] += feats.shape[0]

    handles = [m.register_forward_hook(hook) for m in wanted]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            for start in range(0, total, batch_size):
                model(images[pick[start:start + batch_size]].float())
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    out: dict[str, LayerGram] = {}
    for name in consumers:
        mod = modules[name]
        w = mod.weight.detach().double()
        gram = acc[name] / max(rows[name], 1)
        scale = float(gram.diagonal().mean())
        if scale > 0:  # the solution is scale-free; unit scale keeps float32 away from denormals
            gram = gram / scale
        w2 = w.reshape(w.shape[0], -1)
        area = w2.shape[1] // (mod.in_channels if isinstance(mod, nn.Conv2d) else mod.in_features)
        out[name] = LayerGram(gram.to(dtype), (gram @ w2.T).to(dtype), rows[name], area)
    return out


def solve_weights(stats: LayerGram, in_keep: torch.Tensor, out_keep: torch.Tensor | None,
                  ridge: float = 0.0) -> torch.Tensor:
    """Refit weights for kept input channels ``in_keep`` (and kept outputs ``out_keep``).

    Solved by Cholesky in the statistics' dtype with a relative diagonal jitter (1e-8 in float64,
    1e-6 in float32), raised 100x at a time if the factorisation fails.
    Returns a matrix (out', len(in_keep) * kh * kw); reshape to the layer's weight shape.
    """
    area = stats.kernel_area
    cols = (in_keep[:, None] * area + torch.arange(area)[None, :]).reshape(-1) if area > 1 else in_keep
    a = stats.gram.index_select(0, cols).index_select(1, cols)
    b = stats.gram_w.index_select(0, cols)
    if out_keep is not None:
        b = b.index_select(1, out_keep)
    diag = a.diagonal()
    mean = diag.mean().clamp_min(1e-30)
    jitter = JITTER if a.dtype == torch.float64 else JITTER_FP32
    diag += (ridge + jitter) * mean
    for _ in range(4):  # rank-deficient Gram (dead channels, few rows): raise the jitter, stay fast
        chol, info = torch.linalg.cholesky_ex(a)
        if int(info) == 0:
            return torch.cholesky_solve(b, chol).T
        jitter *= 100.0
        diag += jitter * mean
    sol = torch.linalg.lstsq(a.double(), b.double(), driver="gelsd").solution
    return sol.T

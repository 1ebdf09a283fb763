"""Batched top-1 / top-5 / loss evaluation under ``torch.inference_mode()`` (called often by the search)."""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An inference copy with each Conv2d directly followed by a BatchNorm2d (inside an
    ``nn.Sequential``) folded into one conv; ``model`` is untouched. ~1.5x faster on CPU.

    Only plain ``nn.Sequential`` containers are rewritten (their forward runs children in order), so
    the copy computes the same function for any model, pruned or not.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    net = copy.deepcopy(model).eval()
    for seq in net.modules():
        if not isinstance(seq, nn.Sequential) or type(seq).forward is not nn.Sequential.forward:
            continue
        names = list(seq._modules)
        for a, b in zip(names, names[1:], strict=False):
            conv, bn = seq._modules[a], seq._modules[b]
            if (isinstance(conv, nn.Conv2d) and type(bn) is nn.BatchNorm2d and bn.track_running_stats
                    and bn.num_features == conv.out_channels):
                seq._modules[a] = fuse_conv_bn_eval(conv, bn)
                seq._modules[b] = nn.Identity()
    return net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]


def evaluate(model: nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
             max_batches: int | None = None, fold_bn: bool = True) -> dict[str, float]:
    """``{"top1", "top5", "loss", "n"}`` of ``model`` over ``loader`` (accuracies in percent).

    The model is put in eval mode and restored afterwards; top-5 is top-k with k = min(5, classes).
    ``fold_bn`` evaluates a BN-folded copy (same function, fewer memory passes).
    """
    was_training = model.training
    model.eval()
    net = fold_batchnorm(model) if fold_bn else model
    correct1 = correct5 = 0
    loss_sum = 0.0
    n = 0
    try:
        with torch.inference_mode():
            for i, (x, y) in enumerate(loader):
                if max_batches is not None and i >= max_batches:
                    break
                logits = net(x)
                loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
                k = min(5, logits.shape[1])
                topk = logits.topk(k, dim=1).indices
                hits = topk == y[:, None]
                correct1 += int(hits[:, 0].sum())
                correct5 += int(hits.any(dim=1).sum())
                n += int(y.numel())
    finally:
        model.train(was_training)
    if n == 0:
        return {"top1": 0.0, "top5": 0.0, "loss": float("nan"), "n": 0}
    return {"top1": 100.0 * correct1 / n, "top5": 100.0 * correct5 / n, "loss": loss_sum / n, "n": n}

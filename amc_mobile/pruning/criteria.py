"""Channel-selection criteria: which channels of a group to keep (higher score = kept first).

AMC (He et al. 2018) keeps the input channels with the largest L1 norm of the
consuming layer's weights (``l1``). Alternatives selectable by name: ``l2`` (same, L2 norm),
``out_l1`` (L1 norm of the producing filters, Li et al. 2017), ``bn_gamma`` (|gamma| of the
BatchNorms on the channels, Liu et al. 2017 "network slimming") and ``random`` (seeded baseline).
A group with several consumers/producers (MobileNet-V2 residual stages) sums their scores.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from amc_mobile.errors import UserError, unknown_name
from amc_mobile.pruning.groups import ChannelGroup

Criterion = Callable[[ChannelGroup, dict[str, nn.Module], torch.Generator], torch.Tensor]
_CRITERIA: dict[str, Criterion] = {}


def register_criterion(name: str) -> Callable[[Criterion], Criterion]:
    def deco(fn: Criterion) -> Criterion:
        _CRITERIA[name] = fn
        return fn

    return deco


def list_criteria() -> list[str]:
    return sorted(_CRITERIA)


def get_criterion(name: str) -> Criterion:
    if name not in _CRITERIA:
        raise unknown_name("criterion", name, _CRITERIA)
    return _CRITERIA[name]


def _weight(m: nn.Module) -> torch.Tensor:
    w = m.weight
    assert isinstance(w, torch.Tensor)
    return w.detach().double()


def _in_channel_norm(group: ChannelGroup, modules: dict[str, nn.Module], p: int) -> torch.Tensor:
    score = torch.zeros(group.width, dtype=torch.float64)
    for mem in group.members:
        if mem.role != "consumer":
            continue
        w = _weight(modules[mem.module])
        w = w.transpose(0, 1).reshape(w.shape[1], -1)[list(mem.idxs)]  # (group channels, rest)
        score += w.abs().sum(1) if p == 1 else w.pow(2).sum(1)
    return score if p == 1 else score.sqrt()


@register_criterion("l1")
def l1_score(group: ChannelGroup, modules: dict[str, nn.Module], gen: torch.Generator) -> torch.Tensor:
    """AMC: sum of |W| of the consuming layers over (out, kh, kw), per input channel."""
    return _in_channel_norm(group, modules, 1)


@register_criterion("l2")
def l2_score(group: ChannelGroup, modules: dict[str, nn.Module], gen: torch.Generator) -> torch.Tensor:
    """L2 norm of the consuming layers' weights per input channel."""
    return _in_channel_norm(group, modules, 2)


@register_criterion("out_l1")
def out_l1_score(group: ChannelGroup, modules: dict[str, nn.Module], gen: torch.Generator) -> torch.Tensor:
    """Sum of |W| of the producing filters (Li et al. 2017, "Pruning filters")."""
    score = torch.zeros(group.width, dtype=torch.float64)
    for mem in group.members:
        if mem.role == "producer":
            w = _weight(modules[mem.module])
            score += w.reshape(w.shape[0], -1)[list(mem.idxs)].abs().sum(1)
    return score


@register_criterion("bn_gamma")
def bn_gamma_score(group: ChannelGroup, modules: dict[str, nn.Module], gen: torch.Generator) -> torch.Tensor:
    """|gamma| of the BatchNorms directly after the producers (network slimming)."""
    producers = set(group.producers)
    norms = [m for m in group.members if m.role == "norm"]
    # prefer the BNs of the producers themselves; fall back to every BN on the group's channels
    own = [m for m in norms if any(m.module.rsplit(".", 1)[0] == p.rsplit(".", 1)[0] for p in producers)]
    chosen = own or norms
    if not chosen or any(modules[m.module].weight is None for m in chosen):
        raise UserError(f"group '{group.name}' has no affine BatchNorm; criterion 'bn_gamma' needs one")
    score = torch.zeros(group.width, dtype=torch.float64)
    for mem in chosen:
        score += _weight(modules[mem.module]).abs()[list(mem.idxs)]
    return score


@register_criterion("random")
def random_score(group: ChannelGroup, modules: dict[str, nn.Module], gen: torch.Generator) -> torch.Tensor:
    """Random order (seeded): the baseline every criterion should beat."""
    return torch.rand(group.width, generator=gen, dtype=torch.float64)

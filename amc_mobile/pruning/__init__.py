"""Channel pruning (AMC): groups from the graph, policies, selection, reconstruction, fine-grained.

Public API: :func:`find_groups` / :class:`ChannelGroup`; :class:`ChannelPruner` (built once per base
model, ``.prune(keep_channels)`` many times); :func:`pruned_description` (MACs without a model);
:class:`PruningPolicy`, :func:`round_channels`, :func:`uniform_policy`; :func:`fine_grained_prune`;
:func:`prune_model` (the whole ``amc-mobile prune`` workflow: :class:`PruneConfig` -> :class:`PruneResult`).
"""

from amc_mobile.pruning.criteria import get_criterion, list_criteria, register_criterion
from amc_mobile.pruning.description import pruned_description
from amc_mobile.pruning.engine import ChannelPruner
from amc_mobile.pruning.fine_grained import SparsityReport, fine_grained_prune
from amc_mobile.pruning.groups import ChannelGroup, GroupMember, find_groups
from amc_mobile.pruning.policy import (
    PruningPolicy,
    policy_from_channels,
    policy_from_ratios,
    round_channels,
    uniform_policy,
)
from amc_mobile.pruning.run import PruneConfig, PruneResult, prune_model

__all__ = [
    "ChannelGroup", "ChannelPruner", "GroupMember", "PruneConfig", "PruneResult", "PruningPolicy", "SparsityReport",
    "find_groups", "fine_grained_prune", "get_criterion", "list_criteria", "policy_from_channels",
    "policy_from_ratios", "prune_model", "pruned_description", "register_criterion", "round_channels",
    "uniform_policy",
]

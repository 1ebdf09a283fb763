"""Latency-aware AMC search: environment with an action wall over any budgets, DDPG agent, AMC and
DDC rewards (one registry, each declaring its inputs), budgets, cost models, candidate evaluation
(prune + reconstruct + BN re-estimation), the search loop with seeded baselines and honest top-k
selection, the NetAdapt-style greedy and uniform baselines, and DDC's class-subset compression and
policy transfer.

Entry point: :func:`~amc_mobile.search.runner.run_search` (``amc-mobile search``).
"""

from amc_mobile.search.budgets import Budget, parse_budget, parse_budgets
from amc_mobile.search.config import SearchConfig, SearchInputs
from amc_mobile.search.ddpg import DDPGAgent, DDPGConfig
from amc_mobile.search.env import ChannelSearchEnv, CostModel, GroupInfo
from amc_mobile.search.evaluate import EvalResult, Evaluator
from amc_mobile.search.outputs import SearchProgress, SearchSummary
from amc_mobile.search.rewards import (
    Candidate,
    DDCThresholds,
    get_reward,
    list_rewards,
    register_reward,
    reward_inputs,
)
from amc_mobile.search.runner import run_search
from amc_mobile.search.state import load_saved_settings
from amc_mobile.search.subset import restrict_classes, subset_teacher

__all__ = [
    "Budget", "Candidate", "ChannelSearchEnv", "CostModel", "DDCThresholds", "DDPGAgent", "DDPGConfig",
    "EvalResult", "Evaluator", "GroupInfo", "SearchConfig", "SearchInputs", "SearchProgress", "SearchSummary",
    "get_reward", "list_rewards", "load_saved_settings", "parse_budget", "parse_budgets", "register_reward",
    "restrict_classes", "reward_inputs", "run_search", "subset_teacher",
]

"""Latency-aware AMC search: environment with an action wall over any budgets, DDPG agent, AMC and
DDC rewards (one registry), budgets, cost models, the search loop and its baselines, and DDC's
class-subset compression and policy transfer.

Entry point: :func:`~amc_mobile.search.runner.run_search` (``amc-mobile search``).
"""

from amc_mobile.search.budgets import Budget, parse_budget, parse_budgets
from amc_mobile.search.ddpg import DDPGAgent, DDPGConfig
from amc_mobile.search.env import ChannelSearchEnv, CostModel, GroupInfo
from amc_mobile.search.rewards import Candidate, DDCThresholds, get_reward, list_rewards, register_reward
from amc_mobile.search.runner import SearchConfig, SearchInputs, load_saved_settings, run_search
from amc_mobile.search.subset import restrict_classes, subset_teacher

__all__ = [
    "Budget", "Candidate", "ChannelSearchEnv", "CostModel", "DDCThresholds", "DDPGAgent", "DDPGConfig",
    "GroupInfo", "SearchConfig", "SearchInputs", "get_reward", "list_rewards", "load_saved_settings",
    "parse_budget", "parse_budgets", "register_reward", "restrict_classes", "run_search", "subset_teacher",
]

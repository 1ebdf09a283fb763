"""Budget strings and the action wall: every episode meets every budget by construction."""

from __future__ import annotations

import numpy as np
import pytest

from amc_mobile.errors import UserError
from amc_mobile.search.budgets import parse_budget, parse_budgets
from amc_mobile.search.env import ChannelSearchEnv, CostModel, GroupInfo


@pytest.mark.parametrize(("kind", "text", "absolute", "relative"), [
    ("latency", "20ms", 20.0, False), ("latency", "1500us", 1.5, False), ("latency", "0.02s", 20.0, False),
    ("latency", "50%", 0.5, True), ("macs", "150M", 150e6, False), ("macs", "1.2G", 1.2e9, False),
    ("macs", "50%", 0.5, True), ("params", "800k", 8e5, False), ("params", "60%", 0.6, True),
])
def test_budget_strings(kind: str, text: str, absolute: float, relative: bool) -> None:
    b = parse_budget(kind, text)
    assert b.relative is relative
    assert b.value == pytest.approx(absolute)
    assert b.resolve(10.0) == pytest.approx(absolute * 10.0 if relative else absolute)


@pytest.mark.parametrize(("kind", "text"), [("latency", "20"), ("latency", "fast"), ("latency", "150%"),
                                            ("macs", "20ms"), ("params", "-3M"), ("latency", "0ms")])
def test_bad_budget_strings_are_one_line_errors(kind: str, text: str) -> None:
    with pytest.raises(UserError):
        parse_budget(kind, text)


def test_at_least_one_budget_and_several_at_once() -> None:
    with pytest.raises(UserError, match="at least one"):
        parse_budgets()
    assert [b.kind for b in parse_budgets(latency="50%", params="70%")] == ["latency", "params"]


def _chain_env(budgets_frac: dict[str, float], min_ratio: float = 0.2) -> tuple[ChannelSearchEnv, dict]:
    """A 5-group chain: conv costs couple neighbouring groups (like MACs of pointwise convs)."""
    widths = (16, 32, 64, 64, 128)
    groups = [GroupInfo(f"g{i}", w, 0, w, w, 1 + i % 2, 1, w * w) for i, w in enumerate(widths)]

    def macs(k: tuple[int, ...]) -> float:
        chans = (3, *k, 10)
        return float(sum(a * b for a, b in zip(chans[:-1], chans[1:], strict=True)))

    def params(k: tuple[int, ...]) -> float:
        return macs(k) + 2 * sum(k)

    def latency(k: tuple[int, ...]) -> float:  # non-linear, monotone: a step every 32 channels
        return 0.1 + sum(0.01 * ((c + 31) // 32) + 1e-5 * c * c for c in k)

    costs = {"macs": CostModel("macs", macs), "params": CostModel("params", params),
             "latency": CostModel("latency", latency)}
    full = tuple(widths)
    budgets = [(costs[k], f * costs[k](full)) for k, f in budgets_frac.items()]
    return ChannelSearchEnv(groups, budgets, min_ratio=min_ratio, latency=costs["latency"]), costs


@pytest.mark.parametrize("budgets", [{"macs": 0.5}, {"latency": 0.6}, {"params": 0.3},
                                     {"latency": 0.7, "macs": 0.4, "params": 0.5}])
def test_every_episode_meets_every_budget_even_with_random_actions(budgets: dict[str, float]) -> None:
    env, costs = _chain_env(budgets)
    rng = np.random.default_rng(0)
    for _ in range(60):
        state = env.reset()
        assert state.shape == (11,)
        while not env.done:
            state, applied, _ = env.step(float(rng.uniform(0, 1)))
            assert env.min_ratio - 1e-9 <= applied <= 1.0
            assert np.all(np.isfinite(state))
        for cost, budget in env.budgets:
            assert cost(env.keep) <= budget * (1 + 1e-9)


def test_always_keep_everything_is_capped_to_the_budget_and_stays_close_to_it() -> None:
    env, costs = _chain_env({"macs": 0.5})
    env.reset()
    while not env.done:
        env.step(1.0)
    (cost, budget), = env.budgets
    assert 0.8 * budget <= cost(env.keep) <= budget


def test_infeasible_budget_names_the_minimum_reachable_value() -> None:
    with pytest.raises(UserError, match="minimum reachable latency is"):
        _chain_env({"latency": 0.05})

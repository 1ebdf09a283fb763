"""DDC's Bi-LSTM policy and REINFORCE update (eq. 2, 7-11): shapes, eq. 2's conditioning, learnability."""

from __future__ import annotations

import pytest
import torch

from amc_mobile.errors import UserError
from amc_mobile.search.ddc.agent import BiLSTMPolicy, PolicyConfig, ReinforceAgent


def test_policy_conditions_on_neighbours_not_on_its_own_lstm_state() -> None:
    """Eq. 2: the decision at t sees h_{t-1} (forward), h_{t+1} (backward) and x_t."""
    torch.manual_seed(0)
    policy = BiLSTMPolicy(8, hidden=16)
    x = torch.rand(1, 6, 8)
    base = policy(x)
    y = x.clone()
    y[0, 5] += 1.0  # the last element reaches every earlier decision through the backward states
    changed = (policy(y) - base).abs()[0] > 1e-7
    assert changed.tolist() == [True, True, True, True, True, True]
    z = x.clone()
    z[0, 0] += 1.0
    assert ((policy(z) - base).abs()[0] > 1e-7).all()


@pytest.mark.parametrize(("lr", "iterations"), [(0.02, 60), (PolicyConfig().lr, 200)])
def test_learns_to_remove_the_units_a_synthetic_reward_favours(lr: float, iterations: int) -> None:
    """SB3-style learnability: a reward that pays for matching a hidden remove/keep pattern is learnt
    from a 50/50 start within 300 samples (60 iterations of DDC's 5) at lr 0.02, and within 1,000 at
    the default lr, which is slower on purpose (bench/README "DDC": it explores longer and finds better
    students on real removal spaces)."""
    torch.manual_seed(0)
    features = torch.rand(12, 8)
    removable = [i % 3 != 0 for i in range(12)]
    target = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0])
    agent = ReinforceAgent(features, removable, PolicyConfig(lr=lr), seed=0)
    for _ in range(iterations):
        actions = agent.sample(5)
        rewards = [float((a == target).float().mean()) ** 2 for a in actions]
        agent.update(actions, rewards)
    assert torch.equal(agent.greedy(), target)
    p = agent.remove_probs()
    assert (p[target == 1] > 0.8).all() and (p[target == 0] < 0.2).all()


def test_entropy_bonus_keeps_the_policy_from_committing_early() -> None:
    """The same 20 iterations on the same rewards: with an entropy bonus the remove probabilities stay
    further from 0/1 (more architectures are still sampled), and DDCConfig passes the weight through."""
    from amc_mobile.search.ddc.search import DDCConfig

    features = torch.rand(10, 8)
    target = torch.tensor([1, 0] * 5)

    def run(entropy: float) -> torch.Tensor:
        torch.manual_seed(0)
        agent = ReinforceAgent(features, [True] * 10, PolicyConfig(lr=0.02, entropy_weight=entropy), seed=0)
        for _ in range(20):
            actions = agent.sample(5)
            agent.update(actions, [float((a == target).float().mean()) for a in actions])
        p = agent.remove_probs()
        return (p - 0.5).abs().mean()

    assert run(0.1) < run(0.0) - 0.05
    assert DDCConfig(policy_entropy=0.03, policy_lr=0.005).policy_config() == PolicyConfig(
        lr=0.005, entropy_weight=0.03)
    with pytest.raises(UserError, match="entropy"):
        DDCConfig(policy_entropy=-1.0).check()


def test_baseline_is_an_exponential_moving_average() -> None:
    agent = ReinforceAgent(torch.rand(4, 8), [True] * 4, PolicyConfig(baseline_decay=0.5), seed=0)
    a = agent.sample(2)
    agent.update(a, [1.0, 0.0])
    assert agent.baseline == pytest.approx(0.5)  # first call: the batch mean
    agent.update(a, [1.0, 1.0])
    assert agent.baseline == pytest.approx(0.5 * 0.5 + 0.5 * 1.0)


def test_state_round_trip_gives_identical_samples() -> None:
    a = ReinforceAgent(torch.rand(5, 8), [True, False, True, True, True], seed=3)
    acts = a.sample(4)
    a.update(acts, [0.1, 0.5, 0.2, 0.9])
    b = ReinforceAgent(torch.rand(5, 8), [True, False, True, True, True], seed=99)
    b.features = a.features
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.sample(10), b.sample(10))


def test_bad_settings_are_one_line() -> None:
    with pytest.raises(UserError, match="no removable units"):
        ReinforceAgent(torch.rand(3, 8), [False] * 3)
    with pytest.raises(UserError, match="baseline decay"):
        ReinforceAgent(torch.rand(3, 8), [True] * 3, PolicyConfig(baseline_decay=1.0))

"""DDPG agent: learnability on a tiny environment, AMC's schedule, and exact resume."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from amc_mobile.search.ddpg import DDPGAgent, DDPGConfig, truncated_normal
from amc_mobile.search.env import ChannelSearchEnv, CostModel, GroupInfo

IMPORTANCE = np.array([4.0, 2.0, 1.0, 0.5])  # the first groups matter most
WIDTH = 64


def _toy_env() -> ChannelSearchEnv:
    groups = [GroupInfo(f"g{i}", WIDTH, 0, WIDTH, WIDTH, 1, 1, WIDTH * WIDTH) for i in range(4)]
    cost = CostModel("macs", lambda k: float(sum(k)))
    return ChannelSearchEnv(groups, [(cost, 0.5 * 4 * WIDTH)], min_ratio=0.2)


def _toy_reward(ratios: list[float]) -> float:
    """Smooth 'accuracy' of the keep ratios; uniform 0.5 scores -1.875, the optimum about -1.14."""
    return -float(np.sum(IMPORTANCE * (1.0 - np.asarray(ratios)) ** 2))


def _episode(env: ChannelSearchEnv, agent: DDPGAgent, ep: int, explore: bool = True) -> tuple[list, float]:
    s = env.reset()
    transitions = []
    while not env.done:
        a = agent.act(s, ep, explore)
        s2, applied, done = env.step(a)
        transitions.append((s, applied, s2, done))
        s = s2
    return transitions, _toy_reward(env.ratios)


def _train(agent: DDPGAgent, env: ChannelSearchEnv, start: int, stop: int) -> list[float]:
    rewards = []
    for ep in range(start, stop):
        transitions, r = _episode(env, agent, ep)
        rewards.append(r)
        agent.observe_episode(transitions, r)
        if ep >= agent.cfg.warmup:
            for _ in transitions:
                agent.update()
    return rewards


def test_agent_learns_a_budgeted_allocation_within_a_few_hundred_steps() -> None:
    torch.set_num_threads(1)
    env = _toy_env()
    agent = DDPGAgent(11, 4, DDPGConfig(warmup=25), seed=0)
    random_rewards = _train(agent, env, 0, 25)
    _train(agent, env, 25, 100)  # 100 episodes x 4 steps = 400 steps
    _, greedy = _episode(env, agent, 100, explore=False)
    uniform = _toy_reward([0.5] * 4)
    assert greedy > uniform + 0.3, (greedy, uniform)
    assert greedy > float(np.mean(random_rewards)) + 0.4


def test_noise_schedule_is_amcs() -> None:
    agent = DDPGAgent(11, 4, DDPGConfig(warmup=100), seed=0)
    assert agent.sigma(50) == pytest.approx(0.5)
    assert agent.sigma(110) == pytest.approx(0.5 * 0.95 ** 10)
    assert agent.buffer.capacity == 400  # 100 x episode length


def test_truncated_normal_stays_in_bounds_and_is_centred() -> None:
    rng = np.random.default_rng(0)
    xs = np.array([truncated_normal(0.5, 0.1, 0.0, 1.0, rng) for _ in range(4000)])
    assert xs.min() >= 0.0 and xs.max() <= 1.0
    assert abs(xs.mean() - 0.5) < 0.01 and abs(xs.std() - 0.1) < 0.01


def test_resumed_agent_continues_exactly_like_an_uninterrupted_one() -> None:
    torch.set_num_threads(1)
    env = _toy_env()
    straight = DDPGAgent(11, 4, DDPGConfig(warmup=5), seed=3)
    full = _train(straight, env, 0, 15)

    first = DDPGAgent(11, 4, DDPGConfig(warmup=5), seed=3)
    part = _train(first, env, 0, 9)
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = DDPGAgent(11, 4, DDPGConfig(warmup=5), seed=99)  # a different seed: state must override it
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    part += _train(resumed, env, 9, 15)
    assert part == full

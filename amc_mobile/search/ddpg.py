"""DDPG agent as used by AMC (He et al., ECCV 2018, sec. 3.2; reference code mit-han-lab/amc).

Actor  s -> 300 -> 300 -> 1 (ReLU, sigmoid output in [0, 1]).
Critic fc(s) + fc(a) -> ReLU -> 300 -> ReLU -> 1.
Adam (actor 1e-4, critic 1e-3), soft target updates tau = 0.01, discount 1, batch 64,
replay of 100 x (number of layers) transitions. Exploration: uniform random actions for the warm-up
episodes, then truncated-normal noise on [lbound, rbound] around the actor output with
sigma = max(sigma_floor, 0.5 * 0.95^(episode - warmup)). AMC has no floor: its noise is below 0.005
about 90 episodes after the warm-up, so the rest of a 400-episode run re-evaluates nearly one policy;
the floor keeps exploring (measurement in bench/README, "exploration"). Every transition of an episode carries the episode's FINAL
reward; a moving-average baseline (alpha 0.5) of the sampled rewards is subtracted in the update.

Everything random goes through the agent's own generators (numpy + torch), and ``state_dict``
holds networks, optimisers, replay buffer, baseline and generator states, so a resumed search
continues exactly where it stopped.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn


@dataclass
class DDPGConfig:
    """Hyperparameters (AMC reference defaults)."""

    hidden: int = 300  # width of both hidden layers of actor and critic
    lr_actor: float = 1e-4
    lr_critic: float = 1e-3
    tau: float = 0.01  # soft target update rate
    discount: float = 1.0
    batch_size: int = 64
    replay_per_layer: int = 100  # replay capacity = replay_per_layer x episode length
    warmup: int = 100  # episodes of uniform random actions before learning
    init_sigma: float = 0.5  # truncated-normal noise: sigma = init_sigma * sigma_decay^(ep - warmup)
    sigma_decay: float = 0.95
    sigma_floor: float = 0.0  # the noise never decays below this (AMC: 0)
    baseline_alpha: float = 0.5  # moving-average reward baseline
    lbound: float = 0.0  # action range of the noise / random actions
    rbound: float = 1.0
    init_w: float = 3e-3  # output layers start uniform in [-init_w, init_w]


class Batch(NamedTuple):
    state: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    next_state: torch.Tensor
    done: torch.Tensor


def _fanin_init(layer: nn.Linear, gen: torch.Generator) -> None:
    bound = 1.0 / np.sqrt(layer.weight.shape[1])
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=gen)
        layer.bias.uniform_(-bound, bound, generator=gen)


class Actor(nn.Module):
    def __init__(self, n_states: int, hidden: int, init_w: float, gen: torch.Generator) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(n_states, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, 1)
        _fanin_init(self.fc1, gen)
        _fanin_init(self.fc2, gen)
        with torch.no_grad():
            self.fc3.weight.uniform_(-init_w, init_w, generator=gen)
            self.fc3.bias.uniform_(-init_w, init_w, generator=gen)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(s))))))


class Critic(nn.Module):
    def __init__(self, n_states: int, hidden: int, init_w: float, gen: torch.Generator) -> None:
        super().__init__()
        self.fc_s, self.fc_a = nn.Linear(n_states, hidden), nn.Linear(1, hidden)
        self.fc2, self.fc3 = nn.Linear(hidden, hidden), nn.Linear(hidden, 1)
        for layer in (self.fc_s, self.fc_a, self.fc2):
            _fanin_init(layer, gen)
        with torch.no_grad():
            self.fc3.weight.uniform_(-init_w, init_w, generator=gen)
            self.fc3.bias.uniform_(-init_w, init_w, generator=gen)

    def forward(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc_s(s) + self.fc_a(a))
        return self.fc3(torch.relu(self.fc2(h)))


class ReplayBuffer:
    """Fixed-capacity ring buffer of (s, a, r, s', done) as float32 arrays."""

    def __init__(self, capacity: int, n_states: int) -> None:
        self.capacity = int(capacity)
        self.s = np.zeros((self.capacity, n_states), np.float32)
        self.a = np.zeros((self.capacity, 1), np.float32)
        self.r = np.zeros((self.capacity, 1), np.float32)
        self.s2 = np.zeros((self.capacity, n_states), np.float32)
        self.d = np.zeros((self.capacity, 1), np.float32)
        self.pos = 0
        self.size = 0

    def add(self, s: np.ndarray, a: float, r: float, s2: np.ndarray, done: bool) -> None:
        i = self.pos
        self.s[i], self.a[i, 0], self.r[i, 0], self.s2[i], self.d[i, 0] = s, a, r, s2, float(done)
        self.pos = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, n: int, rng: np.random.Generator) -> Batch:
        idx = rng.integers(0, self.size, size=n)
        t = torch.from_numpy
        return Batch(t(self.s[idx]), t(self.a[idx]), t(self.r[idx]), t(self.s2[idx]), t(self.d[idx]))

    def state_dict(self) -> dict[str, Any]:
        n = self.size
        return {"capacity": self.capacity, "pos": self.pos, "size": n,
                "s": torch.from_numpy(self.s[:n].copy()), "a": torch.from_numpy(self.a[:n].copy()),
                "r": torch.from_numpy(self.r[:n].copy()), "s2": torch.from_numpy(self.s2[:n].copy()),
                "d": torch.from_numpy(self.d[:n].copy())}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        n = int(sd["size"])
        for key in ("s", "a", "r", "s2", "d"):
            getattr(self, key)[:n] = sd[key].numpy()
        self.pos, self.size = int(sd["pos"]), n


class DDPGAgent:
    """AMC's DDPG: ``act`` during an episode, ``observe_episode`` + ``update`` after it."""

    def __init__(self, n_states: int, episode_length: int, config: DDPGConfig | None = None,
                 seed: int = 0) -> None:
        self.cfg = config or DDPGConfig()
        self.n_states = n_states
        self.rng = np.random.default_rng(seed)
        self.torch_gen = torch.Generator().manual_seed(seed)
        c = self.cfg
        self.actor = Actor(n_states, c.hidden, c.init_w, self.torch_gen)
        self.critic = Critic(n_states, c.hidden, c.init_w, self.torch_gen)
        self.actor_target = copy.deepcopy(self.actor)
        self.critic_target = copy.deepcopy(self.critic)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=c.lr_actor)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=c.lr_critic)
        self.buffer = ReplayBuffer(c.replay_per_layer * episode_length, n_states)
        self.baseline: float | None = None

    # --- acting ------------------------------------------------------------------------------------
    def sigma(self, episode: int) -> float:
        """Exploration noise for ``episode`` (0-based): max(floor, init_sigma * decay^(episode - warmup))."""
        decayed = self.cfg.init_sigma * self.cfg.sigma_decay ** max(0, episode - self.cfg.warmup)
        return max(self.cfg.sigma_floor, decayed)

    def act(self, state: np.ndarray, episode: int, explore: bool = True) -> float:
        """Random during warm-up; else the actor's output, perturbed by truncated-normal noise."""
        c = self.cfg
        if explore and episode < c.warmup:
            return float(self.rng.uniform(c.lbound, c.rbound))
        with torch.no_grad():
            mu = float(self.actor(torch.as_tensor(state, dtype=torch.float32)[None])[0, 0])
        if not explore:
            return mu
        value = truncated_normal(mu, self.sigma(episode), c.lbound, c.rbound, self.rng)
        return float(np.clip(value, c.lbound, c.rbound))

    # --- learning ----------------------------------------------------------------------------------
    def observe_episode(self, transitions: list[tuple[np.ndarray, float, np.ndarray, bool]],
                        final_reward: float) -> None:
        """Store every (s, a, s', done) of an episode with the episode's final reward; ``a`` is the
        agent's RAW action (the action wall belongs to the environment, not to the policy)."""
        for s, a, s2, done in transitions:
            self.buffer.add(s, a, final_reward, s2, done)

    def update(self) -> tuple[float, float]:
        """One DDPG step on a sampled batch; returns (critic loss, actor loss)."""
        c = self.cfg
        if self.buffer.size == 0:
            return 0.0, 0.0
        b = self.buffer.sample(c.batch_size, self.rng)
        mean_r = float(b.reward.mean())
        self.baseline = mean_r if self.baseline is None else (
            self.baseline + c.baseline_alpha * (mean_r - self.baseline))
        reward = b.reward - self.baseline
        with torch.no_grad():
            next_q = self.critic_target(b.next_state, self.actor_target(b.next_state))
            target = reward + c.discount * (1.0 - b.done) * next_q
        q = self.critic(b.state, b.action)
        critic_loss = nn.functional.mse_loss(q, target)
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()
        actor_loss = -self.critic(b.state, self.actor(b.state)).mean()
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()
        self._soft_update(self.actor_target, self.actor)
        self._soft_update(self.critic_target, self.critic)
        return float(critic_loss.detach()), float(actor_loss.detach())

    def _soft_update(self, target: nn.Module, source: nn.Module) -> None:
        with torch.no_grad():  # target <- (1 - tau) target + tau source
            torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), self.cfg.tau)

    # --- resume ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "config": asdict(self.cfg), "n_states": self.n_states,
            "actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
            "actor_target": self.actor_target.state_dict(), "critic_target": self.critic_target.state_dict(),
            "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
            "buffer": self.buffer.state_dict(), "baseline": self.baseline,
            "rng": _encode_rng(self.rng), "torch_gen": self.torch_gen.get_state(),
        }

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        for name in ("actor", "critic", "actor_target", "critic_target", "actor_opt", "critic_opt"):
            getattr(self, name).load_state_dict(sd[name])
        self.buffer.load_state_dict(sd["buffer"])
        self.baseline = sd["baseline"]
        self.rng.bit_generator.state = _decode_rng(sd["rng"])
        self.torch_gen.set_state(sd["torch_gen"])


_STD_NORMAL = NormalDist()


def truncated_normal(mu: float, sigma: float, lo: float, hi: float, rng: np.random.Generator) -> float:
    """One draw of N(mu, sigma^2) truncated to [lo, hi], by inverting the CDF (one uniform draw)."""
    if sigma <= 0:
        return float(np.clip(mu, lo, hi))
    a, b = _STD_NORMAL.cdf((lo - mu) / sigma), _STD_NORMAL.cdf((hi - mu) / sigma)
    u = a + (b - a) * float(rng.uniform())
    u = min(max(u, 1e-12), 1.0 - 1e-12)
    return mu + sigma * _STD_NORMAL.inv_cdf(u)


def _encode_rng(rng: np.random.Generator) -> dict[str, Any]:
    """numpy PCG64 state as plain ints/strings (loadable with torch.load(weights_only=True))."""
    st = rng.bit_generator.state
    return {"bit_generator": st["bit_generator"], "state": str(st["state"]["state"]),
            "inc": str(st["state"]["inc"]), "has_uint32": int(st["has_uint32"]), "uinteger": int(st["uinteger"])}


def _decode_rng(d: dict[str, Any]) -> dict[str, Any]:
    return {"bit_generator": d["bit_generator"], "state": {"state": int(d["state"]), "inc": int(d["inc"])},
            "has_uint32": d["has_uint32"], "uinteger": d["uinteger"]}

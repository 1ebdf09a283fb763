"""DDC's recurrent policy and its REINFORCE update (Pahwa et al., papers/004, sec. 3.2 and 3.4).

Each trunk element of the teacher is described by eq. 1, L_t = (t, k, s, p, n, s_start, s_end)
(normalised, plus a "removable" flag). A bidirectional LSTM reads the sequence; the probability of
REMOVING element t depends on the forward hidden state up to t-1, the backward hidden state from
t+1 and the element's own features (eq. 2, pi(a_t | h_{t-1}, h_{t+1}, x_t)). Only removable elements
are sampled; the others are kept and contribute no log-probability.

Training maximises the expected reward (eq. 7-8) with REINFORCE (eq. 10): N architectures are
sampled per iteration and the gradient is (1/N) sum_i sum_t grad log p(a_it) (R_i - b), where b is an
exponential moving average of previous rewards (eq. 11).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from amc_mobile.errors import UserError


@dataclass
class PolicyConfig:
    """Settings of the Bi-LSTM policy and its optimiser (field comments double as help)."""

    hidden: int = 32  # LSTM hidden size per direction
    lr: float = 0.005  # Adam learning rate of the policy (bench/README "DDC": 0.005 finds better students than 0.02)
    baseline_decay: float = 0.8  # EMA factor of the reward baseline b (eq. 11): b <- d * b + (1 - d) * mean(R)
    init_remove_prob: float = 0.5  # initial probability of removing a removable unit (bias of the output)
    entropy_weight: float = 0.0  # bonus on the policy's entropy (sum over units), keeps it from committing early

    def check(self) -> None:
        if self.hidden < 1:
            raise UserError(f"policy hidden size must be >= 1, got {self.hidden}")
        if not self.lr > 0:
            raise UserError(f"policy learning rate must be positive, got {self.lr}")
        if not 0.0 <= self.baseline_decay < 1.0:
            raise UserError(f"baseline decay must be in [0, 1), got {self.baseline_decay}")
        if not 0.0 < self.init_remove_prob < 1.0:
            raise UserError(f"initial removal probability must be in (0, 1), got {self.init_remove_prob}")
        if not self.entropy_weight >= 0.0:
            raise UserError(f"policy entropy weight must be >= 0, got {self.entropy_weight}")


class BiLSTMPolicy(nn.Module):
    """Eq. 2: logit of removal at t from [forward h_{t-1}, backward h_{t+1}, x_t]."""

    def __init__(self, n_features: int, hidden: int = 32, init_remove_prob: float = 0.5) -> None:
        super().__init__()
        self.n_features, self.hidden = n_features, hidden
        self.lstm = nn.LSTM(n_features, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Sequential(nn.Linear(2 * hidden + n_features, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        last = self.head[2]
        assert isinstance(last, nn.Linear)
        nn.init.normal_(last.weight, 0.0, 0.01)
        p = float(init_remove_prob)
        nn.init.constant_(last.bias, float(torch.log(torch.tensor(p / (1.0 - p)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (batch, T, features) -> removal logits (batch, T)."""
        out, _ = self.lstm(x)
        fwd, bwd = out[..., :self.hidden], out[..., self.hidden:]
        zeros = torch.zeros_like(fwd[:, :1])
        fwd_prev = torch.cat([zeros, fwd[:, :-1]], dim=1)  # h_{t-1} of the forward direction
        bwd_next = torch.cat([bwd[:, 1:], zeros], dim=1)  # h_{t+1} of the backward direction
        return self.head(torch.cat([fwd_prev, bwd_next, x], dim=-1)).squeeze(-1)


class ReinforceAgent:
    """Samples keep/remove decisions for the removable elements and learns with REINFORCE + EMA baseline."""

    def __init__(self, features: torch.Tensor, removable: Sequence[bool], cfg: PolicyConfig | None = None,
                 seed: int = 0) -> None:
        self.cfg = cfg or PolicyConfig()
        self.cfg.check()
        if features.dim() != 2:
            raise ValueError("features must be (elements, features)")
        self.features = features.float()
        self.mask = torch.tensor([bool(r) for r in removable])
        if not bool(self.mask.any()):
            raise UserError("no removable units: nothing for the DDC policy to decide")
        torch.manual_seed(seed)  # initial weights
        self.policy = BiLSTMPolicy(features.shape[1], self.cfg.hidden, self.cfg.init_remove_prob)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.cfg.lr)
        self.generator = torch.Generator().manual_seed(seed + 1)
        self.baseline: float | None = None
        self.updates = 0

    @property
    def n_removable(self) -> int:
        return int(self.mask.sum())

    def remove_probs(self) -> torch.Tensor:
        """Probability of removing each removable unit under the current policy."""
        with torch.no_grad():
            return torch.sigmoid(self.policy(self.features[None])[0])[self.mask]

    def sample(self, n: int) -> torch.Tensor:
        """``n`` architectures: (n, removable units) of 0 = keep, 1 = remove."""
        p = self.remove_probs()
        return (torch.rand(n, len(p), generator=self.generator) < p).to(torch.int64)

    def greedy(self) -> torch.Tensor:
        return (self.remove_probs() > 0.5).to(torch.int64)

    def update(self, actions: torch.Tensor, rewards: Sequence[float]) -> dict[str, float]:
        """One REINFORCE step on the N sampled architectures (eq. 11); then the EMA baseline moves."""
        r = torch.tensor([float(v) for v in rewards])
        if self.baseline is None:
            self.baseline = float(r.mean())
        advantage = r - self.baseline
        logits = self.policy(self.features[None])[0][self.mask]
        logp = -nn.functional.binary_cross_entropy_with_logits(
            logits.expand(actions.shape[0], -1), actions.float(), reduction="none").sum(dim=1)
        loss = -(logp * advantage).mean()
        if self.cfg.entropy_weight:
            p = torch.sigmoid(logits)
            entropy = -(p * torch.log(p.clamp_min(1e-12)) + (1 - p) * torch.log((1 - p).clamp_min(1e-12))).sum()
            loss = loss - self.cfg.entropy_weight * entropy
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        d = self.cfg.baseline_decay
        self.baseline = d * self.baseline + (1.0 - d) * float(r.mean())
        self.updates += 1
        return {"loss": float(loss.detach()), "baseline": self.baseline, "mean_reward": float(r.mean())}

    # -- persistence (resume and transfer) --------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(), "baseline": self.baseline, "updates": self.updates,
                "config": asdict(self.cfg), "n_features": int(self.features.shape[1])}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.baseline = None if state["baseline"] is None else float(state["baseline"])
        self.updates = int(state["updates"])

    def load_policy_weights(self, state: dict[str, Any], source: str) -> None:
        """DDC policy transfer (sec. 3.6): start from another search's LSTM weights only; the baseline
        and optimiser moments belong to that search's rewards and are not copied."""
        n_feat = int(state.get("n_features", -1))
        hidden = int(state.get("config", {}).get("hidden", -1))
        if n_feat != self.features.shape[1] or hidden != self.cfg.hidden:
            raise UserError(f"--transfer-from {source}: its policy has {n_feat} features and hidden size {hidden}; "
                            f"this search needs {self.features.shape[1]} and {self.cfg.hidden}")
        self.policy.load_state_dict(state["policy"])

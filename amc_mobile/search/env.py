"""The AMC channel-pruning environment: one episode walks the prunable channel groups in order.

State of step t (AMC sec. 3.1, 10 features, plus the group's latency share on the device):
  [t, type (0 conv / 1 linear), in_channels, out_channels, stride, kernel, weight count,
   reduced (primary cost already removed), rest (primary cost the remaining groups can still remove),
   a_{t-1}, latency share]
Static features are min-max normalised across groups, costs are fractions of the unpruned cost.

Action wall (AMC's budget clipping, generalised to any list of monotone costs): before applying
a_t, find the largest channel count of group t such that every budget stays reachable when every
later group takes its minimum; cap a_t there and floor it at the minimum ratio. Every episode meets
every budget by construction. Costs are arbitrary monotone functions of the keep vector (MACs,
params, LUT latency), so the cap is found by bisection over the group's channel choices.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from amc_mobile.errors import UserError
from amc_mobile.pruning.policy import round_channels
from amc_mobile.search.budgets import format_cost

N_STATE_FEATURES = 11
STATE_NAMES = ("t", "type", "in_channels", "out_channels", "stride", "kernel", "weights",
               "reduced", "rest", "prev_action", "latency_share")


@dataclass(frozen=True)
class GroupInfo:
    """A prunable channel group, described by the layer that produces its channels."""

    name: str
    width: int  # full channel count
    layer_type: int = 0  # 0 conv, 1 linear
    in_channels: int = 0
    out_channels: int = 0
    stride: int = 1
    kernel: int = 1
    weights: int = 0


class CostModel:
    """A named monotone cost of a keep vector (channels kept per group), e.g. MACs or latency."""

    def __init__(self, kind: str, fn: Callable[[tuple[int, ...]], float], cache_size: int = 20000) -> None:
        self.kind = kind
        self._fn = fn
        self._cache: OrderedDict[tuple[int, ...], float] = OrderedDict()
        self._cache_size = cache_size

    def __call__(self, keep: Sequence[int]) -> float:
        key = tuple(int(k) for k in keep)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        value = float(self._fn(key))
        self._cache[key] = value
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return value


class ChannelSearchEnv:
    """Episode over groups with an action wall over ``budgets`` = [(cost model, absolute budget)].

    ``primary`` names the cost whose reduced/rest fill the state (latency if budgeted, else the
    first budget's kind); ``latency`` (optional) gives the latency-share feature.
    """

    def __init__(self, groups: Sequence[GroupInfo], budgets: Sequence[tuple[CostModel, float]],
                 min_ratio: float = 0.2, max_ratio: float = 1.0, multiple: int = 8,
                 latency: CostModel | None = None,
                 rounder: Callable[[int, float, int], int] = round_channels) -> None:
        if not groups:
            raise UserError("the model has no prunable channel groups")
        if not 0 < min_ratio <= max_ratio <= 1:
            raise UserError(f"need 0 < min ratio ({min_ratio}) <= max ratio ({max_ratio}) <= 1")
        self.groups = list(groups)
        self.budgets = list(budgets)
        self.min_ratio, self.max_ratio, self.multiple = float(min_ratio), float(max_ratio), int(multiple)
        self.rounder = rounder
        self.full = tuple(g.width for g in self.groups)
        self.min_keep = tuple(rounder(w, min_ratio, multiple) for w in self.full)
        self.max_keep = tuple(rounder(w, max_ratio, multiple) for w in self.full)
        # the channel counts each group can take (monotone in the ratio)
        self.choices = [sorted({rounder(w, r, multiple) for r in np.linspace(min_ratio, max_ratio, 4 * w + 1)})
                        for w in self.full]
        self.latency = latency
        kinds = [c.kind for c, _ in self.budgets]
        self.primary = latency if latency is not None and "latency" in kinds else (
            self.budgets[0][0] if self.budgets else latency)
        self.check_feasible()
        self._static = self._static_features()
        self.reset()

    # --- budgets -----------------------------------------------------------------------------------
    def check_feasible(self) -> None:
        """One-line UserError naming the minimum reachable cost when a budget cannot be met."""
        for cost, budget in self.budgets:
            lowest = cost(self.min_keep)
            if lowest > budget * (1 + 1e-9):
                raise UserError(
                    f"infeasible {cost.kind} budget {format_cost(cost.kind, budget)}: the minimum reachable "
                    f"{cost.kind} is {format_cost(cost.kind, lowest)} (every group at keep ratio "
                    f"{self.min_ratio:g}); raise the budget or lower --min-ratio")

    def wall(self, t: int, decided: Sequence[int], wanted: int) -> int:
        """Largest allowed channel count for group t: <= ``wanted``, every budget still reachable."""
        choices = [c for c in self.choices[t] if c <= max(wanted, self.choices[t][0])]
        rest_min = self.min_keep[t + 1:]
        lo, hi = 0, len(choices) - 1  # choices[0] (the minimum) is always allowed by feasibility
        for cost, budget in self.budgets:
            def ok(c: int, cost: CostModel = cost, budget: float = budget) -> bool:
                return cost((*decided, c, *rest_min)) <= budget * (1 + 1e-9)

            if ok(choices[hi]):
                continue
            a, b = lo, hi  # ok(a) assumed, not ok(b)
            while b - a > 1:
                mid = (a + b) // 2
                if ok(choices[mid]):
                    a = mid
                else:
                    b = mid
            hi = a
        return choices[hi]

    # --- episode -----------------------------------------------------------------------------------
    def reset(self) -> np.ndarray:
        self.t = 0
        self.keep: list[int] = []
        self.ratios: list[float] = []
        self.prev_action = 1.0
        return self.state()

    @property
    def done(self) -> bool:
        return self.t >= len(self.groups)

    def step(self, action: float) -> tuple[np.ndarray, float, bool]:
        """Apply the agent's keep ratio (wall-capped) to group t; returns (next state, applied ratio, done)."""
        t, width = self.t, self.full[self.t]
        ratio = float(np.clip(action, self.min_ratio, self.max_ratio))
        wanted = self.rounder(width, ratio, self.multiple)
        kept = self.wall(t, self.keep, wanted)
        applied = kept / width
        self.keep.append(kept)
        self.ratios.append(applied)
        self.prev_action = applied
        self.t += 1
        return self.state(), applied, self.done

    def state(self) -> np.ndarray:
        t = min(self.t, len(self.groups) - 1)
        s = np.zeros(N_STATE_FEATURES, np.float32)
        s[:7] = self._static[t, :7]
        if self.primary is not None:
            full_cost = self.primary(self.full)
            decided = tuple(self.keep)
            undecided = len(self.groups) - len(decided)
            prefix_full = self.primary((*decided, *self.full[len(decided):]))
            prefix_min = self.primary((*decided, *self.min_keep[len(decided):])) if undecided else prefix_full
            s[7] = (full_cost - prefix_full) / full_cost
            s[8] = (prefix_full - prefix_min) / full_cost
        s[9] = self.prev_action
        s[10] = self._static[t, 7]
        return s

    def _static_features(self) -> np.ndarray:
        rows = np.array([[i, g.layer_type, g.in_channels, g.out_channels, g.stride, g.kernel, g.weights, 0.0]
                         for i, g in enumerate(self.groups)], np.float64)
        if self.latency is not None:
            full = self.latency(self.full)
            for i in range(len(self.groups)):
                at_min = list(self.full)
                at_min[i] = self.min_keep[i]
                removable = full - self.latency(at_min)
                rows[i, 7] = removable / max(1e-12, 1.0 - self.min_keep[i] / self.full[i]) / full
        lo, hi = rows.min(axis=0), rows.max(axis=0)
        span = np.where(hi - lo > 0, hi - lo, 1.0)
        return ((rows - lo) / span).astype(np.float32)

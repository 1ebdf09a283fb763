"""Budgets from the command line: ``--latency-budget 20ms | 1500us | 50%``, ``--flops-budget 50% | 150M``,
``--params-budget 60% | 1.5M``. A percentage is of the unpruned model's cost (for latency: on the
target device, as predicted from its latency table)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from amc_mobile.errors import UserError

KINDS = ("latency", "macs", "params")
_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}
_TIME = {"ms": 1.0, "us": 1e-3, "µs": 1e-3, "s": 1e3}
_NUM = r"([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)"


@dataclass(frozen=True)
class Budget:
    """One budget: an absolute cost (ms, MACs or params) or a fraction of the unpruned model's cost."""

    kind: str  # "latency" | "macs" | "params"
    value: float  # absolute (latency in ms) when not relative, else the fraction
    relative: bool
    text: str

    def resolve(self, full_cost: float) -> float:
        """The absolute budget, given the unpruned model's cost in this budget's unit."""
        return self.value * full_cost if self.relative else self.value

    def describe(self, full_cost: float) -> str:
        text = f"{self.kind} <= {format_cost(self.kind, self.resolve(full_cost))}"
        if self.relative:
            text += f" ({self.text} of {format_cost(self.kind, full_cost)})"
        return text


def format_cost(kind: str, value: float) -> str:
    if kind == "latency":
        return f"{value:.3f} ms" if value < 10 else f"{value:.2f} ms"
    if value >= 1e9:
        return f"{value / 1e9:.2f}G {kind}"
    if value >= 1e6:
        return f"{value / 1e6:.2f}M {kind}"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k {kind}"
    return f"{value:.0f} {kind}"


def parse_budget(kind: str, text: str) -> Budget:
    """Parse one budget string; a bad string is a one-line UserError with examples."""
    if kind not in KINDS:
        raise UserError(f"unknown budget kind '{kind}'; valid: {', '.join(KINDS)}")
    raw = str(text).strip()
    s = raw.lower().replace(" ", "")
    m = re.fullmatch(_NUM + "%", s)
    if m:
        frac = float(m.group(1)) / 100.0
        if not 0 < frac <= 1:
            raise UserError(f"--{_flag(kind)} {raw}: a percentage must be in (0, 100]")
        return Budget(kind, frac, True, raw)
    if kind == "latency":
        m = re.fullmatch(_NUM + "(ms|us|µs|s)", s)
        if not m:
            raise UserError(f"--latency-budget {raw}: expected e.g. 20ms, 1500us or 50% "
                            "(of the unpruned model's latency on the device)")
        value = float(m.group(1)) * _TIME[m.group(2)]
    else:
        m = re.fullmatch(_NUM + "([kmg]?)", s)
        if not m:
            raise UserError(f"--{_flag(kind)} {raw}: expected e.g. 50% or an absolute count like 150M, 1.2G, 800k")
        value = float(m.group(1)) * _SUFFIX[m.group(2)]
    if not value > 0:
        raise UserError(f"--{_flag(kind)} {raw}: the budget must be positive")
    return Budget(kind, value, False, raw)


def _flag(kind: str) -> str:
    return {"latency": "latency-budget", "macs": "flops-budget", "params": "params-budget"}[kind]


def parse_budgets(latency: str | None = None, macs: str | None = None,
                  params: str | None = None) -> list[Budget]:
    """All given budgets (several at once allowed); at least one is required."""
    out = [parse_budget(k, v) for k, v in (("latency", latency), ("macs", macs), ("params", params))
           if v is not None]
    if not out:
        raise UserError("give at least one of --latency-budget, --flops-budget, --params-budget")
    return out

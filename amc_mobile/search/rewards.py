"""Reward functions of AMC and DDC, in one place, chosen by name from a registry (never ``eval``).

AMC (He et al., ECCV 2018; poster, papers/001):
  * resource-constrained:  R_err    = -Error
  * accuracy-guaranteed:   R_FLOPs  = -Error * log(FLOPs),  R_Param = -Error * log(#Params)
    and, by the same construction on device latency made unit-free,
    R_latency = -Error * log(1 + T / T_teacher)  (T relative to the teacher on the same device, so
    the trade-off does not change with ms vs us; the +1 keeps the log positive at any speed-up).
DDC (Pahwa et al., papers/004, eq. 3-6): R = R1(A) * R2(T) * R3(C) with shifted sigmoids
  R1(A) = 1 - 1 / (1 + exp(15 (A / A_teacher - A_th)))   (eq. 3)
  R2(T) = 1 / (1 + exp(15 (T / T_teacher - T_th)))       (eq. 4)
  R3(C) = 1 / (1 + exp(15 (C / C_teacher - C_th)))       (eq. 5)
  R     = R1 * R2 * R3                                    (eq. 6)
where T is the latency on the target device and C the parameter count.

Conventions: ``accuracy`` and ``Error = 1 - accuracy`` are fractions in [0, 1]; FLOPs are MACs of
conv + linear layers; ``log`` is the natural log (of MACs and parameter counts in base units, as AMC).

Every reward DECLARES the candidate fields it reads (:func:`reward_inputs`: ``accuracy``,
``latency``, ``macs``, ``params``); the search asks it instead of matching names, e.g. a reward that
reads ``latency`` needs the device's latency table.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from amc_mobile.errors import UserError, unknown_name

DDC_STEEPNESS = 15.0  # the factor 15 of DDC eq. 3-5


@dataclass(frozen=True)
class Candidate:
    """What a reward may look at: the pruned candidate and its teacher (same units for both)."""

    accuracy: float  # fraction in [0, 1] (top-1 or top-5, as selected)
    macs: float
    params: float
    latency_ms: float
    teacher_accuracy: float = 1.0
    teacher_macs: float = 1.0
    teacher_params: float = 1.0
    teacher_latency_ms: float = 1.0

    @property
    def error(self) -> float:
        return 1.0 - self.accuracy


@dataclass(frozen=True)
class DDCThresholds:
    """DDC's user thresholds (eq. 3-5); the paper fixes 0.9 / 0.3 / 0.6."""

    accuracy: float = 0.9
    latency: float = 0.3
    params: float = 0.6


RewardFn = Callable[[Candidate], float]
REWARD_INPUTS = ("accuracy", "latency", "macs", "params")
_REGISTRY: dict[str, tuple[RewardFn, str]] = {}
_INPUTS: dict[str, frozenset[str]] = {}


def register_reward(name: str, description: str,
                    inputs: tuple[str, ...] = ("accuracy",)) -> Callable[[RewardFn], RewardFn]:
    """Register ``fn`` as reward ``name``; ``inputs`` are the candidate fields it reads."""
    bad = set(inputs) - set(REWARD_INPUTS)
    if bad:
        raise ValueError(f"unknown reward inputs {sorted(bad)}; valid: {', '.join(REWARD_INPUTS)}")

    def deco(fn: RewardFn) -> RewardFn:
        _REGISTRY[name] = (fn, description)
        _INPUTS[name] = frozenset(inputs)
        return fn

    return deco


def reward_inputs(name: str) -> frozenset[str]:
    """What reward ``name`` reads (a subset of ``REWARD_INPUTS``)."""
    if name not in _REGISTRY:
        raise unknown_name("reward", name, _REGISTRY)
    return _INPUTS[name]


def list_rewards() -> dict[str, str]:
    """name -> one-line description, for ``--help`` and error messages."""
    return {name: desc for name, (_, desc) in sorted(_REGISTRY.items())}


def get_reward(name: str, ddc: DDCThresholds | None = None) -> RewardFn:
    """The reward called ``name``; ``ddc`` sets the thresholds of the DDC reward."""
    if name not in _REGISTRY:
        raise unknown_name("reward", name, _REGISTRY)
    if name == "ddc":
        th = ddc or DDCThresholds()
        return lambda c: r_ddc(c, th)
    return _REGISTRY[name][0]


def _positive_log(value: float, what: str) -> float:
    if not value > 0:
        raise UserError(f"cannot take log of {what} = {value}; it must be positive")
    return math.log(value)


# --- AMC (papers/001, "Reward Functions") --------------------------------------------------------

@register_reward("err", "AMC resource-constrained: R_err = -Error", ("accuracy",))
def r_err(c: Candidate) -> float:
    return -c.error


@register_reward("flops", "AMC accuracy-guaranteed: R_FLOPs = -Error * log(MACs)", ("accuracy", "macs"))
def r_flops(c: Candidate) -> float:
    return -c.error * _positive_log(c.macs, "MACs")


@register_reward("params", "AMC accuracy-guaranteed: R_Param = -Error * log(#params)", ("accuracy", "params"))
def r_params(c: Candidate) -> float:
    return -c.error * _positive_log(c.params, "params")


@register_reward("latency", "R_latency = -Error * log(1 + T/T_teacher) (AMC's R_FLOPs form on device latency, "
                            "unit-free)", ("accuracy", "latency"))
def r_latency(c: Candidate) -> float:
    if not c.teacher_latency_ms > 0:
        raise UserError(f"the latency reward needs the teacher's latency, got {c.teacher_latency_ms}")
    return -c.error * math.log1p(c.latency_ms / c.teacher_latency_ms)


# --- DDC (papers/004, eq. 3-6) ----------------------------------------------------------------------

def _sigmoid_down(ratio: float, threshold: float) -> float:
    """1 / (1 + exp(15 (ratio - threshold))): ~1 well below the threshold, ~0 well above."""
    z = DDC_STEEPNESS * (ratio - threshold)
    if z > 700:  # exp overflow: the value is 0 to double precision
        return 0.0
    return 1.0 / (1.0 + math.exp(z))


def ddc_r1(accuracy: float, teacher_accuracy: float, threshold: float = 0.9) -> float:
    """DDC eq. 3: R1(A) = 1 - (1 + exp(15 (A / A_teacher - A_th)))^-1."""
    return 1.0 - _sigmoid_down(accuracy / teacher_accuracy, threshold)


def ddc_r2(latency: float, teacher_latency: float, threshold: float = 0.3) -> float:
    """DDC eq. 4: R2(T) = (1 + exp(15 (T / T_teacher - T_th)))^-1."""
    return _sigmoid_down(latency / teacher_latency, threshold)


def ddc_r3(params: float, teacher_params: float, threshold: float = 0.6) -> float:
    """DDC eq. 5: R3(C) = (1 + exp(15 (C / C_teacher - C_th)))^-1."""
    return _sigmoid_down(params / teacher_params, threshold)


def r_ddc(c: Candidate, th: DDCThresholds | None = None) -> float:
    """DDC eq. 6: R = R1(A) * R2(T) * R3(C)."""
    th = th or DDCThresholds()
    return (ddc_r1(c.accuracy, c.teacher_accuracy, th.accuracy)
            * ddc_r2(c.latency_ms, c.teacher_latency_ms, th.latency)
            * ddc_r3(c.params, c.teacher_params, th.params))


register_reward("ddc", "DDC eq. 6: R1(A) * R2(T) * R3(C), thresholds --ddc-thresholds A,T,C",
                ("accuracy", "latency", "params"))(r_ddc)

"""Rewards against the paper formulas (AMC poster, papers/001; DDC eq. 3-6, papers/004)."""

from __future__ import annotations

import math

import pytest

from amc_mobile.errors import UserError
from amc_mobile.search.rewards import (
    Candidate,
    DDCThresholds,
    ddc_r1,
    ddc_r2,
    ddc_r3,
    get_reward,
    list_rewards,
)

C = Candidate(accuracy=0.85, macs=5e6, params=4e5, latency_ms=0.8, teacher_accuracy=0.92,
              teacher_macs=1.1e7, teacher_params=8.2e5, teacher_latency_ms=2.0)


def test_registry_lists_every_paper_reward() -> None:
    assert {"err", "flops", "params", "latency", "ddc"} <= set(list_rewards())


def test_unknown_reward_is_a_one_line_error_listing_valid_names() -> None:
    with pytest.raises(UserError, match="valid rewards: .*ddc.*err"):
        get_reward("acc*10")


def test_amc_rewards_match_the_poster() -> None:
    err = 1 - 0.85
    assert get_reward("err")(C) == pytest.approx(-err)
    assert get_reward("flops")(C) == pytest.approx(-err * math.log(5e6))
    assert get_reward("params")(C) == pytest.approx(-err * math.log(4e5))
    # latency relative to the teacher (unit-free): 0.8 ms of 2.0 ms
    assert get_reward("latency")(C) == pytest.approx(-err * math.log(1 + 0.8 / 2.0))


def test_latency_reward_does_not_depend_on_the_time_unit() -> None:
    us = Candidate(0.85, 5e6, 4e5, 800.0, teacher_latency_ms=2000.0)  # the same model in microseconds
    assert get_reward("latency")(us) == pytest.approx(get_reward("latency")(C))
    faster = Candidate(0.85, 5e6, 4e5, 0.5, teacher_latency_ms=2.0)
    assert get_reward("latency")(faster) > get_reward("latency")(C)


@pytest.mark.parametrize("name", sorted(list_rewards()))
def test_every_reward_declares_what_it_reads(name: str) -> None:
    from amc_mobile.search.rewards import REWARD_INPUTS, reward_inputs

    needs = reward_inputs(name)
    assert "accuracy" in needs and needs <= set(REWARD_INPUTS)
    # a field the reward does not declare cannot change its value
    base = get_reward(name)(C)
    for field, changed in (("latency", {"latency_ms": 0.3}), ("macs", {"macs": 1e6}), ("params", {"params": 1e5})):
        if field not in needs:
            import dataclasses

            assert get_reward(name)(dataclasses.replace(C, **changed)) == pytest.approx(base), field
    assert ("latency" in needs) == (name in ("latency", "ddc"))


def test_accuracy_guaranteed_reward_prefers_cheaper_at_equal_error_and_better_at_equal_cost() -> None:
    r = get_reward("flops")
    cheaper = Candidate(0.85, 2e6, 4e5, 0.8)
    assert r(cheaper) > r(C)
    better = Candidate(0.9, 5e6, 4e5, 0.8)
    assert r(better) > r(C)


def test_ddc_terms_match_eq_3_to_5() -> None:
    a, t, c = 0.85 / 0.92, 0.8 / 2.0, 4e5 / 8.2e5
    assert ddc_r1(0.85, 0.92, 0.9) == pytest.approx(1 - 1 / (1 + math.exp(15 * (a - 0.9))))
    assert ddc_r2(0.8, 2.0, 0.3) == pytest.approx(1 / (1 + math.exp(15 * (t - 0.3))))
    assert ddc_r3(4e5, 8.2e5, 0.6) == pytest.approx(1 / (1 + math.exp(15 * (c - 0.6))))


def test_ddc_reward_is_the_product_eq_6_with_default_and_user_thresholds() -> None:
    expected = ddc_r1(0.85, 0.92) * ddc_r2(0.8, 2.0) * ddc_r3(4e5, 8.2e5)
    assert get_reward("ddc")(C) == pytest.approx(expected)
    th = DDCThresholds(accuracy=0.95, latency=0.5, params=0.4)
    expected = ddc_r1(0.85, 0.92, 0.95) * ddc_r2(0.8, 2.0, 0.5) * ddc_r3(4e5, 8.2e5, 0.4)
    assert get_reward("ddc", th)(C) == pytest.approx(expected)


def test_ddc_thresholds_behave_as_described() -> None:
    # R1 is 0.5 exactly at the accuracy threshold; R2, R3 are 0.5 at theirs; all in [0, 1]
    assert ddc_r1(0.9, 1.0, 0.9) == pytest.approx(0.5)
    assert ddc_r2(0.3, 1.0, 0.3) == pytest.approx(0.5)
    assert ddc_r3(0.6, 1.0, 0.6) == pytest.approx(0.5)
    assert ddc_r2(1e6, 1.0) == 0.0  # no overflow far above the threshold
    assert 0.0 <= ddc_r1(0.0, 1.0) < 0.01


def test_log_rewards_reject_non_positive_costs() -> None:
    with pytest.raises(UserError, match="positive"):
        get_reward("flops")(Candidate(0.5, 0.0, 1.0, 1.0))

"""When to request the next chunk, and the real-time chunking helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from control_testkit import embodiment  # noqa: F401  (puts the package on the path)

from qwen_vla_ros.control import (
    InferenceTrigger,
    chunk_play_end,
    inference_delay_steps,
    rtc_soft_mask,
)

DT = 0.02


def decide(trigger: InferenceTrigger, now: float, **kwargs):
    defaults = {"last_start": 0.0, "last_end": chunk_play_end(0.0, 50, DT), "latency_s": 0.1}
    return trigger.decide(now, **{**defaults, **kwargs})


def test_every_strategy_requests_a_first_chunk_and_never_while_one_is_in_flight():
    for strategy in ("synchronous", "temporal_ensemble", "async"):
        trigger = InferenceTrigger(strategy, DT)
        assert trigger.decide(0.0, last_start=None, last_end=None).request
        assert not trigger.decide(5.0, last_start=0.0, last_end=1.0, in_flight=True).request
        assert trigger.decide(1.0, last_start=0.0, last_end=1.0).request  # ran out


def test_synchronous_waits_for_the_chunk_to_play_out():
    trigger = InferenceTrigger("synchronous", DT)
    end = chunk_play_end(0.0, 50, DT, actions_per_chunk=25)
    assert end == pytest.approx(0.5)
    assert not decide(trigger, 0.48, last_end=end).request
    assert decide(trigger, 0.5, last_end=end).request


def test_temporal_ensemble_requests_every_period():
    trigger = InferenceTrigger("temporal_ensemble", DT, ensemble_period_steps=2)
    assert not decide(trigger, DT).request
    assert decide(trigger, 2 * DT).request


def test_async_requests_at_the_replan_threshold_or_one_latency_before_the_end():
    trigger = InferenceTrigger("async", DT, replan_threshold=0.5)
    assert not decide(trigger, 0.49).request  # 51% of the 1 s chunk left
    assert decide(trigger, 0.5).request
    late = InferenceTrigger("async", DT, replan_threshold=0.1)
    assert not decide(late, 0.8, latency_s=0.1).request  # 0.2 s left > 0.1 + 0.02
    assert decide(late, 0.88, latency_s=0.1).request  # 0.12 s left: request now or starve


def test_inference_delay_steps_rounds_up():
    assert inference_delay_steps(0.0, DT) == 0
    assert inference_delay_steps(0.02, DT) == 1
    assert inference_delay_steps(0.081, DT) == 5
    assert decide(InferenceTrigger("async", DT), 0.1, latency_s=0.086).delay_steps == 5
    with pytest.raises(ValueError, match="latency_s"):
        inference_delay_steps(-1.0, DT)


def test_rtc_soft_mask_matches_the_paper_formula_by_hand():
    horizon, d, s = 10, 2, 3
    weights = rtc_soft_mask(horizon, d, s)
    assert weights[:2].tolist() == [1.0, 1.0]
    c = 5.0 / 6.0  # i = 2: (H - s - i) / (H - s - d + 1) = 5 / 6
    assert weights[2] == pytest.approx(c * (math.exp(c) - 1.0) / (math.e - 1.0))
    c = 1.0 / 6.0  # i = 6, the last guided step
    assert weights[6] == pytest.approx(c * (math.exp(c) - 1.0) / (math.e - 1.0))
    assert weights[7:].tolist() == [0.0, 0.0, 0.0]  # beyond the previous chunk's prediction
    assert np.all(np.diff(weights[2:7]) < 0)


def test_rtc_soft_mask_rejects_an_impossible_delay():
    with pytest.raises(ValueError, match="delay_steps"):
        rtc_soft_mask(10, 8, 3)


def test_bad_trigger_parameters_are_named():
    with pytest.raises(ValueError, match="replan_threshold"):
        InferenceTrigger("async", DT, replan_threshold=1.5)
    with pytest.raises(ValueError, match="unknown strategy"):
        InferenceTrigger("rtc", DT)

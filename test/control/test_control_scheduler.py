"""Chunk scheduling: latency compensation and each strategy's arithmetic, against hand values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from control_testkit import scalar_chunk

from qwen_vla_ros.control import ChunkScheduler, step_index

DT = 0.02


def ramp(n: int, offset: float = 0.0) -> np.ndarray:
    """Action k = offset + k, so the value read back names the step that was picked."""
    return offset + np.arange(n, dtype=np.float64)


def value(scheduler: ChunkScheduler, t: float) -> float | None:
    action = scheduler.action_at(t)
    return None if action is None else float(action[0])


# -- latency compensation -------------------------------------------------------------------
def test_step_index_skips_the_steps_whose_time_has_passed():
    assert step_index(10.08, 10.0, DT) == 4  # 80 ms of latency at 50 Hz: 4 steps stale
    assert step_index(10.0 + 3 * DT, 10.0, DT) == 3  # on a grid point despite float rounding
    assert step_index(10.0 + 0.0999, 10.0, DT) == 4  # inside step 4's period
    assert step_index(9.99, 10.0, DT) == -1  # not started


@pytest.mark.parametrize("strategy", ["synchronous", "async", "temporal_ensemble"])
def test_a_late_chunk_starts_at_the_step_for_now(strategy):
    scheduler = ChunkScheduler(strategy)
    scheduler.add(scalar_chunk(ramp(50), start=1.0), now=1.07)  # delivered 70 ms late
    assert value(scheduler, 1.07) == 3.0
    assert value(scheduler, 1.08) == 4.0
    assert value(scheduler, 1.0 + 49 * DT) == 49.0


def test_without_latency_compensation_the_first_action_plays_on_arrival():
    scheduler = ChunkScheduler("synchronous", latency_compensation=False)
    scheduler.add(scalar_chunk(ramp(50), start=1.0), now=1.07)
    assert value(scheduler, 1.07) == 0.0
    assert value(scheduler, 1.09) == 1.0


def test_interpolation_is_linear_between_grid_points():
    scheduler = ChunkScheduler("synchronous", interpolate=True)
    scheduler.add(scalar_chunk(ramp(10) * 2.0, start=0.0), now=0.0)
    assert value(scheduler, 0.03) == pytest.approx(3.0)  # halfway between 2 and 4
    assert value(scheduler, 0.185) == pytest.approx(
        18.0
    )  # the last point is held, not extrapolated


# -- no valid action --------------------------------------------------------------------------
def test_none_without_chunks_before_the_start_and_after_the_end():
    scheduler = ChunkScheduler("async")
    assert scheduler.action_at(0.0) is None
    assert scheduler.status(0.0).state == "empty"
    scheduler.add(scalar_chunk(ramp(5), start=1.0), now=0.5)
    assert scheduler.action_at(0.9) is None
    assert scheduler.status(0.9).state == "pending"
    assert value(scheduler, 1.0) == 0.0
    assert scheduler.action_at(1.0 + 5 * DT) is None  # 5 steps played: ran out
    status = scheduler.status(1.1)
    assert status.state == "ran_out" and status.ran_out_at == pytest.approx(1.1)


def test_a_chunk_that_ran_out_before_arriving_is_refused():
    scheduler = ChunkScheduler("async")
    assert scheduler.add(scalar_chunk(ramp(5), start=0.0), now=0.2) is None
    assert scheduler.chunks == ()


def test_older_chunks_are_not_replayed_when_the_newest_runs_out():
    scheduler = ChunkScheduler("async", blend_steps=0)
    scheduler.add(scalar_chunk(ramp(50), start=0.0), now=0.0)
    scheduler.add(scalar_chunk(ramp(3, 100.0), start=0.1), now=0.1)  # a short chunk
    assert value(scheduler, 0.14) == 102.0
    assert scheduler.action_at(0.16) is None
    scheduler.prune(0.16)
    assert scheduler.chunks == ()  # the older chunk went with the newer one
    assert scheduler.status(0.2).ran_out_at == pytest.approx(0.16)


# -- synchronous --------------------------------------------------------------------------------
def test_synchronous_plays_actions_per_chunk_then_the_next_chunk():
    scheduler = ChunkScheduler("synchronous", actions_per_chunk=3)
    scheduler.add(scalar_chunk(ramp(10), start=0.0), now=0.0)
    scheduler.add(scalar_chunk(ramp(10, 100.0), start=0.02), now=0.03)  # arrives mid-chunk
    assert [value(scheduler, k * DT) for k in range(3)] == [
        0.0,
        1.0,
        2.0,
    ]  # the first chunk finishes
    # It takes over at 0.06, at its step for that time: (0.06 - 0.02)/0.02 = 2.
    assert value(scheduler, 3 * DT) == 102.0
    assert scheduler.action_at(0.08) is None  # its 3 steps (grid 0.02 .. 0.08) are spent


# -- temporal ensemble ----------------------------------------------------------------------------
def test_temporal_ensemble_weights_the_oldest_prediction_most():
    m = 0.5
    scheduler = ChunkScheduler("temporal_ensemble", ensemble_decay=m)
    for i, level in enumerate([1.0, 2.0, 4.0]):  # oldest first
        scheduler.add(scalar_chunk(np.full(50, level), start=i * DT, chunk_id=i), now=i * DT)
    w = [1.0, math.exp(-m), math.exp(-2 * m)]
    expected = (1.0 * w[0] + 2.0 * w[1] + 4.0 * w[2]) / sum(w)
    assert value(scheduler, 2 * DT) == pytest.approx(expected)
    # Before the third chunk starts only the first two predict t = 0.02.
    assert value(scheduler, DT) == pytest.approx((1.0 + 2.0 * math.exp(-m)) / (1.0 + math.exp(-m)))


def test_temporal_ensemble_averages_the_predictions_for_the_same_time():
    scheduler = ChunkScheduler("temporal_ensemble", ensemble_decay=0.0)
    scheduler.add(scalar_chunk(ramp(50), start=0.0), now=0.0)  # predicts k at step k
    scheduler.add(scalar_chunk(ramp(50, 10.0), start=2 * DT), now=2 * DT)
    # At t = 0.06: chunk 0 says 3, chunk 1 (its step 1) says 11.
    assert value(scheduler, 3 * DT) == pytest.approx(7.0)


# -- async --------------------------------------------------------------------------------------
def test_async_cross_fades_linearly_over_blend_steps():
    scheduler = ChunkScheduler("async", blend_steps=4)
    scheduler.add(scalar_chunk(np.zeros(50), start=0.0), now=0.0)
    scheduler.add(scalar_chunk(np.full(50, 10.0), start=0.1), now=0.1)
    blended = [value(scheduler, 0.1 + k * DT) for k in range(6)]
    assert blended == pytest.approx([2.0, 4.0, 6.0, 8.0, 10.0, 10.0])  # new weight (k+1)/5
    assert value(scheduler, 0.08) == 0.0  # before the take-over: old chunk only


def test_async_blend_counts_from_the_arrival_of_a_late_chunk():
    scheduler = ChunkScheduler("async", blend_steps=1)
    scheduler.add(scalar_chunk(np.zeros(50), start=0.0), now=0.0)
    scheduler.add(scalar_chunk(ramp(50, 100.0), start=0.1), now=0.16)  # 3 steps late
    assert value(scheduler, 0.16) == pytest.approx(0.5 * 103.0)
    assert value(scheduler, 0.18) == pytest.approx(104.0)


def test_async_blends_recursively_through_rapid_replans():
    scheduler = ChunkScheduler("async", blend_steps=4)
    scheduler.add(scalar_chunk(np.zeros(50), start=0.0), now=0.0)
    scheduler.add(scalar_chunk(np.full(50, 10.0), start=0.1), now=0.1)
    scheduler.add(scalar_chunk(np.full(50, 20.0), start=0.12), now=0.12)
    middle = 0.6 * 0.0 + 0.4 * 10.0  # second chunk one step after its take-over
    assert value(scheduler, 0.12) == pytest.approx(0.8 * middle + 0.2 * 20.0)


def test_async_with_no_blending_switches_at_once():
    scheduler = ChunkScheduler("async", blend_steps=0)
    scheduler.add(scalar_chunk(np.zeros(50), start=0.0), now=0.0)
    scheduler.add(scalar_chunk(np.full(50, 10.0), start=0.1), now=0.1)
    assert value(scheduler, 0.1) == 10.0


# -- real-time chunking seam ------------------------------------------------------------------
def test_frozen_prefix_is_what_the_schedule_plays_next():
    scheduler = ChunkScheduler("synchronous")
    scheduler.add(scalar_chunk(ramp(6), start=0.0), now=0.0)
    assert scheduler.frozen_prefix(0.04, 3)[:, 0].tolist() == [2.0, 3.0, 4.0]
    assert scheduler.frozen_prefix(0.08, 5)[:, 0].tolist() == [4.0, 5.0]  # stops at the end
    assert scheduler.remaining_actions(0.06)[:, 0].tolist() == [3.0, 4.0, 5.0]
    assert scheduler.frozen_prefix(0.2, 3) is None


def test_frozen_prefix_includes_the_blend():
    scheduler = ChunkScheduler("async", blend_steps=1)
    scheduler.add(scalar_chunk(np.zeros(50), start=0.0), now=0.0)
    scheduler.add(scalar_chunk(np.full(50, 10.0), start=0.1), now=0.1)
    assert scheduler.frozen_prefix(0.1, 2)[:, 0].tolist() == pytest.approx([5.0, 10.0])


# -- bad input ----------------------------------------------------------------------------------
def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="unknown strategy"):
        ChunkScheduler("sometimes")
    with pytest.raises(ValueError, match="blend_steps"):
        ChunkScheduler("async", blend_steps=-1)
    with pytest.raises(ValueError, match="dt"):
        ChunkScheduler("async").add(scalar_chunk(ramp(3), start=0.0, dt=0.0), now=0.0)

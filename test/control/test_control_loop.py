"""The control loop: run and hold decisions, watchdog timing, e-stop, faults, resume."""

from __future__ import annotations

import numpy as np
import pytest
from control_testkit import chunk_for, embodiment, steady_chunk

from qwen_vla_ros.control import ChunkFormatError, ControlLoop, chunk_from_points, points_from_chunk
from qwen_vla_ros.types import ActionChunk

DT = 0.02


def index(emb, name: str) -> int:
    return emb.action_names.index(name)


def run_ticks(loop: ControlLoop, start_tick: int, count: int, measured=None, **kwargs):
    return [
        loop.tick(k * loop.embodiment.dt, measured, **kwargs)
        for k in range(start_tick, start_tick + count)
    ]


def test_latency_compensation_through_the_loop(aloha):
    loop = ControlLoop(aloha, "async")
    actions = np.tile(aloha.home_position, (50, 1))
    waist = index(aloha, "left_arm/waist")
    actions[:, waist] = 0.01 * np.arange(50)  # small steps: the safety layer leaves them alone
    assert loop.add_chunk(chunk_for(aloha, actions, start=0.0, chunk_id=3), now=0.07) == []
    result = loop.tick(0.08, aloha.home_position)
    assert result.mode == "run" and result.chunk_id == 3 and result.reason == "chunk 3 step 4"
    assert result.command[waist] == pytest.approx(0.04)
    assert result.commands[0].values[0] == pytest.approx(0.04)


def test_watchdog_holds_within_two_periods_after_the_chunk_timeout(aloha):
    loop = ControlLoop(aloha, "async")
    loop.add_chunk(steady_chunk(aloha, aloha.home_position, 0.0), now=0.0)  # runs out at 1.0 s
    results = run_ticks(loop, 0, 120, aloha.home_position)
    times = [k * DT for k in range(120)]
    modes = [r.mode for r in results]
    assert set(modes[:50]) == {"run"}
    assert results[50].mode == "hold" and results[50].cause == "starved"
    first_watchdog = next(t for t, r in zip(times, results, strict=True) if r.cause == "watchdog")
    timeout_at = 1.0 + aloha.chunk_timeout_s
    assert timeout_at < first_watchdog <= timeout_at + DT + 1e-9  # on the first tick past it
    assert all(
        r.cause == "starved"
        for t, r in zip(times, results, strict=True)
        if 1.0 <= t <= timeout_at - 1e-9
    )
    assert "ran out" in results[-1].reason and all(r.mode == "hold" for r in results[50:])


def test_soft_hold_keeps_the_last_command_then_the_watchdog_latches_the_measured_state(aloha):
    loop = ControlLoop(aloha, "async")
    target = aloha.home_position.copy()
    loop.add_chunk(steady_chunk(aloha, target, 0.0, horizon=10), now=0.0)
    measured = target.copy()
    measured[index(aloha, "left_arm/shoulder")] -= 0.03  # the arm sags below its command
    results = run_ticks(loop, 0, 10, measured)
    assert results[-1].mode == "run"
    starved = loop.tick(10 * DT, measured)
    assert starved.cause == "starved"
    np.testing.assert_allclose(starved.command, target)  # no jump during a planned pause
    later = measured.copy()
    later[index(aloha, "left_arm/shoulder")] -= 0.5  # a glitch after the watchdog latched
    watchdog = loop.tick(0.8, measured)
    assert watchdog.cause == "watchdog"
    np.testing.assert_allclose(watchdog.command, measured)
    np.testing.assert_allclose(loop.tick(0.82, later).command, measured)  # latched, not re-read


def test_resume_after_a_hold_ramps_within_the_step_limits(aloha):
    loop = ControlLoop(aloha, "async")
    loop.tick(0.0, aloha.home_position)  # no chunk: hold at the measured state
    elbow = index(aloha, "left_arm/elbow")
    goal = aloha.home_position.copy()
    goal[elbow] += 0.3  # six step limits away, under the 10-step discontinuity threshold
    assert loop.add_chunk(steady_chunk(aloha, goal, 0.02), now=0.02) == []
    results = run_ticks(loop, 1, 8, aloha.home_position)
    elbows = [r.command[elbow] for r in results]
    assert elbows == pytest.approx(
        [aloha.home_position[elbow] + 0.05 * min(k, 6) for k in range(1, 9)]
    )
    assert results[0].clipped.clipped("step") == ["left_arm/elbow"]


def test_a_discontinuous_chunk_is_rejected_and_never_executed(aloha):
    loop = ControlLoop(aloha, "async")
    loop.tick(0.0, aloha.home_position)
    far = aloha.home_position.copy()
    far[index(aloha, "right_arm/waist")] = 1.5  # 30 step limits away
    problems = loop.add_chunk(steady_chunk(aloha, far, 0.0), now=0.0)
    assert (
        len(problems) == 1 and "discontinuity" in problems[0] and "right_arm/waist" in problems[0]
    )
    assert loop.tick(0.02, aloha.home_position).mode == "hold"
    assert loop.stats.chunks_rejected == 1


def test_a_nan_chunk_is_rejected(aloha):
    loop = ControlLoop(aloha, "async")
    actions = np.tile(aloha.home_position, (50, 1))
    actions[20, 0] = np.nan
    assert "non-finite" in loop.add_chunk(chunk_for(aloha, actions, 0.0), now=0.0)[0]
    assert loop.tick(0.0, aloha.home_position).cause == "no_chunk"


def test_a_nan_command_holds_and_drops_the_chunks(aloha):
    # Finite chunks whose ensemble overflows to inf: the command is non-finite at tick time.
    loop = ControlLoop(aloha, "temporal_ensemble", ensemble_decay=0.0)
    huge = aloha.home_position.copy()
    huge[0] = 1.7e308
    for i in range(2):
        assert loop.add_chunk(steady_chunk(aloha, huge, 0.0, chunk_id=i), now=0.0) == []
    with np.errstate(over="ignore", invalid="ignore"):
        result = loop.tick(0.0, aloha.home_position)
    assert result.mode == "hold" and result.cause == "fault" and "left_arm/waist" in result.reason
    np.testing.assert_allclose(result.command, aloha.home_position)
    assert loop.scheduler.chunks == () and loop.stats.faults == 1
    assert loop.tick(0.02, aloha.home_position).mode == "hold"


def test_estop_holds_stops_the_base_at_once_and_drops_chunks(mobile_aloha):
    loop = ControlLoop(mobile_aloha, "async")
    cruise = mobile_aloha.home_position.copy()
    linear = index(mobile_aloha, "base/linear_x")
    cruise[linear] = 0.3
    loop.add_chunk(steady_chunk(mobile_aloha, cruise, 0.0), now=0.0)
    running = run_ticks(loop, 0, 20, mobile_aloha.home_position)
    assert running[-1].command[linear] == pytest.approx(0.3)  # reached through the 1 m/s^2 ramp
    stopped = loop.tick(20 * DT, mobile_aloha.home_position, estop=True)
    twist = next(c for c in stopped.commands if c.topic == "/mobile_base/cmd_vel")
    assert stopped.cause == "estop" and (twist.linear_x, twist.angular_z) == (0.0, 0.0)
    released = loop.tick(21 * DT, mobile_aloha.home_position, estop=False)
    assert released.mode == "hold"  # the old chunk does not resume
    loop.add_chunk(steady_chunk(mobile_aloha, cruise, 22 * DT), now=22 * DT)
    resumed = loop.tick(22 * DT, mobile_aloha.home_position)
    assert resumed.mode == "run" and resumed.command[linear] == pytest.approx(0.02)  # ramps again


def test_a_starved_base_decelerates_within_its_acceleration_limit(mobile_aloha):
    loop = ControlLoop(mobile_aloha, "async")
    cruise = mobile_aloha.home_position.copy()
    linear = index(mobile_aloha, "base/linear_x")
    cruise[linear] = 0.5
    loop.add_chunk(steady_chunk(mobile_aloha, cruise, 0.0), now=0.0)
    results = run_ticks(loop, 0, 60, mobile_aloha.home_position)
    speeds = [r.command[linear] for r in results[49:]]
    assert results[50].cause == "starved" and speeds[0] == pytest.approx(0.5)
    assert speeds[1:6] == pytest.approx([0.48, 0.46, 0.44, 0.42, 0.40])


def test_hold_modes_per_group_on_fr3():
    fr3 = embodiment("fr3_arm")
    loop = ControlLoop(fr3, "async")
    command = fr3.home_position.copy()
    command[7] = 0.2  # gripper (hold: last_command)
    loop.add_chunk(steady_chunk(fr3, command, 0.0), now=0.0)
    loop.tick(0.0, fr3.home_position)
    last_gripper = loop.last_command[7]
    assert last_gripper == pytest.approx(0.9)  # from 1.0 measured toward 0.2, one 0.1 step
    measured = fr3.home_position.copy()
    measured[0] += 0.05
    measured[7] = 0.5
    commands = {c.topic: c for c in loop.hold_commands(measured)}
    assert commands["/fr3_arm_controller/joint_trajectory"].values[0] == pytest.approx(measured[0])
    assert commands["/gripper_controller/commands"].values == pytest.approx((last_gripper * 0.04,))
    assert loop.tick(0.05, measured).cause == "shutdown"
    assert loop.add_chunk(steady_chunk(fr3, command, 0.05), now=0.05) == [
        "the control loop is shut down"
    ]


def test_without_any_reference_position_groups_are_not_commanded(aloha):
    loop = ControlLoop(aloha, "async")
    loop.add_chunk(steady_chunk(aloha, aloha.home_position, 0.0), now=0.0)
    result = loop.tick(0.0, None)
    assert result.cause == "no_reference" and result.commands == []
    assert "not commanded" in result.reason
    homing = ControlLoop(aloha, "async", home_fallback=True)
    result = homing.tick(0.0, None)
    assert len(result.commands) == 4
    np.testing.assert_allclose(result.command, aloha.home_position)


def test_unknown_measured_dimensions_are_ignored(aloha):
    loop = ControlLoop(aloha, "async")
    measured = aloha.home_position.copy()
    loop.tick(0.0, measured)
    partial = np.full(14, np.nan)
    partial[0] = 0.02
    result = loop.tick(0.02, partial)
    assert result.cause == "no_chunk"  # the hold latched at the first tick
    np.testing.assert_allclose(result.command, measured)
    with pytest.raises(ValueError, match="shape"):
        loop.tick(0.04, np.zeros(3))


def test_time_going_backwards_drops_the_chunks(aloha):
    loop = ControlLoop(aloha, "async")
    loop.add_chunk(steady_chunk(aloha, aloha.home_position, 5.0), now=5.0)
    assert loop.tick(5.0, aloha.home_position).mode == "run"
    result = loop.tick(0.1, aloha.home_position)
    assert result.cause == "clock" and loop.scheduler.chunks == ()


def test_synchronous_plays_actions_per_chunk_and_pauses_for_the_next(aloha):
    loop = ControlLoop(aloha, "synchronous", actions_per_chunk=25)
    loop.add_chunk(steady_chunk(aloha, aloha.home_position, 0.0), now=0.0)
    results = run_ticks(loop, 0, 30, aloha.home_position)
    assert [r.mode for r in results[:25]] == ["run"] * 25
    assert {r.cause for r in results[25:]} == {"starved"}


@pytest.mark.parametrize("strategy", ["synchronous", "temporal_ensemble", "async"])
def test_random_chunks_never_push_a_command_past_the_limits(strategy):
    emb = embodiment("mobile_aloha")
    loop = ControlLoop(emb, strategy, actions_per_chunk=20, discontinuity_steps=1e9)
    rng = np.random.default_rng(11)
    span = emb.position_max - emb.position_min
    previous = emb.home_position.copy()
    for k in range(300):
        now = k * emb.dt
        if k % 7 == 0:  # wild chunks, well beyond the limits
            actions = emb.position_min + span * rng.uniform(-1.0, 2.0, (50, emb.action_dim))
            loop.add_chunk(chunk_for(emb, actions, now - rng.uniform(0, 0.1)), now)
        result = loop.tick(now, emb.home_position)
        command = result.command
        assert np.all(command >= emb.position_min - 1e-9) and np.all(
            command <= emb.position_max + 1e-9
        )
        arms = ~emb.dims_of_kind["base_velocity"]
        assert np.all(np.abs(command[arms] - previous[arms]) <= emb.step_limits[arms] + 1e-9)
        base = emb.dims_of_kind["base_velocity"]
        assert np.all(
            np.abs(command[base] - previous[base]) <= emb.acceleration_limits[base] * emb.dt + 1e-9
        )
        previous = command


def test_diagnostics_count_runs_holds_and_clips(aloha):
    loop = ControlLoop(aloha, "async")
    goal = aloha.home_position.copy()
    goal[0] += 0.2
    loop.add_chunk(steady_chunk(aloha, goal, 0.0, horizon=5), now=0.0)
    run_ticks(loop, 0, 8, aloha.home_position)
    values = loop.diagnostics()
    assert values["run_ticks"] == 5 and values["hold_ticks"] == 3 and values["holds_starved"] == 3
    # 0 -> 0.2 rad at 0.05 rad per step: clipped on 3 ticks, the 4th lands exactly.
    assert values["clipped_step"] == 3 and values["chunks_accepted"] == 1


def test_chunks_round_trip_through_trajectory_points(aloha):
    chunk = steady_chunk(aloha, aloha.home_position, 12.5, chunk_id=4)
    names, positions, times, stamp = points_from_chunk(chunk)
    assert times[:3] == pytest.approx([0.0, 0.02, 0.04]) and stamp == 12.5
    back = chunk_from_points(names, positions, times, stamp, embodiment="aloha", chunk_id=4)
    np.testing.assert_array_equal(back.actions, chunk.actions)
    assert (back.dt, back.start_time, back.names) == (pytest.approx(0.02), 12.5, chunk.names)
    assert ControlLoop(aloha).add_chunk(back, now=12.5) == []


def test_irregular_trajectory_points_are_refused():
    names = ["a/x"]
    with pytest.raises(ChunkFormatError, match="evenly spaced"):
        chunk_from_points(names, [[0.0], [1.0], [2.0]], [0.0, 0.02, 0.05], 0.0)
    with pytest.raises(ChunkFormatError, match="increase strictly"):
        chunk_from_points(names, [[0.0], [1.0]], [0.02, 0.0], 0.0)
    with pytest.raises(ChunkFormatError, match="default_dt"):
        chunk_from_points(names, [[0.0]], [0.0], 0.0)
    assert chunk_from_points(
        names, [[0.0]], [0.1], 3.0, default_dt=0.02
    ).start_time == pytest.approx(3.1)
    with pytest.raises(ChunkFormatError, match="shape"):
        chunk_from_points(names, [[0.0, 1.0]], [0.0], 0.0, default_dt=0.02)


def test_interpolation_accepts_a_coarser_chunk_and_resamples_it(aloha):
    coarse = np.tile(aloha.home_position, (10, 1))
    coarse[:, 0] = 0.02 * np.arange(10)  # 10 Hz points, 0.02 rad apart
    chunk = ActionChunk(coarse, list(aloha.action_names), 0.1, 0.0, "aloha")
    assert "control period" in ControlLoop(aloha).add_chunk(chunk, now=0.0)[0]
    loop = ControlLoop(aloha, interpolate=True)
    assert loop.add_chunk(chunk, now=0.0) == []
    commands = [loop.tick(t, aloha.home_position).command[0] for t in (0.0, 0.02, 0.04, 0.1)]
    assert commands == pytest.approx([0.0, 0.004, 0.008, 0.02])


def test_stop_holds_until_the_next_chunk_and_statistics_report_it(aloha):
    loop = ControlLoop(aloha, "async")
    assert loop.statistics()["reason"] == "no tick yet"
    loop.add_chunk(steady_chunk(aloha, aloha.home_position, 0.0), now=0.0)
    assert loop.tick(0.0, aloha.home_position).mode == "run"
    loop.stop()
    stopped = loop.tick(0.02, aloha.home_position)
    assert (stopped.mode, stopped.cause) == ("hold", "stopped")
    stats = loop.statistics()
    assert (stats["mode"], stats["cause"], stats["holds_stopped"]) == ("hold", "stopped", 1)
    assert loop.add_chunk(steady_chunk(aloha, aloha.home_position, 0.04), now=0.04) == []
    assert loop.tick(0.04, aloha.home_position).mode == "run"
    assert loop.statistics()["reason"] == "chunk 0 step 0"


def test_release_commands_nothing_and_the_next_chunk_starts_where_the_robot_was_moved(aloha):
    """A simulation reset teleports the arms: a hold would drag them back to the old pose, and
    the next chunk would be refused as a jump from the stale command."""
    waist = index(aloha, "left_arm/waist")
    before, moved = aloha.home_position.copy(), aloha.home_position.copy()
    moved[waist] += 0.8  # rad: far more than ten step limits
    held, released = ControlLoop(aloha, "async"), ControlLoop(aloha, "async")
    for loop in (held, released):
        loop.add_chunk(steady_chunk(aloha, before, 0.0), now=0.0)
        assert loop.tick(0.0, before).mode == "run"
        loop.stop()
        loop.tick(0.02, before)
    released.release()
    released.stop()  # an empty chunk arriving late does not bring the hold back
    for now in (0.04, 0.06):
        quiet = released.tick(now, moved)
        assert (quiet.mode, quiet.cause, quiet.commands) == ("hold", "released", [])
        assert held.tick(now, moved).command[waist] < before[waist] + 0.1  # dragged back
    assert held.add_chunk(steady_chunk(aloha, moved, 0.08), now=0.08) != []
    assert released.add_chunk(steady_chunk(aloha, moved, 0.08), now=0.08) == []
    resumed = released.tick(0.08, moved)
    assert resumed.mode == "run"
    np.testing.assert_allclose(resumed.command, moved)
    assert released.statistics()["holds_released"] == 2


def test_an_estop_while_released_still_holds(aloha):
    loop = ControlLoop(aloha, "async")
    loop.tick(0.0, aloha.home_position)
    loop.release()
    estop = loop.tick(0.02, aloha.home_position, estop=True)
    assert estop.cause == "estop" and estop.commands
    np.testing.assert_allclose(estop.command, aloha.home_position)


def test_hold_that_began_blind_latches_joints_once_they_are_measured():
    emb = embodiment("aloha_sim")
    loop = ControlLoop(emb)
    first = loop.tick(0.0, None)
    assert first.mode == "hold" and not first.commands  # nothing known: nothing commanded
    measured = emb.home_position.copy()
    second = loop.tick(0.02, measured)
    assert {c.topic for c in second.commands} == {o.topic for o in emb.outputs}
    np.testing.assert_allclose(second.command, measured)


def test_estop_refuses_chunks_and_afterwards_knows_when_the_chunk_stopped(aloha):
    loop = ControlLoop(aloha, "async")
    assert loop.add_chunk(steady_chunk(aloha, aloha.home_position, 0.0), now=0.0) == []
    assert loop.tick(0.02, aloha.home_position).mode == "run"
    assert loop.tick(0.04, aloha.home_position, estop=True).cause == "estop"
    assert loop.add_chunk(steady_chunk(aloha, aloha.home_position, 0.05), now=0.05) == [
        "e-stop engaged: chunk dropped"
    ]
    assert loop.stats.chunks_accepted == 1
    released = loop.tick(0.06, aloha.home_position)
    assert released.cause == "starved"  # the dropped chunk counts as run out at the e-stop
    late = loop.tick(0.04 + aloha.chunk_timeout_s + 0.02, aloha.home_position)
    assert late.cause == "watchdog"

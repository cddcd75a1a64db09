"""The safety layer: limits per tick, what is reported, and whole-chunk checks."""

from __future__ import annotations

import numpy as np
import pytest
from control_testkit import chunk_for, embodiment, steady_chunk
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from qwen_vla_ros.control import SafetyLimiter, UnsafeCommandError
from qwen_vla_ros.types import ActionChunk


def index(emb, name: str) -> int:
    return emb.action_names.index(name)


def test_position_limits_and_step_limits(aloha):
    limiter = SafetyLimiter(aloha)
    home = aloha.home_position
    wanted = home.copy()
    wanted[index(aloha, "left_arm/shoulder")] = 5.0  # beyond max 1.25664
    wanted[index(aloha, "left_arm/elbow")] += 0.3  # six step limits in one tick
    wanted[index(aloha, "left_arm/waist")] += 0.01  # within limits: untouched
    safe, report = limiter.filter(wanted, home, aloha.dt)
    assert safe[index(aloha, "left_arm/shoulder")] == pytest.approx(home[1] + 0.05)
    assert safe[index(aloha, "left_arm/elbow")] == pytest.approx(home[2] + 0.05)
    assert safe[index(aloha, "left_arm/waist")] == pytest.approx(0.01)
    assert report.clipped("position") == ["left_arm/shoulder"]
    assert report.clipped("step") == ["left_arm/shoulder", "left_arm/elbow"]
    assert report.counts() == {"position": 1, "step": 2, "velocity": 0, "acceleration": 0}
    assert "left_arm/elbow" in report.describe()
    assert limiter.totals["step"][index(aloha, "left_arm/elbow")] == 1


def test_velocity_limit_binds_on_a_short_tick(aloha):
    limiter = SafetyLimiter(aloha)
    home = aloha.home_position
    wanted = home + 0.2
    safe, report = limiter.filter(wanted, home, 0.01)  # 3 rad/s * 0.01 s = 0.03 < 0.05
    waist = index(aloha, "left_arm/waist")
    assert safe[waist] == pytest.approx(0.03)
    assert "left_arm/waist" in report.clipped("velocity")
    assert "left_arm/waist" not in report.clipped("step")


def test_base_velocity_speed_and_acceleration(mobile_aloha):
    limiter = SafetyLimiter(mobile_aloha)
    linear, angular = index(mobile_aloha, "base/linear_x"), index(mobile_aloha, "base/angular_z")
    previous = mobile_aloha.home_position.copy()
    previous[linear] = 0.45
    wanted = previous.copy()
    wanted[linear], wanted[angular] = 2.0, -0.5
    safe, report = limiter.filter(wanted, previous, 0.02)
    assert safe[linear] == pytest.approx(0.47)  # speed 0.5 allowed, but 1 m/s^2 * 0.02 s per tick
    assert safe[angular] == pytest.approx(-0.04)  # 2 rad/s^2 * 0.02 s
    assert set(report.clipped("acceleration")) == {"base/linear_x", "base/angular_z"}
    assert report.clipped("velocity") == ["base/linear_x"]
    assert report.clipped("step") == []


def test_waypoints_are_only_clamped_to_their_reach(mobile_base):
    limiter = SafetyLimiter(mobile_base)
    safe, report = limiter.filter(np.array([9.0, 0.5, 0.1]), np.zeros(3), 0.1)
    assert safe.tolist() == [4.0, 0.5, 0.1]
    assert report.clipped("position") == ["base/x"]


def test_non_finite_commands_raise_with_the_names(aloha):
    wanted = aloha.home_position.copy()
    wanted[index(aloha, "right_gripper/gripper")] = np.nan
    wanted[index(aloha, "left_arm/elbow")] = np.inf
    with pytest.raises(UnsafeCommandError) as error:
        SafetyLimiter(aloha).filter(wanted, aloha.home_position, aloha.dt)
    assert error.value.names == ["left_arm/elbow", "right_gripper/gripper"]


def test_bad_shapes_and_previous_are_rejected(aloha):
    limiter = SafetyLimiter(aloha)
    with pytest.raises(ValueError, match="shape"):
        limiter.filter(np.zeros(3), aloha.home_position, aloha.dt)
    with pytest.raises(ValueError, match="previous command is not finite"):
        limiter.filter(aloha.home_position, np.full(14, np.nan), aloha.dt)


def test_twist_limits_for_waypoint_bases(mobile_base):
    limiter = SafetyLimiter(mobile_base)
    twist, too_fast, too_sudden = limiter.limit_twist("base", (3.0, 0.05), (0.45, 0.0), 0.1)
    assert twist.tolist() == pytest.approx([0.5, 0.05])  # 0.5 m/s limit; 1 m/s^2 allows +0.1
    assert too_fast.tolist() == [True, False] and too_sudden.tolist() == [False, False]
    twist, _, too_sudden = limiter.limit_twist("base", (0.0, -1.0), (0.5, 0.0), 0.1)
    assert twist.tolist() == pytest.approx([0.4, -0.2]) and too_sudden.all()


# -- the property: nothing outside the limits ever leaves filter ------------------------------
def _assert_within_limits(emb, limiter, safe, previous, dt):
    tol = 1e-9
    assert np.all(safe >= limiter.lower - tol) and np.all(safe <= limiter.upper + tol)
    start = np.clip(previous, limiter.lower, limiter.upper)
    change = np.abs(safe - start)
    kinds = emb.dims_of_kind
    stepped = kinds.get("joint_position", np.zeros(emb.action_dim, bool)) | kinds.get(
        "gripper", np.zeros(emb.action_dim, bool)
    )
    allowed = np.minimum(emb.step_limits, emb.velocity_limits * dt)
    assert np.all(change[stepped] <= allowed[stepped] + tol)
    if "base_velocity" in kinds:
        base = kinds["base_velocity"]
        assert np.all(np.abs(safe[base]) <= emb.velocity_limits[base] + tol)
        assert np.all(change[base] <= emb.acceleration_limits[base] * dt + tol)


_values = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@pytest.mark.parametrize("name", ["aloha", "mobile_aloha", "mobile_base", "fr3_arm"])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_filter_never_lets_a_command_outside_the_limits(name, data):
    emb = embodiment(name)
    limiter = SafetyLimiter(emb)
    command = data.draw(arrays(np.float64, emb.action_dim, elements=_values))
    previous = data.draw(arrays(np.float64, emb.action_dim, elements=_values))
    dt = data.draw(st.floats(min_value=0.0, max_value=0.2))
    safe, _ = limiter.filter(command, previous, dt)
    _assert_within_limits(emb, limiter, safe, previous, dt)


@pytest.mark.parametrize("name", ["aloha", "mobile_aloha"])
def test_a_stream_of_adversarial_commands_stays_within_limits_tick_after_tick(name):
    emb = embodiment(name)
    limiter = SafetyLimiter(emb)
    rng = np.random.default_rng(7)
    previous = emb.home_position.copy()
    for _ in range(500):
        wild = rng.choice([1e-3, 1.0, 1e3, 1e12]) * rng.standard_normal(emb.action_dim)
        dt = float(rng.uniform(0.0, 0.05))
        safe, _ = limiter.filter(wild, previous, dt)
        _assert_within_limits(emb, limiter, safe, previous, dt)
        previous = safe


# -- whole chunks ----------------------------------------------------------------------------------
def test_a_good_chunk_has_no_problems(aloha):
    chunk = steady_chunk(aloha, aloha.home_position, 0.0)
    assert SafetyLimiter(aloha).check_chunk(chunk, aloha.home_position, now=0.05) == []


def test_wrong_names_length_and_embodiment_are_reported(aloha):
    limiter = SafetyLimiter(aloha)
    names = list(aloha.action_names)
    short = ActionChunk(np.zeros((50, 13)), names[:13], aloha.dt, 0.0, "aloha")
    problems = limiter.check_chunk(short)
    assert any("13 action names" in p for p in problems)
    assert any("missing ['right_gripper/gripper']" in p for p in problems)
    assert any("shape (50, 13)" in p for p in problems)
    swapped = names[1:2] + names[:1] + names[2:]
    problems = limiter.check_chunk(ActionChunk(np.zeros((50, 14)), swapped, aloha.dt, 0.0))
    assert problems == ["action names are in a different order than the embodiment's"]
    problems = limiter.check_chunk(
        ActionChunk(np.zeros((50, 14)), names, aloha.dt, 0.0, "mobile_aloha")
    )
    assert problems == ["chunk is for embodiment 'mobile_aloha', this robot is 'aloha'"]


def test_nan_and_timing_problems_are_reported(aloha):
    limiter = SafetyLimiter(aloha)
    actions = np.tile(aloha.home_position, (50, 1))
    actions[7, 3] = np.nan
    problems = limiter.check_chunk(chunk_for(aloha, actions, 0.0))
    assert problems == ["1 non-finite value(s), first at step 7 (left_arm/forearm_roll)"]
    slow = ActionChunk(np.zeros((50, 14)), list(aloha.action_names), 0.1, float("nan"))
    problems = limiter.check_chunk(slow)
    assert any("differs from the control period" in p for p in problems)
    assert any("start_time nan" in p for p in problems)


def test_discontinuity_from_the_current_command_is_reported(aloha):
    limiter = SafetyLimiter(aloha, discontinuity_steps=4)
    actions = np.tile(aloha.home_position, (50, 1))
    elbow = index(aloha, "left_arm/elbow")
    actions[3:, elbow] += 0.3  # 6 step limits away from step 3 on
    chunk = chunk_for(aloha, actions, 0.0)
    assert limiter.check_chunk(chunk, aloha.home_position, now=0.02) == []  # step 1 applies: close
    problems = limiter.check_chunk(chunk, aloha.home_position, now=0.07)  # step 3 applies
    assert len(problems) == 1 and "discontinuity" in problems[0] and "left_arm/elbow" in problems[0]
    unknown = np.full(14, np.nan)
    assert limiter.check_chunk(chunk, unknown, now=0.07) == []  # nothing to compare with

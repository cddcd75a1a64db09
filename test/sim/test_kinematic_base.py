"""KinematicBase: unicycle integration with acceleration and speed limits on simulated time."""

from __future__ import annotations

import math

import pytest

from qwen_vla_ros.embodiment import load_embodiment
from qwen_vla_ros.sim import BaseLimits, KinematicBase, SimInputError

FAST = BaseLimits(max_linear=2.0, max_angular=2.0, max_linear_accel=1e6, max_angular_accel=1e6)


def drive(base: KinematicBase, linear: float, angular: float, seconds: float, dt: float) -> None:
    for _ in range(round(seconds / dt)):
        base.set_cmd_vel(linear, angular)
        base.step(dt)


def test_constant_twist_follows_the_circle():
    base = KinematicBase(FAST)
    v, w, t = 0.5, 0.5, 2.0  # radius 1 m, quarter of the way to a full turn
    drive(base, v, w, t, dt=0.02)
    x, y, yaw = base.pose
    radius = v / w
    assert x == pytest.approx(radius * math.sin(w * t), abs=1e-3)
    assert y == pytest.approx(radius * (1 - math.cos(w * t)), abs=1e-3)
    assert yaw == pytest.approx(w * t, abs=1e-3)
    assert base.twist == pytest.approx((v, w))


def test_acceleration_limit_shapes_a_straight_run():
    base = KinematicBase(BaseLimits(max_linear=0.5, max_linear_accel=1.0), pose=(1.0, 2.0, math.pi / 2))
    drive(base, 0.5, 0.0, seconds=0.25, dt=0.05)
    assert base.twist[0] == pytest.approx(0.25)  # halfway up the 0.5 s ramp
    drive(base, 0.5, 0.0, seconds=0.75, dt=0.05)
    x, y, yaw = base.pose
    # 0.5 s ramp (0.125 m) then 0.5 s at 0.5 m/s (0.25 m), heading +y.
    assert (x, y, yaw) == pytest.approx((1.0, 2.0 + 0.375, math.pi / 2), abs=1e-6)


def test_commands_saturate_at_the_speed_limits():
    base = KinematicBase(BaseLimits(max_linear=0.5, max_angular=1.0))
    base.set_cmd_vel(3.0, -4.0)
    assert base.commanded == (0.5, -1.0)
    drive(base, 3.0, -4.0, seconds=2.0, dt=0.1)
    assert base.twist == pytest.approx((0.5, -1.0))


def test_base_stops_when_commands_stop():
    base = KinematicBase(FAST, command_timeout_s=0.3)
    drive(base, 1.0, 0.0, seconds=1.0, dt=0.1)  # the last command comes at t = 0.9 s
    x_moving = base.pose[0]
    for _ in range(10):
        base.step(0.1)
    assert base.twist == (0.0, 0.0)
    # It keeps going until the command is 0.3 s old (t = 1.2 s), then stops at once.
    assert base.pose[0] == pytest.approx(x_moving + 0.2, abs=1e-6)


def test_yaw_wraps_and_reset_restores_rest():
    base = KinematicBase(FAST)
    drive(base, 0.0, 2.0, seconds=2.0, dt=0.01)  # 4 rad of turning
    assert base.pose[2] == pytest.approx(4.0 - 2 * math.pi, abs=1e-5)
    time_before = base.sim_time
    base.reset((0.5, -0.5, 0.1))
    assert base.pose == (0.5, -0.5, 0.1) and base.twist == (0.0, 0.0)
    assert base.sim_time == time_before


def test_bad_input_is_rejected():
    base = KinematicBase()
    with pytest.raises(SimInputError, match="finite"):
        base.set_cmd_vel(float("nan"), 0.0)
    with pytest.raises(SimInputError, match="positive"):
        base.step(-0.1)
    with pytest.raises(SimInputError, match="max_linear"):
        BaseLimits(max_linear=0.0)


@pytest.mark.parametrize("name", ["mobile_aloha", "mobile_base"])
def test_limits_come_from_the_embodiment(name):
    embodiment = load_embodiment(name)
    limits = BaseLimits.from_embodiment(embodiment)
    group = next(g for g in embodiment.action_groups if g.kind.startswith("base_"))
    assert limits.max_linear == group.joints[0].max_velocity
    assert limits.max_angular == group.joints[-1].max_velocity
    with pytest.raises(SimInputError, match="no base action group"):
        BaseLimits.from_embodiment(load_embodiment("aloha"))

"""Base waypoint tracking: pose bookkeeping and convergence of the tracked twist."""

from __future__ import annotations

import math

import numpy as np
import pytest
from control_testkit import chunk_for

from qwen_vla_ros.control import (
    ControlLoop,
    PoseHistory,
    SafetyLimiter,
    WaypointTracker,
    relative_pose,
)


def unicycle_step(pose: np.ndarray, twist, dt: float) -> np.ndarray:
    """The simulated base: exact integration of a constant twist (independent of PoseHistory)."""
    x, y, yaw = pose
    v, w = twist
    steps = 20  # fine Euler sub-steps, accurate to well under a millimetre here
    for _ in range(steps):
        x += v * dt / steps * math.cos(yaw)
        y += v * dt / steps * math.sin(yaw)
        yaw += w * dt / steps
    return np.array([x, y, yaw])


def straight_chunk_waypoints(goal: np.ndarray, steps: int) -> np.ndarray:
    return np.linspace(np.zeros(3), goal, steps + 1)[1:]


# -- poses ------------------------------------------------------------------------------------
def test_dead_reckoning_follows_a_quarter_circle():
    history = PoseHistory()
    history.advance(0.0, (0.0, 0.0))
    history.advance(1.0, (1.0, math.pi / 2))  # radius 2/pi, a quarter turn in one second
    assert history.pose_at(1.0) == pytest.approx([2 / math.pi, 2 / math.pi, math.pi / 2])
    assert history.pose_at(0.5)[0] == pytest.approx(1 / math.pi)  # linear between samples


def test_relative_pose_is_in_the_frame_of_the_earlier_pose():
    origin = np.array([1.0, 1.0, math.pi / 2])  # facing +y
    pose = np.array([1.0, 2.0, math.pi])
    assert relative_pose(origin, pose) == pytest.approx(
        [1.0, 0.0, math.pi / 2]
    )  # 1 m straight ahead
    history = PoseHistory()
    history.record(0.0, origin)
    history.record(1.0, pose)
    assert history.relative(0.0, 1.0) == pytest.approx([1.0, 0.0, math.pi / 2])


def test_recorded_yaw_is_kept_continuous_across_the_wrap():
    history = PoseHistory()
    history.record(0.0, np.array([0.0, 0.0, 3.1]))
    history.record(0.1, np.array([0.0, 0.0, -3.1]))  # turned 0.083 rad, not -6.2
    assert history.pose_at(0.1)[2] == pytest.approx(2 * math.pi - 3.1)
    assert history.relative(0.0, 0.1)[2] == pytest.approx(2 * math.pi - 6.2)


def test_non_finite_poses_are_refused():
    with pytest.raises(ValueError, match="not finite"):
        PoseHistory().record(0.0, np.array([np.nan, 0.0, 0.0]))


# -- the tracker -----------------------------------------------------------------------------------
def track(mobile_base, waypoints: np.ndarray, seconds: float) -> tuple[np.ndarray, float, float]:
    """Run tracker + safety on a simulated base; return the final pose and peak speeds."""
    tracker = WaypointTracker(max_linear=0.5, max_angular=1.0, lookahead_s=0.3)
    limiter = SafetyLimiter(mobile_base)
    dt, pose, twist = mobile_base.dt, np.zeros(3), np.zeros(2)
    peak_v = peak_w = 0.0
    for k in range(int(round(seconds / dt))):
        wanted = tracker.command(k * dt, waypoints, 0.0, dt, pose)
        new, _, _ = limiter.limit_twist("base", wanted, twist, dt)
        assert (
            abs(new[0] - twist[0]) <= 1.0 * dt + 1e-9 and abs(new[1] - twist[1]) <= 2.0 * dt + 1e-9
        )
        twist = new
        peak_v, peak_w = max(peak_v, abs(twist[0])), max(peak_w, abs(twist[1]))
        pose = unicycle_step(pose, twist, dt)
    return pose, peak_v, peak_w


def test_tracking_converges_to_the_last_waypoint(mobile_base):
    goal = np.array([0.8, 0.3, 0.4])
    pose, peak_v, peak_w = track(mobile_base, straight_chunk_waypoints(goal, 20), seconds=6.0)
    assert np.hypot(*(pose[:2] - goal[:2])) < 0.02
    assert abs(pose[2] - goal[2]) < 0.02
    assert peak_v <= 0.5 + 1e-9 and peak_w <= 1.0 + 1e-9


def test_a_target_behind_is_reached_backwards(mobile_base):
    goal = np.array([-0.4, 0.0, 0.0])
    pose, _, _ = track(mobile_base, straight_chunk_waypoints(goal, 20), seconds=5.0)
    assert np.hypot(*(pose[:2] - goal[:2])) < 0.03 and abs(pose[2]) < 0.05


def test_a_target_beside_the_base_makes_it_turn_not_stall():
    tracker = WaypointTracker(max_linear=0.5, max_angular=1.0)
    waypoints = np.array([[0.0, 0.5, 0.0]] * 5)
    linear, angular = tracker.command(0.0, waypoints, 0.0, 0.1, np.zeros(3))
    assert abs(linear) < 1e-9 and angular == pytest.approx(1.0)  # at the turn-rate limit, leftward


def test_speed_scaling_keeps_the_curvature():
    tracker = WaypointTracker(max_linear=0.1, max_angular=10.0, lookahead_s=0.5)
    waypoints = np.array([[1.0, 0.2, 0.0]] * 3)
    linear, angular = tracker.command(0.0, waypoints, 0.0, 0.1, np.zeros(3))
    unscaled = WaypointTracker(max_linear=100.0, max_angular=100.0, lookahead_s=0.5)
    linear_free, angular_free = unscaled.command(0.0, waypoints, 0.0, 0.1, np.zeros(3))
    assert linear == pytest.approx(0.1)
    assert angular / linear == pytest.approx(angular_free / linear_free)


# -- through the control loop --------------------------------------------------------------------------
def test_the_loop_tracks_a_waypoint_chunk_with_odometry(mobile_base):
    loop = ControlLoop(mobile_base, "async")
    goal = np.array([0.6, -0.2, -0.3])
    waypoints = straight_chunk_waypoints(goal, 20)  # 2 s of trajectory at 10 Hz
    # The robot stood at odom (1, 1, pi/2) when the observation was taken: the chunk's frame.
    start_pose = np.array([1.0, 1.0, math.pi / 2])
    assert loop.add_chunk(chunk_for(mobile_base, waypoints, start=0.0), now=0.05) == []
    pose, distances = start_pose.copy(), []
    for k in range(1, 20):
        now = k * mobile_base.dt
        result = loop.tick(now, base_pose=pose)
        assert result.mode == "run", result.reason
        (twist,) = result.commands
        assert abs(twist.linear_x) <= 0.5 and abs(twist.angular_z) <= 1.0
        pose = unicycle_step(pose, (twist.linear_x, twist.angular_z), mobile_base.dt)
        distances.append(np.hypot(*(relative_pose(start_pose, pose)[:2] - goal[:2])))
    assert distances[-1] < 0.5 * distances[0]
    final = relative_pose(start_pose, pose)
    assert final[0] > 0.3 and final[1] < 0.0  # went forward and to the right in the chunk frame

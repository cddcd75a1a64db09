"""Tracking base waypoint chunks: robot-frame poses in, a (linear_x, angular_z) twist out (pure core).

Frames
    A ``base_waypoints`` chunk holds poses ``(x m, y m, yaw rad)`` in the robot frame at the
    chunk's ``start_time`` (its observation time). The base's pose in that frame at ``now`` is
    the relative pose between the odometry poses at ``start_time`` and at ``now``, read from a
    short ``PoseHistory``: odometry poses when the node passes them, otherwise dead reckoning of
    the twists commanded so far (open loop: drifts, so pass odometry on a real base).

Algorithm: time-indexed pure pursuit, ``T = lookahead_s``
    1. Target = the chunk's trajectory at ``now + T`` (linear between waypoints, held at the last).
    2. Express it in the base's current frame: ``(ex, ey, eyaw)``.
    3. ``v = ex / T``: the forward speed that reaches the target's along-track position when the
       trajectory does; on a trajectory moving at speed u the error settles at u*T, so v = u.
    4. ``alpha = atan(ey / ex)``, the bearing of the target from the driving direction (forward,
       or backward when ex < 0); ``omega = 2 * alpha / T``. For small alpha this is pure
       pursuit's ``v * 2*ey / (ex^2 + ey^2)``; for a target beside the base (which cannot move
       sideways) it turns toward it instead of stalling.
    5. Within ``arrive_radius`` of the target, omega blends linearly into ``eyaw / T`` (reached at
       half the radius) so the base ends at the commanded heading.
    6. ``(v, omega)`` is scaled by one factor into the speed limits, which keeps the curvature
       (the path) and slows down along it. Acceleration limits are the safety layer's
       (``SafetyLimiter.limit_twist``).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import numpy as np


def wrap_angle(angle: float) -> float:
    """Angle in rad wrapped to [-pi, pi)."""
    return (angle + math.pi) % (2.0 * math.pi) - math.pi


class PoseHistory:
    """Timestamped base poses ``(x m, y m, yaw rad)`` in an odometry frame, yaw kept continuous."""

    def __init__(self, keep_s: float = 10.0):
        """``keep_s``: how far back poses are kept, s (longer than the oldest chunk in use)."""
        self.keep_s = keep_s
        self._times: list[float] = []
        self._poses: list[np.ndarray] = []

    def clear(self) -> None:
        self._times.clear()
        self._poses.clear()

    def record(self, t: float, pose: np.ndarray) -> None:
        """Add an odometry pose at time ``t`` (s); yaw is unwrapped against the previous pose."""
        pose = np.asarray(pose, dtype=np.float64).reshape(3)
        if not np.isfinite(pose).all():
            raise ValueError(f"base pose {pose.tolist()} is not finite")
        if self._times and t < self._times[-1]:
            self.clear()  # time went backwards (simulation reset): a new odometry session
        if self._poses:
            previous_yaw = self._poses[-1][2]
            pose = pose.copy()
            pose[2] = previous_yaw + wrap_angle(pose[2] - previous_yaw)
        if self._times and t == self._times[-1]:
            self._poses[-1] = pose
            return
        self._times.append(t)
        self._poses.append(pose)
        self._forget(t)

    def advance(self, t: float, twist: tuple[float, float]) -> None:
        """Dead reckoning: move the latest pose to time ``t`` (s) under a constant twist (m/s, rad/s)."""
        if not self._times:
            self.record(t, np.zeros(3))
            return
        t0, (x, y, yaw) = self._times[-1], self._poses[-1]
        dt = t - t0
        if dt <= 0:
            return
        v, w = float(twist[0]), float(twist[1])
        if abs(w) < 1e-9:
            x, y = x + v * dt * math.cos(yaw), y + v * dt * math.sin(yaw)
        else:  # exact arc of a unicycle
            x += v / w * (math.sin(yaw + w * dt) - math.sin(yaw))
            y -= v / w * (math.cos(yaw + w * dt) - math.cos(yaw))
        self.record(t, np.array([x, y, yaw + w * dt]))

    def _forget(self, now: float) -> None:
        cut = min(bisect.bisect_left(self._times, now - self.keep_s), len(self._times) - 2)
        if cut >= 64:  # trim in batches: deleting from a list's front is O(n)
            del self._times[:cut]
            del self._poses[:cut]

    def pose_at(self, t: float) -> np.ndarray:
        """Pose at ``t`` (s): linear between samples, the first/last sample outside them."""
        if not self._times:
            return np.zeros(3)
        i = bisect.bisect_right(self._times, t)
        if i == 0:
            return self._poses[0].copy()
        if i == len(self._times):
            return self._poses[-1].copy()
        t0, t1 = self._times[i - 1], self._times[i]
        fraction = (t - t0) / (t1 - t0)
        return self._poses[i - 1] + fraction * (self._poses[i] - self._poses[i - 1])

    def relative(self, t_from: float, t_to: float) -> np.ndarray:
        """Pose at ``t_to`` expressed in the robot frame at ``t_from``: (x m, y m, yaw rad)."""
        origin, pose = self.pose_at(t_from), self.pose_at(t_to)
        return relative_pose(origin, pose)


def relative_pose(origin: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """``pose`` expressed in the frame of ``origin`` (both (x, y, yaw) in one frame)."""
    dx, dy = pose[0] - origin[0], pose[1] - origin[1]
    c, s = math.cos(origin[2]), math.sin(origin[2])
    return np.array([c * dx + s * dy, -s * dx + c * dy, pose[2] - origin[2]])


@dataclass(frozen=True)
class WaypointTracker:
    """Time-indexed pure pursuit of a waypoint chunk (see the module docstring).

    Attributes:
        max_linear: forward speed limit, m/s.
        max_angular: turn rate limit, rad/s.
        lookahead_s: how far ahead on the trajectory the target is taken, s.
        arrive_radius: below this distance to the target, steer to its heading, m.
    """

    max_linear: float
    max_angular: float
    lookahead_s: float = 0.3
    arrive_radius: float = 0.05

    def __post_init__(self) -> None:
        for name in ("max_linear", "max_angular", "lookahead_s", "arrive_radius"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number, got {value}")

    @staticmethod
    def target_at(waypoints: np.ndarray, grid_start: float, dt: float, t: float) -> np.ndarray:
        """Trajectory pose at ``t`` (s): waypoint k applies at ``grid_start + k*dt``."""
        position = min(max((t - grid_start) / dt, 0.0), len(waypoints) - 1.0)
        index = min(int(position), len(waypoints) - 1)
        if index >= len(waypoints) - 1:
            return np.array(waypoints[-1], dtype=np.float64)
        fraction = position - index
        return waypoints[index] + fraction * (waypoints[index + 1] - waypoints[index])

    def command(
        self,
        now: float,
        waypoints: np.ndarray,
        grid_start: float,
        dt: float,
        robot_pose: np.ndarray,
    ) -> tuple[float, float]:
        """Twist (linear_x m/s, angular_z rad/s) that follows ``waypoints``.

        Args:
            now: current time, s.
            waypoints: (steps, 3) poses (x, y, yaw) in the chunk's frame.
            grid_start: time of waypoint 0, s; dt: waypoint spacing, s.
            robot_pose: the base's pose (x, y, yaw) in the chunk's frame now.
        """
        target = self.target_at(
            np.asarray(waypoints, dtype=np.float64), grid_start, dt, now + self.lookahead_s
        )
        ex, ey, eyaw = relative_pose(np.asarray(robot_pose, dtype=np.float64), target)
        eyaw = wrap_angle(eyaw)
        period = self.lookahead_s
        linear = ex / period
        bearing = math.atan2(ey if ex >= 0 else -ey, abs(ex))  # from the driving direction
        # 0 within half the arrive radius (pure heading alignment), 1 from the radius on: a
        # bearing to a target a few mm aside would otherwise fight the heading alignment.
        in_position = min(1.0, max(0.0, 2.0 * math.hypot(ex, ey) / self.arrive_radius - 1.0))
        angular = in_position * 2.0 * bearing / period + (1.0 - in_position) * eyaw / period
        scale = min(
            1.0,
            self.max_linear / max(abs(linear), 1e-12),
            self.max_angular / max(abs(angular), 1e-12),
        )
        return linear * scale, angular * scale

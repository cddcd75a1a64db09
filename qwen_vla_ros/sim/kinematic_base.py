"""A kinematic differential-drive (unicycle) base: cmd_vel in, pose and odometry out.

Stands in for the Interbotix Slate base of Mobile ALOHA and for the
``mobile_base`` embodiment. The base accelerates toward the commanded twist
within acceleration limits, saturates at its speed limits (as a real base
does), and stops if no command arrives for ``command_timeout_s`` of simulated
time (as the Slate's watchdog does). Poses integrate exactly along arcs.

Frames: pose (x, y in m, yaw in rad, counter-clockwise positive) in the
``odom`` frame; twist (linear m/s forward, angular rad/s) in the base frame,
as nav_msgs/Odometry reports it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import SimInputError

_MAX_SUBSTEP_S = 0.005  # short arcs: turning while accelerating integrates to ~1e-6 m


@dataclass(frozen=True)
class BaseLimits:
    """Speed (m/s, rad/s) and acceleration (m/s^2, rad/s^2) limits of the base."""

    max_linear: float = 0.5
    max_angular: float = 1.0
    max_linear_accel: float = 1.0
    max_angular_accel: float = 2.0

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not (math.isfinite(value) and value > 0):
                raise SimInputError(f"BaseLimits.{name} must be a positive number, got {value}")

    @classmethod
    def from_embodiment(cls, embodiment) -> BaseLimits:
        """From the base group of an embodiment (``base_velocity`` or ``base_waypoints``)."""
        for group in embodiment.action_groups:
            joints = {j.name: j for j in group.joints}
            if group.kind == "base_velocity":
                linear, angular = joints["linear_x"], joints["angular_z"]
            elif group.kind == "base_waypoints":
                linear, angular = joints["x"], joints["yaw"]
            else:
                continue
            default = cls()
            return cls(
                max_linear=linear.max_velocity,
                max_angular=angular.max_velocity,
                max_linear_accel=linear.max_acceleration or default.max_linear_accel,
                max_angular_accel=angular.max_acceleration or default.max_angular_accel,
            )
        raise SimInputError(f"embodiment {embodiment.name!r} has no base action group")


def _ramp(value: float, target: float, max_accel: float, h: float) -> tuple[float, float]:
    """Velocity after ``h`` s of accelerating toward ``target``, and its mean over those h s.

    The velocity changes at ``max_accel`` until it reaches the target, then
    holds; the mean is exact for that profile (it gives the distance covered).
    """
    change = target - value
    ramp_time = abs(change) / max_accel
    if ramp_time >= h:
        new = value + math.copysign(max_accel * h, change)
        return new, 0.5 * (value + new)
    mean = (0.5 * (value + target) * ramp_time + target * (h - ramp_time)) / h
    return target, mean


def _wrap_angle(angle: float) -> float:
    """Angle in [-pi, pi), rad; angles already in range come back unchanged (bit-exact)."""
    if -math.pi <= angle < math.pi:
        return angle
    return (angle + math.pi) % (2.0 * math.pi) - math.pi


class KinematicBase:
    """Unicycle integrating velocity commands on simulated time."""

    def __init__(
        self,
        limits: BaseLimits | None = None,
        pose: tuple[float, float, float] = (0.0, 0.0, 0.0),
        command_timeout_s: float | None = 0.5,
    ) -> None:
        if command_timeout_s is not None and not command_timeout_s > 0:
            raise SimInputError(f"command_timeout_s must be positive or None, got {command_timeout_s}")
        self.limits = limits or BaseLimits()
        self.command_timeout_s = command_timeout_s
        self._sim_time = 0.0
        self.reset(pose)

    def reset(self, pose: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> None:
        """Place the base at rest at ``pose`` (x m, y m, yaw rad). Time keeps running."""
        x, y, yaw = (float(v) for v in pose)
        if not all(math.isfinite(v) for v in (x, y, yaw)):
            raise SimInputError(f"base pose must be finite, got {pose}")
        self._x, self._y, self._yaw = x, y, _wrap_angle(yaw)
        self._linear = self._angular = 0.0
        self._cmd_linear = self._cmd_angular = 0.0
        self._cmd_time: float | None = None

    def set_cmd_vel(self, linear: float, angular: float) -> None:
        """Command a twist: forward m/s, turn rad/s. Saturates at the speed limits."""
        linear, angular = float(linear), float(angular)
        if not (math.isfinite(linear) and math.isfinite(angular)):
            raise SimInputError(f"cmd_vel must be finite, got linear={linear}, angular={angular}")
        lim = self.limits
        self._cmd_linear = max(-lim.max_linear, min(lim.max_linear, linear))
        self._cmd_angular = max(-lim.max_angular, min(lim.max_angular, angular))
        self._cmd_time = self._sim_time

    @property
    def commanded(self) -> tuple[float, float]:
        """The (saturated) twist being tracked now: m/s, rad/s; zero after a timeout."""
        if self._command_expired():
            return 0.0, 0.0
        return self._cmd_linear, self._cmd_angular

    def step(self, dt: float) -> None:
        """Advance ``dt`` seconds of simulated time."""
        dt = float(dt)
        if not math.isfinite(dt) or dt <= 0.0:
            raise SimInputError(f"step dt must be a positive number of seconds, got {dt}")
        substeps = max(1, math.ceil(dt / _MAX_SUBSTEP_S - 1e-9))
        h = dt / substeps
        for _ in range(substeps):
            self._substep(h)

    def _command_expired(self) -> bool:
        if self._cmd_time is None:
            return True
        timeout = self.command_timeout_s
        # A command is followed for exactly command_timeout_s (1 ns slack for float sums).
        return timeout is not None and self._sim_time - self._cmd_time >= timeout - 1e-9

    def _substep(self, h: float) -> None:
        target_linear, target_angular = self.commanded
        lim = self.limits
        new_linear, v = _ramp(self._linear, target_linear, lim.max_linear_accel, h)
        new_angular, w = _ramp(self._angular, target_angular, lim.max_angular_accel, h)
        self._advance_pose(v, w, h)
        self._linear, self._angular = new_linear, new_angular
        self._sim_time += h

    def _advance_pose(self, v: float, w: float, h: float) -> None:
        """Move along the arc of constant (v, w) for h seconds."""
        yaw0 = self._yaw
        if abs(w) < 1e-9:
            self._x += v * h * math.cos(yaw0)
            self._y += v * h * math.sin(yaw0)
        else:
            yaw1 = yaw0 + w * h
            self._x += v / w * (math.sin(yaw1) - math.sin(yaw0))
            self._y -= v / w * (math.cos(yaw1) - math.cos(yaw0))
        self._yaw = _wrap_angle(yaw0 + w * h)

    @property
    def pose(self) -> tuple[float, float, float]:
        """(x m, y m, yaw rad) in the odom frame."""
        return self._x, self._y, self._yaw

    @property
    def twist(self) -> tuple[float, float]:
        """Actual (linear m/s, angular rad/s) in the base frame, for odometry."""
        return self._linear, self._angular

    @property
    def sim_time(self) -> float:
        """Simulated time since construction, s."""
        return self._sim_time

    def odometry(self) -> dict[str, float]:
        """Fields of nav_msgs/Odometry: position, yaw quaternion (z, w) and body twist."""
        return {
            "x": self._x, "y": self._y, "yaw": self._yaw,
            "qz": math.sin(self._yaw / 2.0), "qw": math.cos(self._yaw / 2.0),
            "linear_x": self._linear, "angular_z": self._angular,
        }

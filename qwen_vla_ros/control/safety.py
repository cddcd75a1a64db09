"""Safety layer: every command vector passes here before it reaches a controller (pure core).

``SafetyLimiter.filter(command, previous, dt)`` returns a command that respects, per dimension
(rig units, see ``Embodiment``):

* joint_position, gripper: ``[min, max]``, then a change from ``previous`` of at most
  ``min(step_limit, max_velocity * dt)`` (``step_limit`` is the file's per-step limit, itself
  at most ``max_velocity`` times the nominal period).
* base_velocity: ``[min, max]`` and ``|v| <= max_velocity``, then a change of at most
  ``max_acceleration * dt``.
* base_waypoints: ``[min, max]`` only (the reach of one chunk, robot frame). Waypoints are not
  sent to a controller: the tracker's twist goes through ``limit_twist``.

A non-finite command raises ``UnsafeCommandError`` (the caller holds). ``previous`` is clamped
into the limits first, so the result is inside them even when ``previous`` was not. Joint
acceleration limits are not enforced (only the base's).

``check_chunk`` vets a whole chunk before it is scheduled and returns readable problems.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..embodiment import Embodiment
from ..types import ActionChunk
from .scheduler import DEFAULT_EPS, step_index

CLIP_REASONS = ("position", "step", "velocity", "acceleration")


class UnsafeCommandError(ValueError):
    """A command holds NaN or inf; ``names`` lists the offending dimensions."""

    def __init__(self, names: list[str]):
        self.names = names
        super().__init__(f"non-finite command on {', '.join(names)}")


@dataclass
class ClipReport:
    """Which dimensions one filter call clipped, and why (boolean masks over the action vector).

    ``position``: outside [min, max]; ``step``: per-step change limit; ``velocity``: speed limit
    (joint change over dt, or the base speed); ``acceleration``: base acceleration limit.
    """

    names: list[str]
    position: np.ndarray
    step: np.ndarray
    velocity: np.ndarray
    acceleration: np.ndarray

    def any(self) -> bool:
        return bool(
            self.position.any() or self.step.any() or self.velocity.any() or self.acceleration.any()
        )

    def counts(self) -> dict[str, int]:
        """Number of clipped dimensions per reason."""
        return {reason: int(getattr(self, reason).sum()) for reason in CLIP_REASONS}

    def clipped(self, reason: str) -> list[str]:
        """Names of the dimensions clipped for ``reason``."""
        mask = getattr(self, reason)
        return [name for name, hit in zip(self.names, mask, strict=True) if hit]

    def describe(self) -> str:
        """One line, e.g. ``step: left_arm/waist, left_arm/elbow; position: right_gripper/gripper``."""
        parts = [
            f"{r}: {', '.join(self.clipped(r))}" for r in CLIP_REASONS if getattr(self, r).any()
        ]
        return "; ".join(parts) if parts else "none"

    def merge(self, other: ClipReport) -> ClipReport:
        return ClipReport(
            self.names,
            self.position | other.position,
            self.step | other.step,
            self.velocity | other.velocity,
            self.acceleration | other.acceleration,
        )


class SafetyLimiter:
    """Clamps command vectors to an embodiment's limits (see the module docstring)."""

    def __init__(
        self,
        embodiment: Embodiment,
        *,
        discontinuity_steps: float = 10.0,
        dt_tolerance: float | None = 1e-3,
    ):
        """
        Args:
            embodiment: the robot whose limits apply.
            discontinuity_steps: ``check_chunk`` flags a first action further than this many
                step limits from the current command (joint and gripper dimensions).
            dt_tolerance: relative difference allowed between a chunk's dt and the control
                period; None accepts any dt (when the scheduler interpolates).
        """
        if discontinuity_steps <= 0:
            raise ValueError(f"discontinuity_steps must be positive, got {discontinuity_steps}")
        self.embodiment = embodiment
        self.discontinuity_steps = float(discontinuity_steps)
        self.dt_tolerance = dt_tolerance
        self.names = list(embodiment.action_names)
        kinds = embodiment.dims_of_kind
        dim = embodiment.action_dim
        none = np.zeros(dim, dtype=bool)
        self._stepped = kinds.get("joint_position", none) | kinds.get("gripper", none)
        self._velocity_dims = kinds.get("base_velocity", none)
        speed = np.where(self._velocity_dims, embodiment.velocity_limits, np.inf)
        self.lower = np.maximum(embodiment.position_min, -speed)
        self.upper = np.minimum(embodiment.position_max, speed)
        # Finite placeholders (0) where a limit does not apply, so products with dt = 0 stay finite.
        self._step = np.where(self._stepped, embodiment.step_limits, 0.0)
        self._speed = np.where(self._stepped, embodiment.velocity_limits, 0.0)
        accel = embodiment.acceleration_limits
        self._accelerated = self._velocity_dims & np.isfinite(accel)
        self._accel = np.where(self._accelerated, accel, 0.0)
        self.totals = {reason: np.zeros(dim, dtype=np.int64) for reason in CLIP_REASONS}

    # -- one command ----------------------------------------------------------------
    def _as_vector(self, values: np.ndarray, what: str) -> np.ndarray:
        vector = np.asarray(values, dtype=np.float64)
        if vector.shape != (len(self.names),):
            raise ValueError(
                f"{what} has shape {vector.shape}; expected ({len(self.names)},) for {self.embodiment.name}"
            )
        return vector

    def non_finite_names(self, values: np.ndarray) -> list[str]:
        return [name for name, ok in zip(self.names, np.isfinite(values), strict=True) if not ok]

    def filter(
        self, command: np.ndarray, previous: np.ndarray, dt: float
    ) -> tuple[np.ndarray, ClipReport]:
        """Limit ``command`` (rig units) given the ``previous`` command and ``dt`` (s) since it.

        Returns the safe command (a new array) and what was clipped. Raises
        ``UnsafeCommandError`` on NaN/inf in ``command``, ValueError on a bad ``previous``/``dt``.
        """
        command = self._as_vector(command, "command")
        previous = self._as_vector(previous, "previous command")
        if not np.isfinite(command).all():
            raise UnsafeCommandError(self.non_finite_names(command))
        if not np.isfinite(previous).all():
            raise ValueError(
                f"previous command is not finite on {', '.join(self.non_finite_names(previous))}"
            )
        if not (dt >= 0 and math.isfinite(dt)):
            raise ValueError(f"dt must be a finite number of seconds >= 0, got {dt}")
        target = np.clip(command, self.lower, self.upper)
        out_of_range = target != command
        start = np.clip(previous, self.lower, self.upper)
        speed_step = self._speed * dt
        allowed = np.where(
            self._stepped,
            np.minimum(self._step, speed_step),
            np.where(self._accelerated, self._accel * dt, np.inf),
        )
        delta = target - start
        limited = np.abs(delta) > allowed
        safe = np.where(limited, start + np.sign(delta) * np.where(limited, allowed, 0.0), target)
        # Start and target are inside the limits, so this only absorbs float rounding; it also
        # keeps the guarantee if the logic above is ever changed.
        safe = np.clip(safe, self.lower, self.upper)
        step_bound = self._step <= speed_step
        report = ClipReport(
            self.names,
            position=out_of_range & ~self._velocity_dims,
            step=limited & self._stepped & step_bound,
            velocity=(limited & self._stepped & ~step_bound) | (out_of_range & self._velocity_dims),
            acceleration=limited & self._velocity_dims,
        )
        self.record(report)
        return safe, report

    def record(self, report: ClipReport) -> None:
        """Add ``report`` to the running totals (``totals``, per reason and dimension)."""
        for reason in CLIP_REASONS:
            self.totals[reason] += getattr(report, reason)

    def empty_report(self) -> ClipReport:
        none = np.zeros(len(self.names), dtype=bool)
        return ClipReport(self.names, none, none.copy(), none.copy(), none.copy())

    # -- base twist from a waypoint tracker -------------------------------------------
    def limit_twist(
        self, group: str, twist: tuple[float, float], previous: tuple[float, float], dt: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Limit a (linear_x m/s, angular_z rad/s) twist for a base_waypoints ``group``.

        Speeds are bounded by the ``x`` and ``yaw`` joints' max_velocity, changes by their
        max_acceleration * dt. Returns the twist and two masks (velocity, acceleration) over
        (linear, angular). Raises ``UnsafeCommandError`` on NaN/inf.
        """
        spec = self.embodiment.group(group)
        joints = {j.name: j for j in spec.joints}
        speed = np.array([joints["x"].max_velocity, joints["yaw"].max_velocity])
        accel = np.array([joints[n].max_acceleration or np.inf for n in ("x", "yaw")])
        wanted = np.asarray(twist, dtype=np.float64)
        if not np.isfinite(wanted).all():
            raise UnsafeCommandError([f"{group}/linear_x", f"{group}/angular_z"])
        bounded = np.clip(wanted, -speed, speed)
        start = np.clip(np.asarray(previous, dtype=np.float64), -speed, speed)
        step = accel * dt
        safe = np.clip(bounded, start - step, start + step)
        return safe, bounded != wanted, safe != bounded

    # -- whole chunks -----------------------------------------------------------------
    def check_chunk(
        self,
        chunk: ActionChunk,
        current_command: np.ndarray | None = None,
        now: float | None = None,
    ) -> list[str]:
        """Readable problems that make ``chunk`` unsafe to schedule; empty when it is fine.

        Checks names and shape against the embodiment, dt, start time, NaN/inf, and the jump
        from ``current_command`` (rig units; NaN entries are skipped) to the first action that
        applies at ``now`` (s; None: the chunk's first action).
        """
        problems = self._layout_problems(chunk)
        if problems:
            return problems
        problems += self._timing_problems(chunk)
        actions = np.asarray(chunk.actions, dtype=np.float64)
        bad = ~np.isfinite(actions)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            problems.append(
                f"{int(bad.sum())} non-finite value(s), first at step {row} ({self.names[col]})"
            )
        elif current_command is not None and not problems:
            problems += self._discontinuity(chunk, actions, current_command, now)
        return problems

    def _layout_problems(self, chunk: ActionChunk) -> list[str]:
        problems = []
        if chunk.embodiment and chunk.embodiment != self.embodiment.name:
            problems.append(
                f"chunk is for embodiment '{chunk.embodiment}', this robot is '{self.embodiment.name}'"
            )
        names = list(chunk.names)
        if names != self.names:
            if len(names) != len(self.names):
                problems.append(
                    f"{len(names)} action names; {self.embodiment.name} has {len(self.names)}"
                )
            missing = [n for n in self.names if n not in names]
            unknown = [n for n in names if n not in self.names]
            if missing or unknown:
                problems.append(
                    f"names differ: missing {missing or '[]'}, unknown {unknown or '[]'}"
                )
            elif len(names) == len(self.names):
                problems.append("action names are in a different order than the embodiment's")
        shape = np.shape(chunk.actions)
        if len(shape) != 2 or shape[1] != len(self.names) or shape[0] < 1:
            problems.append(
                f"actions have shape {shape}; expected (horizon >= 1, {len(self.names)})"
            )
        return problems

    def _timing_problems(self, chunk: ActionChunk) -> list[str]:
        problems = []
        if not (chunk.dt > 0 and math.isfinite(chunk.dt)):
            problems.append(f"dt {chunk.dt} is not a positive number of seconds")
        elif (
            self.dt_tolerance is not None
            and abs(chunk.dt - self.embodiment.dt) > self.dt_tolerance * self.embodiment.dt
        ):
            problems.append(
                f"dt {chunk.dt:.6g} s differs from the control period {self.embodiment.dt:.6g} s "
                f"({self.embodiment.control_rate_hz:g} Hz)"
            )
        if not math.isfinite(chunk.start_time):
            problems.append(f"start_time {chunk.start_time} is not finite")
        return problems

    def _discontinuity(
        self, chunk: ActionChunk, actions: np.ndarray, current: np.ndarray, now: float | None
    ) -> list[str]:
        current = self._as_vector(current, "current command")
        index = 0
        if now is not None:
            index = min(
                max(step_index(now, chunk.start_time, chunk.dt, DEFAULT_EPS), 0), len(actions) - 1
            )
        threshold = self.discontinuity_steps * self._step
        gap = np.abs(np.clip(actions[index], self.lower, self.upper) - current)
        too_far = self._stepped & np.isfinite(gap) & (gap > threshold)
        if not too_far.any():
            return []
        ratio = np.divide(gap, threshold, out=np.full_like(gap, -1.0), where=too_far)
        worst = int(np.argmax(ratio))
        listed = ", ".join(
            f"{self.names[i]} {gap[i]:.3f} (limit {threshold[i]:.3f})"
            for i in np.flatnonzero(too_far)[:4]
        )
        return [
            f"discontinuity: the first applicable action (step {index}) is far from the current "
            f"command on {int(too_far.sum())} dimension(s), worst {self.names[worst]}: {listed} "
            f"(limit = {self.discontinuity_steps:g} step limits)"
        ]

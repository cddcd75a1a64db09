"""Action chunks to and from trajectory points, with no ROS types (pure core).

A chunk travels as ``trajectory_msgs/msg/JointTrajectory``: ``header.stamp`` = time of the first
action, ``joint_names`` = the action names, one point per action with ``positions`` and
``time_from_start = k * dt``. The ROS nodes copy message fields into and out of these plain
values (stamps and durations as float seconds).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..types import ActionChunk


class ChunkFormatError(ValueError):
    """Trajectory points that do not form a chunk on a regular grid."""


def chunk_from_points(
    joint_names: Sequence[str],
    positions: Sequence[Sequence[float]],
    times_from_start: Sequence[float],
    stamp: float,
    *,
    embodiment: str = "",
    chunk_id: int = 0,
    default_dt: float | None = None,
    dt_tolerance: float = 0.01,
) -> ActionChunk:
    """Build an ActionChunk from JointTrajectory-style points.

    Args:
        joint_names: the action names.
        positions: one row of values per point (rig units).
        times_from_start: per point, s after ``stamp``.
        stamp: header stamp, s (ROS time).
        default_dt: spacing used for a single point, s (None: a single point is an error).
        dt_tolerance: allowed relative deviation of any spacing from the mean spacing.
    """
    actions = np.asarray(positions, dtype=np.float64)
    times = np.asarray(times_from_start, dtype=np.float64)
    if actions.ndim != 2 or actions.shape[1] != len(joint_names) or len(actions) == 0:
        raise ChunkFormatError(
            f"positions have shape {actions.shape}; expected (points >= 1, {len(joint_names)})"
        )
    if times.shape != (len(actions),):
        raise ChunkFormatError(f"{times.size} times_from_start for {len(actions)} points")
    if not (np.isfinite(times).all() and math.isfinite(stamp)):
        raise ChunkFormatError("stamp and times_from_start must be finite")
    return ActionChunk(
        actions=actions,
        names=list(joint_names),
        dt=_spacing(times, default_dt, dt_tolerance),
        start_time=float(stamp + times[0]),
        embodiment=embodiment,
        chunk_id=chunk_id,
    )


def _spacing(times: np.ndarray, default_dt: float | None, tolerance: float) -> float:
    if len(times) == 1:
        if default_dt is None or not default_dt > 0:
            raise ChunkFormatError(
                "a single point needs default_dt to place it on the control grid"
            )
        return float(default_dt)
    steps = np.diff(times)
    dt = float(steps.mean())
    if not dt > 0 or np.any(steps <= 0):
        raise ChunkFormatError("times_from_start must increase strictly")
    if np.any(np.abs(steps - dt) > tolerance * dt):
        raise ChunkFormatError(
            f"points are not evenly spaced: steps from {steps.min():.6g} to {steps.max():.6g} s"
        )
    return dt


def points_from_chunk(
    chunk: ActionChunk,
) -> tuple[list[str], list[list[float]], list[float], float]:
    """(joint_names, positions per point, times_from_start s, stamp s) for a JointTrajectory."""
    times = [k * chunk.dt for k in range(chunk.horizon)]
    return (
        list(chunk.names),
        np.asarray(chunk.actions, dtype=np.float64).tolist(),
        times,
        chunk.start_time,
    )

"""Action chunks from per-frame action rows, shared by the reader and the statistics (pure core).

For most action kinds the chunk at frame t is rows t .. t+H-1; past the episode end
the last row repeats and ``is_pad`` marks those steps.

``base_waypoints`` groups are stored per frame as the one-step motion
(x m, y m, yaw rad): the pose at t+1 in the robot frame at t. A chunk's waypoint k
is the pose at t+1+k in the robot frame at t, built by composing those steps;
past the episode end the final pose repeats (the base stops).
"""

from __future__ import annotations

import numpy as np


def waypoint_slices(embodiment) -> tuple[slice, ...]:
    """Action slices of an embodiment's base_waypoints groups."""
    return tuple(
        embodiment.group_slices[g.name]
        for g in embodiment.action_groups
        if g.kind == "base_waypoints"
    )


def wrap_angle(angle: np.ndarray) -> np.ndarray:
    """Angles to [-pi, pi), rad."""
    return (np.asarray(angle) + np.pi) % (2.0 * np.pi) - np.pi


def integrate_steps(steps: np.ndarray) -> np.ndarray:
    """Poses (T+1, 3) from one-step motions (T, 3), starting at the origin."""
    poses = np.zeros((len(steps) + 1, 3), dtype=np.float64)
    for t, (dx, dy, dyaw) in enumerate(np.asarray(steps, dtype=np.float64)):
        x, y, yaw = poses[t]
        c, s = np.cos(yaw), np.sin(yaw)
        poses[t + 1] = (x + c * dx - s * dy, y + s * dx + c * dy, wrap_angle(yaw + dyaw))
    return poses


def relative_poses(origin: np.ndarray, poses: np.ndarray) -> np.ndarray:
    """``poses`` (..., 3) expressed in the frame of ``origin`` (..., 3), broadcast."""
    origin = np.asarray(origin, dtype=np.float64)
    poses = np.asarray(poses, dtype=np.float64)
    dx = poses[..., 0] - origin[..., 0]
    dy = poses[..., 1] - origin[..., 1]
    c, s = np.cos(origin[..., 2]), np.sin(origin[..., 2])
    return np.stack(
        [c * dx + s * dy, -s * dx + c * dy, wrap_angle(poses[..., 2] - origin[..., 2])], -1
    )


def pose_steps(poses: np.ndarray) -> np.ndarray:
    """One-step motions (T-1, 3) between consecutive poses (T, 3); inverse of integrate_steps."""
    poses = np.asarray(poses, dtype=np.float64)
    return relative_poses(poses[:-1], poses[1:])


def slice_key(block: slice) -> tuple[int, int]:
    """A hashable stand-in for a slice (slices are unhashable before Python 3.12)."""
    return int(block.start), int(block.stop)


def chunk_indices(length: int, start: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of a chunk (clipped to the episode) and its padding mask."""
    steps = start + np.arange(horizon)
    return np.minimum(steps, length - 1), steps >= length


def action_chunk(
    actions: np.ndarray,
    start: int,
    horizon: int,
    waypoints: tuple[slice, ...] = (),
    poses: dict[tuple[int, int], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The (horizon, D) chunk at frame ``start`` of one episode's (T, D) actions, and is_pad.

    ``poses`` may hold :func:`integrate_steps` of each waypoint slice, keyed by
    :func:`slice_key` and precomputed per episode; it is computed here otherwise.
    """
    length = len(actions)
    rows, is_pad = chunk_indices(length, start, horizon)
    chunk = np.array(actions[rows], dtype=np.float64)
    for block in waypoints:
        key = slice_key(block)
        integrated = poses[key] if poses and key in poses else integrate_steps(actions[:, block])
        targets = np.minimum(start + 1 + np.arange(horizon), length)
        chunk[:, block] = relative_poses(integrated[start], integrated[targets])
    return chunk, is_pad


def all_chunks(actions: np.ndarray, horizon: int, waypoints: tuple[slice, ...]) -> np.ndarray:
    """Every chunk's values of one episode, (T * horizon, D), for statistics."""
    poses = {slice_key(block): integrate_steps(actions[:, block]) for block in waypoints}
    return np.concatenate(
        [action_chunk(actions, t, horizon, waypoints, poses)[0] for t in range(len(actions))]
    )

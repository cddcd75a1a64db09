"""Key poses of a demonstration: where the robot is when it next grasps (pure core).

A policy that must pick "the blue cube" has to find, from the image and the words, where
its gripper will close. The action loss says so only through a noisy flow-matching target
spread over a whole chunk, and a small backbone trained from scratch learns to ignore the
words (it reads which arm moves from the proprioceptive state instead). The key pose makes
it explicit: for every frame, the action at the episode's next *keyframe*, which the
decoder's key-pose head (:meth:`..model.dit.ActionDiT.condition`) learns to predict from the
backbone's last token.

Keyframes of one episode, in frame indices:

* every frame at which a gripper's command finishes closing (falls to within
  ``CLOSED_FRACTION`` of its lowest value in the episode, from above): the grasps;
* the last frame: where the task ends (for a mobile base, where it stops).

The key pose of frame t is the action at the first keyframe >= t, in the same units as an
action chunk's rows: joint positions as stored, ``base_waypoints`` groups as the pose at
that keyframe in the robot frame at t (see :mod:`.chunks`). Derived from the recorded
actions alone, so every dataset has it, recorded on a rig or by a scripted expert.
"""

from __future__ import annotations

import numpy as np

from .chunks import action_chunk

#: A gripper counts as closed within this fraction of its episode range above the minimum.
CLOSED_FRACTION = 0.1
#: Grippers whose command moves less than this over an episode never close (rig units).
MIN_GRIPPER_TRAVEL = 1e-3


def gripper_slices(embodiment) -> tuple[slice, ...]:
    """Action slices of an embodiment's gripper groups."""
    return tuple(embodiment.group_slices[g.name] for g in embodiment.action_groups if g.kind == "gripper")


def keyframes(actions: np.ndarray, grippers: tuple[slice, ...]) -> np.ndarray:
    """Sorted keyframe indices of one episode's (T, D) actions (see the module doc)."""
    actions = np.asarray(actions, dtype=np.float64)
    if actions.ndim != 2 or len(actions) == 0:
        raise ValueError(f"actions must be (T > 0, D), got {actions.shape}")
    found = {len(actions) - 1}
    for block in grippers:
        for column in actions[:, block].T:
            low, high = float(column.min()), float(column.max())
            if high - low < MIN_GRIPPER_TRAVEL:
                continue
            closed = column <= low + CLOSED_FRACTION * (high - low)
            found.update((np.nonzero(closed[1:] & ~closed[:-1])[0] + 1).tolist())
    return np.asarray(sorted(found), dtype=np.int64)


def key_pose(
    actions: np.ndarray,
    frame: int,
    frames: np.ndarray,
    waypoints: tuple[slice, ...] = (),
    poses: dict[tuple[int, int], np.ndarray] | None = None,
) -> np.ndarray:
    """The (D,) action at the first keyframe >= ``frame`` (``frames`` from :func:`keyframes`)."""
    key = int(frames[np.searchsorted(frames, frame, side="left")])
    chunk, _ = action_chunk(actions, frame, key - frame + 1, waypoints, poses)
    return chunk[-1]

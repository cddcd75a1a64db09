"""Key-pose latching: commit to the grasp the policy planned from the episode's first view.

The decoder acts on a key pose (the action at the episode's next grasp, model/dit.py
KeyPoseHead), which its head predicts again from every chunk's observation. From the start
view the shipped demo policy's prediction is good (held-out pick_color start views: the
grasping arm's tool centre point 1.4 cm from the expert's, median, `qwen-vla probe`), but once
the arm moves it wanders: on one held-out seed it went 1.5 -> 17 -> 2 -> 21 cm from the cube in
four consecutive chunks, and the arm stopped short. The views on the way are the ones least
like the training scenes (the arm is where the policy, not the expert, put it).

:class:`KeyPoseLatch` keeps the first prediction of a task and gives it to the decoder for
every later chunk until the robot has reached it (every latched joint within
``reach_tolerance`` of its measured state); then the next prediction is latched, which is the
next key pose of the task (after the grasp: the lift). A new task or episode starts empty.

Only absolute key poses latch: a mobile base's waypoint key pose is in the frame of the base
at the time of the observation, which moves with the base, so a held value would point
elsewhere. Reaching is judged on the joint-position groups (arms), not on grippers (a grasp
closes on the object, so the measured opening never reaches the command) or base velocities.
"""

from __future__ import annotations

import numpy as np

from ..embodiment import Embodiment

#: The action-group kind whose measured state says whether a key pose is reached.
JOINT_POSITIONS = "joint_position"
#: Default reach tolerance, rig units (rad for arm joints): within it on every dimension the
#: key pose counts as reached.
REACH_TOLERANCE = 0.05


class KeyPoseLatch:
    """Hold one key pose per task phase (rig units, (action_dim,)).

    Args:
        embodiment: the robot; latching is off (``enabled`` False) where its actions include
            base waypoint groups (key poses relative to the moving base) or no joint-position
            group to judge reaching on.
        reach_tolerance: rad (joint positions); the latched pose is released once every
            joint-position dimension of the measured state is within it.
    """

    def __init__(self, embodiment: Embodiment, reach_tolerance: float = REACH_TOLERANCE):
        if not reach_tolerance > 0:
            raise ValueError(f"reach_tolerance must be positive, got {reach_tolerance}")
        kinds = {group.kind for group in embodiment.action_groups}
        self._dims = np.concatenate([np.arange(embodiment.action_dim)[embodiment.group_slices[g.name]]
                                     for g in embodiment.action_groups if g.kind == JOINT_POSITIONS] or [[]]).astype(int)
        self.enabled = "base_waypoints" not in kinds and len(self._dims) > 0
        self.reach_tolerance = float(reach_tolerance)
        self.pose: np.ndarray | None = None
        self.latched = 0  # how many key poses this task has latched (diagnostics)

    def reset(self) -> None:
        """A new task or episode: nothing latched."""
        self.pose, self.latched = None, 0

    def key_pose_for(self, state: np.ndarray | None) -> np.ndarray | None:
        """The key pose the next chunk must act on, or None to let the head predict it.

        ``state``: the measured state, rig units (action layout), or None when unknown;
        a latched pose the state has reached is released here."""
        if self.pose is None or not self.enabled:
            return None
        if state is not None and self._reached(np.asarray(state, dtype=np.float64)):
            self.pose = None
        return self.pose

    def offer(self, predicted: np.ndarray | None) -> None:
        """The head's prediction for the chunk just computed: latched if nothing is."""
        if self.enabled and self.pose is None and predicted is not None:
            self.pose = np.array(predicted, dtype=np.float64)
            self.latched += 1

    def _reached(self, state: np.ndarray) -> bool:
        if state.shape != self.pose.shape:
            return False
        gap = np.abs(state[self._dims] - self.pose[self._dims])
        return bool(np.all(gap <= self.reach_tolerance))

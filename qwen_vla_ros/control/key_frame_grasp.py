"""Key-frame grasp: the model says where to grasp, a planned trajectory takes the arm there.

The demo policy's key-pose head finds the grasp from the episode's first view (the grasping
arm's tool centre point 1.4 cm from the expert's, median, held-out pick_color scenes), but its
decoder does not follow that pose closely enough to close the fingers on a 4 cm cube (it
reaches every arm joint within 0.05 rad in 4 of 60 episodes). Key-frame policies execute the
key pose with a controller instead; :class:`KeyFrameGrasp` is that controller's plan:

1. approach: every arm joint moves towards the key pose at just under the rate the rig's
   safety layer allows (``SPEED_MARGIN`` of its step limit per control period), with every
   gripper open;
2. close: the key pose's gripper commands, rate-limited the same way;
3. after ``total_steps`` the plan is done and the policy acts again (the lift).
A base (mobile ALOHA) stands still throughout.

The plan is a trajectory of commands one control period apart, so it plays through the chunk
publisher as ordinary chunks (no step reaches a limit, so none is clipped or rejected as a
discontinuity). The joint-space path plans no route around other objects.
"""

from __future__ import annotations

import numpy as np

from ..embodiment import Embodiment
from ..embodiment.schema import GRIPPER_OPEN

#: Control periods of the approach (3 s at 50 Hz). The commands arrive within 25 steps on 60
#: held-out pick_color scenes; the rest lets the arm settle. Shorter waits gave the decoder's
#: lift more time but touched other cubes more often: no clear gain (docs/training.md).
APPROACH_STEPS = 150
#: Control periods of the close (0.8 s at 50 Hz: the fingers settle on the cube).
CLOSE_STEPS = 40
#: Fraction of the step limit the plan moves at: a step exactly at the limit can round past it
#: and be counted as clipped by the safety layer.
SPEED_MARGIN = 0.99


class KeyFrameGraspUnavailable(ValueError):
    """The embodiment or key pose cannot be executed as a grasp (no arm with a gripper)."""


def supports_key_frame_grasp(embodiment: Embodiment) -> bool:
    """Whether ``embodiment`` has joint-position arms and grippers (a mobile base has not)."""
    kinds = {group.kind for group in embodiment.action_groups}
    return {"joint_position", "gripper"} <= kinds


class KeyFrameGrasp:
    """The planned grasp of one task, on the control grid (rig units, (total_steps, action_dim)).

    Args:
        embodiment: the robot (its limits shape the approach).
        start: (action_dim,) the measured state when the plan is made, rig units.
        key_pose: (action_dim,) the grasp: arm joints (rad) and gripper commands at the close.
        approach_steps, close_steps: control periods of each phase.
    """

    def __init__(self, embodiment: Embodiment, start: np.ndarray, key_pose: np.ndarray,
                 approach_steps: int = APPROACH_STEPS, close_steps: int = CLOSE_STEPS):
        if not supports_key_frame_grasp(embodiment):
            raise KeyFrameGraspUnavailable(f"{embodiment.name} has no arm with a gripper to grasp with")
        start, key_pose = (np.asarray(v, dtype=np.float64) for v in (start, key_pose))
        for name, value in (("start", start), ("key_pose", key_pose)):
            if value.shape != (embodiment.action_dim,) or not np.all(np.isfinite(value)):
                raise KeyFrameGraspUnavailable(
                    f"{name} must be {embodiment.action_dim} finite values, got shape {value.shape}")
        if approach_steps < 1 or close_steps < 1:
            raise ValueError(f"approach_steps and close_steps must be >= 1, got {approach_steps}, {close_steps}")
        kinds = embodiment.dims_of_kind
        grippers = kinds["gripper"]
        positional = kinds["joint_position"] | grippers
        lower, upper = embodiment.position_min, embodiment.position_max
        self.key_pose = np.where(positional, np.clip(key_pose, lower, upper), 0.0)  # a base stands still
        approach = np.where(grippers, np.clip(GRIPPER_OPEN, lower, upper), self.key_pose)
        per_step = np.where(positional, SPEED_MARGIN * embodiment.step_limits, np.inf)
        commands, previous = [], np.where(positional, np.clip(start, lower, upper), 0.0)
        for target, steps in ((approach, approach_steps), (self.key_pose, close_steps)):
            for _ in range(steps):
                previous = previous + np.clip(target - previous, -per_step, per_step)
                commands.append(previous)
        self.trajectory = np.array(commands)

    @property
    def total_steps(self) -> int:
        return int(self.trajectory.shape[0])

    def action(self, step: int) -> np.ndarray | None:
        """The command at control step ``step`` since the plan started, or None once it is done."""
        return self.trajectory[step].copy() if 0 <= step < self.total_steps else None

    def actions(self, first_step: int, horizon: int) -> np.ndarray:
        """``horizon`` commands from ``first_step`` on, (horizon, action_dim); past the end of
        the plan its last command repeats (the gripper stays closed until the policy acts)."""
        index = np.clip(np.arange(first_step, first_step + horizon), 0, self.total_steps - 1)
        return self.trajectory[index].copy()

    def done(self, step: int) -> bool:
        return step >= self.total_steps

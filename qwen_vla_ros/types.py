"""Plain data passed between the layers: observations in, action chunks out (pure core)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Observation:
    """What the policy sees at one instant.

    Attributes:
        images: camera name -> (height, width, 3) uint8 RGB, at the embodiment's image_size.
        state: (state_dim,) float, rig units, same layout as the action vector.
        instruction: the language task.
        stamp: capture time of the oldest source in the observation, s (ROS time).
    """

    images: dict[str, np.ndarray]
    state: np.ndarray
    instruction: str
    stamp: float = 0.0


@dataclass
class ActionChunk:
    """A chunk of future actions on the control grid.

    Attributes:
        actions: (horizon, action_dim) float, rig units (rad, normalised gripper, m/s ...).
        names: the action layout, ``group/joint`` per column.
        dt: time between consecutive actions, s.
        start_time: time at which ``actions[0]`` applies, s (ROS time).
        embodiment: name of the embodiment the chunk was made for.
        chunk_id: increasing number per inference, for diagnostics.
        timings: seconds spent per inference phase (preprocess, backbone, decoder).
        key_pose: (action_dim,) rig units, the key pose the decoder's key-pose head predicted
            from this chunk's observation (the action at the next grasp, or where the base
            stops); None for a policy without the head.
    """

    actions: np.ndarray
    names: list[str]
    dt: float
    start_time: float = 0.0
    embodiment: str = ""
    chunk_id: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    key_pose: np.ndarray | None = None

    @property
    def horizon(self) -> int:
        return int(self.actions.shape[0])

    @property
    def end_time(self) -> float:
        """Time at which the last action applies, s."""
        return self.start_time + (self.horizon - 1) * self.dt

    def time_of(self, index: int) -> float:
        """Time at which ``actions[index]`` applies, s."""
        return self.start_time + index * self.dt

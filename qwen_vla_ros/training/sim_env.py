"""The MuJoCo ALOHA as an RL rollout environment, driven directly (no ROS, simulated time).

Actions and states are the embodiment's vectors in rig units: arm joints in rad, grippers as
the normalised opening (0 closed, 1 open). Arm groups are matched to the sim's arms by their
name prefix (``left_arm`` -> left); an ALOHA embodiment (``aloha``, ``aloha_sim``) fits.
The reward is gym-aloha's staged task reward divided by its maximum, so it lies in [0, 1]
and is 1 exactly on success.

As on the rig, each action is clamped to the joint limits and to the embodiment's largest
change per control step (``step_limits``) from the previous command, so an untrained
policy's jumps do not blow up the physics.
"""

from __future__ import annotations

import numpy as np

from ..embodiment import Embodiment
from ..types import Observation
from .config import RLConfig
from .errors import TrainingError
from .rl import StepResult

_SIDES = ("left", "right")


def _side_of(group_name: str) -> str:
    side = group_name.split("_", 1)[0]
    if side not in _SIDES:
        raise TrainingError(f"action group {group_name!r}: name must start with left_ or right_ to map onto a sim arm")
    return side


class AlohaSimEnv:
    """:class:`~qwen_vla_ros.sim.aloha_sim.AlohaSim` behind the :class:`~.rl.RolloutEnv` interface.

    Args:
        embodiment: an ALOHA embodiment; its cameras (names, image sizes) are rendered.
        task: ``transfer_cube`` or ``insertion``.
        instruction: the language task put into every observation.
        seed: seeds the sim's own object placement for resets without a seed.
    """

    def __init__(self, embodiment: Embodiment, task: str, instruction: str, seed: int = 0):
        from ..sim.aloha_sim import AlohaSim  # MuJoCo only where a sim is wanted

        self.embodiment = embodiment
        self.instruction = instruction
        self._groups = []
        for group in embodiment.action_groups:
            if group.kind not in ("joint_position", "gripper"):
                raise TrainingError(f"AlohaSimEnv drives arm joints and grippers, not {group.kind!r} ({group.name})")
            self._groups.append((group.kind, _side_of(group.name), embodiment.group_slices[group.name]))
        self.sim = AlohaSim.from_embodiment(embodiment, task=task, seed=seed)
        self._low, self._high = embodiment.position_min, embodiment.position_max
        self._step_limits = embodiment.step_limits
        self._last_command: np.ndarray | None = None

    @classmethod
    def factory(cls, embodiment: Embodiment, config: RLConfig) -> AlohaSimEnv:
        """The default :data:`~.rl.EnvFactory` of the RL stage."""
        return cls(embodiment, config.task, config.instruction)

    def reset(self, seed: int) -> Observation:
        self.sim.reset(seed=seed)
        self._last_command = self.state()
        return self.observe()

    def state(self) -> np.ndarray:
        """The embodiment's state vector, rig units (rad, normalised gripper opening)."""
        state = np.zeros(self.embodiment.state_dim)
        for kind, side, block in self._groups:
            if kind == "joint_position":
                state[block] = self.sim.joint_states(side)[1][:6]
            else:
                state[block] = self.sim.gripper_opening(side)
        return state

    def observe(self) -> Observation:
        images = {name: self.sim.render(name) for name in self.embodiment.camera_names}
        return Observation(images=images, state=self.state(), instruction=self.instruction, stamp=self.sim.sim_time)

    def step(self, action: np.ndarray) -> StepResult:
        """Apply one action (rig units, clamped as on the rig) for one control period, dt s."""
        action = np.asarray(action, dtype=np.float64)
        if self._last_command is not None:
            action = np.clip(action, self._last_command - self._step_limits, self._last_command + self._step_limits)
        action = np.clip(action, self._low, self._high)
        self._last_command = action
        for kind, side, block in self._groups:
            if kind == "joint_position":
                self.sim.set_arm_targets(side, action[block])
            else:
                self.sim.set_gripper_opening(side, float(action[block][0]))
        self.sim.step(self.embodiment.dt)
        reward = self.sim.reward() / self.sim.max_reward
        return StepResult(reward=float(reward), done=self.sim.success(), applied=action.copy())

    def close(self) -> None:
        self.sim.close()

"""The MuJoCo ALOHA as an RL rollout environment, driven directly (no ROS, simulated time).

Actions and states are the embodiment's vectors in rig units: arm joints in rad, grippers as
the normalised opening (0 closed, 1 open). The environment takes the deployed path without the
middleware, so RL trains on what the robot will see and do:

* state: the simulated joint states go through the same :class:`ObservationAssembler` as on
  the rig (joint names from the embodiment's state references, finger reading normalised
  with the rig's gripper constants);
* action: the rig's :class:`SafetyLimiter` (position, per-step and velocity limits from the
  previous command) and :class:`CommandMapper` (controller units), applied to a
  :class:`SimRig` per output topic, exactly what the sim bridge does with the commands.

The reward is gym-aloha's staged task reward divided by its maximum, so it lies in [0, 1]
and is 1 exactly on success.
"""

from __future__ import annotations

import numpy as np

from ..control.command_mapping import CommandMapper
from ..control.safety import SafetyLimiter
from ..embodiment import Embodiment
from ..observation import ObservationAssembler
from ..types import Observation
from .config import RLConfig
from .errors import TrainingError
from .rl import StepResult


class AlohaSimEnv:
    """A :class:`~qwen_vla_ros.sim.rig.SimRig` of an ALOHA embodiment behind the
    :class:`~.rl.RolloutEnv` interface.

    Args:
        embodiment: an ALOHA embodiment with built-in output types (``aloha_sim``); its
            cameras (names, image sizes) are rendered.
        task: ``transfer_cube`` or ``insertion``.
        instruction: the language task put into every observation.
        seed: seeds the sim's own object placement for resets without a seed.
    """

    def __init__(self, embodiment: Embodiment, task: str, instruction: str, seed: int = 0,
                 render_size: tuple[int, int] | None = None):
        """``render_size``: (height, width) px rendered before resizing to the model's image
        size; default the sim bridge's frame (``RIG_FRAME_SIZE``), so images match the graph's."""
        from ..sim.rig import RIG_FRAME_SIZE, SimRig  # MuJoCo only where a sim is wanted

        kinds = {g.kind for g in embodiment.action_groups} - {"joint_position", "gripper"}
        if kinds:
            raise TrainingError(f"AlohaSimEnv drives arm joints and grippers, not {sorted(kinds)}")
        self.embodiment = embodiment
        self.instruction = instruction
        self.rig = SimRig(embodiment, task=task, seed=seed, render_size=render_size or RIG_FRAME_SIZE)
        self.sim = self.rig.arms
        self._state = ObservationAssembler(embodiment)
        self._limiter = SafetyLimiter(embodiment)
        self._mapper = CommandMapper(embodiment)
        self._last_command: np.ndarray | None = None

    @classmethod
    def factory(cls, embodiment: Embodiment, config: RLConfig) -> AlohaSimEnv:
        """The default :data:`~.rl.EnvFactory` of the RL stage."""
        return cls(embodiment, config.task, config.instruction)

    def reset(self, seed: int) -> Observation:
        self.rig.reset(seed=seed)
        self._last_command = self.state()
        return self.observe()

    def state(self) -> np.ndarray:
        """The embodiment's state vector, rig units (rad, normalised gripper opening)."""
        now = self.sim.sim_time
        for source in self.embodiment.state_sources:
            names, positions, _ = self.rig.joint_state(source.name)
            self._state.add_joint_values(source.name, dict(zip(names, positions, strict=True)), now, now)
        return self._state.state_vector()

    def observe(self) -> Observation:
        images = {name: self.rig.camera_view(name) for name in self.embodiment.camera_names}
        return Observation(images=images, state=self.state(), instruction=self.instruction, stamp=self.sim.sim_time)

    def limited(self, action: np.ndarray, previous: np.ndarray) -> np.ndarray:
        """``action`` as the rig's safety limiter passes it after the command ``previous``."""
        limited, _ = self._limiter.filter(np.asarray(action, dtype=np.float64), previous, self.embodiment.dt)
        return limited

    def step(self, action: np.ndarray) -> StepResult:
        """Apply one action (rig units, limited as on the rig) for one control period, dt s."""
        previous = self._last_command if self._last_command is not None else self.state()
        action = self.limited(action, previous)
        self._last_command = action
        for command in self._mapper.map(action):
            self.rig.apply(command.topic, list(command.values))
        self.rig.step(self.embodiment.dt)
        reward = self.sim.reward() / self.sim.max_reward
        return StepResult(reward=float(reward), done=self.sim.success(), applied=action.copy())

    def close(self) -> None:
        self.rig.close()

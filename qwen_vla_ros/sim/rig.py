"""A simulated rig assembled from an embodiment file (pure core; the sim bridge node wraps it).

Arms (state sources named ``left_*``/``right_*``) run in :class:`AlohaSim`; a base group runs
on a :class:`KinematicBase` (Mobile ALOHA) or, for a base alone with a ``front`` camera, in the
:class:`MobileBaseSim` navigation world. Commands arrive per output topic, in the controller
units the chunk publisher sends (arm joints rad, gripper joint rad, Twist m/s and rad/s).
"""

from __future__ import annotations

import numpy as np

from ..embodiment import Embodiment
from .aloha_conventions import ARM_JOINTS
from .errors import SimConfigError

BASE_KINDS = ("base_velocity", "base_waypoints")
#: The frame the sim bridge renders by default (height, width px), a rig camera's 4:3 frame.
RIG_FRAME_SIZE = (240, 320)
DEFAULT_ARM_TASK = "transfer_cube"
DEFAULT_NAV_TASK = "drive_to_color"


def _side_of(source_name: str) -> str:
    for side in ("left", "right"):
        if side in source_name:
            return side
    raise SimConfigError(f"state source '{source_name}' names no arm side (left/right)")


def command_slots(embodiment: Embodiment) -> dict[str, list[tuple[str, str]]]:
    """Output topic -> what each value commands: (side, arm joint | 'gripper') or ('base', component)."""
    slots: dict[str, list[tuple[str, str]]] = {}
    for output in embodiment.outputs:
        entries = []
        for group_name in output.groups:
            group = embodiment.group(group_name)
            if group.kind in BASE_KINDS:
                entries += [("base", "linear_x"), ("base", "angular_z")]
                continue
            for joint in group.joints:
                if joint.state is None:
                    raise SimConfigError(f"{group_name}/{joint.name} has no state reference to simulate")
                side = _side_of(joint.state.source)
                entries.append((side, "gripper" if group.kind == "gripper" else joint.state.joint))
        slots[output.topic] = entries
    return slots


class SimRig:
    """Arms and/or base of one embodiment, stepped on simulated time."""

    def __init__(
        self,
        embodiment: Embodiment,
        task: str | None = None,
        seed: int = 0,
        render_size: tuple[int, int] | None = None,
    ):
        """``task``: an ALOHA task for arms, a navigation task for a base alone; default
        ``transfer_cube`` / ``drive_to_color``. ``render_size``: (height, width) px of every
        camera; default the model's image size."""
        self.embodiment = embodiment
        self.render_size = render_size
        self.slots = command_slots(embodiment)
        kinds = {g.kind for g in embodiment.action_groups}
        has_arms = bool(kinds & {"joint_position", "gripper"})
        has_base = bool(kinds & set(BASE_KINDS))
        self.arms = self.base = self.world = None
        self.task = task or (DEFAULT_NAV_TASK if has_base and not has_arms else DEFAULT_ARM_TASK)
        if has_arms:
            from .aloha_sim import AlohaSim

            self.arms = AlohaSim.from_embodiment(embodiment, task=self.task, seed=seed, render_size=render_size)
        if has_base and not has_arms:
            from .base_scene import MobileBaseSim

            self.world = MobileBaseSim.from_embodiment(embodiment, render_size=render_size, task=self.task)
            self.base = self.world
        elif has_base:
            from .kinematic_base import BaseLimits, KinematicBase

            self.base = KinematicBase(limits=BaseLimits.from_embodiment(embodiment))
        self._time_ns = 0
        # Episodes without an explicit seed take consecutive seeds from ``seed`` on, so a run
        # of episodes (e.g. an evaluation) is reproducible and its seeds are known.
        self.episode_seed = int(seed)
        self.reset(seed=self.episode_seed)

    # -- commands --------------------------------------------------------------------------
    def apply(self, topic: str, values: list[float]) -> None:
        """One controller message's values; raises SimInputError/ValueError when malformed."""
        slots = self.slots[topic]
        if len(values) != len(slots) or not np.all(np.isfinite(values)):
            raise ValueError(f"{topic}: expected {len(slots)} finite values, got {len(values)}")
        arm_targets: dict[str, np.ndarray] = {}
        twist = {}
        for (owner, what), value in zip(slots, values, strict=True):
            if owner == "base":
                twist[what] = float(value)
            elif what == "gripper":
                self.arms.set_gripper_target(owner, value)
            else:
                target = arm_targets.setdefault(owner, self.arms.arm_targets(owner))
                target[ARM_JOINTS.index(what)] = value
        for side, target in arm_targets.items():
            self.arms.set_arm_targets(side, target)
        if twist:
            self.base.set_cmd_vel(twist["linear_x"], twist["angular_z"])

    # -- time ------------------------------------------------------------------------------------
    def step(self, dt: float) -> None:
        if self.arms is not None:
            self.arms.step(dt)
        if self.base is not None:
            self.base.step(dt)
        self._time_ns += round(dt * 1e9)

    @property
    def sim_time_ns(self) -> int:
        """Simulated time since start, ns; never goes back (for /clock)."""
        return self._time_ns

    def reset(self, task: str | None = None, seed: int | None = None) -> None:
        """A new episode of ``task`` (default: the current one) from ``seed`` (default: the
        previous episode's seed + 1)."""
        if seed is None:
            seed = self.episode_seed + 1
        self.episode_seed = int(seed)
        if task is not None and self.arms is not None and task != self.arms.task_name:
            from .aloha_sim import AlohaSim

            self.arms.close()
            self.arms = AlohaSim.from_embodiment(self.embodiment, task=task, render_size=self.render_size)
        if self.arms is not None:
            self.arms.reset(seed)  # the episode seed places the objects, on a new task too
        if self.world is not None:
            if task is not None and task != self.world.task:
                raise SimConfigError(f"the navigation world runs {self.world.task!r}; start a new rig for {task!r}")
            self.world.reset(seed=seed)
        elif self.base is not None:
            self.base.reset()
        self.task = task or self.task

    @property
    def _scorer(self):
        """The part that runs and scores the task: the arms' sim, else the navigation world."""
        return self.arms if self.arms is not None else self.world

    @property
    def goal(self) -> str | None:
        """What the episode is scored against (language-conditioned tasks), else None."""
        return self._scorer.goal if self._scorer is not None else None

    def set_instruction(self, text: str) -> str | None:
        """Let a language-conditioned task score the goal the instruction names; returns it."""
        return self._scorer.set_instruction(text) if self._scorer is not None else None

    def wrong_object(self) -> bool:
        """The robot acted on an object the instruction did not name (colour tasks)."""
        return bool(self._scorer.wrong_object()) if self._scorer is not None else False

    def approached(self) -> str | None:
        """Colour tasks: the object the robot went to, named as the instruction would name it
        (the cube a gripper came closest to; the box the base last stopped beside), else None."""
        return self._scorer.approached() if self._scorer is not None else None

    # -- observation -------------------------------------------------------------------------------
    def joint_state(self, source: str) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
        """(names, positions, velocities) of an arm, in the Interbotix convention."""
        return self.arms.joint_states(_side_of(source))

    def odometry(self) -> dict[str, float]:
        """Base pose (x, y m; yaw rad and its quaternion qz, qw) and twist (m/s, rad/s)."""
        return (self.world.base if self.world is not None else self.base).odometry()

    def camera_view(self, camera: str) -> np.ndarray:
        """What the model gets from a camera: the rendered frame resized to the embodiment's
        image size the way the observation node resizes it (area averaging when shrinking)."""
        from ..data.images import resize_rgb

        spec = next(c for c in self.embodiment.cameras if c.name == camera)
        return resize_rgb(self.render(camera), spec.image_size)

    def render(self, camera: str) -> np.ndarray:
        if self.world is not None and camera in self.world.camera_names:
            return self.world.render(camera)
        return self.arms.render(camera)

    # -- task ------------------------------------------------------------------------------------------
    def reward(self) -> float:
        """ALOHA: the staged task reward (0 .. max_reward); the navigation world: minus the
        distance to the goal, m."""
        if self.arms is not None:
            return float(self.arms.reward())
        return -float(self.world.distance_to_goal()) if self.world is not None else 0.0

    def success(self) -> bool:
        if self.arms is not None:
            return bool(self.arms.success())
        return bool(self.world.success()) if self.world is not None else False

    def take_warning(self) -> str | None:
        if self.arms is None or not self.arms.last_warning:
            return None
        warning, self.arms.last_warning = self.arms.last_warning, None
        return warning

    def close(self) -> None:
        for part in (self.arms, self.world):
            if part is not None:
                part.close()

"""A scripted expert as the teleoperator of a simulated rig (pure core; the sim bridge publishes).

In a lab, demonstrations are recorded while a leader arm (or a joystick) streams commands to
the robot's controllers and the recorder runs. With ``expert: true`` the sim bridge plays that
part: it lives where the ground truth is, so it can run the task's scripted expert
(:mod:`.experts`), and it sends the expert's commands on the embodiment's command topics, the
same topics and messages the chunk publisher uses. The sim consumes them through its normal
command subscriptions, and ``qwen-vla record`` records them like any other commands.

What goes out is what the direct path of ``qwen-vla collect`` applies (so both write the same
dataset): the expert's action limited by the rig's :class:`SafetyLimiter` against the previous
command and mapped to controller units by the :class:`CommandMapper` (arms); the expert's
``cmd_vel`` (a base in the navigation world).

Timing, in simulated time: an instruction *requests* an expert run; the run starts on the
first camera frame at least :data:`LEAD_IN_S` later, so that its first command follows a
frame (as step 0 of a direct episode does) and a recorder that got the instruction a little
after the sim still records the run from its first frame. The run starts from the episode's
start state: the rig restarts the seed's episode (as ``~/restart`` does) and the instruction
names the goal again. The experts plan once and track the plan by inverse kinematics warm
started from their own previous solution, so even one physics step of settling before the
plan changes their joint trajectories by tenths of a radian; from the same start they send
the same commands as on the direct path. Then one command per control step
for the expert's ``episode_steps``, and the outcome (the direct path's rule: solved at any
step, for the base without touching a box). Between runs the teleoperator keeps streaming a
hold, as a leader arm does: the last command, or the start pose after a reset, so the command
a recording holds at any tick is the current one.
"""

from __future__ import annotations

import numpy as np

from ..control.command_mapping import CommandMapper, OutputCommand
from ..control.safety import SafetyLimiter
from ..observation import ObservationAssembler
from .errors import SimConfigError
from .rig import SimRig

#: Simulated time from the instruction to the expert's first command, at least, s.
LEAD_IN_S = 0.1


class ExpertTeleop:
    """Runs the rig's task expert on request and says what to send each control step."""

    def __init__(self, rig: SimRig, lead_in_s: float = LEAD_IN_S):
        from .experts import ACTION_NAMES

        if rig.arms is not None and list(rig.embodiment.action_names) != list(ACTION_NAMES):
            raise SimConfigError(f"the scripted experts command the 14 ALOHA joints {list(ACTION_NAMES)}; "
                                 f"{rig.embodiment.name} acts on {rig.embodiment.action_names}")
        self.rig = rig
        self.embodiment = rig.embodiment
        self.lead_in_s = float(lead_in_s)
        self._limiter = SafetyLimiter(self.embodiment)
        self._mapper = CommandMapper(self.embodiment)
        self._assembler = ObservationAssembler(self.embodiment)
        self._base_groups = [g.name for g in self.embodiment.action_groups if g.kind == "base_waypoints"]
        self.expert = None
        self._steps_done = 0
        self._solved = False
        self._start_at_s: float | None = None
        self._instruction = ""
        self._finished: bool | None = None
        self._last: np.ndarray | None = None
        self.reset()

    # -- episode control (called by the bridge's callbacks) ------------------------------------
    def reset(self) -> None:
        """The rig started a new episode: stop any run and hold the start pose."""
        self.stop()
        self._last = self._measured_state() if self.rig.arms is not None else None

    def request(self, instruction: str, now_s: float) -> None:
        """``instruction`` arrived at ``now_s`` (sim time, s): run the expert from the first
        camera frame at least ``lead_in_s`` later (a running one starts over)."""
        self.expert = None
        self._instruction = instruction
        self._start_at_s = now_s + self.lead_in_s

    def stop(self) -> None:
        """End a requested or running expert run without an outcome; keep holding."""
        self.expert = None
        self._start_at_s = None

    @property
    def running(self) -> bool:
        return self.expert is not None

    @property
    def last_action(self) -> np.ndarray | None:
        """The arms' last command (rig units), held between runs; None for a base."""
        return None if self._last is None else self._last.copy()

    def take_finished(self) -> bool | None:
        """The outcome of a run that has just finished (solved or not), once; else None."""
        outcome, self._finished = self._finished, None
        return outcome

    # -- every control step, after the rig stepped -----------------------------------------------
    def tick(self, now_s: float, frame: bool) -> list[OutputCommand]:
        """The commands for the next control period. ``frame``: the cameras were rendered at
        this step (a run starts only on one)."""
        if self.expert is not None:
            self._judge_last_step()
        if self._start_at_s is not None and frame and now_s >= self._start_at_s - 1e-9:
            self._begin()
        if self.expert is None:
            return self._hold()
        self._steps_done += 1
        if self.rig.world is not None:
            return self._mapper.map(np.zeros(self.embodiment.action_dim),
                                    {g: self.expert.velocity() for g in self._base_groups})
        action, _ = self._limiter.filter(self.expert.action(), self._last, self.embodiment.dt)
        self._last = action
        return self._mapper.map(action)

    def _begin(self) -> None:
        from .experts import DriveToColorExpert, expert_for

        self._start_at_s = None
        self.rig.reset(seed=self.rig.episode_seed)  # from the episode's start state
        self.rig.set_instruction(self._instruction)
        if self.rig.world is not None:
            if self.rig.task != DriveToColorExpert.task:
                raise ValueError(f"no scripted expert for the navigation task {self.rig.task!r}")
            expert = DriveToColorExpert()
            expert.reset(self.rig.world)
        else:
            expert = expert_for(self.rig.task)
            expert.reset(self.rig.arms)
            self._last = self._measured_state()  # the limiter's previous command, as at a reset
        self.expert, self._steps_done, self._solved = expert, 0, False

    def _judge_last_step(self) -> None:
        """After the step that applied command k: solved yet? Finished after the last one."""
        self._solved = self._solved or self.rig.success()
        if self._steps_done >= self.expert.episode_steps:
            collided = self.rig.world is not None and self.rig.world.collided
            self._finished = self._solved and not collided
            self.expert = None

    def _hold(self) -> list[OutputCommand]:
        if self.rig.world is not None:
            return self._mapper.map(np.zeros(self.embodiment.action_dim), {g: (0.0, 0.0) for g in self._base_groups})
        return self._mapper.map(self._last)

    def _measured_state(self) -> np.ndarray:
        """The embodiment's state vector now (rig units: rad, normalised gripper opening)."""
        now = self.rig.sim_time_ns * 1e-9
        for source in self.embodiment.state_sources:
            names, positions, _ = self.rig.joint_state(source.name)
            self._assembler.add_joint_values(source.name, dict(zip(names, positions, strict=True)), now, now)
        return self._assembler.state_vector()

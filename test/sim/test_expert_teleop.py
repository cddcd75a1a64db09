"""The expert teleoperator of the sim bridge (no ROS): when it starts, what it sends, its outcome."""

from __future__ import annotations

import numpy as np
import pytest

from qwen_vla_ros.embodiment import load_embodiment
from qwen_vla_ros.sim.aloha_tasks import CUBE_COLORS, sample_pick_color
from qwen_vla_ros.sim.expert_teleop import LEAD_IN_S, ExpertTeleop
from qwen_vla_ros.sim.experts import DriveToColorExpert, expert_for
from qwen_vla_ros.sim.rig import SimRig

pytestmark = pytest.mark.usefixtures("gl_available")
SMALL_FRAME = (48, 64)


def _direct_actions(embodiment, seed: int, goal: str) -> np.ndarray:
    """What the direct path of `collect` applies on this seed, with ``goal`` named."""
    from qwen_vla_ros.training.sim_env import AlohaSimEnv

    env = AlohaSimEnv(embodiment, "pick_color", "", render_size=SMALL_FRAME)
    try:
        env.reset(seed)
        env.sim.set_goal(goal)
        expert = expert_for("pick_color")
        expert.reset(env.sim)
        return np.stack([env.step(expert.action()).applied for _ in range(expert.episode_steps)])
    finally:
        env.close()


class _Loop:
    """The sim bridge's loop without ROS: step, then the teleoperator's commands go to the rig."""

    def __init__(self, rig: SimRig, frames_every: int):
        self.rig, self.frames_every, self.step = rig, frames_every, 0
        self.teleop = ExpertTeleop(rig)

    def tick(self, deliver: bool = True):
        """One control step; ``deliver=False``: the commands never reach the controllers."""
        self.rig.step(self.rig.embodiment.dt)
        self.step += 1
        commands = self.teleop.tick(self.rig.sim_time_ns * 1e-9, frame=self.step % self.frames_every == 0)
        for command in commands if deliver else ():
            self.rig.apply(command.topic, list(command.values))
        return commands, self.teleop.take_finished()


def test_an_instruction_runs_the_expert_from_the_episode_start_on_a_frame_and_reports_its_outcome():
    embodiment = load_embodiment("aloha_sim")
    seed = 10
    other = next(c for c in CUBE_COLORS if c != sample_pick_color(seed)[1])
    rig = SimRig(embodiment, task="pick_color", seed=seed, render_size=SMALL_FRAME)
    try:
        loop = _Loop(rig, frames_every=5)  # 10 Hz frames at 50 Hz control
        home = [list(c.values) for c in loop.tick()[0]]
        for _ in range(7):  # idle: the start pose is held, as a leader arm streams it
            assert [list(c.values) for c in loop.tick()[0]] == home
        asked_at = rig.sim_time_ns * 1e-9
        loop.teleop.request(f"pick up the {other} cube", asked_at)
        while not loop.teleop.running:
            loop.tick()
        started_at = rig.sim_time_ns * 1e-9
        assert loop.step % 5 == 0 and LEAD_IN_S <= started_at - asked_at < LEAD_IN_S + 0.1 + 1e-9
        sent, outcome = [loop.teleop.last_action], None
        while outcome is None:
            _, outcome = loop.tick()
            if loop.teleop.running:
                sent.append(loop.teleop.last_action)
        # the same commands as the direct path (restarted from the seed's start state, the
        # named cube), and the outcome scored against the named cube, reported once
        assert np.array_equal(np.stack(sent), _direct_actions(embodiment, seed, other))
        assert outcome is True and rig.goal == other
        last = [list(c.values) for c in loop.tick()[0]]
        assert loop.teleop.take_finished() is None and last != home  # holds where it ended
        rig.reset()
        loop.teleop.reset()
        assert [list(c.values) for c in loop.tick()[0]] == home
    finally:
        rig.close()


def test_the_base_drives_to_the_named_box_and_stops_between_runs_and_a_run_that_does_not_fails():
    embodiment = load_embodiment("mobile_base")
    rig = SimRig(embodiment, task="drive_to_color", seed=20, render_size=SMALL_FRAME)
    try:
        loop = _Loop(rig, frames_every=1)
        (idle,), _ = loop.tick()
        assert idle.topic == "/cmd_vel" and list(idle.values) == [0.0, 0.0]
        loop.teleop.request(f"drive to the {rig.goal} box", rig.sim_time_ns * 1e-9)
        outcomes, moving = [], 0
        for _ in range(DriveToColorExpert.episode_steps + 5):
            (command,), outcome = loop.tick()
            moving += command.values[0] > 0.0
            outcomes += [] if outcome is None else [outcome]
        assert outcomes == [True] and moving > 10 and rig.success()
        assert list(loop.tick()[0][0].values) == [0.0, 0.0]
        rig.reset()  # the next seed; this time the commands are lost on the way
        loop.teleop.reset()
        loop.teleop.request(f"drive to the {rig.goal} box", rig.sim_time_ns * 1e-9)
        outcomes = [o for _ in range(DriveToColorExpert.episode_steps + 5) if (o := loop.tick(deliver=False)[1]) is not None]
        assert outcomes == [False]
    finally:
        rig.close()

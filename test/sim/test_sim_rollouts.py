"""In-process rollouts (`sim_rollouts`): the expert-key-pose ablation gives the decoder the
scripted expert's key poses in order, through the same latch the inference node uses."""

from __future__ import annotations

import numpy as np
import pytest

from qwen_vla_ros.embodiment import load_embodiment
from qwen_vla_ros.sim.aloha_tasks import cube_body
from qwen_vla_ros.sim_rollouts import aloha_rollouts, expert_key_poses_of
from qwen_vla_ros.types import ActionChunk

pytestmark = pytest.mark.usefixtures("gl_available")


class _HoldsStill:
    """A policy double that holds the arms where they are and remembers the key poses it was given."""

    def __init__(self):
        self.key_poses = []

    def predict_chunk(self, observation, embodiment, seed=0, key_pose=None):
        self.key_poses.append(None if key_pose is None else np.array(key_pose))
        actions = np.repeat(observation.state[None], embodiment.chunk_horizon, axis=0)
        return ActionChunk(actions=actions, names=list(embodiment.action_names), dt=embodiment.dt,
                           key_pose=np.zeros(embodiment.action_dim))


def test_expert_key_poses_are_its_grasp_at_the_named_cube_then_its_last_pose():
    from qwen_vla_ros.sim.arm_ik import ArmIK
    from qwen_vla_ros.training.sim_env import AlohaSimEnv

    embodiment = load_embodiment("aloha_sim")
    env = AlohaSimEnv(embodiment, "pick_color", "", render_size=(48, 64))
    try:
        env.reset(10)
        cube = env.sim.object_poses()[cube_body(env.sim.goal)][:3]
        poses = expert_key_poses_of(env, "pick_color")
        side = "right" if cube[0] >= 0 else "left"
        tcp, _ = ArmIK(env.sim.model, side).tcp_pose(poses[0][embodiment.group_slices[f"{side}_arm"]])
    finally:
        env.close()
    assert poses.shape == (2, embodiment.action_dim)
    assert poses[0][embodiment.group_slices[f"{side}_gripper"]][0] < 0.1  # closed on the cube
    assert np.linalg.norm(tcp - cube) < 0.02  # m: the grasp is at the cube
    assert np.linalg.norm(poses[1] - poses[0]) > 0.1  # then the lift


def test_the_ablation_gives_the_decoder_the_experts_key_poses_not_the_heads():
    from qwen_vla_ros.training.sim_env import AlohaSimEnv

    policy = _HoldsStill()
    aloha_rollouts(policy, "pick_color", [10], episode_steps=60, expert_key_poses=True, key_frame_grasp=False)
    env = AlohaSimEnv(load_embodiment("aloha_sim"), "pick_color", "", render_size=(48, 64))
    try:
        env.reset(10)
        grasp = expert_key_poses_of(env, "pick_color")[0]
    finally:
        env.close()
    # the arm never reaches the grasp (it holds still), so the first key pose stays latched
    assert len(policy.key_poses) == 3  # chunks of 25 steps over 60
    for given in policy.key_poses:
        np.testing.assert_allclose(given, grasp)


def test_the_key_frame_grasp_closes_on_the_named_cube_before_the_policy_acts():
    """The expert's key pose executed by KeyFrameGrasp: a finger ends on the named cube, no other
    cube is touched, and the policy (holding still) is first asked at the close's end."""
    from qwen_vla_ros.control.key_frame_grasp import APPROACH_STEPS, CLOSE_STEPS

    policy = _HoldsStill()
    steps = APPROACH_STEPS + CLOSE_STEPS + 10
    [result] = aloha_rollouts(policy, "pick_color", [10], episode_steps=steps, expert_key_poses=True,
                              key_frame_grasp=True)
    assert len(policy.key_poses) == 1 and policy.key_poses[0] is None  # one chunk, after the grasp, no latch
    assert result.best_reward >= 1 and not result.wrong_object

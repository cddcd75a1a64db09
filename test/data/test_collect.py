"""`qwen-vla collect`: scripted expert episodes written as LeRobot v3.0 datasets the trainer reads."""

from __future__ import annotations

import numpy as np
import pytest

from qwen_vla_ros.data.chunks import integrate_steps
from qwen_vla_ros.data.dataset import LeRobotV3Dataset
from qwen_vla_ros.demonstrations import EVAL_SEED_START, collect, instruction_for, task_goal
from qwen_vla_ros.embodiment import load_embodiment
from qwen_vla_ros.sim.base_scene import BASE_RADIUS_M, sample_box_layout


@pytest.fixture(scope="module")
def gl_available() -> str:
    from qwen_vla_ros.sim import GL_BACKEND, gl_backend

    if GL_BACKEND is None:
        pytest.skip(f"no offscreen OpenGL backend for MuJoCo: {gl_backend.BACKEND_REASON}")
    return GL_BACKEND


def test_pick_color_episodes_carry_their_instruction_and_the_applied_commands(tmp_path, gl_available):
    report = collect("pick_color", tmp_path / "pc", 2, first_seed=10)
    assert (report.written, report.failed_seeds, report.frames) == (2, [], 600)
    embodiment = load_embodiment("aloha_sim")
    dataset = LeRobotV3Dataset(tmp_path / "pc", embodiment)
    assert len(dataset) == 600
    for episode, seed in ((0, 10), (1, 11)):
        first = dataset[episode * 300]
        assert first["instruction"] == instruction_for("pick_color", task_goal("pick_color", seed), seed)
        assert task_goal("pick_color", seed) in first["instruction"]
        assert {c: tuple(v.shape) for c, v in first["images"].items()} == {
            c.name: (*c.image_size, 3) for c in embodiment.cameras}
    # the arms move: the actions differ from the start pose, and stay inside the rig's limits
    actions = np.stack([dataset[i]["action"][0].numpy() for i in range(0, 300, 10)])
    assert np.ptp(actions, axis=0).max() > 0.3
    model_min = embodiment.actions_to_model(embodiment.position_min)
    model_max = embodiment.actions_to_model(embodiment.position_max)
    assert np.all(actions >= np.minimum(model_min, model_max) - 1e-6)
    assert np.all(actions <= np.maximum(model_min, model_max) + 1e-6)


def test_stored_frames_are_the_frames_the_policy_sees_in_the_simulator(tmp_path, gl_available):
    """Training images must match what a closed-loop episode shows the model: a 2-3 px cube's
    colour survives storage (lossy 4:2:0 video smeared it into its neighbours)."""
    from qwen_vla_ros.training.sim_env import AlohaSimEnv

    collect("pick_color", tmp_path / "pc", 1, first_seed=3)
    embodiment = load_embodiment("aloha_sim")
    stored = LeRobotV3Dataset(tmp_path / "pc", embodiment)[0]["images"]
    env = AlohaSimEnv(embodiment, "pick_color", "")
    try:
        env.reset(3)
        rendered = env.observe().images
    finally:
        env.close()
    for camera, frame in rendered.items():
        difference = np.abs(np.asarray(stored[camera], dtype=int) - frame.astype(int))
        assert difference.max() <= 2, (camera, difference.max(), difference.mean())


def test_drive_to_color_actions_integrate_to_the_named_box(tmp_path, gl_available):
    report = collect("drive_to_color", tmp_path / "nav", 2, first_seed=20)
    assert report.written == 2
    dataset = LeRobotV3Dataset(tmp_path / "nav", load_embodiment("mobile_base"))
    for episode, seed in ((0, 20), (1, 21)):
        start, end = dataset.episode_row_range(episode)
        steps = np.stack([dataset._action[row] for row in range(start, end)])
        x, y, _ = integrate_steps(steps)[-1]
        centres, goal = sample_box_layout(seed)
        cx, cy = centres[("red", "blue", "yellow").index(goal)]
        assert goal in dataset[start]["instruction"]
        # the base ends beside the named box: centre distance <= half size + radius + margin
        assert np.hypot(x - cx, y - cy) < 0.3 * np.sqrt(2) + BASE_RADIUS_M + 0.25


def test_collect_refuses_evaluation_seeds(tmp_path):
    with pytest.raises(ValueError, match="evaluation"):
        collect("pick_color", tmp_path / "x", 5, first_seed=EVAL_SEED_START - 2)


def test_perturbed_demonstrations_visit_other_states_and_record_the_experts_clean_commands(gl_available):
    """DART: the arms are pushed off the expert's path, the recorded action is still the path."""
    from qwen_vla_ros.demonstrations import ArmPerturbation, _aloha_episode
    from qwen_vla_ros.training.sim_env import AlohaSimEnv

    embodiment = load_embodiment("aloha_sim")
    env = AlohaSimEnv(embodiment, "pick_color", "")
    try:
        clean, _ = _aloha_episode(env, "pick_color", 12, camera_rate_hz=10.0)
        pushed, _ = _aloha_episode(env, "pick_color", 12, camera_rate_hz=10.0, perturbation_rad=0.05)
    finally:
        env.close()
    arms = np.r_[embodiment.group_slices["left_arm"], embodiment.group_slices["right_arm"]]
    grippers = [embodiment.group_slices["left_gripper"].start, embodiment.group_slices["right_gripper"].start]
    # the expert's commands come from its plan, not from where the arm is: the same either way
    np.testing.assert_allclose(pushed.action, clean.action, atol=1e-6)
    state_offset = np.abs(pushed.state[:, arms] - clean.state[:, arms])
    assert 0.01 < state_offset.mean() < 0.1, state_offset.mean()  # off the path by about the offsets
    assert not np.array_equal(pushed.images["cam_high"], clean.images["cam_high"])  # seen off the path too

    offsets = ArmPerturbation(embodiment, 0.05, seed=0)
    samples = np.stack([offsets.sample() for _ in range(5000)])
    assert np.all(samples[:, grippers] == 0.0)
    assert 0.035 < samples[:, arms].std() < 0.065  # the stationary standard deviation, rad
    lag = int(0.4 / embodiment.dt)  # correlated over the time constant (0.4 s): smooth, not jitter
    assert np.corrcoef(samples[:-lag, 0], samples[lag:, 0])[0, 1] > 0.2


class _RaisesTheRightShoulder:
    """A policy double: every chunk moves the right shoulder from where it is, -0.005 rad a
    step, everything else held (the takeover must start from where this leaves the arm)."""

    def __init__(self):
        self.chunks = 0

    def predict_chunk(self, observation, embodiment, seed=0, key_pose=None):
        from qwen_vla_ros.types import ActionChunk

        self.chunks += 1
        shoulder = embodiment.group_slices["right_arm"].start + 1
        actions = np.repeat(observation.state[None], embodiment.chunk_horizon, axis=0)
        actions[:, shoulder] -= 0.005 * np.arange(1, embodiment.chunk_horizon + 1)
        return ActionChunk(actions=actions, names=list(embodiment.action_names), dt=embodiment.dt)


def test_takeover_records_the_expert_finishing_from_where_the_policy_left_the_arm(tmp_path, gl_available):
    """DAgger-style recovery data: the policy acts first, then the expert replans from the
    measured state; only the expert's part is written, and it starts without a jump."""
    from qwen_vla_ros.demonstrations import PolicyTakeover

    embodiment = load_embodiment("aloha_sim")
    policy = _RaisesTheRightShoulder()
    takeover = PolicyTakeover(policy, embodiment, steps=(40, 40))
    report = collect("pick_color", tmp_path / "to", 1, first_seed=10, takeover=takeover)
    plain = collect("pick_color", tmp_path / "plain", 1, first_seed=10)
    assert (report.written, plain.written, takeover.taken_at) == (1, 1, [40])
    assert policy.chunks == 2  # 40 steps of 25-step chunks
    taken, expert = (LeRobotV3Dataset(tmp_path / name, embodiment) for name in ("to", "plain"))
    (taken_state, taken_action), (plain_state, _) = taken.episode_rows(0), expert.episode_rows(0)
    shoulder = embodiment.group_slices["right_arm"].start + 1
    moved = plain_state[0, shoulder] - taken_state[0, shoulder]
    assert 0.1 < moved < 0.2, moved  # the policy's 40 steps of -0.005 rad, as far as the arm followed
    arms = np.r_[embodiment.group_slices["left_arm"], embodiment.group_slices["right_arm"]]
    jump = np.abs(taken_action[0, arms] - taken_state[0, arms]).max()
    assert jump < 0.02, jump  # the expert continues from the measured state
    assert taken[0]["instruction"] == instruction_for("pick_color", task_goal("pick_color", 10), 10)

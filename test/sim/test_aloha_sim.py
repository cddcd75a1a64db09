"""AlohaSim: loading, commands, Interbotix joint states, rendering, resets, gym-aloha parity."""

from __future__ import annotations

import numpy as np
import pytest

from qwen_vla_ros.embodiment import load_embodiment
from qwen_vla_ros.sim import (
    INTERBOTIX_JOINT_STATE_NAMES,
    START_ARM_POSE,
    AlohaSim,
    SimCamera,
    SimConfigError,
    SimInputError,
)

CONTROL_DT = 0.02
TARGET = np.array([0.3, -0.6, 0.9, 0.2, -0.1, 0.4])


def run(sim: AlohaSim, seconds: float) -> None:
    for _ in range(round(seconds / CONTROL_DT)):
        sim.step(CONTROL_DT)


def test_loads_both_tasks_at_the_start_pose():
    for task, n_objects in (("transfer_cube", 1), ("insertion", 2)):
        sim = AlohaSim(task, cameras={})
        for side in ("left", "right"):
            _, positions, velocities = sim.joint_states(side)
            np.testing.assert_allclose(positions[:6], START_ARM_POSE, atol=1e-9)
            assert np.all(velocities == 0)
        assert sim.env_state().shape == (7 * n_objects,)
        assert sim.reward() == 0 and not sim.success()


def test_unknown_task_and_camera_are_rejected():
    with pytest.raises(SimConfigError, match="unknown ALOHA task"):
        AlohaSim("stack_blocks", cameras={})
    with pytest.raises(SimConfigError, match="no camera 'ceiling'"):
        AlohaSim(cameras={"cam_high": ("ceiling", 224, 224)})


def test_arm_targets_move_joints_toward_them(sim):
    _, before, _ = sim.joint_states("right")
    sim.set_arm_targets("right", TARGET)
    run(sim, 0.1)
    _, early, velocities = sim.joint_states("right")
    run(sim, 1.0)
    _, late, _ = sim.joint_states("right")
    err_before = np.abs(before[:6] - TARGET)
    err_late = np.abs(late[:6] - TARGET)
    assert np.all(np.abs(early[:6] - TARGET) < err_before + 1e-9)
    assert np.abs(velocities[:6]).max() > 0.1  # moving, in rad/s
    # The stiff joints settle within 0.02 rad; the softly sprung wrist within 0.1 rad.
    assert np.all(err_late[:3] < 0.02) and np.all(err_late < 0.1)
    # The other arm was not commanded and stays near the start pose.
    _, left, _ = sim.joint_states("left")
    np.testing.assert_allclose(left[:6], START_ARM_POSE, atol=0.05)


def test_joint_states_follow_interbotix_naming(sim):
    names, positions, velocities = sim.joint_states("left")
    assert names == INTERBOTIX_JOINT_STATE_NAMES
    assert names[:7] == ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle",
                         "wrist_rotate", "gripper")
    assert positions.shape == velocities.shape == (9,)
    finger = dict(zip(names, positions, strict=True))
    assert finger["right_finger"] == pytest.approx(-finger["left_finger"], abs=2e-3)


@pytest.mark.parametrize("side", ["left", "right"])
def test_gripper_command_round_trip_through_embodiment_conventions(sim, side):
    embodiment = load_embodiment("aloha_sim")
    group = embodiment.group(f"{side}_gripper")
    names = INTERBOTIX_JOINT_STATE_NAMES
    readings = {}
    for label, opening in (("open", 1.0), ("closed", 0.0)):
        command = embodiment.gripper_normalised_to_command(group, opening)
        sim.set_gripper_target(side, command)
        run(sim, 0.8)
        _, positions, _ = sim.joint_states(side)
        finger = positions[names.index("left_finger")]
        readings[label] = embodiment.gripper_state_to_normalised(group, finger)
        # The reported gripper joint is the command that would hold this opening.
        gripper_joint = positions[names.index("gripper")]
        assert gripper_joint == pytest.approx(
            embodiment.gripper_normalised_to_command(group, readings[label]), abs=1e-9)
    # The sim's fingers stop at 0.021 / 0.057 m: normalised 0.066 / 0.975.
    assert 0.9 < readings["open"] <= 1.0
    assert 0.0 <= readings["closed"] < 0.15


def test_bad_commands_raise_clear_errors(sim):
    with pytest.raises(SimInputError, match="side"):
        sim.set_arm_targets("middle", TARGET)
    with pytest.raises(SimInputError, match="6 finite"):
        sim.set_arm_targets("left", TARGET[:5])
    with pytest.raises(SimInputError, match="6 finite"):
        sim.set_arm_targets("left", [np.nan, 0, 0, 0, 0, 0])
    with pytest.raises(SimInputError, match="shoulder"):
        sim.set_arm_targets("left", [0, -2.5, 0, 0, 0, 0])
    with pytest.raises(SimInputError, match="gripper command"):
        sim.set_gripper_target("left", 2.5)
    with pytest.raises(SimInputError, match="positive"):
        sim.step(0.0)
    np.testing.assert_allclose(sim.arm_targets("left"), START_ARM_POSE)


def test_sim_time_is_exact_and_survives_resets(sim):
    start_ns = sim.sim_time_ns
    for _ in range(7):
        sim.step(0.003)  # not a multiple of the 2 ms substep: the remainder carries over
    assert sim.sim_time_ns - start_ns == 21_000_000
    assert sim.episode_time == pytest.approx(0.020, abs=1e-9)
    sim.reset(seed=1)
    assert sim.sim_time_ns - start_ns == 21_000_000  # /clock never jumps back
    assert sim.episode_time == 0.0


def test_reset_with_seed_is_reproducible(sim):
    def rollout(seed: int) -> tuple[np.ndarray, np.ndarray]:
        sim.reset(seed=seed)
        objects = sim.env_state()
        sim.set_arm_targets("left", TARGET)
        sim.set_gripper_opening("left", 1.0)
        run(sim, 0.2)
        return objects, sim.joint_states("left")[1]

    objects_a, joints_a = rollout(5)
    objects_b, joints_b = rollout(5)
    objects_c, _ = rollout(6)
    np.testing.assert_array_equal(objects_a, objects_b)
    np.testing.assert_array_equal(joints_a, joints_b)
    assert not np.allclose(objects_a, objects_c)


def test_unseeded_resets_follow_the_constructor_seed():
    first, second = (AlohaSim(cameras={}, seed=11) for _ in range(2))
    for _ in range(2):
        first.reset()
        second.reset()
        np.testing.assert_array_equal(first.env_state(), second.env_state())


def test_instability_is_reported_and_the_episode_restarts(sim, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MuJoCo appends its warnings to ./MUJOCO_LOG.TXT
    sim.set_arm_targets("left", TARGET)
    run(sim, 0.1)
    sim._data.qvel[:] = 1e12  # no public way to break physics: poke the state directly
    sim.step(CONTROL_DT)
    assert sim.last_warning is not None and "unstable" in sim.last_warning
    assert sim.instability_count >= 1
    _, positions, _ = sim.joint_states("left")
    np.testing.assert_allclose(positions[:6], START_ARM_POSE, atol=1e-6)
    sim.reset(seed=0)
    assert sim.last_warning is None


def test_render_gives_rgb_images_of_the_configured_size(sim, gl_available):
    for name, (height, width) in (("cam_high", (64, 80)), ("cam_left_wrist", (48, 48))):
        image = sim.render(name)
        assert image.shape == (height, width, 3) and image.dtype == np.uint8
        assert image.std() > 5.0  # a real scene, not a constant frame
    with pytest.raises(SimConfigError, match="configured cameras"):
        sim.render("cam_low")


def test_render_shows_the_arm_moving(sim, gl_available):
    before = sim.render("cam_high").astype(int)
    sim.set_arm_targets("left", [0.6, -0.3, 0.5, 0.0, 0.5, 0.0])
    run(sim, 0.6)
    after = sim.render("cam_high").astype(int)
    assert np.abs(after - before).mean() > 1.0


def test_from_embodiment_takes_cameras_and_sizes():
    embodiment = load_embodiment("aloha_sim")
    sim = AlohaSim.from_embodiment(embodiment)
    assert sim.camera_names == embodiment.camera_names
    assert sim.camera("cam_high").mujoco_camera == "top"
    wrist = next(c for c in embodiment.cameras if c.name == "cam_left_wrist")
    assert (sim.camera("cam_left_wrist").height, sim.camera("cam_left_wrist").width) == tuple(wrist.image_size)


def test_matches_gym_aloha_trajectory(gl_available):
    """Same seed and actions as gym-aloha's AlohaEnv give the same agent_pos (its convention)."""
    gym = pytest.importorskip("gymnasium")
    import gym_aloha  # noqa: F401  (registers the env ids)

    env = gym.make("gym_aloha/AlohaTransferCube-v0", obs_type="pixels_agent_pos")
    obs, _ = env.reset(seed=3)
    sim = AlohaSim("transfer_cube", cameras={}, seed=0)
    sim.reset(seed=3)
    start = obs["agent_pos"].copy()
    direction = np.array([0.5, 0.3, -0.3, 0.2, 0.4, 0.3, 0, -0.4, 0.3, -0.2, 0.1, 0.2, -0.3, 0])
    embodiment = load_embodiment("aloha_sim")
    for k in range(8):
        action = start + 0.03 * k * direction
        action[6] = action[13] = 0.5 + 0.5 * np.sin(k / 3)
        obs, *_ = env.step(action)
        for side, offset in (("left", 0), ("right", 7)):
            sim.set_arm_targets(side, action[offset:offset + 6])
            group = embodiment.group(f"{side}_gripper")
            command = embodiment.gripper_normalised_to_command(group, action[offset + 6])
            sim.set_gripper_target(side, command)
        sim.step(CONTROL_DT)
    ours = []
    for side in ("left", "right"):
        _, positions, _ = sim.joint_states(side)
        group = embodiment.group(f"{side}_gripper")
        ours += [*positions[:6], embodiment.gripper_state_to_normalised(group, positions[7])]
    env.close()
    np.testing.assert_allclose(ours, obs["agent_pos"], atol=1e-6)


def test_a_narrower_field_of_view_shows_the_cube_larger(gl_available):
    def cube_pixels(fovy_deg):
        sim = AlohaSim(task="transfer_cube", cameras={"cam_high": SimCamera("top", 96, 96, fovy_deg=fovy_deg)})
        try:
            sim.reset(seed=0)
            image = sim.render("cam_high").astype(int)
        finally:
            sim.close()
        return int(((image[..., 0] > 150) & (image[..., 1] < 90) & (image[..., 2] < 90)).sum())  # the red cube

    scene, zoomed = cube_pixels(None), cube_pixels(45.0)
    assert zoomed > 3 * max(scene, 1), (scene, zoomed)
    assert load_embodiment("aloha_sim").cameras[0].sim_fovy_deg == 45.0


def test_one_mujoco_camera_cannot_take_two_fields_of_view():
    cameras = {"a": SimCamera("top", 32, 32, fovy_deg=40.0), "b": SimCamera("top", 32, 32, fovy_deg=60.0)}
    with pytest.raises(SimConfigError, match="two fields of view"):
        AlohaSim(task="transfer_cube", cameras=cameras)


def test_image_point_lands_on_the_object_in_the_rendered_frame(gl_available):
    cameras = {"cam_high": SimCamera("top", 96, 128, fovy_deg=45.0)}  # 4:3, as the rig renders
    sim = AlohaSim(task="transfer_cube", cameras=cameras)
    try:
        for seed in (0, 1, 2):
            sim.reset(seed=seed)
            x, y = sim.image_point("cam_high", sim.object_poses()["box"][:3])
            assert 0.0 < x < 1.0 and 0.0 < y < 1.0
            red, green, blue = sim.render("cam_high")[int(y * 96), int(x * 128)].astype(int)
            assert red > 150 and green < 90 and blue < 90, (seed, red, green, blue)  # the red cube
    finally:
        sim.close()


def test_place_arm_puts_an_arm_at_a_pose_without_simulating(sim):
    before = sim.sim_time
    sim.place_arm("left", TARGET, 0.8)
    np.testing.assert_allclose(sim.arm_positions("left"), TARGET)
    np.testing.assert_allclose(sim.arm_targets("left"), TARGET)  # and holds it when stepped
    assert sim.gripper_opening("left") == pytest.approx(0.8, abs=1e-6)
    assert sim.sim_time == before
    with pytest.raises(SimInputError, match="outside joint limits"):
        sim.place_arm("right", [9.0, 0, 0, 0, 0, 0], 0.5)

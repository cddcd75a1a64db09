"""SimRig: an embodiment file's arms and base simulated, commanded per output topic."""

from __future__ import annotations

import numpy as np
import pytest

from qwen_vla_ros.embodiment import load_embodiment
from qwen_vla_ros.sim.rig import SimRig, command_slots


@pytest.fixture(scope="module")
def mobile_aloha_rig(gl_available):
    rig = SimRig(load_embodiment("mobile_aloha_sim"), seed=0)
    yield rig
    rig.close()


def test_slots_follow_the_state_references_of_each_output():
    slots = command_slots(load_embodiment("mobile_aloha_sim"))
    assert slots["/follower_right/arm_controller/joint_trajectory"][0] == ("right", "waist")
    assert slots["/follower_left/gripper_controller/commands"] == [("left", "gripper")]
    assert slots["/mobile_base/cmd_vel"] == [("base", "linear_x"), ("base", "angular_z")]


def test_arm_and_base_commands_move_the_simulated_robot(mobile_aloha_rig):
    rig = mobile_aloha_rig
    target = [0.3, -0.8, 1.0, 0.0, -0.2, 0.1]
    rig.apply("/follower_left/arm_controller/joint_trajectory", target)
    rig.apply("/follower_left/gripper_controller/commands", [1.6214])  # open, rad
    for _ in range(100):  # 2 s; cmd_vel is streamed, as the chunk publisher does (the base
        rig.apply("/mobile_base/cmd_vel", [0.3, 0.0])  # stops on its own without it)
        rig.step(0.02)
    names, positions, _ = rig.joint_state("left_arm")
    assert names[:6] == ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")
    np.testing.assert_allclose(positions[:6], target, atol=0.05)
    finger = positions[list(names).index("left_finger")]
    assert finger > 0.055  # rig metres: nearly fully open
    odom = rig.odometry()
    assert odom["x"] > 0.4 and abs(odom["linear_x"] - 0.3) < 1e-6
    assert rig.sim_time_ns == 2_000_000_000


def test_malformed_commands_are_refused(mobile_aloha_rig):
    with pytest.raises(ValueError, match="expected 6 finite values"):
        mobile_aloha_rig.apply("/follower_right/arm_controller/joint_trajectory", [0.0] * 5)
    with pytest.raises(ValueError, match="finite"):
        mobile_aloha_rig.apply("/mobile_base/cmd_vel", [float("nan"), 0.0])
    with pytest.raises(ValueError):  # outside the simulated joint's range
        mobile_aloha_rig.apply("/follower_right/arm_controller/joint_trajectory", [9.0, 0, 0, 0, 0, 0])


def test_navigation_world_for_a_base_alone(gl_available):
    rig = SimRig(load_embodiment("mobile_base"), task="goal_disc")
    try:
        before = rig.reward()
        for _ in range(20):
            rig.apply("/cmd_vel", [0.5, 0.0])
            rig.step(0.1)
        assert rig.reward() > before  # closer to the goal ahead
        assert rig.render("front").shape == (*rig.embodiment.cameras[0].image_size, 3)
    finally:
        rig.close()


def test_reset_to_another_task_places_objects_from_the_given_seed(gl_available):
    from qwen_vla_ros.sim import AlohaSim

    rig = SimRig(load_embodiment("aloha_sim"), render_size=(48, 64))
    reference = AlohaSim("insertion", cameras={})
    try:
        rig.reset(task="insertion", seed=5)
        reference.reset(seed=5)
        assert rig.arms.task_name == "insertion" and rig.arms.episode_seed == 5
        np.testing.assert_array_equal(rig.arms.env_state(), reference.env_state())
    finally:
        rig.close()
        reference.close()

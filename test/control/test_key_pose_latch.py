"""Key-pose latching: the decoder acts on the task's first key pose until it is reached."""

from __future__ import annotations

import numpy as np
import pytest

from qwen_vla_ros.control.key_pose_latch import KeyPoseLatch
from qwen_vla_ros.embodiment import load_embodiment


@pytest.fixture(scope="module")
def aloha():
    return load_embodiment("aloha_sim")


def test_latches_absolute_key_poses_only():
    assert KeyPoseLatch(load_embodiment("aloha_sim")).enabled
    assert KeyPoseLatch(load_embodiment("fr3_arm")).enabled
    # waypoints are in the frame of the moving base: a held one would point elsewhere
    base = KeyPoseLatch(load_embodiment("mobile_base"))
    assert not base.enabled
    base.offer(np.ones(3))
    assert base.key_pose_for(np.zeros(3)) is None
    with pytest.raises(ValueError, match="positive"):
        KeyPoseLatch(load_embodiment("aloha_sim"), reach_tolerance=0.0)


def test_the_first_prediction_is_held_until_the_arms_reach_it(aloha):
    latch = KeyPoseLatch(aloha, reach_tolerance=0.05)
    home, grasp = np.zeros(14), np.full(14, 0.4)
    assert latch.key_pose_for(home) is None  # nothing yet: the head predicts
    latch.offer(grasp)
    latch.offer(np.full(14, -0.7))  # a later, wandering prediction is not taken
    np.testing.assert_array_equal(latch.key_pose_for(home), grasp)
    near = grasp + 0.04
    near[6] = near[13] = 0.0  # grippers closed on the cube: their command is never reached
    assert latch.key_pose_for(near) is None and latch.pose is None  # reached: released
    lift = np.full(14, 0.2)
    latch.offer(lift)  # the next phase's key pose
    np.testing.assert_array_equal(latch.key_pose_for(near), lift)
    assert latch.latched == 2


def test_one_arm_short_of_the_pose_keeps_it_latched(aloha):
    latch = KeyPoseLatch(aloha, reach_tolerance=0.05)
    grasp = np.full(14, 0.4)
    latch.offer(grasp)
    state = grasp.copy()
    state[8] += 0.2  # the right shoulder still 0.2 rad away
    np.testing.assert_array_equal(latch.key_pose_for(state), grasp)
    assert latch.key_pose_for(None) is not None  # unknown state: keep the plan
    latch.reset()
    assert latch.pose is None and latch.latched == 0 and latch.key_pose_for(state) is None

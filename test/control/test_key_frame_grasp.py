"""Key-frame grasp: a key pose planned into a trajectory the rig's safety layer passes unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from qwen_vla_ros.control.key_frame_grasp import (
    APPROACH_STEPS,
    CLOSE_STEPS,
    KeyFrameGrasp,
    KeyFrameGraspUnavailable,
    supports_key_frame_grasp,
)
from qwen_vla_ros.control.safety import SafetyLimiter
from qwen_vla_ros.embodiment import load_embodiment
from qwen_vla_ros.embodiment.schema import GRIPPER_OPEN
from qwen_vla_ros.types import ActionChunk


@pytest.fixture(scope="module")
def aloha():
    return load_embodiment("aloha_sim")


def _grasp_pose(embodiment) -> np.ndarray:
    """The right arm reaching down and forward, its gripper closed; the left arm as at home."""
    key_pose = embodiment.home_position.copy()
    slices = embodiment.group_slices
    key_pose[slices["right_arm"]] += [0.3, 0.5, -0.4, 0.0, 0.6, -0.2]
    key_pose[slices["right_gripper"]] = 0.1
    return key_pose


def test_the_plan_approaches_with_open_grippers_then_closes_on_the_key_pose(aloha):
    start, key_pose = aloha.home_position.copy(), _grasp_pose(aloha)
    grasp = KeyFrameGrasp(aloha, start, key_pose)
    grippers, arms = aloha.dims_of_kind["gripper"], aloha.dims_of_kind["joint_position"]
    assert grasp.total_steps == APPROACH_STEPS + CLOSE_STEPS
    at_close = grasp.action(APPROACH_STEPS - 1)
    np.testing.assert_allclose(at_close[arms], key_pose[arms])  # arrived within the approach
    np.testing.assert_allclose(at_close[grippers], GRIPPER_OPEN)  # open at the cube
    np.testing.assert_allclose(grasp.action(grasp.total_steps - 1), key_pose)  # closed
    # grippers never close during the approach (they only open)
    approach = grasp.trajectory[:APPROACH_STEPS, grippers]
    assert np.all(np.diff(approach, axis=0) >= 0)


def test_every_planned_step_passes_the_safety_layer_unchanged(aloha):
    start = aloha.home_position.copy()
    grasp = KeyFrameGrasp(aloha, start, _grasp_pose(aloha))
    limiter = SafetyLimiter(aloha)
    previous = start
    for command in grasp.trajectory:
        limited, report = limiter.filter(command, previous, aloha.dt)
        assert not report.any(), report.describe()
        np.testing.assert_array_equal(limited, command)
        previous = command
    # played as chunks, none is refused as a jump from the command before it
    for first in range(0, grasp.total_steps, 25):
        chunk = ActionChunk(actions=grasp.actions(first, aloha.chunk_horizon), names=list(aloha.action_names),
                            dt=aloha.dt, start_time=first * aloha.dt)
        current = start if first == 0 else grasp.action(first - 1)
        assert limiter.check_chunk(chunk, current, first * aloha.dt) == []


def test_past_its_end_the_plan_holds_the_close_and_says_it_is_done(aloha):
    grasp = KeyFrameGrasp(aloha, aloha.home_position, _grasp_pose(aloha), approach_steps=10, close_steps=5)
    tail = grasp.actions(grasp.total_steps - 2, 6)
    assert tail.shape == (6, aloha.action_dim)
    np.testing.assert_array_equal(tail[1:], np.repeat(grasp.trajectory[-1:], 5, axis=0))
    assert not grasp.done(grasp.total_steps - 1) and grasp.done(grasp.total_steps)
    assert grasp.action(grasp.total_steps) is None


def test_robots_and_poses_it_cannot_grasp_with_are_refused_clearly(aloha):
    base = load_embodiment("mobile_base")
    assert supports_key_frame_grasp(aloha) and not supports_key_frame_grasp(base)
    with pytest.raises(KeyFrameGraspUnavailable, match="no arm with a gripper"):
        KeyFrameGrasp(base, np.zeros(base.action_dim), np.zeros(base.action_dim))
    with pytest.raises(KeyFrameGraspUnavailable, match="key_pose must be 14 finite values"):
        KeyFrameGrasp(aloha, aloha.home_position, np.full(14, np.nan))
    with pytest.raises(KeyFrameGraspUnavailable, match="start must be"):
        KeyFrameGrasp(aloha, np.zeros(3), aloha.home_position)
    with pytest.raises(ValueError, match=">= 1"):
        KeyFrameGrasp(aloha, aloha.home_position, aloha.home_position, approach_steps=0)

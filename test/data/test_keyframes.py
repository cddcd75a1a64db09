"""Key poses: the action at the next grasp or at the episode's end, per frame."""

from __future__ import annotations

import numpy as np
import pytest

from qwen_vla_ros.data.chunks import pose_steps
from qwen_vla_ros.data.keyframes import gripper_slices, key_pose, keyframes
from qwen_vla_ros.embodiment import load_embodiment


def _two_grasps(length: int = 100) -> np.ndarray:
    """ALOHA actions: the right gripper opens, closes at frame 40 (a ramp), opens again and
    closes at 70; the left arm and gripper never move. Arm joints count the frames."""
    actions = np.zeros((length, 14))
    actions[:, 7] = np.arange(length)  # right waist: tells the rows apart
    right = np.full(length, 1.0)
    right[:10] = np.linspace(0.1, 1.0, 10)  # opening from the 0.1 it rests at
    right[35:41] = np.linspace(1.0, 0.0, 6)  # closed (<= 0.1) from frame 40
    right[41:60] = 0.0
    right[60:66] = np.linspace(0.0, 1.0, 6)
    right[66:71] = np.linspace(1.0, 0.0, 5)  # closed again at frame 70
    right[71:] = 0.0
    actions[:, 13] = right
    actions[:, 6] = 0.1  # the left gripper rests: no travel, no grasp
    return actions


def test_keyframes_are_each_grasp_and_the_last_frame():
    aloha = load_embodiment("aloha_sim")
    assert gripper_slices(aloha) == (slice(6, 7), slice(13, 14))
    frames = keyframes(_two_grasps(), gripper_slices(aloha))
    assert frames.tolist() == [40, 70, 99]  # the gripper resting closed at frame 0 is no grasp


def test_key_pose_is_the_action_at_the_next_keyframe():
    actions = _two_grasps()
    frames = keyframes(actions, gripper_slices(load_embodiment("aloha_sim")))
    for frame, key in ((0, 40), (39, 40), (40, 40), (41, 70), (70, 70), (71, 99), (99, 99)):
        np.testing.assert_array_equal(key_pose(actions, frame, frames), actions[key])


def test_a_base_key_pose_is_where_it_stops_in_the_frame_at_the_sample():
    base = load_embodiment("mobile_base")  # base_waypoints x, y, yaw; no gripper
    assert gripper_slices(base) == ()
    yaw = np.linspace(0.0, 1.0, 31)  # turning left while driving 0.05 m per frame
    poses = np.stack([np.cumsum(0.05 * np.cos(yaw)), np.cumsum(0.05 * np.sin(yaw)), yaw], 1)
    steps = pose_steps(poses)  # (30, 3) one-step motions, as stored
    frames = keyframes(steps, ())
    assert frames.tolist() == [29]
    got = key_pose(steps, 10, frames, (slice(0, 3),))
    dx, dy = poses[30, :2] - poses[10, :2]
    c, s = np.cos(poses[10, 2]), np.sin(poses[10, 2])
    assert got == pytest.approx([c * dx + s * dy, -s * dx + c * dy, poses[30, 2] - poses[10, 2]], abs=1e-9)


def test_keyframes_refuse_an_empty_episode():
    with pytest.raises(ValueError, match="actions must be"):
        keyframes(np.zeros((0, 14)), ())

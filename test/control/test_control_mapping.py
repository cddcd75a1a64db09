"""Command mapping onto every shipped embodiment's outputs, with the Interbotix gripper constants."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from control_testkit import embodiment

from qwen_vla_ros.control import CommandMapper, CommandMappingError
from qwen_vla_ros.embodiment import Embodiment, shipped_embodiment_dir
from qwen_vla_ros.embodiment.schema import EmbodimentFile

# Interbotix aloha/constants.py: gripper joint command when closed / open, rad.
INTERBOTIX_CLOSED, INTERBOTIX_OPEN = 0.6197, 1.6214


def interbotix_command(normalised: float) -> float:
    return normalised * (INTERBOTIX_OPEN - INTERBOTIX_CLOSED) + INTERBOTIX_CLOSED


def by_topic(commands):
    return {c.topic: c for c in commands}


def aloha_vector(left_gripper: float, right_gripper: float) -> np.ndarray:
    arm_left = [0.1, -0.9, 1.1, 0.2, -0.3, 0.4]
    arm_right = [-0.1, -0.8, 1.0, -0.2, -0.2, -0.4]
    return np.array(arm_left + [left_gripper] + arm_right + [right_gripper])


def test_aloha_interbotix_fields_and_gripper_conversion():
    commands = by_topic(CommandMapper(embodiment("aloha")).map(aloha_vector(0.0, 1.0)))
    assert len(commands) == 4
    arm = commands["/follower_left/commands/joint_group"]
    assert arm.msg_type == "interbotix_xs_msgs/msg/JointGroupCommand"
    assert arm.fields == {"name": "arm", "cmd": [0.1, -0.9, 1.1, 0.2, -0.3, 0.4]}
    left = commands["/follower_left/commands/joint_single"]
    right = commands["/follower_right/commands/joint_single"]
    assert left.fields == {"name": "gripper", "cmd": pytest.approx(INTERBOTIX_CLOSED)}
    assert right.fields["cmd"] == pytest.approx(INTERBOTIX_OPEN)
    assert commands["/follower_right/commands/joint_group"].fields["cmd"][5] == -0.4


@pytest.mark.parametrize("opening", [0.0, 0.25, 0.5, 1.0])
def test_gripper_conversion_matches_the_interbotix_formula(opening):
    commands = by_topic(CommandMapper(embodiment("aloha")).map(aloha_vector(opening, opening)))
    assert commands["/follower_left/commands/joint_single"].values[0] == pytest.approx(
        interbotix_command(opening)
    )


def test_aloha_sim_joint_trajectory_and_float64_gripper():
    emb = embodiment("aloha_sim")
    commands = by_topic(CommandMapper(emb).map(aloha_vector(0.5, 0.2)))
    arm = commands["/follower_left/arm_controller/joint_trajectory"]
    assert arm.msg_type == "trajectory_msgs/msg/JointTrajectory"
    assert arm.joint_names == (
        "left_waist",
        "left_shoulder",
        "left_elbow",
        "left_forearm_roll",
        "left_wrist_angle",
        "left_wrist_rotate",
    )
    assert arm.values == (0.1, -0.9, 1.1, 0.2, -0.3, 0.4)
    assert arm.fields is None and arm.time_from_start_s == pytest.approx(0.02)
    gripper = commands["/follower_right/gripper_controller/commands"]
    assert gripper.msg_type == "std_msgs/msg/Float64MultiArray"
    assert gripper.values == pytest.approx((interbotix_command(0.2),))


def test_mobile_aloha_base_goes_out_as_a_twist():
    vector = np.concatenate([aloha_vector(0.5, 0.5), [0.3, -0.4]])
    commands = by_topic(CommandMapper(embodiment("mobile_aloha")).map(vector))
    twist = commands["/mobile_base/cmd_vel"]
    assert twist.msg_type == "geometry_msgs/msg/Twist"
    assert (twist.linear_x, twist.angular_z) == (0.3, -0.4)
    assert twist.joint_names == ("linear_x", "angular_z")


def test_fr3_default_joint_names_and_finger_gripper():
    emb = embodiment("fr3_arm")
    vector = np.concatenate([emb.home_position[:7], [0.5]])
    commands = by_topic(CommandMapper(emb).map(vector))
    arm = commands["/fr3_arm_controller/joint_trajectory"]
    assert arm.joint_names == tuple(
        f"fr3_joint{i}" for i in range(1, 8)
    )  # what the controller knows
    assert arm.values == tuple(emb.home_position[:7])
    assert commands["/gripper_controller/commands"].values == pytest.approx((0.02,))  # 0.04 m * 0.5


def test_waypoint_base_needs_the_tracker_twist(mobile_base):
    mapper = CommandMapper(mobile_base)
    with pytest.raises(CommandMappingError, match="no tracker twist"):
        mapper.map(np.zeros(3))
    (twist,) = mapper.map(np.array([1.0, 0.2, 0.1]), {"base": (0.25, -0.1)})
    assert (twist.topic, twist.linear_x, twist.angular_z) == ("/cmd_vel", 0.25, -0.1)


def test_non_finite_values_raise_or_are_left_out(aloha):
    vector = aloha_vector(0.5, 0.5)
    vector[:6] = np.nan  # a hold with no known left-arm position
    mapper = CommandMapper(aloha)
    with pytest.raises(CommandMappingError, match="non-finite"):
        mapper.map(vector)
    topics = [c.topic for c in mapper.map(vector, skip_non_finite=True)]
    assert "/follower_left/commands/joint_group" not in topics and len(topics) == 3


# -- custom outputs ----------------------------------------------------------------------------
def aloha_with_outputs(outputs: list[dict]) -> Embodiment:
    data = yaml.safe_load((shipped_embodiment_dir() / "aloha.yaml").read_text())
    data["outputs"] = outputs
    return Embodiment(EmbodimentFile.model_validate(data))


def test_placeholders_resolve_in_nested_fields():
    emb = aloha_with_outputs(
        [
            {
                "topic": "/both",
                "type": "my_msgs/msg/Arms",
                "groups": ["left_arm", "right_arm"],
                "fields": {
                    "header": {"frame": "base"},
                    "names": "$joint_names",
                    "points": [{"p": "$positions"}],
                    "first": "$position",
                },
            },
            {
                "topic": "/grippers",
                "type": "std_msgs/msg/Float64MultiArray",
                "groups": ["left_gripper", "right_gripper"],
            },
        ]
    )
    commands = by_topic(CommandMapper(emb).map(aloha_vector(1.0, 0.0)))
    both = commands["/both"].fields
    assert both["header"] == {"frame": "base"}
    joints = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")
    # The two arms share joint names, so this output prefixes them with their group.
    assert both["names"] == [
        f"{side}_arm_{joint}" for side in ("left", "right") for joint in joints
    ]
    assert both["points"][0]["p"][6] == -0.1 and both["first"] == 0.1
    grippers = commands["/grippers"]
    assert grippers.joint_names == ("left_gripper_gripper", "right_gripper_gripper")
    assert grippers.values == pytest.approx((INTERBOTIX_OPEN, INTERBOTIX_CLOSED))


def test_unknown_placeholders_and_base_placeholders_on_arms_are_refused():
    arm_only = {
        "topic": "/x",
        "type": "my_msgs/msg/X",
        "groups": ["left_arm", "left_gripper", "right_arm", "right_gripper"],
    }
    with pytest.raises(CommandMappingError, match=r"unknown placeholder\(s\) \['\$velocity'\]"):
        CommandMapper(aloha_with_outputs([{**arm_only, "fields": {"cmd": "$velocity"}}]))
    with pytest.raises(CommandMappingError, match="need one base group"):
        CommandMapper(aloha_with_outputs([{**arm_only, "fields": {"v": "$linear_x"}}]))
    with pytest.raises(CommandMappingError, match="Twist carries exactly one base group"):
        CommandMapper(aloha_with_outputs([{**arm_only, "type": "geometry_msgs/msg/Twist"}]))

"""Mobile ALOHA conversion: Odometry base state, Twist commands, and Interbotix commands
(custom types, decoded through the embodiment's ``fields`` mapping)."""

from __future__ import annotations

import numpy as np
import pytest
from mcap_ros2._dynamic import serialize_dynamic
from rclpy.serialization import serialize_message

from qwen_vla_ros.data.convert import convert_recordings, main
from qwen_vla_ros.data.images import rgb_to_image_fields
from qwen_vla_ros.data.layout import read_frames
from qwen_vla_ros.data.mcap_io import McapEpisodeWriter
from qwen_vla_ros.data.msg_definitions import message_definition, register_message_definition
from qwen_vla_ros.embodiment import load_embodiment

SMALL_MOBILE_YAML = """
extends: mobile_aloha.yaml
name: small_mobile_aloha
cameras:
  - {name: cam_high, topic: /cam_high/image_raw, image_size: [32, 32]}
"""
GROUP_COMMAND = "interbotix_xs_msgs/msg/JointGroupCommand"
SINGLE_COMMAND = "interbotix_xs_msgs/msg/JointSingleCommand"
ARM = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "left_finger"]


@pytest.fixture(scope="module")
def mobile(tmp_path_factory):
    path = tmp_path_factory.mktemp("mobile") / "small_mobile_aloha.yaml"
    path.write_text(SMALL_MOBILE_YAML)
    # The Interbotix messages are not on PyPI: teach the definitions, as a recorder would.
    register_message_definition(GROUP_COMMAND, "string name\nfloat32[] cmd\n")
    register_message_definition(SINGLE_COMMAND, "string name\nfloat32 cmd\n")
    return load_embodiment(path)


def _arm(t: float) -> list[float]:
    return [0.2 * np.sin(t + j) for j in range(6)]


def _write(path, embodiment) -> None:
    from geometry_msgs.msg import Twist
    from nav_msgs.msg import Odometry
    from sensor_msgs.msg import Image, JointState

    encode = {
        name: serialize_dynamic(name, message_definition(name))[name]
        for name in (GROUP_COMMAND, SINGLE_COMMAND)
    }
    gripper = embodiment.group("left_gripper")
    with McapEpisodeWriter(path) as writer:
        writer.start_episode("drive to the table", 0)
        for n in range(120):  # 1.2 s at 100 Hz
            t = n / 100
            ns = int(t * 1e9) + 1000
            for side in ("left", "right"):
                joints = JointState(name=ARM, position=[*_arm(t), 0.05])
                writer.write(
                    f"/follower_{side}/joint_states",
                    "sensor_msgs/msg/JointState",
                    serialize_message(joints),
                    ns,
                )
            odometry = Odometry()
            odometry.twist.twist.linear.x, odometry.twist.twist.angular.z = 0.1 * t, -0.2 * t
            writer.write(
                "/mobile_base/odom", "nav_msgs/msg/Odometry", serialize_message(odometry), ns
            )
            if n % 2 == 0:  # commands at 50 Hz
                command = {"name": "arm", "cmd": _arm(t + 0.05)}
                writer.write(
                    "/follower_left/commands/joint_group",
                    GROUP_COMMAND,
                    encode[GROUP_COMMAND](command),
                    ns,
                )
                writer.write(
                    "/follower_right/commands/joint_group",
                    GROUP_COMMAND,
                    encode[GROUP_COMMAND](command),
                    ns,
                )
                rad = embodiment.gripper_normalised_to_command(gripper, 0.25 + 0.5 * t)
                for side in ("left", "right"):
                    single = encode[SINGLE_COMMAND]({"name": "gripper", "cmd": rad})
                    writer.write(
                        f"/follower_{side}/commands/joint_single", SINGLE_COMMAND, single, ns
                    )
                decoy = encode[SINGLE_COMMAND](
                    {"name": "waist", "cmd": 9.0}
                )  # another joint: ignored
                writer.write("/follower_left/commands/joint_single", SINGLE_COMMAND, decoy, ns + 1)
                twist = Twist()
                twist.linear.x, twist.angular.z = 0.3, -0.4 * t
                writer.write(
                    "/mobile_base/cmd_vel", "geometry_msgs/msg/Twist", serialize_message(twist), ns
                )
            if n % 3 == 0:  # camera at about 33 Hz
                fields = rgb_to_image_fields(np.full((32, 32, 3), 90, np.uint8))
                writer.write(
                    "/cam_high/image_raw",
                    "sensor_msgs/msg/Image",
                    serialize_message(Image(**fields)),
                    ns,
                )
        writer.end_episode(int(1.1e9))


def test_mobile_aloha_commands_and_odometry(tmp_path, mobile):
    _write(tmp_path / "mobile.mcap", mobile)
    report = convert_recordings([tmp_path / "mobile.mcap"], tmp_path / "ds", mobile, progress=False)
    rows = read_frames(tmp_path / "ds", ["observation.state", "action"])
    state, action = rows["observation.state"], rows["action"]
    assert state.shape[1] == action.shape[1] == 16 and len(state) == report.frames > 40
    base = mobile.group_slices["base"]
    grip = mobile.group_slices["left_gripper"].start
    for k in (0, len(state) - 1):
        t_state = round(k * mobile.dt, 6)  # grid starts at the first state message (t = 0)
        t_command = 2 * np.floor(t_state * 50 + 1e-6) / 100
        assert np.allclose(state[k, base], [0.1 * t_state, -0.2 * t_state], atol=1e-6)
        assert np.allclose(action[k, base], [0.3, -0.4 * t_command], atol=1e-6)
        assert np.allclose(action[k, :6], _arm(t_command + 0.05), atol=1e-5)  # float32 cmd
        assert action[k, grip] == pytest.approx(0.25 + 0.5 * t_command, abs=1e-5)  # decoy ignored
        expected_finger = mobile.gripper_state_to_normalised(mobile.group("left_gripper"), 0.05)
        assert state[k, grip] == pytest.approx(expected_finger, abs=1e-5)
    assert report.action_sources["base"] == {"commands on /mobile_base/cmd_vel"}


def test_command_line_converts_and_reports_errors(tmp_path, mobile, capsys):
    _write(tmp_path / "mobile.mcap", mobile)
    yaml = tmp_path / "small_mobile_aloha.yaml"
    yaml.write_text(
        SMALL_MOBILE_YAML.replace("extends: mobile_aloha.yaml", "extends: mobile_aloha")
    )
    args = [str(tmp_path / "mobile.mcap"), "--embodiment", str(yaml), "--out", str(tmp_path / "ds")]
    assert main(args) == 0
    assert "1 episodes" in capsys.readouterr().out
    assert main(args) == 1  # exists already
    assert (
        main(
            [str(tmp_path / "absent.mcap"), "--embodiment", str(yaml), "--out", str(tmp_path / "x")]
        )
        == 1
    )
    assert "cannot read MCAP recording" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()

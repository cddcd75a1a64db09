"""End to end without the simulator: synthetic cameras and joint states in, the tiny model in the
inference process, commands out on Interbotix-style (message type by name + field mapping) and
ros2_control-style topics, at the control rate and inside the limits."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from node_test_helpers import wait_for
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from test_msgs.msg import UnboundedSequences
from trajectory_msgs.msg import JointTrajectory

from qwen_vla_ros.bringup import Graph, GraphConfig
from qwen_vla_ros.data.images import rgb_to_image_fields
from qwen_vla_ros.embodiment import load_embodiment
from qwen_vla_ros.ros.qos import LATCHED, RECORD_RELIABLE, SENSOR

pytestmark = [pytest.mark.ros, pytest.mark.e2e]
EMBODIMENT = str(Path(__file__).with_name("aloha_mixed_outputs.yaml"))
ARM = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper", "left_finger"]


class SyntheticRig(Node):
    def __init__(self, context, emb, namespace: str):
        super().__init__("synthetic_rig", context=context, namespace=namespace)
        self.interbotix: list[tuple[float, list[str], np.ndarray]] = []
        self.ros2_control: list[tuple[float, np.ndarray]] = []
        self.instruction = self.create_publisher(String, "instruction", LATCHED)
        rng = np.random.default_rng(0)
        frame = Image(**rgb_to_image_fields(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)))
        cams = [self.create_publisher(Image, c.topic, SENSOR) for c in emb.cameras]
        states = [self.create_publisher(JointState, s.topic, SENSOR) for s in emb.state_sources]

        def images() -> None:
            frame.header.stamp = self.get_clock().now().to_msg()
            for pub in cams:
                pub.publish(frame)

        def joints() -> None:
            msg = JointState(name=ARM, position=[0.0, -0.96, 1.16, 0.0, -0.3, 0.0, 1.1, 0.05])
            msg.header.stamp = self.get_clock().now().to_msg()
            for pub in states:
                pub.publish(msg)

        self.create_timer(1 / 15, images)  # full-size frames; fewer per second than a RealSense
        self.create_timer(1 / 50, joints)
        self.create_subscription(
            UnboundedSequences, "/follower_left/commands/joint_group",
            lambda m: self.interbotix.append((time.monotonic(), list(m.string_values), np.array(m.float32_values))),
            RECORD_RELIABLE,
        )
        self.create_subscription(
            JointTrajectory, "/follower_right/arm_controller/joint_trajectory",
            lambda m: self.ros2_control.append((time.monotonic(), np.array(m.points[0].positions))),
            RECORD_RELIABLE,
        )


def _log_tails(folder: Path, lines: int = 15) -> str:
    """The last lines of each node's log: why the graph held, when it did."""
    return "\n".join(f"--- {log.name}\n" + "\n".join(log.read_text().splitlines()[-lines:])
                     for log in sorted(folder.glob("*.log")))


def test_tiny_model_drives_interbotix_and_ros2_control_topics_within_limits(ros_context, spinner, tmp_path):
    emb = load_embodiment(EMBODIMENT)
    namespace = f"test_{uuid.uuid4().hex[:8]}"  # no latched instruction of another test reaches us
    config = GraphConfig(embodiment=EMBODIMENT, model="tiny", namespace=namespace)
    with Graph(config, log_dir=tmp_path / "logs") as graph:
        rig = SyntheticRig(ros_context, emb, f"/{namespace}")
        spinner.add(rig)
        spinner.start()
        rig.instruction.publish(String(data="fold the towel"))

        def moving() -> bool:  # commands that change: the model's chunks, not a hold
            recent = [v for _, _, v in rig.interbotix[-20:]]
            return len(recent) == 20 and np.ptp(np.stack(recent), axis=0).max() > 1e-4

        assert wait_for(moving, timeout_s=120), (graph.exited(), len(rig.interbotix), _log_tails(tmp_path / "logs"))
        start = len(rig.interbotix)
        time.sleep(2.0)
        window = rig.interbotix[start:]
        assert len(window) >= 50  # 50 Hz for 2 s, allowing for a loaded machine
        rate = (len(window) - 1) / (window[-1][0] - window[0][0])
        assert 25 < rate < 75, rate  # about the 50 Hz control rate (wall clock, loaded machine)
        assert {tuple(names) for _, names, _ in window} == {("arm",)}
        left = np.stack([v for _, _, v in window]).astype(np.float64)
        right = np.stack([v for _, v in rig.ros2_control[-len(window):]])
        for values, dims in ((left, slice(0, 6)), (right, slice(7, 13))):
            assert np.all(values >= emb.position_min[dims] - 1e-5)
            assert np.all(values <= emb.position_max[dims] + 1e-5)
            assert np.all(np.abs(np.diff(values, axis=0)) <= emb.step_limits[dims] + 1e-5)
        spinner.remove_and_destroy(rig)

"""Observation node over real DDS: conversions, freshness, bad input dropped with a reason."""

from __future__ import annotations

import numpy as np
import pytest
from node_test_helpers import wait_for
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from qwen_vla_ros.data.images import rgb_to_image_fields
from qwen_vla_ros.nodes.observation_node import ObservationNode
from qwen_vla_ros.observation import ObservationNotReady
from qwen_vla_ros.ros.qos import COMMAND, LATCHED, SENSOR

pytestmark = pytest.mark.ros
ARM = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "left_finger"]


def _image(rgb: np.ndarray, encoding: str = "rgb8") -> Image:
    msg = Image(**rgb_to_image_fields(rgb, encoding))
    return msg


@pytest.fixture()
def graph(ros_context, spinner):
    observation = ObservationNode(
        context=ros_context, parameter_overrides=[Parameter("embodiment", value="aloha_sim")]
    )
    feeder = Node("feeder", context=ros_context)
    spinner.add(observation, feeder)
    spinner.start()
    yield observation, feeder
    observation.destroy_node()
    feeder.destroy_node()


def _publish_sensors(feeder: Node, emb, image_msg: Image, finger: float = 0.0579) -> None:
    stamp = feeder.get_clock().now().to_msg()
    for cam in emb.cameras:
        pub = feeder.create_publisher(Image, cam.topic, SENSOR)
        image_msg.header.stamp = stamp
        pub.publish(image_msg)
    for src in emb.state_sources:
        pub = feeder.create_publisher(JointState, src.topic, SENSOR)
        msg = JointState(name=ARM, position=[0.0, -0.96, 1.16, 0.0, -0.3, 0.0, finger])
        msg.header.stamp = stamp
        pub.publish(msg)


def test_late_instruction_and_bgr_images_make_a_complete_observation(graph):
    observation, feeder = graph
    # published before anyone listens: transient-local delivers it anyway
    latched = feeder.create_publisher(String, "instruction", LATCHED)
    latched.publish(String(data="stack the cubes"))
    rgb = np.zeros((480, 640, 3), np.uint8)
    rgb[..., 0] = 200  # red, sent as bgr8: the node must swap channels back
    assert wait_for(lambda: observation.assembler.instruction == "stack the cubes")

    def complete() -> bool:
        _publish_sensors(feeder, observation.embodiment, _image(rgb, "bgr8"))
        try:
            observation.assembler.assemble(observation.now_s())
            return True
        except ObservationNotReady:
            return False

    assert wait_for(complete, timeout_s=10)
    obs = observation.assembler.assemble(observation.now_s())
    cam_high = next(c for c in observation.embodiment.cameras if c.name == "cam_high")
    assert obs.images["cam_high"].shape == (*cam_high.image_size, 3)  # resized to the model's size
    assert obs.images["cam_high"][..., 0].mean() == pytest.approx(200, abs=1)
    assert obs.state[6] == pytest.approx(1.0)


def test_malformed_images_are_dropped_with_a_count(graph):
    observation, feeder = graph
    bad = _image(np.zeros((48, 64, 3), np.uint8))
    bad.data = bad.data[:100]  # data shorter than height x step
    unknown = _image(np.zeros((48, 64, 3), np.uint8))
    unknown.encoding = "weird16"
    empty = Image(height=48, width=64, encoding="rgb8", step=192)
    pub = feeder.create_publisher(Image, observation.embodiment.cameras[0].topic, SENSOR)

    def dropped_three() -> bool:
        for msg in (bad, unknown, empty):
            pub.publish(msg)
        return observation.bad_messages >= 3

    assert wait_for(dropped_three, timeout_s=10)
    with pytest.raises(ObservationNotReady, match="cam_high"):
        observation.assembler.assemble(observation.now_s())


def test_nan_joint_state_is_dropped(graph):
    observation, feeder = graph
    pub = feeder.create_publisher(JointState, "/follower_left/joint_states", SENSOR)
    msg = JointState(name=ARM, position=[0.0, float("nan"), 1.16, 0.0, -0.3, 0.0, 0.05])

    def dropped() -> bool:
        pub.publish(msg)
        return observation.bad_messages >= 1

    assert wait_for(dropped)
    with pytest.raises(ObservationNotReady, match="left_arm"):
        observation.assembler.state_vector()


def test_compressed_camera_is_decoded(ros_context, spinner):
    from pathlib import Path

    from sensor_msgs.msg import CompressedImage

    from qwen_vla_ros.data.images import rgb_to_compressed

    yaml_path = str(Path(__file__).with_name("aloha_compressed_cameras.yaml"))
    observation = ObservationNode(context=ros_context, parameter_overrides=[Parameter("embodiment", value=yaml_path)])
    feeder = Node("jpeg_feeder", context=ros_context)
    spinner.add(observation, feeder)
    spinner.start()
    rgb = np.zeros((480, 640, 3), np.uint8)
    rgb[:, :, 2] = 180  # blue survives JPEG and the BGR/RGB round trip only if handled right
    fmt, data = rgb_to_compressed(rgb, "jpeg")
    pub = feeder.create_publisher(CompressedImage, observation.embodiment.cameras[0].topic, SENSOR)

    def received() -> bool:
        msg = CompressedImage(format=fmt, data=data)
        msg.header.stamp = feeder.get_clock().now().to_msg()
        pub.publish(msg)
        return "cam_high" in observation.assembler._images

    try:
        assert wait_for(received)
        image = observation.assembler._images["cam_high"].value
        assert image.shape == (224, 224, 3)
        assert image[..., 2].mean() == pytest.approx(180, abs=3) and image[..., 0].mean() < 5
    finally:
        observation.destroy_node()
        feeder.destroy_node()


def test_instructions_from_volatile_and_latched_publishers_each_arrive_once(graph):
    """`ros2 topic pub` publishes volatile; the episode monitor latched: both are heard, once."""
    observation, feeder = graph
    heard: list[str] = []
    observation.on_instruction = heard.append
    volatile = feeder.create_publisher(String, "instruction", COMMAND)
    assert wait_for(lambda: volatile.get_subscription_count() >= 1)
    volatile.publish(String(data="wipe the table"))
    assert wait_for(lambda: heard == ["wipe the table"])
    latched = feeder.create_publisher(String, "instruction", LATCHED)
    assert wait_for(lambda: latched.get_subscription_count() >= 2)  # both subscriptions match it
    latched.publish(String(data="stack the cubes"))
    assert wait_for(lambda: heard[-1:] == ["stack the cubes"])
    volatile.publish(String(data="wipe the table"))  # a different message after it: heard
    assert wait_for(lambda: heard[-1:] == ["wipe the table"])
    assert heard == ["wipe the table", "stack the cubes", "wipe the table"], heard

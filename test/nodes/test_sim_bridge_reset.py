"""A reset shows the new scene at once: the sim bridge publishes the state and every camera's
frame of the scene it just made before it replies, instead of at its next camera tick (up to
1 / camera_rate_hz later), so a policy instructed after the reply never acts on where the
objects were before it."""

from __future__ import annotations

import numpy as np
import pytest
from node_test_helpers import wait_for
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from std_srvs.srv import Trigger

from qwen_vla_ros.data.images import image_to_rgb
from qwen_vla_ros.embodiment import load_embodiment
from qwen_vla_ros.nodes.sim_bridge_node import SimBridgeNode
from qwen_vla_ros.ros.qos import CAMERA_PUBLISHER
from qwen_vla_ros.sim import GL_BACKEND

pytestmark = [pytest.mark.ros, pytest.mark.skipif(GL_BACKEND is None, reason="no offscreen OpenGL backend for MuJoCo")]


@pytest.mark.parametrize("service", ["reset", "restart"])
def test_a_reset_publishes_the_new_scene_before_it_replies(ros_context, spinner, service):
    emb = load_embodiment("aloha_sim")
    camera = emb.cameras[0]
    bridge = SimBridgeNode(context=ros_context, parameter_overrides=[
        Parameter("embodiment", value="aloha_sim"), Parameter("task", value="pick_color"),
        Parameter("camera_rate_hz", value=0.01),  # the next tick's frame comes 100 sim seconds on
    ])
    client_node = Node("reset_caller", context=ros_context)
    frames: list[np.ndarray] = []
    client_node.create_subscription(Image, camera.topic, lambda m: frames.append(
        image_to_rgb(m.height, m.width, m.encoding, m.step, m.is_bigendian, m.data)), CAMERA_PUBLISHER)
    client = client_node.create_client(Trigger, f"/sim_bridge/{service}")
    spinner.add(bridge, client_node)
    spinner.start()
    try:
        publisher = bridge.camera_pubs[camera.name]
        assert wait_for(lambda: publisher.get_subscription_count() > 0, timeout_s=30)
        assert wait_for(client.service_is_ready, timeout_s=30)
        for _ in range(2):
            before = len(frames)
            future = client.call_async(Trigger.Request())
            assert wait_for(future.done, timeout_s=60) and future.result().success
            assert wait_for(lambda before=before: len(frames) > before, timeout_s=30), "the new scene's frame did not come"
        if service == "reset":  # seed after seed: the cubes lie elsewhere in the second scene
            assert np.abs(frames[-1].astype(int) - frames[-2].astype(int)).max() > 60
    finally:
        client_node.destroy_node()
        bridge.on_shutdown()
        bridge.destroy_node()

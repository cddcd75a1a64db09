"""config/params/defaults.yaml lists exactly the parameters the nodes declare, with their defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from rclpy.parameter import Parameter

from qwen_vla_ros.nodes.chunk_publisher_node import ChunkPublisherNode
from qwen_vla_ros.nodes.inference_node import InferenceNode
from qwen_vla_ros.nodes.observation_node import ObservationNode
from qwen_vla_ros.nodes.recorder_node import RecorderNode
from qwen_vla_ros.nodes.sim_bridge_node import SimBridgeNode

pytestmark = pytest.mark.ros
DEFAULTS = yaml.safe_load((Path(__file__).resolve().parents[2] / "config/params/defaults.yaml").read_text())


def _declared(node) -> dict:
    skip = {"use_sim_time", "start_type_description_service", "embodiment"}
    return {name: p.value for name, p in node._parameters.items() if name not in skip}


def test_defaults_file_matches_every_node(ros_context, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the recorder creates its output folder
    embodiment = [Parameter("embodiment", value="aloha_sim")]
    observation = ObservationNode(context=ros_context, parameter_overrides=embodiment)
    nodes = {
        "observation_node": observation,
        "inference_node": InferenceNode(observation, context=ros_context, parameter_overrides=embodiment),
        "chunk_publisher": ChunkPublisherNode(context=ros_context, parameter_overrides=embodiment),
        "sim_bridge": SimBridgeNode(context=ros_context, parameter_overrides=embodiment),
        "recorder": RecorderNode(context=ros_context, parameter_overrides=embodiment),
    }
    try:
        assert DEFAULTS["/**"]["ros__parameters"] == {"embodiment": "aloha"}
        for name, node in nodes.items():
            assert DEFAULTS[name]["ros__parameters"] == _declared(node), name
    finally:
        for node in reversed(nodes.values()):
            if hasattr(node, "on_shutdown"):
                node.on_shutdown()
            node.destroy_node()

"""Two rigs side by side: with relative topics in the embodiment file, every hardware topic of
a node follows its namespace; /diagnostics and /clock stay global."""

from __future__ import annotations

import pytest
import yaml
from rclpy.parameter import Parameter

from qwen_vla_ros.embodiment.loader import _read_yaml, resolve_embodiment_path
from qwen_vla_ros.nodes.chunk_publisher_node import ChunkPublisherNode
from qwen_vla_ros.nodes.inference_node import InferenceNode
from qwen_vla_ros.nodes.observation_node import ObservationNode

pytestmark = pytest.mark.ros


def _relative_embodiment(tmp_path) -> str:
    """aloha_sim with every topic written relative (no leading '/')."""
    data = _read_yaml(resolve_embodiment_path("aloha_sim"))
    for section in ("cameras", "state", "outputs"):
        for item in data[section]:
            item["topic"] = item["topic"].lstrip("/")
    path = tmp_path / "aloha_sim_relative.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _topics(node) -> set[str]:
    return {s.topic_name for s in node.subscriptions} | {p.topic_name for p in node.publishers}


def test_relative_hardware_topics_follow_the_namespace(ros_context, tmp_path):
    embodiment = [Parameter("embodiment", value=_relative_embodiment(tmp_path))]
    kwargs = {"context": ros_context, "namespace": "rig2", "parameter_overrides": embodiment}
    observation = ObservationNode(**kwargs)
    nodes = [observation, InferenceNode(observation, **kwargs), ChunkPublisherNode(**kwargs)]
    try:
        topics = set().union(*(_topics(n) for n in nodes))
        emb = observation.embodiment
        hardware = [c.topic for c in emb.cameras] + [s.topic for s in emb.state_sources] + [o.topic for o in emb.outputs]
        for topic in hardware:
            assert f"/rig2/{topic}" in topics
        for topic in ("instruction", "action_chunk", "e_stop", "inference_heartbeat"):
            assert f"/rig2/{topic}" in topics
        outside = {t for t in topics if not t.startswith("/rig2/")}
        assert outside <= {"/diagnostics", "/parameter_events", "/rosout", "/clock"}, outside
    finally:
        for node in reversed(nodes):
            if hasattr(node, "on_shutdown"):
                node.on_shutdown()
            node.destroy_node()

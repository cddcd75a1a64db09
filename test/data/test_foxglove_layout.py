"""The shipped Foxglove layout shows topics the simulated graph really has, at valid indices."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from qwen_vla_ros.embodiment import load_embodiment

LAYOUT = Path(__file__).resolve().parents[2] / "config/foxglove/aloha_sim.json"
GRAPH_TOPICS = {"/action_chunk", "/e_stop", "/instruction", "/diagnostics"}  # node defaults, no namespace


def _leaves(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    return _leaves(node["first"]) + _leaves(node["second"])


def _message_paths(config: dict) -> list[str]:
    paths = [p["value"] for p in config.get("paths", [])]
    paths += [config[k] for k in ("path", "topicPath", "topicToRender") if k in config]
    if "imageMode" in config:
        paths.append(config["imageMode"]["imageTopic"])
    return paths


@pytest.fixture(scope="module")
def layout() -> dict:
    return json.loads(LAYOUT.read_text())


def test_every_panel_is_placed_and_every_placed_panel_is_configured(layout):
    placed = _leaves(layout["layout"])
    assert sorted(placed) == sorted(layout["configById"])
    kinds = {panel.split("!")[0] for panel in placed}
    assert {"Image", "Plot", "Indicator", "DiagnosticSummary", "RawMessages"} <= kinds


def test_layout_topics_and_indices_exist_in_the_simulated_graph(layout):
    embodiment = load_embodiment("aloha_sim")
    state_joints = {s.topic: len(s.joints) for s in embodiment.state_sources}
    known = GRAPH_TOPICS | set(state_joints) | {c.topic for c in embodiment.cameras}
    shown = set()
    for config in layout["configById"].values():
        for path in _message_paths(config):
            topic = re.match(r"(/[A-Za-z0-9_/]+?)(\.|$)", path).group(1)
            assert topic in known, path
            shown.add(topic)
            index = re.search(r"positions?\[(\d+)\]", path)
            if index and topic in state_joints:
                assert int(index.group(1)) < state_joints[topic], path
            elif index:
                assert topic == "/action_chunk" and int(index.group(1)) < embodiment.action_dim, path
    assert {c.topic for c in embodiment.cameras} <= shown and GRAPH_TOPICS <= shown
    assert set(state_joints) <= shown

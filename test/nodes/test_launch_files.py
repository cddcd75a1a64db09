"""Launch files against the real launch_ros (installed with ROS 2; not on PyPI, so skipped there)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

launch_ros = pytest.importorskip(
    "launch_ros", reason="launch_ros is not installed (it is not on PyPI); it runs on a ROS 2 machine"
)
from launch import LaunchContext, LaunchDescription  # noqa: E402
from launch.actions import RegisterEventHandler  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from node_test_helpers import wait_for  # noqa: E402
from rclpy.node import Node  # noqa: E402

from qwen_vla_ros.bringup import child_environment  # noqa: E402
from qwen_vla_ros.launch_description import ARGUMENTS, _nodes, _respawn_options  # noqa: E402

LAUNCH_DIR = Path(__file__).resolve().parents[2] / "launch"
EXPECTED = {
    "aloha.launch.py": ("aloha", ["inference_node", "chunk_publisher"]),
    "mobile_aloha.launch.py": ("mobile_aloha", ["inference_node", "chunk_publisher"]),
    "mobile_base.launch.py": ("mobile_base", ["inference_node", "chunk_publisher"]),
    "aloha_sim.launch.py": ("aloha_sim", ["sim_bridge", "inference_node", "chunk_publisher"]),
}


def _context_for(description: LaunchDescription, **overrides: str) -> LaunchContext:
    context = LaunchContext()
    for argument in description.get_launch_arguments():
        default = "".join(s.perform(context) for s in argument.default_value or [])
        context.launch_configurations[argument.name] = overrides.get(argument.name, default)
    return context


@pytest.mark.parametrize("filename", sorted(EXPECTED))
def test_launch_file_declares_the_bringup_arguments_and_nodes(filename):
    embodiment, executables = EXPECTED[filename]
    source = PythonLaunchDescriptionSource(str(LAUNCH_DIR / filename))
    description = source.get_launch_description(LaunchContext())
    assert [a.name for a in description.get_launch_arguments()] == list(ARGUMENTS)
    context = _context_for(description, device="cuda:1", namespace="rig2")
    assert context.launch_configurations["embodiment"] == embodiment
    actions = _nodes(context)
    nodes = [a for a in actions if isinstance(a, launch_ros.actions.Node)]
    assert [n.node_executable for n in nodes] == executables
    assert all(n.node_package == "qwen_vla_ros" for n in nodes)
    # inference respawns; an exiting chunk publisher (or sim) shuts the whole launch down
    respawning = [e for e in executables if _respawn_options(e).get("respawn")]
    assert respawning == ["inference_node"] and _respawn_options("inference_node")["respawn_delay"] > 0
    handlers = [a for a in actions if isinstance(a, RegisterEventHandler)]
    essential = [e for e in executables if e in ("chunk_publisher", "sim_bridge")]
    assert len(handlers) == len(essential)


LAUNCH_SCRIPT = """
import sys
from launch import LaunchService
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
service = LaunchService()
service.include_launch_description(IncludeLaunchDescription(PythonLaunchDescriptionSource(sys.argv[1])))
sys.exit(service.run())
"""


def test_sim_launch_starts_the_graph(ros_context, tmp_path):
    """What `ros2 launch qwen_vla_ros aloha_sim.launch.py` does: the nodes appear on the graph."""
    log = open(tmp_path / "launch.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-c", LAUNCH_SCRIPT, str(LAUNCH_DIR / "aloha_sim.launch.py")],
        stdout=log, stderr=subprocess.STDOUT, env=child_environment(),
    )
    probe = Node("launch_probe", context=ros_context)
    wanted = {"sim_bridge", "inference_node", "observation_node", "chunk_publisher"}
    try:
        assert wait_for(lambda: wanted <= set(probe.get_node_names()), timeout_s=90), (
            (tmp_path / "launch.log").read_text()[-2000:]
        )
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
        log.close()
        probe.destroy_node()
    assert process.returncode == 0

"""Episode monitor over real DDS: per-episode figures from the graph's cumulative counters."""

from __future__ import annotations

import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from node_test_helpers import wait_for
from rclpy.node import Node

from qwen_vla_ros.embodiment import load_embodiment
from qwen_vla_ros.nodes.episode_monitor import EpisodeMonitor

pytestmark = pytest.mark.ros


def test_clipped_commands_are_counted_per_episode_not_over_the_chunk_publishers_life(ros_context, spinner):
    """The chunk publisher reports clipped ticks since it started; an eval of 50 episodes on one
    graph must not credit episode 50 with the 49 before it."""
    monitor = EpisodeMonitor(load_embodiment("aloha_sim"), context=ros_context)
    source = Node("diagnostics_source", context=ros_context)
    publisher = source.create_publisher(DiagnosticArray, "/diagnostics", 10)
    spinner.add(monitor, source)
    spinner.start()

    def report(clipped: int) -> None:
        status = DiagnosticStatus(name="chunk_publisher: control", values=[KeyValue(key="clipped_ticks", value=str(clipped))])
        assert wait_for(lambda: (publisher.publish(DiagnosticArray(status=[status])), monitor._clipped_seen == clipped)[1],
                        timeout_s=10)

    report(100)  # the episodes before
    monitor.begin("pick up the red cube")
    monitor.begin("pick up the red cube")  # the first chunk arrived: the same episode goes on
    report(130)
    assert monitor.end().clipped_commands == 30
    monitor.begin("pick up the blue cube")
    report(142)
    assert monitor.end().clipped_commands == 12
    spinner.remove_and_destroy(monitor, source)

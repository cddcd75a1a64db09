"""GraphConfig: the one place that decides what each node process gets (bringup and launch)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from qwen_vla_ros.bringup import Graph, GraphConfig, RestartPolicy, parse_node_params


def test_unset_fields_are_left_to_the_params_file_and_node_defaults(tmp_path):
    params_file = tmp_path / "rig.yaml"
    params_file.write_text("/**:\n  ros__parameters: {}\n")
    config = GraphConfig(embodiment="aloha", params_file=str(params_file))
    args = config.ros_args("inference_node")
    assert args[:3] == ["--ros-args", "--params-file", str(params_file)]
    assert "model:=" not in " ".join(args) and "device:=" not in " ".join(args)
    assert "embodiment:=aloha" in args and "use_sim_time:=false" in args


def test_sim_graph_runs_on_sim_time_except_the_sim_which_is_the_clock():
    config = GraphConfig(embodiment="aloha_sim", sim=True, model="tiny", strategy="synchronous",
                         namespace="/rig2/")
    assert config.nodes() == ["sim_bridge", "inference_node", "chunk_publisher"]
    assert config.parameters("sim_bridge")["use_sim_time"] is False
    assert config.parameters("chunk_publisher") == {
        "embodiment": "aloha_sim", "use_sim_time": True, "strategy": "synchronous"
    }
    assert config.parameters("inference_node")["model"] == "tiny"
    assert config.ros_args("chunk_publisher")[-2:] == ["-r", "__ns:=/rig2"]


def test_node_params_from_the_command_line_are_typed_and_checked():
    extra = parse_node_params(["inference_node.rtc_prefix=false", "sim_bridge.camera_rate_hz=5"])
    assert extra == {"inference_node": {"rtc_prefix": False}, "sim_bridge": {"camera_rate_hz": 5}}
    config = GraphConfig(embodiment="aloha_sim", extra=extra)
    assert "rtc_prefix:=false" in config.ros_args("inference_node")
    with pytest.raises(SystemExit, match="NODE.NAME=VALUE"):
        parse_node_params(["rtc_prefix=false"])
    with pytest.raises(SystemExit, match="NODE.NAME=VALUE"):
        parse_node_params(["planner.speed=1"])


class SleepingGraph(Graph):
    """A Graph whose 'nodes' are sleeping processes: supervision without ROS."""

    def _launch(self, node: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_supervision_restarts_inference_with_back_off_and_a_limit():
    policy = RestartPolicy(first_delay_s=1.0, max_delay_s=3.0, max_restarts=2)
    assert [policy.delay_s(n) for n in range(4)] == [1.0, 2.0, 3.0, 3.0]
    graph = SleepingGraph(GraphConfig(embodiment="aloha_sim", sim=True), restart=policy).start()
    try:
        for restart in (1, 2):
            first = graph.processes["inference_node"]
            first.kill()
            first.wait()
            assert graph.supervise(now=100.0 * restart) is None  # back-off: not yet
            assert graph.processes["inference_node"] is first
            assert graph.supervise(now=100.0 * restart + policy.delay_s(restart - 1)) is None
            assert graph.processes["inference_node"] is not first and graph.restarts["inference_node"] == restart
        graph.processes["inference_node"].kill()
        graph.processes["inference_node"].wait()
        assert graph.supervise(now=1000.0) is None and graph.supervise(now=2000.0) is None
        assert graph.processes["inference_node"].poll() is not None, "no third restart"
        assert "chunk_publisher" not in graph.exited()
    finally:
        graph.stop(timeout_s=1.0)


def test_an_exiting_chunk_publisher_or_sim_stops_the_graph():
    for essential in ("chunk_publisher", "sim_bridge"):
        graph = SleepingGraph(GraphConfig(embodiment="aloha_sim", sim=True)).start()
        try:
            graph.processes[essential].kill()
            graph.processes[essential].wait()
            assert essential in graph.supervise()
        finally:
            graph.stop(timeout_s=1.0)
        assert all(p.poll() is not None for p in graph.processes.values())


def test_an_inference_that_cannot_start_is_not_restarted():
    graph = SleepingGraph(GraphConfig(embodiment="aloha_sim")).start()
    try:
        graph.processes["inference_node"].kill()
        graph.processes["inference_node"].wait()
        graph.processes["inference_node"].returncode = 2  # as run_nodes exits on a bad checkpoint
        assert "cannot start" in graph.supervise(now=0.0)
        assert graph.restarts == {}
    finally:
        graph.stop(timeout_s=1.0)

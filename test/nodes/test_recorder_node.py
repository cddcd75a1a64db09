"""The recorder node as Foxglove and rosbag2 read its files (issue 11 item 5), and what survives
a SIGKILL of the recorder process (issue 10 item 5)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from mcap.reader import make_reader
from node_test_helpers import wait_for
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String
from strict_ros2msg import decode_cdr, parse_schema
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from qwen_vla_ros.bringup import child_environment
from qwen_vla_ros.data.mcap_io import EPISODE_TOPIC, METADATA_NAME, read_recording
from qwen_vla_ros.data.salvage import is_closed_mcap, salvage_recording
from qwen_vla_ros.embodiment import load_embodiment
from qwen_vla_ros.nodes.recorder_node import RecorderNode
from qwen_vla_ros.ros.messages import message_class

pytestmark = pytest.mark.ros
BEST_EFFORT = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class FakeRig(Node):
    """Publishes the embodiment's topics with header stamps from its own simulated clock."""

    def __init__(self, emb, namespace: str, context, image_hw=(48, 64)):
        super().__init__("fake_rig", namespace=namespace, context=context)
        self.emb, self.image_hw, self.t = emb, image_hw, 1.0
        self.clock_pub = self.create_publisher(Clock, "/clock", 10)
        self.cams = [self.create_publisher(Image, c.topic, BEST_EFFORT) for c in emb.cameras]
        self.states = [self.create_publisher(JointState, s.topic, BEST_EFFORT) for s in emb.state_sources]
        self.outputs = [(o, self.create_publisher(message_class(o.type), o.topic, RELIABLE)) for o in emb.outputs]
        self.chunk_pub = self.create_publisher(JointTrajectory, "action_chunk", RELIABLE)
        self.instruction_pub = self.create_publisher(String, "task_text", LATCHED)
        self.topics = [p.topic_name for p in (*self.cams, *self.states, self.chunk_pub)] + [
            p.topic_name for _, p in self.outputs
        ]

    def step(self, with_clock: bool = True) -> None:
        self.t += 0.02
        sec, nanosec = int(self.t), int(round((self.t % 1) * 1e9))
        if with_clock:
            self.clock_pub.publish(Clock(clock=_time(sec, nanosec)))
        for pub in self.states:
            msg = JointState(name=["waist"], position=[self.t])
            msg.header.stamp = _time(sec, nanosec)
            pub.publish(msg)
        for pub in self.cams:
            msg = Image(height=self.image_hw[0], width=self.image_hw[1], encoding="rgb8", step=3 * self.image_hw[1])
            msg.header.stamp = _time(sec, nanosec)
            msg.data = bytes(3 * self.image_hw[0] * self.image_hw[1])
            pub.publish(msg)
        for output, pub in self.outputs:
            if output.type.endswith("JointTrajectory"):
                pub.publish(JointTrajectory(joint_names=["a"], points=[JointTrajectoryPoint(positions=[self.t])]))
            else:
                pub.publish(Float64MultiArray(data=[self.t]))
        self.chunk_pub.publish(JointTrajectory(joint_names=["a"], points=[JointTrajectoryPoint(positions=[1.0])]))


def _time(sec: int, nanosec: int):
    from builtin_interfaces.msg import Time

    return Time(sec=sec, nanosec=nanosec)


def test_recording_decodes_strictly_with_qualified_topics_stamps_and_qos(ros_context, spinner, tmp_path):
    emb = load_embodiment("aloha_sim")
    recorder = RecorderNode(context=ros_context, namespace="/rig_t", parameter_overrides=[
        Parameter("embodiment", value="aloha_sim"), Parameter("output_dir", value=str(tmp_path)),
        Parameter("instruction_topic", value="task_text"), Parameter("use_sim_time", value=True)])
    rig = FakeRig(emb, "/rig_t", ros_context)
    spinner.add(recorder, rig)
    spinner.start()
    topics = set(rig.topics) | {"/rig_t/task_text"}
    best_effort = {p.topic_name for p in (*rig.cams, *rig.states)}
    assert wait_for(lambda: all(recorder.topics[t].subscription is not None for t in topics), timeout_s=30)
    rig.instruction_pub.publish(String(data="pick up the cube"))  # before any /clock: must wait
    for _ in range(5):
        rig.step(with_clock=False)
    assert wait_for(lambda: len(recorder._before_clock) >= 5, timeout_s=30)
    assert not recorder.writer.episode_open
    for _ in range(60):
        rig.step()
        time.sleep(0.005)
    assert wait_for(lambda: recorder.writer.counters("/rig_t/action_chunk").received >= 60, timeout_s=30)
    assert recorder.writer.episode_open
    rig.instruction_pub.publish(String(data=""))
    assert wait_for(lambda: not recorder.writer.episode_open, timeout_s=30)
    recorder.on_shutdown()
    for node in (recorder, rig):
        spinner.executor.remove_node(node)
        node.destroy_node()

    with open(recorder.path, "rb") as stream:
        reader = make_reader(stream)
        summary = reader.get_summary()
        channels = {c.topic: c for c in summary.channels.values()}
        assert topics <= set(channels) and all(t.startswith("/") for t in channels)
        for topic in topics:  # rosbag2's offered_qos_profiles, matching each publisher
            profiles = yaml.safe_load(channels[topic].metadata["offered_qos_profiles"])
            reliable = topic not in best_effort
            assert [p["reliability"] for p in profiles] == [1 if reliable else 2], topic
            assert profiles[0]["durability"] == (1 if topic == "/rig_t/task_text" else 2)
        decoded = 0
        for schema, channel, message in reader.iter_messages():
            definitions = parse_schema(schema.name, schema.data.decode())  # Foxglove's name rule
            fields = decode_cdr(definitions, message.data)
            assert message.log_time > 0, channel.topic  # nothing stamped before /clock
            if "header" in fields:
                stamp = fields["header"]["stamp"]
                assert message.publish_time == stamp["sec"] * 10**9 + stamp["nanosec"] or stamp["sec"] == 0
            if channel.topic == "/rig_t/task_text":
                assert fields["data"] == deserialize_message(message.data, String).data
            decoded += 1
        assert decoded == summary.statistics.message_count
        stats = json.loads(next(m for m in reader.iter_metadata() if m.name == METADATA_NAME).metadata["topic_stats"])
    assert all(s["written"] == s["received"] and s["dropped_queue_full"] == 0 for s in stats.values()), stats
    recording = read_recording(recorder.path)
    first_clock = 1.02  # the messages that came before /clock are stamped with its first value
    assert recording.episodes[0].task == "pick up the cube"
    assert recording.episodes[0].start_ns >= first_clock * 1e9 - 1
    states = recording.topic(emb.state_sources[0].topic)
    assert len(states) == 65 and np.all(states.publish_times[5:] <= states.log_times[5:])


def test_sigkilled_recorder_leaves_a_file_that_salvages(ros_context, spinner, tmp_path):
    emb = load_embodiment("aloha_sim")
    rig = FakeRig(emb, "/", ros_context, image_hw=(240, 320))  # 230 kB frames: a 1 MiB chunk per 2 steps
    spinner.add(rig)
    spinner.start()
    process = subprocess.Popen(
        [sys.executable, "-m", "qwen_vla_ros.cli", "record", "--embodiment", "aloha_sim",
         "--output-dir", str(tmp_path), "--instruction-topic", "task_text"],
        env=child_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        assert wait_for(lambda: rig.count_subscribers(rig.chunk_pub.topic_name) > 0, timeout_s=60)
        rig.instruction_pub.publish(String(data="stack the blocks"))
        files = lambda: list(tmp_path.glob("*.mcap"))  # noqa: E731
        for _ in range(150):  # ~75 chunks written, more on the way when the kill comes
            rig.step()
            time.sleep(0.01)
        assert wait_for(lambda: files() and files()[0].stat().st_size > 20_000, timeout_s=60)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    path = files()[0]
    assert not is_closed_mcap(path)
    with pytest.raises(Exception):  # noqa: B017 - the plain reader cannot use it
        read_recording(path)
    report = salvage_recording(path, tmp_path / "recovered.mcap")
    assert report.messages > 0 and "recovered" in str(report)
    recovered = read_recording(report.output)
    assert recovered.episodes[0].task == "stack the blocks" and EPISODE_TOPIC in recovered.series
    assert len(recovered.topic(emb.state_sources[0].topic)) > 10

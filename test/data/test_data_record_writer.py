"""The recorder's queued writer: order kept, counters true, drops counted, metadata stored."""

from __future__ import annotations

import json
import threading

import yaml
from mcap.reader import make_reader
from rclpy.serialization import serialize_message
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from qwen_vla_ros.data.mcap_io import EPISODE_TOPIC, METADATA_NAME, read_recording
from qwen_vla_ros.data.record_writer import QueuedEpisodeWriter, header_stamp_ns
from qwen_vla_ros.data.rosbag2_qos import offered_qos_profiles_yaml


def _joint_state(sec: int, nanosec: int) -> bytes:
    msg = JointState(name=["a"], position=[1.0])
    msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
    return serialize_message(msg)


def test_header_stamp_is_read_from_the_cdr_bytes():
    assert header_stamp_ns(_joint_state(12, 345)) == 12_000_000_345
    assert header_stamp_ns(_joint_state(0, 0)) is None  # zero means "now" to publishers
    assert header_stamp_ns(b"\x00\x01") is None


def test_queued_writer_keeps_order_counts_and_stores_the_counters(tmp_path):
    lines: list[str] = []
    writer = QueuedEpisodeWriter(tmp_path / "q.mcap", metadata={"embodiment": "x"}, log=lines.append)
    writer.declare_topic("/js", "sensor_msgs/msg/JointState", gap_threshold_s=0.05,
                         channel_metadata={"offered_qos_profiles": offered_qos_profiles_yaml(
                             [{"reliability": 2, "durability": 2, "depth": 5}])})  # fmt: skip
    assert writer.start_episode("wave", 1_000) == 0 and writer.episode_open

    def produce(offset: int) -> None:
        for n in range(200):
            writer.write("/js", "sensor_msgs/msg/JointState", _joint_state(1, n), 2_000 + n * 10_000_000)

    threads = [threading.Thread(target=produce, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.write("/js", "sensor_msgs/msg/JointState", _joint_state(9, 0), 9_000_000_000)  # a 7 s gap
    writer.end_episode(9_500_000_000)
    stats = writer.close()
    assert stats["/js"]["received"] == stats["/js"]["written"] == 401 and stats["/js"]["dropped"] == 0
    assert stats["/js"]["gaps"] == 1 and stats["/js"]["longest_gap_s"] > 7
    assert any(line.startswith("/js: received 401, written 401, dropped 0") for line in lines)
    recording = read_recording(tmp_path / "q.mcap")
    assert len(recording.topic("/js")) == 401
    assert recording.topic("/js").publish_times[-1] == 9_000_000_000  # the header stamp
    assert [(m.task, m.start_ns, m.end_ns) for m in recording.episodes] == [("wave", 1_000, 9_500_000_000)]
    with open(tmp_path / "q.mcap", "rb") as stream:
        reader = make_reader(stream)
        record = next(m for m in reader.iter_metadata() if m.name == METADATA_NAME).metadata
        channels = {c.topic: c for c in reader.get_summary().channels.values()}
    assert json.loads(record["topic_stats"])["/js"]["written"] == 401
    profile = yaml.safe_load(channels["/js"].metadata["offered_qos_profiles"])[0]
    assert (profile["reliability"], profile["durability"], profile["depth"]) == (2, 2, 5)
    assert profile["deadline"] == {"sec": 2147483647, "nsec": 4294967295}
    default = yaml.safe_load(channels[EPISODE_TOPIC].metadata["offered_qos_profiles"])[0]
    assert default["reliability"] == 1  # every channel carries a profile


def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path):
    writer = QueuedEpisodeWriter(tmp_path / "full.mcap", queue_bytes=0)  # nothing fits
    data = serialize_message(String(data="x" * 100))
    assert writer.write("/s", "std_msgs/msg/String", data, 10) is False
    stats = writer.close()
    assert stats["/s"] == {**stats["/s"], "received": 1, "written": 0, "dropped_queue_full": 1, "dropped": 1}
    assert writer.write("/s", "std_msgs/msg/String", data, 20) is False  # closed: refused

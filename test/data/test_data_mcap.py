"""MCAP recording: rosbag2 layout, real ROS 2 messages through rclpy serialisation, episode marks."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from mcap.reader import make_reader
from mcap_ros2._dynamic import generate_dynamic
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from qwen_vla_ros.data.images import image_to_rgb
from qwen_vla_ros.data.mcap_io import (
    EPISODE_TOPIC,
    METADATA_NAME,
    McapEpisodeWriter,
    read_recording,
)
from qwen_vla_ros.data.msg_definitions import (
    DELIMITER,
    MessageDefinitionError,
    message_definition,
    register_message_definition,
)


def _joint_state(t: float, values: list[float]) -> JointState:
    msg = JointState()
    msg.header.stamp.sec, msg.header.stamp.nanosec = int(t), int((t % 1) * 1e9)
    msg.name = ["waist", "shoulder"]
    msg.position = values
    return msg


def _image(value: int) -> Image:
    msg = Image()
    msg.height, msg.width, msg.encoding, msg.step = 4, 6, "rgb8", 18
    pixels = np.full((4, 6, 3), value, np.uint8)
    pixels[0, 0] = (255, 0, 0)
    msg.data = pixels.tobytes()
    return msg


def test_complete_definition_lists_each_nested_type_once():
    text = message_definition("nav_msgs/msg/Odometry")
    nested = [line for line in text.splitlines() if line.startswith("MSG: ")]
    for name in (  # spelled as the fields spell them, as rosbag2 writes them
        "std_msgs/Header",
        "builtin_interfaces/Time",
        "geometry_msgs/PoseWithCovariance",
    ):
        assert nested.count(f"MSG: {name}") == 1
    assert not [line for line in nested if "/msg/" in line]
    assert text.count(DELIMITER) == len(nested)
    assert "nav_msgs/msg/Odometry" in generate_dynamic("nav_msgs/msg/Odometry", text)
    assert message_definition("sensor_msgs/Image") == message_definition("sensor_msgs/msg/Image")


def test_unknown_type_names_itself_and_can_be_registered():
    with pytest.raises(MessageDefinitionError, match="qwen_absent_msgs/msg/Command.msg"):
        message_definition("qwen_absent_msgs/msg/Command")
    register_message_definition("qwen_test_msgs/msg/Holder", "qwen_absent_msgs/Part part\n")
    with pytest.raises(MessageDefinitionError, match="qwen_absent_msgs/msg/Part.msg"):  # nested
        message_definition("qwen_test_msgs/msg/Holder")
    register_message_definition(
        "qwen_test_msgs/msg/Command", "string name\nstd_msgs/Header header\nfloat32[] cmd\n"
    )
    text = message_definition("qwen_test_msgs/msg/Command")
    assert "MSG: std_msgs/Header" in text and "MSG: builtin_interfaces/Time" in text


def test_round_trip_of_real_messages(tmp_path):
    path = tmp_path / "round_trip.mcap"
    sent = {"joints": [], "images": []}
    with McapEpisodeWriter(path) as writer:
        writer.start_episode("stack the blocks", 1_000_000_000, embodiment="aloha")
        for n in range(20):
            t = 1.0 + n * 0.01
            msg = _joint_state(t, [0.1 * n, -0.2 * n])
            sent["joints"].append(msg)
            writer.write(
                "/follower_left/joint_states",
                "sensor_msgs/msg/JointState",
                serialize_message(msg),
                int(t * 1e9) + 500,
                int(t * 1e9),
            )
            if n % 3 == 0:
                image = _image(10 * n)
                sent["images"].append(image)
                writer.write(
                    "/cam_high/image_raw",
                    "sensor_msgs/msg/Image",
                    serialize_message(image),
                    int(t * 1e9) + 900,
                )
        note = String(data="operator note")
        writer.write("/notes", "std_msgs/msg/String", serialize_message(note), 1_150_000_000)
        writer.end_episode(1_200_000_000, success=True)
    recording = read_recording(path)
    joints = recording.topic("/follower_left/joint_states")
    assert joints.type_name == "sensor_msgs/msg/JointState" and len(joints) == 20
    for got, want in zip(joints.messages, sent["joints"], strict=True):
        assert list(got.name) == want.name and np.allclose(list(got.position), list(want.position))
        assert got.header.stamp.sec == want.header.stamp.sec
    assert np.array_equal(joints.log_times - joints.publish_times, np.full(20, 500))
    images = recording.topic("/cam_high/image_raw")
    assert len(images) == len(sent["images"])
    for got, want in zip(images.messages, sent["images"], strict=True):
        rgb = image_to_rgb(
            got.height, got.width, got.encoding, got.step, got.is_bigendian, got.data
        )
        assert np.array_equal(rgb.tobytes(), bytes(want.data))
    assert recording.topic("/notes").messages[0].data == "operator note"
    assert [(m.task, m.start_ns, m.end_ns, m.success) for m in recording.episodes] == [
        ("stack the blocks", 1_000_000_000, 1_200_000_000, True)
    ]
    assert recording.episodes[0].extra["embodiment"] == "aloha"
    # The stored bytes are exactly what rclpy serialised: rclpy reads them back.
    with open(path, "rb") as stream:
        for _, _, message in make_reader(stream).iter_messages(
            topics=["/follower_left/joint_states"]
        ):
            assert deserialize_message(message.data, JointState).name == ["waist", "shoulder"]


def test_file_has_the_rosbag2_layout(tmp_path):
    path = tmp_path / "layout.mcap"
    with McapEpisodeWriter(path, metadata={"embodiment": "aloha"}) as writer:
        writer.start_episode("wave", 5)
        for n in range(3):
            writer.write(
                "/js",
                "sensor_msgs/msg/JointState",
                serialize_message(_joint_state(0, [0.0, 0.0])),
                10 + n,
            )
    with open(path, "rb") as stream:
        reader = make_reader(stream)
        assert reader.get_header().profile == "ros2"
        summary = reader.get_summary()
        assert {s.encoding for s in summary.schemas.values()} == {"ros2msg"}
        assert {c.message_encoding for c in summary.channels.values()} == {"cdr"}
        counts = {
            summary.channels[i].topic: n
            for i, n in summary.statistics.channel_message_counts.items()
        }
        assert counts == {"/js": 3, EPISODE_TOPIC: 2}  # start, and the end written by close()
        records = {m.name: m.metadata for m in reader.iter_metadata()}
    assert records[METADATA_NAME]["embodiment"] == "aloha"
    episodes = json.loads(records[METADATA_NAME]["episodes"])
    assert episodes[0]["task"] == "wave" and episodes[0]["end_ns"] == 12


def test_episode_marks_without_explicit_ends_and_without_any(tmp_path):
    path = tmp_path / "marks.mcap"
    data = serialize_message(String(data="x"))
    with McapEpisodeWriter(path) as writer:
        writer.start_episode("first", 100)
        writer.write("/s", "std_msgs/msg/String", data, 150)
        writer.start_episode("second", 200)  # ends the first
        writer.write("/s", "std_msgs/msg/String", data, 250)
    marks = read_recording(path).episodes
    assert [(m.task, m.start_ns, m.end_ns) for m in marks] == [
        ("first", 100, 200),
        ("second", 200, 250),
    ]
    bare = tmp_path / "bare.mcap"
    with McapEpisodeWriter(bare) as writer:
        for t in (300, 400, 500):
            writer.write("/s", "std_msgs/msg/String", data, t)
    recording = read_recording(bare)
    assert [(m.task, m.start_ns, m.end_ns) for m in recording.episodes] == [("", 300, 500)]


def test_writer_guards(tmp_path):
    writer = McapEpisodeWriter(tmp_path / "guards.mcap")
    writer.write("/s", "std_msgs/msg/String", serialize_message(String(data="a")), 1)
    with pytest.raises(ValueError, match="declared as std_msgs/msg/String"):
        writer.write("/s", "sensor_msgs/msg/JointState", b"", 2)
    with pytest.raises(ValueError, match="task text"):
        writer.start_episode("  ", 3)
    with pytest.raises(RuntimeError, match="without an open episode"):
        writer.end_episode(4)
    writer.close()
    with pytest.raises(RuntimeError, match="closed"):
        writer.write("/s", "std_msgs/msg/String", b"", 5)


def test_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "threads.mcap"
    data = serialize_message(_joint_state(0, [1.0, 2.0]))
    with McapEpisodeWriter(path) as writer:

        def record(topic: str) -> None:
            for n in range(150):
                writer.write(topic, "sensor_msgs/msg/JointState", data, 1000 + n)

        threads = [
            threading.Thread(target=record, args=(f"/arm{i}/joint_states",)) for i in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    recording = read_recording(path)
    assert sorted(len(s) for s in recording.series.values()) == [150] * 4

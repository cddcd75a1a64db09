"""Recorder: the embodiment's cameras, states, commands and instruction into MCAP, by episode.

Messages are recorded serialised, exactly as they travel (rclpy raw subscriptions), into
the rosbag2 MCAP container; episode boundaries and the task text go on the
``/qwen_vla/episode`` channel. Convert recordings to a LeRobot v3.0 dataset with
``qwen-vla convert``.

Episodes: a new non-empty instruction starts an episode (ending the open one); an empty
instruction ends it; ``~/start_episode`` and ``~/end_episode`` (std_srvs/Trigger) do the same
by hand. The file is closed cleanly on shutdown.

Parameters: ``embodiment``, ``output_dir`` (default ``recordings``), ``instruction_topic``,
``record_chunks`` (also record ``action_chunk``).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from rclpy.node import Node
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from ..data.mcap_io import McapEpisodeWriter
from ..data.msg_definitions import message_definition
from ..ros.messages import message_class, state_message_class
from ..ros.qos import COMMAND, LATCHED, SENSOR
from .common import declare_embodiment, run_nodes


def recorded_topics(node: Node) -> list[tuple[str, type, str, object]]:
    """(topic, message class, type name, QoS) for everything an episode needs."""
    emb = node.embodiment
    topics = []
    for cam in emb.cameras:
        cls, name = (CompressedImage, "sensor_msgs/msg/CompressedImage") if cam.compressed else (Image, "sensor_msgs/msg/Image")
        topics.append((cam.topic, cls, name, SENSOR))
    for src in emb.state_sources:
        topics.append((src.topic, state_message_class(src), src.type, SENSOR))
    for out in emb.outputs:
        topics.append((out.topic, message_class(out.type), out.type, COMMAND))
    if node.get_parameter("record_chunks").value:
        topics.append(("action_chunk", JointTrajectory, "trajectory_msgs/msg/JointTrajectory", COMMAND))
    return topics


class RecorderNode(Node):
    """Writes one MCAP file per run, with episode marks."""

    def __init__(self, **kwargs):
        super().__init__("recorder", **kwargs)
        self.embodiment = declare_embodiment(self)
        self.declare_parameter("output_dir", "recordings")
        self.declare_parameter("instruction_topic", "instruction")
        self.declare_parameter("record_chunks", True)
        folder = Path(self.get_parameter("output_dir").value).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{self.embodiment.name}-{datetime.now():%Y%m%d-%H%M%S}.mcap"
        self.writer = McapEpisodeWriter(self.path, metadata={"embodiment": self.embodiment.name})
        self.task = ""
        self.messages = 0
        self.closed = False
        for topic, cls, type_name, qos in recorded_topics(self):
            definition = message_definition(type_name)
            self.create_subscription(cls, topic, self._writer_for(topic, type_name, definition), qos, raw=True)
        topic = self.get_parameter("instruction_topic").value
        self.create_subscription(String, topic, self._on_instruction, LATCHED, raw=True)
        self.create_service(Trigger, "~/start_episode", self._on_start)
        self.create_service(Trigger, "~/end_episode", self._on_end)
        self.get_logger().info(f"recording {self.embodiment.name} to {self.path}")

    def now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _writer_for(self, topic: str, type_name: str, definition: str):
        def callback(data: bytes) -> None:
            if self.closed:  # messages already queued when the file was closed
                return
            self.writer.write(topic, type_name, data, self.now_ns(), definition=definition)
            self.messages += 1

        return callback

    def _on_instruction(self, data: bytes) -> None:
        if self.closed:
            return
        self.writer.write("instruction", "std_msgs/msg/String", data, self.now_ns(),
                          definition=message_definition("std_msgs/msg/String"))
        text = " ".join(deserialize_message(data, String).data.split())
        if self.writer.episode_open:
            self.writer.end_episode(self.now_ns())
        self.task = text
        if text:
            index = self.writer.start_episode(text, self.now_ns())
            self.get_logger().info(f"episode {index}: '{text}'")

    def _on_start(self, request, response):
        if not self.task:
            response.success, response.message = False, "no instruction yet: publish one first"
            return response
        if self.writer.episode_open:
            self.writer.end_episode(self.now_ns())
        index = self.writer.start_episode(self.task, self.now_ns())
        response.success, response.message = True, f"episode {index} started"
        return response

    def _on_end(self, request, response):
        if not self.writer.episode_open:
            response.success, response.message = False, "no episode is open"
            return response
        self.writer.end_episode(self.now_ns())
        response.success, response.message = True, "episode ended"
        return response

    def on_shutdown(self) -> None:
        """End the open episode and close the file (a file without its summary is unreadable)."""
        if self.closed:
            return
        self.closed = True
        if self.writer.episode_open:
            self.writer.end_episode(self.now_ns())
        self.writer.close()
        self.get_logger().info(f"wrote {self.messages} messages to {self.path}")


def add_arguments(parser) -> None:
    """Arguments of `qwen-vla record` (the recorder node without ros2 run)."""
    parser.add_argument("--embodiment", default="aloha", help="shipped name or YAML path")
    parser.add_argument("--output-dir", default="recordings", help="folder for the .mcap files")
    parser.add_argument("--use-sim-time", action="store_true", help="stamp with /clock time")


def run(args) -> int:
    ros_args = [
        "qwen-vla-record", "--ros-args",
        "-p", f"embodiment:={args.embodiment}",
        "-p", f"output_dir:={args.output_dir}",
        "-p", f"use_sim_time:={str(args.use_sim_time).lower()}",
    ]
    return main(ros_args)


def main(args: list[str] | None = None) -> int:
    """`ros2 run qwen_vla_ros recorder --ros-args -p embodiment:=aloha -p output_dir:=~/demos`."""
    return run_nodes(lambda: [RecorderNode()], args)


if __name__ == "__main__":
    raise SystemExit(main())

"""Recorder: the embodiment's cameras, states, commands and instruction into MCAP, by episode.

Messages are recorded serialised, exactly as they travel (rclpy raw subscriptions), into
the rosbag2 MCAP container; episode boundaries and the task text go on the
``/qwen_vla/episode`` channel. Convert recordings to a LeRobot v3.0 dataset with
``qwen-vla convert``.

Nothing is lost on a busy machine, the way rosbag2 records:

* each topic is subscribed once its publishers are discovered, with a QoS matched to them
  (reliable when every publisher is reliable, transient-local when every one is, else best
  effort / volatile) and a keep-last queue of :data:`RECORD_DEPTH` messages, so a callback
  thread that runs late catches up instead of losing samples; a topic whose publishers
  change to ones the subscription cannot match is subscribed again;
* callbacks only queue the bytes; a background thread writes the file
  (:class:`..data.record_writer.QueuedEpisodeWriter`);
* received / written / dropped / gap counters per topic go into the file's ``qwen_vla``
  metadata record (``topic_stats``) and into the log at the end;
* with ``use_sim_time``, nothing is stamped before ``/clock`` runs: what arrives earlier
  (a latched instruction, say) waits and is stamped with the first clock time.

Topics are written fully qualified (``/instruction``, resolved through the node's
namespace); ``publish_time`` is the message's ``header.stamp`` where it has one; every channel
carries rosbag2's ``offered_qos_profiles`` metadata, so ``ros2 bag play`` offers the same QoS.

Episodes: a new non-empty instruction starts an episode (ending the open one); an empty
instruction ends it; ``~/start_episode`` and ``~/end_episode`` (std_srvs/Trigger) do the same
by hand; ``~/finish_episode`` (std_srvs/SetBool) ends it with the operator's judgment (``data``:
the task succeeded), which ``qwen-vla convert`` uses to leave failed episodes out. The file is
closed cleanly on shutdown.

Parameters: ``embodiment``, ``output_dir`` (default ``recordings``), ``instruction_topic``
(default ``instruction``), ``record_chunks`` (also record the ``action_chunk`` topic).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rclpy.clock import Clock, ClockType
from rclpy.expand_topic_name import expand_topic_name
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from ..data.msg_definitions import message_definition
from ..data.record_writer import QueuedEpisodeWriter, header_stamp_ns
from ..data.rosbag2_qos import offered_qos_profiles_yaml
from ..ros.messages import message_class, state_message_class
from .common import declare_embodiment, run_nodes

try:  # rclpy >= Iron
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

#: Keep-last depth of every recording subscription: 1000 messages is 10 s of 100 Hz joint
#: states, far longer than any stall of a loaded executor.
RECORD_DEPTH = 1000
#: How often publishers are looked up (wall time, also under simulated time), s.
DISCOVERY_PERIOD_S = 0.1
#: Once every topic is subscribed, publishers are looked up every this many periods (1 s).
SETTLED_EVERY = 10
#: Most messages held while waiting for the first /clock (older ones are dropped and counted).
MAX_BEFORE_CLOCK = 5000


@dataclass
class RecordedTopic:
    """One topic the recorder follows (``topic`` fully qualified)."""

    topic: str
    cls: type
    type_name: str
    gap_threshold_s: float | None = None
    subscription: Any = None
    reliable: bool = False
    transient_local: bool = False
    has_header: bool = False
    callback_factory: Any = None


def recorded_topics(node: Node) -> list[RecordedTopic]:
    """Everything an episode needs: cameras, state sources, command outputs, chunks."""
    emb = node.embodiment
    topics = []
    for cam in emb.cameras:
        cls, name = (CompressedImage, "sensor_msgs/msg/CompressedImage") if cam.compressed else (Image, "sensor_msgs/msg/Image")
        topics.append(RecordedTopic(cam.topic, cls, name, cam.max_age_s))
    for src in emb.state_sources:
        topics.append(RecordedTopic(src.topic, state_message_class(src), src.type, src.max_age_s))
    for out in emb.outputs:
        topics.append(RecordedTopic(out.topic, message_class(out.type), out.type))
    if node.get_parameter("record_chunks").value:
        topics.append(RecordedTopic("action_chunk", JointTrajectory, "trajectory_msgs/msg/JointTrajectory"))
    return topics


def _starts_with_header(definition: str) -> bool:
    """Whether the first field of a .msg text is a std_msgs/Header (its stamp is then readable)."""
    for line in definition.splitlines():
        field = line.split("#", 1)[0].split()
        if field:
            return field[0] in ("std_msgs/Header", "Header", "std_msgs/msg/Header")
    return False


def _profile_dict(qos) -> dict[str, int]:
    return {
        "history": qos.history.value, "depth": qos.depth, "reliability": qos.reliability.value,
        "durability": qos.durability.value, "deadline": qos.deadline.nanoseconds,
        "lifespan": qos.lifespan.nanoseconds, "liveliness": qos.liveliness.value,
        "liveliness_lease_duration": qos.liveliness_lease_duration.nanoseconds,
    }  # fmt: skip


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
        self.writer = QueuedEpisodeWriter(
            self.path, metadata={"embodiment": self.embodiment.name}, log=self.get_logger().info
        )
        self.task = ""
        self.messages = 0
        self.closed = False
        self.stats: dict[str, dict[str, Any]] = {}
        self.newest_stamp_ns: dict[str, int] = {}  # per topic with header stamps, ns
        self._before_clock: list[Callable[[int], None]] = []
        self._dropped_before_clock = 0
        self._discovery_ticks = 0
        self.topics: dict[str, RecordedTopic] = {}
        for entry in recorded_topics(self):
            self._add_topic(entry, self._message_callback)
        instruction = RecordedTopic(self.get_parameter("instruction_topic").value, String, "std_msgs/msg/String")
        self.instruction_topic = self._add_topic(instruction, self._instruction_callback)
        self.create_service(Trigger, "~/start_episode", self._on_start)
        self.create_service(Trigger, "~/end_episode", self._on_end)
        self.create_service(SetBool, "~/finish_episode", self._on_finish)
        # wall-clock timer: under simulated time a sim-time timer would not run before /clock
        self.create_timer(DISCOVERY_PERIOD_S, self._discover, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._discover()
        self.get_logger().info(
            f"recording {self.embodiment.name} to {self.path}: {', '.join(sorted(self.topics))}"
        )

    def _add_topic(self, entry: RecordedTopic, make_callback) -> str:
        entry.topic = self._qualified(entry.topic)
        entry.has_header = _starts_with_header(message_definition(entry.type_name))
        entry.callback_factory = make_callback
        self.topics[entry.topic] = entry
        return entry.topic

    def _qualified(self, topic: str) -> str:
        """The fully qualified name (namespace and remappings applied, as the subscription gets)."""
        resolve = getattr(self, "resolve_topic_name", None)  # rclpy >= Iron; Humble: expand only
        if resolve is not None:
            return resolve(topic)
        return expand_topic_name(topic, self.get_name(), self.get_namespace())

    # -- discovery and QoS matched to the publishers (rosbag2's rule) ----------------------
    def _discover(self) -> None:
        self._release_before_clock()
        self._discovery_ticks += 1
        settled = all(entry.subscription is not None for entry in self.topics.values())
        if settled and self._discovery_ticks % SETTLED_EVERY:
            return  # every topic is recorded: look for new publishers less often
        for entry in self.topics.values():
            publishers = self.get_publishers_info_by_topic(entry.topic)
            if not publishers:
                continue
            reliable = all(p.qos_profile.reliability == ReliabilityPolicy.RELIABLE for p in publishers)
            transient = all(p.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in publishers)
            if entry.subscription is not None and (entry.reliable <= reliable and entry.transient_local <= transient):
                continue  # the subscription still matches every publisher
            self._subscribe(entry, reliable, transient, [_profile_dict(p.qos_profile) for p in publishers])

    def _subscribe(self, entry: RecordedTopic, reliable: bool, transient: bool, offered: list[dict]) -> None:
        if entry.subscription is not None:
            self.get_logger().warning(
                f"{entry.topic}: a publisher the subscription cannot match appeared; subscribing again "
                f"({'reliable' if reliable else 'best effort'}, {'transient local' if transient else 'volatile'})"
            )
            self.destroy_subscription(entry.subscription)
        else:
            self.writer.declare_topic(
                entry.topic, entry.type_name, message_definition(entry.type_name),
                {"offered_qos_profiles": offered_qos_profiles_yaml(offered)}, entry.gap_threshold_s,
            )
        qos = QoSProfile(
            depth=RECORD_DEPTH, history=HistoryPolicy.KEEP_LAST,
            reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
            durability=DurabilityPolicy.TRANSIENT_LOCAL if transient else DurabilityPolicy.VOLATILE,
        )
        callback = entry.callback_factory(entry)
        lost = SubscriptionEventCallbacks(message_lost=lambda info, t=entry.topic: self.writer.note_lost(t, info.total_count_change))
        try:
            entry.subscription = self.create_subscription(entry.cls, entry.topic, callback, qos, raw=True, event_callbacks=lost)
        except Exception:  # noqa: BLE001 - an rmw without the message-lost event: record anyway
            entry.subscription = self.create_subscription(entry.cls, entry.topic, callback, qos, raw=True)
        entry.reliable, entry.transient_local = reliable, transient

    # -- stamping: nothing before /clock runs ----------------------------------------------
    def now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _when_clock_runs(self, action: Callable[[int], None]) -> None:
        """Run ``action(now_ns)`` now, or once the clock runs (0 until the first /clock)."""
        if self.closed:
            return
        now = self.now_ns()
        if now > 0:
            self._release_before_clock(now)
            action(now)
            return
        if len(self._before_clock) >= MAX_BEFORE_CLOCK:
            self._before_clock.pop(0)
            self._dropped_before_clock += 1
        self._before_clock.append(action)

    def _release_before_clock(self, now: int | None = None) -> None:
        if not self._before_clock or self.closed:
            return
        now = self.now_ns() if now is None else now
        if now <= 0:
            return
        waiting, self._before_clock = self._before_clock, []
        for action in waiting:
            action(now)

    # -- callbacks -------------------------------------------------------------------------
    def _message_callback(self, entry: RecordedTopic) -> Callable[[bytes], None]:
        def record(data: bytes) -> None:
            self._when_clock_runs(lambda now: self._write(entry, data, now))

        return record

    def _write(self, entry: RecordedTopic, data: bytes, now: int) -> None:
        stamp = header_stamp_ns(data) if entry.has_header else None
        if stamp is not None:
            self.newest_stamp_ns[entry.topic] = max(stamp, self.newest_stamp_ns.get(entry.topic, 0))
        if self.writer.write(entry.topic, entry.type_name, data, now, stamp):
            self.messages += 1

    def caught_up_to(self, time_ns: int) -> bool:
        """Whether every topic that carries header stamps has one at or after ``time_ns``.

        A reliable topic arrives in order, so then nothing older is still on its way. Under
        load a lost sample is resent only after the writer's next heartbeat, and everything
        after it waits (seen: 2.3 s); a driver that ends an episode or the recording waits
        for this first.
        """
        return all(stamp >= time_ns for stamp in self.newest_stamp_ns.values())

    def _instruction_callback(self, entry: RecordedTopic) -> Callable[[bytes], None]:
        def record(data: bytes) -> None:
            self._when_clock_runs(lambda now: self._on_instruction(entry, data, now))

        return record

    def _on_instruction(self, entry: RecordedTopic, data: bytes, now: int) -> None:
        self._write(entry, data, now)
        text = " ".join(deserialize_message(data, String).data.split())
        if self.writer.episode_open:
            self.writer.end_episode(now)
        self.task = text
        if text:
            index = self.writer.start_episode(text, now)
            self.get_logger().info(f"episode {index}: '{text}'")

    def _on_start(self, request, response):
        if not self.task:
            response.success, response.message = False, "no instruction yet: publish one first"
            return response
        if self.now_ns() <= 0:
            response.success, response.message = False, "no /clock yet: the simulated time has not started"
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

    def _on_finish(self, request, response):
        if not self.writer.episode_open:
            response.success, response.message = False, "no episode is open"
            return response
        self.writer.end_episode(self.now_ns(), success=bool(request.data))
        response.success = True
        response.message = f"episode ended, judged {'a success' if request.data else 'failed'}"
        return response

    def on_shutdown(self) -> None:
        """End the open episode and close the file (a file without its summary is unreadable)."""
        if self.closed:
            return
        self._release_before_clock()
        self.closed = True
        if self._before_clock or self._dropped_before_clock:
            self.get_logger().warning(
                f"{len(self._before_clock) + self._dropped_before_clock} messages arrived before "
                "/clock ran and were not recorded"
            )
        if self.writer.episode_open and self.now_ns() > 0:
            self.writer.end_episode(self.now_ns())
        self.stats = self.writer.close()
        dropped = sum(s["dropped"] for s in self.stats.values())
        self.get_logger().info(f"wrote {self.messages} messages to {self.path} ({dropped} dropped)")


def add_arguments(parser) -> None:
    """Arguments of `qwen-vla record` (the recorder node without ros2 run)."""
    parser.add_argument("--embodiment", default="aloha", help="shipped name or YAML path")
    parser.add_argument("--output-dir", default="recordings", help="folder for the .mcap files")
    parser.add_argument("--instruction-topic", default="instruction", help="topic of the task text")
    parser.add_argument("--use-sim-time", action="store_true", help="stamp with /clock time")


def run(args) -> int:
    ros_args = [
        "qwen-vla-record", "--ros-args",
        "-p", f"embodiment:={args.embodiment}",
        "-p", f"output_dir:={args.output_dir}",
        "-p", f"instruction_topic:={args.instruction_topic}",
        "-p", f"use_sim_time:={str(args.use_sim_time).lower()}",
    ]
    return main(ros_args)


def main(args: list[str] | None = None) -> int:
    """`ros2 run qwen_vla_ros recorder --ros-args -p embodiment:=aloha -p output_dir:=~/demos`."""
    return run_nodes(lambda: [RecorderNode()], args)


if __name__ == "__main__":
    raise SystemExit(main())

"""Observation node: cameras, joint states and the instruction in; complete observations out.

It subscribes to what the embodiment file names (sensor-data QoS for sensors, a latched
reliable subscription for the instruction), converts each message with the package's own
numpy code (no cv_bridge), and feeds an :class:`ObservationAssembler`. The inference node,
composed in the same process, asks it for fresh observations. It publishes the health of
every source on /diagnostics once a second (run alone, that is how a rig is checked before
the model is started).

Topics (relative names resolve in the node's namespace):
    <camera topics>     sensor_msgs/Image or CompressedImage   (embodiment file)
    <state topics>      sensor_msgs/JointState or nav_msgs/Odometry (embodiment file)
    instruction         std_msgs/String, from transient-local and volatile publishers alike
    /diagnostics        diagnostic_msgs/DiagnosticArray: what is missing, dropped messages per topic

A message that cannot be converted is dropped and counted per topic (never raised).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from ..data.images import compressed_to_rgb, image_to_rgb
from ..embodiment import Embodiment
from ..observation import ObservationAssembler, ObservationNotReady
from ..ros.dedup import DuplicateFilter
from ..ros.messages import state_message_class, state_values, to_seconds
from ..ros.qos import ANY_DURABILITY, LATCHED_READER, SENSOR
from .common import (
    InputGuard,
    NodeParameters,
    WaitingReporter,
    declare_embodiment,
    guard_timer,
    run_nodes,
    startup_line,
)


class ObservationNode(Node):
    """Subscribes to the embodiment's sensors and the instruction topic."""

    def __init__(self, embodiment: Embodiment | None = None, **node_kwargs):
        super().__init__("observation_node", **node_kwargs)
        self.embodiment = embodiment or declare_embodiment(self)
        self.params = NodeParameters(
            self, fixed={"instruction_topic": "instruction"}, runtime={"max_skew_s": 0.25}, apply=self._apply
        )
        self.assembler = ObservationAssembler(self.embodiment, max_skew_s=self.params["max_skew_s"])
        #: called with the new (validated) instruction text; '' means stop
        self.on_instruction: Callable[[str], None] | None = None
        self.guard = InputGuard(self)
        self.waiting = WaitingReporter(self.get_logger())
        self._instructions = DuplicateFilter()
        subscribes = self._subscribe()
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # health once a second, also when composed: what is missing shows before any instruction
        self.create_timer(1.0, guard_timer(self, self._publish_health, "health report"))
        startup_line(self, subscribes, ["/diagnostics"])

    @property
    def bad_messages(self) -> int:
        return sum(self.guard.dropped.values())

    def _apply(self, changes: dict) -> None:
        skew = changes.get("max_skew_s")
        if skew is not None:
            if not (isinstance(skew, (int, float)) and math.isfinite(skew) and skew > 0):
                raise ValueError(f"max_skew_s must be a positive number of seconds, got {skew!r}")
            self.assembler.max_skew_s = float(skew)

    def _subscribe(self) -> list[str]:
        topics = []
        for cam in self.embodiment.cameras:
            msg_type = CompressedImage if cam.compressed else Image
            self.guard.subscribe(msg_type, cam.topic, self._image_callback(cam.name), SENSOR)
            topics.append(self.resolve_topic_name(cam.topic))
        for src in self.embodiment.state_sources:
            self.guard.subscribe(state_message_class(src), src.topic, self._state_callback(src.name), SENSOR)
            topics.append(self.resolve_topic_name(src.topic))
        topic = self.params["instruction_topic"]
        # latched for late joiners, volatile for `ros2 topic pub` and other volatile publishers
        for index, qos in enumerate((LATCHED_READER, ANY_DURABILITY)):
            self.guard.subscribe(String, topic, self._instruction_callback(index), qos, paired=True)
        return [*topics, self.resolve_topic_name(topic)]

    def now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _image_callback(self, camera: str):
        def callback(msg) -> None:
            if isinstance(msg, CompressedImage):
                rgb = compressed_to_rgb(msg.format, bytes(msg.data))
            else:
                rgb = image_to_rgb(msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian, msg.data)
            stamp = to_seconds(msg.header.stamp)
            self.assembler.add_image(camera, rgb, stamp or self.now_s(), self.now_s())

        return callback

    def _state_callback(self, source: str):
        def callback(msg) -> None:
            stamp = to_seconds(msg.header.stamp)
            self.assembler.add_joint_values(source, state_values(msg), stamp or self.now_s(), self.now_s())

        return callback

    def _instruction_callback(self, subscription: int):
        def callback(msg: String) -> None:
            if not self._instructions.accept(subscription, msg.data):
                return  # the other subscription's copy of the same message
            text = self.assembler.set_instruction(msg.data)
            self.get_logger().info(f"instruction: '{text}'" if text else "empty instruction: stop")
            if self.on_instruction is not None:
                self.on_instruction(text)

        return callback

    def _publish_health(self) -> None:
        status = DiagnosticStatus(name=f"{self.get_name()}: observation", hardware_id=self.embodiment.name)
        try:
            self.assembler.assemble(self.now_s())
            status.level, status.message = DiagnosticStatus.OK, "complete and fresh"
            self.waiting.ready("observation complete and fresh")
        except ObservationNotReady as exc:
            status.level = DiagnosticStatus.WARN
            status.message = self.waiting.waiting("; ".join(exc.reasons), self.now_s())[:500]
        status.values = self.guard.values()
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)


def main(args: list[str] | None = None) -> int:
    """`ros2 run qwen_vla_ros observation_node`: report observation health on /diagnostics."""
    return run_nodes(lambda: [ObservationNode()], args)


if __name__ == "__main__":
    raise SystemExit(main())

"""Observation node: cameras, joint states and the instruction in; complete observations out.

It subscribes to what the embodiment file names (sensor-data QoS for sensors, a latched
reliable subscription for the instruction), converts each message with the package's own
numpy code (no cv_bridge), and feeds an :class:`ObservationAssembler`. The inference node,
composed in the same process, asks it for fresh observations. Run alone, it publishes the
health of every source on /diagnostics once a second, which is how a rig is checked before
the model is started.

Topics (relative names resolve in the node's namespace):
    <camera topics>     sensor_msgs/Image or CompressedImage   (embodiment file)
    <state topics>      sensor_msgs/JointState or nav_msgs/Odometry (embodiment file)
    instruction         std_msgs/String, reliable, transient-local
    /diagnostics        diagnostic_msgs/DiagnosticArray (standalone only)
"""

from __future__ import annotations

from collections.abc import Callable

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from ..data.images import ImageConversionError, compressed_to_rgb, image_to_rgb
from ..embodiment import Embodiment
from ..observation import InstructionError, ObservationAssembler, ObservationNotReady
from ..ros.messages import MessageConversionError, state_message_class, state_values, to_seconds
from ..ros.qos import LATCHED, SENSOR
from .common import declare_embodiment, run_nodes


class ObservationNode(Node):
    """Subscribes to the embodiment's sensors and the instruction topic."""

    def __init__(self, embodiment: Embodiment | None = None, standalone: bool = False, **node_kwargs):
        super().__init__("observation_node", **node_kwargs)
        self.embodiment = embodiment or declare_embodiment(self)
        self.declare_parameter("instruction_topic", "instruction")
        self.declare_parameter("max_skew_s", 0.25)
        self.assembler = ObservationAssembler(
            self.embodiment, max_skew_s=self.get_parameter("max_skew_s").value
        )
        #: called with the new (validated) instruction text; '' means stop
        self.on_instruction: Callable[[str], None] | None = None
        self.bad_messages = 0
        self._subscribe()
        if standalone:
            self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
            self.create_timer(1.0, self._publish_health)

    def _subscribe(self) -> None:
        for cam in self.embodiment.cameras:
            msg_type = CompressedImage if cam.compressed else Image
            self.create_subscription(msg_type, cam.topic, self._image_callback(cam.name), SENSOR)
        for src in self.embodiment.state_sources:
            self.create_subscription(state_message_class(src), src.topic, self._state_callback(src.name), SENSOR)
        topic = self.get_parameter("instruction_topic").value
        self.create_subscription(String, topic, self._instruction_callback, LATCHED)

    def now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _reject(self, what: str, error: Exception) -> None:
        self.bad_messages += 1
        self.get_logger().warning(f"dropped {what}: {error}", throttle_duration_sec=2.0)

    def _image_callback(self, camera: str):
        def callback(msg) -> None:
            try:
                if isinstance(msg, CompressedImage):
                    rgb = compressed_to_rgb(msg.format, bytes(msg.data))
                else:
                    rgb = image_to_rgb(
                        msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian, msg.data
                    )
                stamp = to_seconds(msg.header.stamp)
                self.assembler.add_image(camera, rgb, stamp or self.now_s(), self.now_s())
            except (ImageConversionError, ValueError) as exc:
                self._reject(f"image from camera '{camera}'", exc)

        return callback

    def _state_callback(self, source: str):
        def callback(msg) -> None:
            try:
                stamp = to_seconds(msg.header.stamp)
                self.assembler.add_joint_values(source, state_values(msg), stamp or self.now_s(), self.now_s())
            except (MessageConversionError, ValueError) as exc:
                self._reject(f"state from '{source}'", exc)

        return callback

    def _instruction_callback(self, msg: String) -> None:
        try:
            text = self.assembler.set_instruction(msg.data)
        except InstructionError as exc:
            self._reject("instruction", exc)
            return
        self.get_logger().info(f"instruction: '{text}'" if text else "empty instruction: stop")
        if self.on_instruction is not None:
            self.on_instruction(text)

    def _publish_health(self) -> None:
        status = DiagnosticStatus(name=f"{self.get_name()}: observation", hardware_id=self.embodiment.name)
        try:
            self.assembler.assemble(self.now_s())
            status.level, status.message = DiagnosticStatus.OK, "complete and fresh"
        except ObservationNotReady as exc:
            status.level, status.message = DiagnosticStatus.WARN, "; ".join(exc.reasons)[:500]
        status.values = [KeyValue(key="dropped_messages", value=str(self.bad_messages))]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)


def main(args: list[str] | None = None) -> int:
    """`ros2 run qwen_vla_ros observation_node`: report observation health on /diagnostics."""
    return run_nodes(lambda: [ObservationNode(standalone=True)], args)


if __name__ == "__main__":
    raise SystemExit(main())

"""Action-chunk publisher: streams joint commands to the controllers at the control rate.

A separate process by default, so model compute never stalls this loop. Every decision
(which action is "now", blending between chunks, safety limits, hold on fault) lives in
:class:`~qwen_vla_ros.control.control_loop.ControlLoop`; this node converts messages and
publishes.

Topics (relative names resolve in the node's namespace):
    action_chunk     trajectory_msgs/JointTrajectory in (a chunk with no points = stop, hold)
    e_stop           std_msgs/Bool in, reliable + transient-local: True latches a hold until
                     False is received
    <state topics>   as in the embodiment file (hold position, safety reference)
    <command topics> as in the embodiment file (JointTrajectory, Float64MultiArray,
                     JointState, Twist, or any type by name with a field mapping)
    /diagnostics     diagnostic_msgs/DiagnosticArray: mode, clipped commands, rejected chunks
"""

from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from nav_msgs.msg import Odometry
from rclpy.node import Node
from std_msgs.msg import Bool
from trajectory_msgs.msg import JointTrajectory

from ..control.control_loop import ControlLoop
from ..embodiment import Embodiment
from ..observation import ObservationAssembler, ObservationNotReady
from ..ros.commands import CommandPublishers
from ..ros.messages import (
    MessageConversionError,
    msg_to_chunk,
    odometry_pose,
    state_message_class,
    state_values,
)
from ..ros.qos import COMMAND, LATCHED, SENSOR
from .common import declare_embodiment, run_nodes


class ChunkPublisherNode(Node):
    """Timer at the embodiment's control rate -> ControlLoop.tick -> controller topics."""

    def __init__(self, embodiment: Embodiment | None = None, **kwargs):
        super().__init__("chunk_publisher", **kwargs)
        self.embodiment = embodiment or declare_embodiment(self)
        params = {
            "strategy": "async",  # synchronous | temporal_ensemble | async
            "chunk_topic": "action_chunk",
            "estop_topic": "e_stop",
            # ControlLoop options (control/control_loop.py, control/scheduler.py)
            "actions_per_chunk": 0,  # synchronous: steps played per chunk; 0 = the whole chunk
            "blend_steps": 5,  # async: cross-fade length into a new chunk, steps
            "ensemble_decay": 0.01,  # temporal_ensemble: weight exp(-m * i), i = 0 oldest
            "interpolate": False,  # linear interpolation between chunk points
            "discontinuity_steps": 10.0,  # refuse a chunk starting further away, in step limits
        }
        for name, default in params.items():
            self.declare_parameter(name, default)
        p = {name: self.get_parameter(name).value for name in params}
        self.loop = ControlLoop(
            self.embodiment,
            strategy=p["strategy"],
            actions_per_chunk=p["actions_per_chunk"] or None,
            blend_steps=p["blend_steps"],
            ensemble_decay=p["ensemble_decay"],
            interpolate=p["interpolate"],
            discontinuity_steps=p["discontinuity_steps"],
        )
        self.state = ObservationAssembler(self.embodiment)  # reused for the state vector only
        self.estop = False
        self.base_pose = None  # (x, y, yaw) from odometry, when a source gives it
        self.outputs = CommandPublishers(self, self.embodiment)
        self.create_subscription(JointTrajectory, p["chunk_topic"], self._on_chunk, COMMAND)
        self.create_subscription(Bool, p["estop_topic"], self._on_estop, LATCHED)
        for src in self.embodiment.state_sources:
            self.create_subscription(state_message_class(src), src.topic, self._state_callback(src.name), SENSOR)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(self.embodiment.dt, self._tick)
        self.create_timer(1.0, self._publish_diagnostics)

    def now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _measured_state(self):
        try:
            return self.state.state_vector()
        except ObservationNotReady:
            return None

    def _state_callback(self, source: str):
        def callback(msg) -> None:
            try:
                if isinstance(msg, Odometry):
                    self.base_pose = odometry_pose(msg)  # waypoint tracking follows odometry
                now = self.now_s()
                self.state.add_joint_values(source, state_values(msg), now, now)
            except (MessageConversionError, ValueError) as exc:
                self.get_logger().warning(f"state from '{source}' dropped: {exc}", throttle_duration_sec=2.0)

        return callback

    def _on_chunk(self, msg: JointTrajectory) -> None:
        if not msg.points:
            self.loop.stop()
            return
        try:
            chunk = msg_to_chunk(msg, self.embodiment.action_names, self.embodiment.dt)
        except MessageConversionError as exc:
            self.get_logger().error(f"chunk rejected: {exc}", throttle_duration_sec=1.0)
            return
        problems = self.loop.add_chunk(chunk, self.now_s())
        if problems:
            self.get_logger().error("chunk rejected: " + "; ".join(problems), throttle_duration_sec=1.0)

    def _on_estop(self, msg: Bool) -> None:
        if bool(msg.data) != self.estop:
            self.get_logger().warning("E-STOP engaged: holding" if msg.data else "e-stop released")
        self.estop = bool(msg.data)

    def _tick(self) -> None:
        result = self.loop.tick(self.now_s(), self._measured_state(), self.estop, self.base_pose)
        self.outputs.publish(result.commands, self.get_clock().now().to_msg())

    def _publish_diagnostics(self) -> None:
        stats = self.loop.statistics()
        status = DiagnosticStatus(
            name=f"{self.get_name()}: control",
            hardware_id=self.embodiment.name,
            level=DiagnosticStatus.OK if stats["mode"] == "run" else DiagnosticStatus.WARN,
            message=f"{stats['mode']} ({stats['cause']}): {stats['reason']}"[:300],
            values=[KeyValue(key=k, value=str(v)) for k, v in stats.items() if k not in ("mode", "reason")],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(array)

    def on_shutdown(self) -> None:
        """Last words: hold every arm, stop every base."""
        self.outputs.publish(self.loop.hold_commands(self._measured_state()), self.get_clock().now().to_msg())


def main(args: list[str] | None = None) -> int:
    """`ros2 run qwen_vla_ros chunk_publisher --ros-args -p embodiment:=aloha`."""
    return run_nodes(lambda: [ChunkPublisherNode()], args)


if __name__ == "__main__":
    raise SystemExit(main())

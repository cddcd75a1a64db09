"""Action-chunk publisher: streams joint commands to the controllers at the control rate.

A separate process by default, so model compute never stalls this loop. Every decision
(which action is "now", blending between chunks, safety limits, hold on fault) lives in
:class:`~qwen_vla_ros.control.control_loop.ControlLoop`; this node converts messages and
publishes.

Topics (relative names resolve in the node's namespace):
    action_chunk     trajectory_msgs/JointTrajectory in (a chunk with no points = stop, hold)
    e_stop           std_msgs/Bool in, from transient-local and volatile publishers alike
                     (`ros2 topic pub` works): True latches a hold until False is received
    inference_heartbeat  std_msgs/Header in: once seen, a gap longer than chunk_timeout_s
                     holds (inference died or hangs) until heartbeats return
    <state topics>   as in the embodiment file (hold position, safety reference)
    <command topics> as in the embodiment file (JointTrajectory, Float64MultiArray,
                     JointState, Twist, or any type by name with a field mapping)
    /diagnostics     diagnostic_msgs/DiagnosticArray: mode, clipped commands, rejected chunks,
                     dropped messages per topic

Services:
    ~/reset          std_srvs/Trigger: stand aside while something else moves the robot (a
                     simulation reset, an operator): drop the chunks and command nothing until
                     the next chunk, which ramps from the measured state. Call it *before* the
                     move; a hold would drag the robot back to where it was.

It is the last process standing: no message, no lost inference process and no stale state
source ends it; it holds (a state source older than its max_age_s holds too, naming it) and
keeps publishing the hold.
"""

from __future__ import annotations

import math
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from nav_msgs.msg import Odometry
from rclpy.node import Node
from std_msgs.msg import Bool, Header
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from ..control.control_loop import ControlLoop
from ..embodiment import Embodiment
from ..observation import ObservationAssembler, ObservationNotReady
from ..ros.commands import CommandPublishers
from ..ros.dedup import DuplicateFilter
from ..ros.messages import (
    MessageConversionError,
    msg_to_chunk,
    odometry_pose,
    state_message_class,
    state_values,
)
from ..ros.qos import ANY_DURABILITY, COMMAND, LATCHED_READER, SENSOR
from .common import (
    InputGuard,
    NodeParameters,
    RateLimitedLog,
    WaitingReporter,
    declare_embodiment,
    guard_timer,
    run_nodes,
    startup_line,
)

#: ControlLoop options that ``ros2 param set`` may change at run time: name -> (check, expected)
RUNTIME_CHECKS = {
    "actions_per_chunk": (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0 (0 = the whole chunk)"),
    "blend_steps": (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
    "ensemble_decay": (lambda v: isinstance(v, (int, float)) and math.isfinite(v) and v >= 0, "a finite number >= 0"),
    "discontinuity_steps": (lambda v: isinstance(v, (int, float)) and math.isfinite(v) and v > 0, "a positive number"),
}


class ChunkPublisherNode(Node):
    """Timer at the embodiment's control rate -> ControlLoop.tick -> controller topics."""

    def __init__(self, embodiment: Embodiment | None = None, **kwargs):
        super().__init__("chunk_publisher", **kwargs)
        self.embodiment = embodiment or declare_embodiment(self)
        p = self.params = NodeParameters(
            self,
            fixed={
                "strategy": "async",  # synchronous | temporal_ensemble | async (as the inference node)
                "chunk_topic": "action_chunk",
                "estop_topic": "e_stop",
                "heartbeat_topic": "inference_heartbeat",
                "interpolate": False,  # linear interpolation between chunk points
            },
            # ControlLoop options (control/control_loop.py, control/scheduler.py)
            runtime={
                "actions_per_chunk": 0,  # synchronous: steps played per chunk; 0 = the whole chunk
                "blend_steps": 5,  # async: cross-fade length into a new chunk, steps
                "ensemble_decay": 0.01,  # temporal_ensemble: weight exp(-m * i), i = 0 oldest
                "discontinuity_steps": 10.0,  # refuse a chunk starting further away, in step limits
            },
            apply=self._apply,
        )
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
        self.last_heartbeat: float | None = None  # node clock, s; None until inference shows up
        self.estop_latency_s: float | None = None  # e-stop message receipt -> first hold tick, wall s
        self._estop_received_wall: float | None = None
        self.guard = InputGuard(self)
        self._log = RateLimitedLog(self.get_logger())
        self.waiting = WaitingReporter(self.get_logger())
        self._estops = DuplicateFilter()
        self._last_cause = ""
        self._cause_since = 0.0  # node clock, s: when the current cause began
        self._hold_since: float | None = None  # node clock, s: when the current hold began (any cause)
        self._last_diagnostics = 0.0  # wall s
        self.outputs = CommandPublishers(self, self.embodiment)
        self._subscribe()
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.create_timer(self.embodiment.dt, guard_timer(self, self._tick, "control tick"))
        self.create_timer(1.0, guard_timer(self, self._publish_diagnostics, "diagnostics"))
        startup_line(
            self,
            [self.resolve_topic_name(t) for t in (p["chunk_topic"], p["estop_topic"], p["heartbeat_topic"])]
            + [self.resolve_topic_name(s.topic) for s in self.embodiment.state_sources],
            [self.resolve_topic_name(o.topic) for o in self.embodiment.outputs] + ["/diagnostics"],
        )

    def _subscribe(self) -> None:
        p = self.params
        self.guard.subscribe(JointTrajectory, p["chunk_topic"], self._on_chunk, COMMAND)
        # latched for late joiners, volatile for `ros2 topic pub`, teleop and joystick drivers
        for index, qos in enumerate((LATCHED_READER, ANY_DURABILITY)):
            self.guard.subscribe(Bool, p["estop_topic"], self._estop_callback(index), qos, paired=True)
        self.guard.subscribe(Header, p["heartbeat_topic"], self._on_heartbeat, COMMAND)
        for src in self.embodiment.state_sources:
            self.guard.subscribe(state_message_class(src), src.topic, self._state_callback(src.name), SENSOR)

    def _apply(self, changes: dict) -> None:
        """Validate run-time parameter changes, then apply them to the loop (ValueError refuses)."""
        for name, value in changes.items():
            check, expected = RUNTIME_CHECKS[name]
            if isinstance(value, bool) or not check(value):
                raise ValueError(f"{name} must be {expected}, got {value!r}")
        scheduler = self.loop.scheduler
        if "actions_per_chunk" in changes:
            scheduler.actions_per_chunk = changes["actions_per_chunk"] or None
        if "blend_steps" in changes:
            scheduler.blend_steps = int(changes["blend_steps"])
        if "ensemble_decay" in changes:
            scheduler.ensemble_decay = float(changes["ensemble_decay"])
        if "discontinuity_steps" in changes:
            self.loop.limiter.discontinuity_steps = float(changes["discontinuity_steps"])

    def now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _measured_state(self):
        try:
            return self.state.state_vector()
        except ObservationNotReady:
            return None

    def _state_callback(self, source: str):
        def callback(msg) -> None:
            pose = odometry_pose(msg) if isinstance(msg, Odometry) else None
            now = self.now_s()
            self.state.add_joint_values(source, state_values(msg), now, now)  # raises on NaN
            if pose is not None and np.all(np.isfinite(pose)):
                self.base_pose = pose  # waypoint tracking follows odometry

        return callback

    def _on_heartbeat(self, msg: Header) -> None:
        self.last_heartbeat = self.now_s()

    def _on_chunk(self, msg: JointTrajectory) -> None:
        if not msg.points:
            self.loop.stop()
            return
        try:
            chunk = msg_to_chunk(msg, self.embodiment.action_names, self.embodiment.dt)
        except MessageConversionError as exc:
            self.guard.drop(self.resolve_topic_name(self.params["chunk_topic"]), str(exc))
            self.loop.stats.chunks_rejected += 1
            return
        problems = self.loop.add_chunk(chunk, self.now_s())
        if problems and not self.estop:  # during an e-stop dropping chunks is the point
            self._log("chunk", "chunk rejected: " + "; ".join(problems))

    def _on_reset(self, request, response):
        """Someone else is about to move the robot: stop commanding until the next chunk."""
        self.loop.release()
        self.state.clear()  # readings from before the move must not be ramped from
        self.base_pose = None
        response.success = True
        response.message = "chunks dropped; commanding nothing until the next chunk"
        self.get_logger().info("reset: " + response.message)
        return response

    def _estop_callback(self, subscription: int):
        def callback(msg: Bool) -> None:
            engaged = bool(msg.data)
            if not self._estops.accept(subscription, engaged) or engaged == self.estop:
                return
            self.estop = engaged
            if engaged:
                self._estop_received_wall = time.monotonic()
                self.get_logger().warning("E-STOP engaged: holding until e_stop false is received")
            else:
                self.get_logger().info("e-stop released")

        return callback

    def _hold_for(self, now: float) -> tuple[str, str] | None:
        """A reason to hold although an action is scheduled: lost inference or stale state."""
        timeout = self.embodiment.chunk_timeout_s
        if self.last_heartbeat is not None and now < self.last_heartbeat:
            self.last_heartbeat = now  # time went backwards (simulation reset): count from here
        if self.last_heartbeat is not None and now - self.last_heartbeat > timeout:
            return "inference_lost", (
                f"no inference heartbeat for {now - self.last_heartbeat:.3f} s (> chunk_timeout_s {timeout:g})"
            )
        stale = self.state.stale_state_sources(now)
        if stale:
            return "stale_state", "; ".join(stale)
        return None

    def _tick(self) -> None:
        now = self.now_s()
        result = self.loop.tick(now, self._measured_state(), self.estop, self.base_pose, self._hold_for(now))
        self.outputs.publish(result.commands, self.get_clock().now().to_msg())
        if result.cause == "estop" and self._estop_received_wall is not None:
            self.estop_latency_s = time.monotonic() - self._estop_received_wall
            self._estop_received_wall = None
        if result.mode == "run":
            self._hold_since = None
        elif self._hold_since is None:
            self._hold_since = now
        if result.cause != self._last_cause:
            self._report_change(result)

    def _report_change(self, result) -> None:
        """One line when the loop starts holding for a new reason, or runs again; /diagnostics
        at once (at most every 0.1 s), so observers see a hold when it begins."""
        previous, self._last_cause = self._last_cause, result.cause
        self._cause_since = self.now_s()
        if time.monotonic() - self._last_diagnostics >= 0.1:
            self._publish_diagnostics()
        if result.cause == "run":
            if previous not in ("", "starved"):  # resuming after a planned pause is routine
                self._log("run", f"running again after '{previous}' ({result.reason})", level="info")
        elif result.cause in ("inference_lost", "stale_state", "watchdog", "fault"):
            self._log(result.cause, f"holding: {result.reason}")
        elif result.cause not in ("estop", "starved"):  # the e-stop says so once, starving is routine
            self._log(result.cause, f"holding ({result.cause}): {result.reason}", level="info")

    def _state_health(self) -> str:
        """'fresh', or what is missing or stale (also logged when it changes, then every 10 s)."""
        stale = self.state.stale_state_sources(self.now_s())
        if not stale:
            self.waiting.ready("every state source is fresh")
            return "fresh"
        return self.waiting.waiting("; ".join(stale), self.now_s())

    def _publish_diagnostics(self) -> None:
        self._last_diagnostics = time.monotonic()
        stats = self.loop.statistics()
        status = DiagnosticStatus(
            name=f"{self.get_name()}: control",
            hardware_id=self.embodiment.name,
            level=DiagnosticStatus.OK if stats["mode"] == "run" else DiagnosticStatus.WARN,
            message=f"{stats['mode']} ({stats['cause']}): {stats['reason']}"[:300],
            values=[KeyValue(key=k, value=str(v)) for k, v in stats.items() if k not in ("mode", "reason")]
            + [
                KeyValue(key="estop", value=str(self.estop)),
                KeyValue(key="since_s", value=f"{self._cause_since:.3f}"),
                KeyValue(key="hold_since_s", value="" if self._hold_since is None else f"{self._hold_since:.3f}"),
                KeyValue(key="stale_state", value=self._state_health()),
            ]
            + self.guard.values(),
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(array)

    def on_shutdown(self) -> None:
        """Last words: hold every arm, stop every base."""
        self.outputs.publish(self.loop.hold_commands(self._measured_state()), self.get_clock().now().to_msg())
        self.get_logger().info("shutting down: final hold sent")


def main(args: list[str] | None = None) -> int:
    """`ros2 run qwen_vla_ros chunk_publisher --ros-args -p embodiment:=aloha`."""
    return run_nodes(lambda: [ChunkPublisherNode()], args)


if __name__ == "__main__":
    raise SystemExit(main())

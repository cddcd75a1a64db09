"""Episode monitor: gives the instruction and records what the graph does (demo, eval, tests).

It listens like any observer would — to the controller command topics, the joint states,
the cameras, the action chunks, /diagnostics and the sim's success — and fills an
:class:`~qwen_vla_ros.evaluation.EpisodeRecord`. It follows simulated time.
"""

from __future__ import annotations

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from std_msgs.msg import Bool, Float64, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from ..data.images import image_to_rgb
from ..embodiment import Embodiment
from ..evaluation import EpisodeRecord
from ..observation import ObservationAssembler, ObservationNotReady
from ..ros.commands import COMMAND_READERS
from ..ros.messages import state_message_class, state_values
from ..ros.qos import LATCHED, RECORD_RELIABLE, RECORD_SENSOR, SENSOR
from .common import InputGuard


class EpisodeMonitor(Node):
    """Records one episode at a time; call :meth:`begin` to start a new record."""

    def __init__(self, embodiment: Embodiment, frame_interval_s: float = 0.5, **kwargs):
        super().__init__("episode_monitor", parameter_overrides=[Parameter("use_sim_time", value=True)], **kwargs)
        self.embodiment = embodiment
        self.frame_interval_s = frame_interval_s
        self.state = ObservationAssembler(embodiment)
        self.record = EpisodeRecord(embodiment.name, "")
        self._current = embodiment.home_position.copy()
        self._recording = False
        # the chunk publisher counts clipped ticks over its whole life: an episode's are the
        # difference from the count when the episode began
        self._clipped_seen = 0
        self._clipped_at_start = 0
        self.instruction_pub = self.create_publisher(String, "instruction", LATCHED)
        self.reset_client = self.create_client(Trigger, "sim_bridge/reset")
        self.restart_client = self.create_client(Trigger, "sim_bridge/restart")
        # before a sim reset the chunk publisher stands aside (a hold would drag the arms back
        # to the old pose); after it the inference node drops the old scene's readings
        self.release_client = self.create_client(Trigger, "chunk_publisher/reset")
        self.policy_reset_client = self.create_client(Trigger, "inference_node/reset")
        # one command row per control tick, sampled when this output is published
        self._clock_output = next(
            (o for o in embodiment.outputs if all(embodiment.group(g).kind != "base_waypoints" for g in o.groups)),
            None,
        )
        self.guard = InputGuard(self)  # a bad message costs the record a sample, not the demo
        self._subscribe()

    def _subscribe(self) -> None:
        for out in self.embodiment.outputs:
            kinds = {self.embodiment.group(g).kind for g in out.groups}
            # a waypoint trajectory is commanded as a Twist: not comparable with the action layout
            if out.type in COMMAND_READERS and "base_waypoints" in kinds:
                msg_type, read = COMMAND_READERS[out.type]
                self.guard.subscribe(msg_type, out.topic, self._tracked_twist_callback(read), RECORD_RELIABLE)
            elif out.type in COMMAND_READERS:
                msg_type, read = COMMAND_READERS[out.type]
                self.guard.subscribe(msg_type, out.topic, self._command_callback(out, read), RECORD_RELIABLE)
        for src in self.embodiment.state_sources:
            self.guard.subscribe(state_message_class(src), src.topic, self._state_callback(src.name), RECORD_SENSOR)
        for cam in self.embodiment.cameras:
            self.guard.subscribe(Image, cam.topic, self._image_callback(cam.name), SENSOR)
        self.guard.subscribe(JointTrajectory, "action_chunk", self._on_chunk, RECORD_RELIABLE)
        self.guard.subscribe(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.guard.subscribe(Bool, "sim_bridge/success", self._on_success, LATCHED)
        self.guard.subscribe(Float64, "sim_bridge/reward", self._on_reward, 10)
        self.guard.subscribe(Bool, "sim_bridge/wrong_object", self._on_wrong_object, LATCHED)
        self.guard.subscribe(String, "sim_bridge/approached", self._on_approached, LATCHED)

    def now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # -- episode control ----------------------------------------------------------------
    def instruct(self, text: str) -> None:
        self.instruction_pub.publish(String(data=text))

    def begin(self, instruction: str) -> None:
        """Start recording a new episode from now. Called again when the policy's first chunk
        arrives, the episode keeps as ``start_state`` the first state measured after the first
        call: nothing moves the robot between the instruction and the first chunk."""
        start_state = None
        if self._recording:
            start_state = self.record.start_state
            if start_state is None and self.record.states:
                start_state = self.record.states[0]
        else:
            self._clipped_at_start = self._clipped_seen
        self.record = EpisodeRecord(self.embodiment.name, instruction, start_time=self.now_s(),
                                    start_state=start_state)
        self._recording = True

    def end(self) -> EpisodeRecord:
        self._recording = False
        self.record.end_time = self.now_s()
        return self.record

    # -- callbacks -------------------------------------------------------------------------
    def _command_callback(self, output, read):
        slices = [self.embodiment.group_slices[g] for g in output.groups]
        groups = [self.embodiment.group(g) for g in output.groups]

        def callback(msg) -> None:
            values = read(msg)
            if values is None:
                return
            k = 0
            for group, where in zip(groups, slices, strict=True):
                width = where.stop - where.start
                part = np.asarray(values[k : k + width], dtype=float)
                if group.kind == "gripper":
                    part = np.array([self.embodiment.gripper_command_to_normalised(group, part[0])])
                self._current[where] = part
                k += width
            if self._recording and output is self._clock_output:
                self.record.command_times.append(self.now_s())
                self.record.commands.append(self._current.copy())

        return callback

    def _tracked_twist_callback(self, read):
        def callback(msg) -> None:
            if self._recording:
                linear, angular = read(msg)
                self.record.tracked_twists.append((self.now_s(), linear, angular))

        return callback

    def _state_callback(self, source: str):
        def callback(msg) -> None:
            now = self.now_s()
            self.state.add_joint_values(source, state_values(msg), now, now)
            if self._recording and source == self.embodiment.state_sources[0].name:
                try:
                    self.record.states.append(self.state.state_vector())
                    self.record.state_times.append(now)
                except ObservationNotReady:
                    pass

        return callback

    def _image_callback(self, camera: str):
        def callback(msg: Image) -> None:
            if not self._recording:
                return
            frames = self.record.frames.setdefault(camera, [])
            now = self.now_s()
            if frames and now - frames[-1][0] < self.frame_interval_s:
                return
            rgb = image_to_rgb(msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian, msg.data)
            frames.append((now, rgb))

        return callback

    def _on_chunk(self, msg: JointTrajectory) -> None:
        if self._recording and msg.points:
            self.record.chunk_times.append(self.now_s())

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if status.name.endswith(": control") and "clipped_ticks" in values:
                self._clipped_seen = int(values["clipped_ticks"])
                if self._recording:
                    self.record.clipped_commands = self._clipped_seen - self._clipped_at_start
            if self._recording and status.name.endswith(": inference") and "total_ms" in values:
                self.record.inference_ms.append(float(values["total_ms"]))

    def _on_success(self, msg: Bool) -> None:
        if self._recording:
            self.record.success = self.record.success or bool(msg.data)

    def _on_wrong_object(self, msg: Bool) -> None:
        if self._recording:
            self.record.wrong_object = self.record.wrong_object or bool(msg.data)

    def _on_approached(self, msg: String) -> None:
        if self._recording:
            self.record.approached = msg.data or None  # the sim's latest word: where it went

    def _on_reward(self, msg: Float64) -> None:
        if self._recording:
            self.record.reward = max(self.record.reward, float(msg.data))

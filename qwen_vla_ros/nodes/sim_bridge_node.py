"""Sim bridge: a simulated rig on the same topics and conventions as the real one.

It owns simulated time: a worker thread steps the :class:`~qwen_vla_ros.sim.rig.SimRig`
(MuJoCo ALOHA arms, a kinematic base, or the navigation world, per embodiment) by one
control period, publishes ``/clock``, the joint states on the embodiment's state topics
(Interbotix naming, finger positions in m) or odometry, and the cameras on their topics at
``camera_rate_hz``. It consumes the command topics the embodiment's outputs name
(JointTrajectory, Float64MultiArray, JointState, Twist) and applies them as the rig's
controllers would. Every other node runs with
``use_sim_time``, so a slow CPU render slows the world, never the control timing.

Topics and services:
    /clock                       rosgraph_msgs/Clock
    <state topics>, <camera topics>, <command topics>   as in the embodiment file
    ~/success                    std_msgs/Bool (transient-local), task solved
    ~/reward                     std_msgs/Float64, staged task reward
    ~/wrong_object               std_msgs/Bool (transient-local), colour tasks: acted on an
                                 object the instruction did not name
    ~/approached                 std_msgs/String (transient-local), colour tasks: the colour of
                                 the object the robot went to (the cube a gripper came closest
                                 to, the box the base last stopped beside), empty while none
    ~/reset                      std_srvs/Trigger: new episode (task from the `task` parameter,
                                 seed: the previous episode's + 1; the first is `seed`);
                                 replies once a camera frame of the new scene is published
    ~/restart                    std_srvs/Trigger: the same episode (seed) again, from its start
                                 (replies as ~/reset does). With a policy running, call
                                 chunk_publisher/reset first, or its hold drags the arms back
    ~/expert_done                std_msgs/Bool, with `expert: true`: an expert run finished;
                                 true if it solved the task
    instruction (subscribed)     std_msgs/String: colour tasks score the object it names; with
                                 `expert: true` it starts an expert run (empty: stops it)
    /diagnostics                 commands applied/refused, dropped messages per topic
Choose the task with `ros2 param set /sim_bridge task insertion`, then call ~/reset.

With the read-only parameter `expert: true` the bridge is also its own teleoperator
(:mod:`~qwen_vla_ros.sim.expert_teleop`): it streams the task's scripted expert's commands on
the command topics, as a leader arm would, for `qwen-vla collect --via-graph`. Run no other
command source (chunk publisher) alongside it. Its commands come back through the command
subscriptions, and the world waits for them: the next step runs once every command of the
last tick is applied (lockstep, as simulators driven by a controller in another process do),
so a loaded machine slows the world, never shifts the demonstration against it.
"""

from __future__ import annotations

import math
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float64, String
from std_srvs.srv import Trigger

from ..data.images import rgb_to_image_fields
from ..ros.commands import COMMAND_READERS, CommandPublishers
from ..ros.dedup import DuplicateFilter
from ..ros.messages import state_message_class
from ..ros.qos import (
    ANY_DURABILITY,
    CAMERA_PUBLISHER,
    COMMAND,
    JOINT_STATE_PUBLISHER,
    LATCHED,
    LATCHED_READER,
    RECORD_RELIABLE,
)
from ..sim.rig import SimRig
from .common import (
    InputGuard,
    NodeParameters,
    RateLimitedLog,
    declare_embodiment,
    guard_timer,
    run_nodes,
    startup_line,
)

#: Wall seconds the world waits for its expert's commands to come back (lockstep) before it
#: steps on without them and says so: far above a loopback round trip on a loaded machine.
EXPERT_COMMAND_TIMEOUT_S = 2.0


class SimBridgeNode(Node):
    """Steps a :class:`~qwen_vla_ros.sim.rig.SimRig` and speaks the rig's topics."""

    def __init__(self, **kwargs):
        super().__init__("sim_bridge", **kwargs)
        self.embodiment = declare_embodiment(self, default="aloha_sim")
        self.p = NodeParameters(
            self,
            fixed={
                "seed": 0,
                # rendered frame, px: the rig's 4:3 frame scaled down; the observation node resizes
                # it to the model's image size exactly as it does a real camera's 640x480
                "render_height": 240,
                "render_width": 320,
                "expert": False,  # stream the task's scripted expert on the command topics (collect)
            },
            runtime={
                "task": "",  # used by the next ~/reset; '' = the robot's default (transfer_cube, drive_to_color)
                "camera_rate_hz": 10.0,  # rendering is the slow part: camera frames per sim second
                "real_time_factor": 1.0,  # at most this fast; 0 = as fast as the CPU allows
            },
            apply=self._apply,
        )
        render_size = (int(self.p["render_height"]), int(self.p["render_width"]))
        self.sim = SimRig(self.embodiment, task=self.p["task"] or None, seed=int(self.p["seed"]), render_size=render_size)
        self._lock = threading.Lock()
        # lockstep with the expert teleoperator: commands it sent that the subscriptions have
        # not applied yet; the sim thread waits on this condition (it shares the lock)
        self._expert_in_flight = 0
        self._expert_applied = threading.Condition(self._lock)
        self.guard = InputGuard(self)
        self._log = RateLimitedLog(self.get_logger())
        self.teleop = None
        if self.p["expert"]:
            from ..sim.expert_teleop import ExpertTeleop

            self.teleop = ExpertTeleop(self.sim)
        self._make_interfaces()
        self.commands_applied = 0
        self.commands_rejected = 0
        self._closing = threading.Event()
        self._scene_shown = threading.Event()  # cleared by a reset until a frame of it is out
        self._scene_shown.set()
        self._thread = threading.Thread(target=self._run, name="sim", daemon=True)
        self._thread.start()
        startup_line(
            self,
            [self.resolve_topic_name(o.topic) for o in self.embodiment.outputs],
            ["/clock", *(self.resolve_topic_name(t.topic) for t in [*self.embodiment.state_sources, *self.embodiment.cameras]), "/diagnostics"],
        )

    def _apply(self, changes: dict) -> None:
        """Validate run-time parameter changes (ValueError refuses them); the loop reads them."""
        if "task" in changes and not (isinstance(changes["task"], str) and changes["task"]):
            raise ValueError(f"task must be a task name, got {changes['task']!r}")
        for name in ("camera_rate_hz", "real_time_factor"):
            value = changes.get(name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
            if name == "camera_rate_hz" and value <= 0:
                raise ValueError(f"camera_rate_hz must be > 0, got {value}")
            if name == "real_time_factor" and value < 0:
                raise ValueError(f"real_time_factor must be >= 0 (0 = as fast as possible), got {value}")

    def _make_interfaces(self) -> None:
        self.clock_pub = self.create_publisher(Clock, "/clock", 10)
        # reliable with a deep history, as ros2_control's broadcaster: a recorder that falls
        # behind gets retransmissions; the graph's best-effort readers still match
        self.state_pubs = {
            s.name: self.create_publisher(state_message_class(s), s.topic, JOINT_STATE_PUBLISHER)
            for s in self.embodiment.state_sources
        }
        self.camera_pubs = {c.name: self.create_publisher(Image, c.topic, CAMERA_PUBLISHER) for c in self.embodiment.cameras}
        self.success_pub = self.create_publisher(Bool, "~/success", LATCHED)
        self.reward_pub = self.create_publisher(Float64, "~/reward", 10)
        self.wrong_pub = self.create_publisher(Bool, "~/wrong_object", LATCHED)
        self.approached_pub = self.create_publisher(String, "~/approached", LATCHED)
        # The referee of colour tasks: success counts for the object the instruction names.
        # Latched and volatile publishers alike; a latched one's message arrives on both, and is
        # acted on once (a second expert request would restart the run's lead-in).
        self._instructions = DuplicateFilter()
        for index, qos in enumerate((LATCHED_READER, ANY_DURABILITY)):
            self.guard.subscribe(String, "instruction", self._instruction_callback(index), qos, paired=True)
        for output in self.embodiment.outputs:
            if output.type not in COMMAND_READERS:
                raise ValueError(
                    f"the sim consumes {', '.join(COMMAND_READERS)}; output {output.topic} is "
                    f"{output.type} (use an embodiment with built-in output types, e.g. aloha_sim)"
                )
            msg_type, read = COMMAND_READERS[output.type]
            self.guard.subscribe(msg_type, output.topic, self._command_callback(output.topic, read), COMMAND)
        if self.teleop is not None:
            # demonstrations are recorded: a history of 10 s of commands, so a recorder that falls
            # behind on a loaded machine still gets every one (a reliable writer only resends
            # what it still holds); every outcome matters to the collector too
            self.expert_commands = CommandPublishers(self, self.embodiment, stamp_trajectories=True, qos=RECORD_RELIABLE)
            self.expert_done_pub = self.create_publisher(Bool, "~/expert_done", RECORD_RELIABLE)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.create_service(Trigger, "~/restart", self._on_restart)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0, guard_timer(self, self._publish_diagnostics, "diagnostics"))

    def _publish_diagnostics(self) -> None:
        status = DiagnosticStatus(
            level=DiagnosticStatus.OK,
            name=f"{self.get_name()}: sim",
            message=f"sim t={self.sim.sim_time_ns * 1e-9:.2f} s",
            hardware_id=self.embodiment.name,
            values=[
                KeyValue(key="commands_applied", value=str(self.commands_applied)),
                KeyValue(key="commands_refused", value=str(self.commands_rejected)),
                *self.guard.values(),
            ],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(array)

    def _command_callback(self, topic: str, read):
        def callback(msg) -> None:
            values = read(msg)
            with self._lock:
                try:
                    if values is not None:
                        self.sim.apply(topic, values)
                        self.commands_applied += 1
                except ValueError as exc:  # malformed or out of the joint's range: refuse, as a servo would
                    self.commands_rejected += 1
                    self._log(f"refused:{topic}", f"command on {topic} refused by the sim: {exc}")
                finally:
                    self._expert_command_back()

        return callback

    def _instruction_callback(self, subscription: int):
        def callback(msg: String) -> None:
            if self._instructions.accept(subscription, msg.data):
                self._on_instruction(msg)

        return callback

    def _on_instruction(self, msg: String) -> None:
        with self._lock:
            goal = self.sim.set_instruction(msg.data)
            if self.teleop is not None and msg.data.strip():
                self.teleop.request(msg.data, self.sim.sim_time_ns * 1e-9)
            elif self.teleop is not None:
                self.teleop.stop()
        if goal is not None:
            self.get_logger().info(f"scoring the episode against the {goal} object named in '{msg.data}'")

    def _on_restart(self, request, response):
        with self._lock:
            self.sim.reset(seed=self.sim.episode_seed)
            self._teleop_reset()
            self._scene_shown.clear()
            seed = self.sim.episode_seed
        self._wait_for_new_scene()
        response.success, response.message = True, f"{self.sim.task} episode {seed} from its start"
        return response

    def _on_reset(self, request, response):
        task = self.p["task"] or None
        try:
            with self._lock:
                self.sim.reset(task=task)
                self._teleop_reset()
                self._scene_shown.clear()
                seed, goal = self.sim.episode_seed, self.sim.goal
        except Exception as exc:  # noqa: BLE001 - a bad task name is the caller's answer, not a crash
            response.success, response.message = False, f"reset to task {task!r} failed: {exc}"
            return response
        self._wait_for_new_scene()
        response.success = True
        response.message = f"new {self.sim.task} episode, seed {seed}" + (f", goal {goal}" if goal else "")
        return response

    def _wait_for_new_scene(self) -> None:
        """Reply to a reset only once the sim thread (which owns the GL context) has published
        a camera frame of the new scene: its next step renders whatever the camera rate says.
        Otherwise the newest frame until the next camera tick (up to 1 / camera_rate_hz later)
        shows the old scene, and a policy instructed right after the reply acts on where the
        objects were."""
        if not self._scene_shown.wait(timeout=5.0):
            self._log("reset", "no camera frame of the new scene within 5 s (is the sim thread stuck?)", "error")

    def _teleop_reset(self) -> None:
        """Under the lock. The sim thread must not wait for commands of the old scene while the
        service (on the executor that would apply them) waits for a frame of the new one."""
        if self.teleop is not None:
            self.teleop.reset()
            self._expert_in_flight = 0
            self._expert_applied.notify_all()

    def _expert_command_back(self) -> None:
        """Under the lock: one command came back through a subscription."""
        if self._expert_in_flight > 0:
            self._expert_in_flight -= 1
            if self._expert_in_flight == 0:
                self._expert_applied.notify_all()

    def _wait_for_expert_commands(self) -> None:
        """Lockstep: until the subscriptions applied every command the expert sent this tick."""
        with self._expert_applied:
            back = self._expert_applied.wait_for(lambda: self._expert_in_flight == 0 or self._closing.is_set(),
                                                 timeout=EXPERT_COMMAND_TIMEOUT_S)
            if not back:
                self._log("lockstep", f"{self._expert_in_flight} expert command(s) did not come back through "
                          f"the command subscriptions within {EXPERT_COMMAND_TIMEOUT_S} s; stepping on "
                          "(is the executor stuck, or another node on the command topics?)", "error")
                self._expert_in_flight = 0

    # -- simulation loop --------------------------------------------------------------------
    def _run(self) -> None:
        dt = self.embodiment.dt
        step, paced_from, wall_start, rtf = 0, 0, time.perf_counter(), float(self.p["real_time_factor"])
        while not self._closing.is_set():
            frames_every = max(1, round(1.0 / (dt * float(self.p["camera_rate_hz"]))))
            if float(self.p["real_time_factor"]) != rtf:  # changed at run time: pace from here
                rtf, paced_from, wall_start = float(self.p["real_time_factor"]), step, time.perf_counter()
            try:
                self._step(dt, render=step % frames_every == 0)
            except Exception as exc:  # noqa: BLE001 - the world keeps its clock; the fault is logged
                self._log("step", f"simulation step failed: {type(exc).__name__}: {exc}", "error")
            if self.teleop is not None:
                self._wait_for_expert_commands()
            step += 1
            if rtf > 0:  # pace: never run ahead of wall time * rtf
                ahead = (step - paced_from) * dt / rtf - (time.perf_counter() - wall_start)
                if ahead > 0:
                    time.sleep(ahead)

    def _step(self, dt: float, render: bool) -> None:
        with self._lock:
            new_scene = not self._scene_shown.is_set()
            render = render or new_scene
            self.sim.step(dt)
            # before publishing: an expert run starts from the episode's start state, which the
            # state and frame of its first step then show (as step 0 of a direct episode does)
            expert = self.teleop.tick(self.sim.sim_time_ns * 1e-9, render) if self.teleop is not None else None
            stamp = self._publish_clock_and_state()
            if render:
                self._publish_cameras(stamp)
                self._publish_task_state()
            if new_scene:
                self._scene_shown.set()
            if expert is not None:
                self._send_expert(expert, stamp)
            warning = self.sim.take_warning()
            if warning:
                self._log("sim", warning, "error")

    def _publish_clock_and_state(self):
        now = self.sim.sim_time_ns
        clock = Clock()
        clock.clock.sec, clock.clock.nanosec = divmod(now, 1_000_000_000)
        self.clock_pub.publish(clock)
        for source in self.embodiment.state_sources:
            if source.type.endswith("Odometry"):
                msg = self._odometry()
            else:
                names, positions, velocities = self.sim.joint_state(source.name)
                msg = JointState(name=list(names), position=positions.tolist(), velocity=velocities.tolist())
            msg.header.stamp = clock.clock
            self.state_pubs[source.name].publish(msg)
        return clock.clock

    def _send_expert(self, commands: list, stamp) -> None:
        """The expert's commands for the next control period, sent like any controller command."""
        self._expert_in_flight = len(commands)
        self.expert_commands.publish(commands, stamp)
        outcome = self.teleop.take_finished()
        if outcome is not None:
            self.expert_done_pub.publish(Bool(data=outcome))
            self.get_logger().info(f"expert run of seed {self.sim.episode_seed} finished: "
                                   f"{'solved' if outcome else 'NOT solved'} ({self.commands_applied} commands "
                                   f"applied, {self.commands_rejected} refused since start)")

    def _odometry(self) -> Odometry:
        odom = self.sim.odometry()
        msg = Odometry()
        msg.header.frame_id, msg.child_frame_id = "odom", "base_link"
        msg.pose.pose.position.x, msg.pose.pose.position.y = odom["x"], odom["y"]
        msg.pose.pose.orientation.z, msg.pose.pose.orientation.w = odom["qz"], odom["qw"]
        msg.twist.twist.linear.x, msg.twist.twist.angular.z = odom["linear_x"], odom["angular_z"]
        return msg

    def _publish_cameras(self, stamp) -> None:
        for camera in self.embodiment.cameras:
            msg = Image(**rgb_to_image_fields(self.sim.render(camera.name)))
            msg.header.stamp = stamp
            msg.header.frame_id = camera.name
            self.camera_pubs[camera.name].publish(msg)

    def _publish_task_state(self) -> None:
        self.reward_pub.publish(Float64(data=self.sim.reward()))
        self.success_pub.publish(Bool(data=self.sim.success()))
        self.wrong_pub.publish(Bool(data=self.sim.wrong_object()))
        self.approached_pub.publish(String(data=self.sim.approached() or ""))

    def on_shutdown(self) -> None:
        self._closing.set()
        with self._expert_applied:
            self._expert_applied.notify_all()
        self._thread.join(timeout=1.0)  # one step and render at most; the process ends within 3 s
        self.sim.close()


def main(args: list[str] | None = None) -> int:
    """`ros2 run qwen_vla_ros sim_bridge --ros-args -p embodiment:=aloha_sim`."""
    return run_nodes(lambda: [SimBridgeNode()], args)


if __name__ == "__main__":
    raise SystemExit(main())

"""Inference node: holds the Qwen-VLA policy and publishes action chunks.

Inference runs on a worker thread, never inside a callback, so camera and state callbacks
keep flowing while the model computes. The observation node is composed into the same
process: it hands over complete, fresh observations in memory (no image is serialised twice).

Topics and services (relative names resolve in the node's namespace):
    action_chunk       trajectory_msgs/JointTrajectory  out: header.stamp = time of the first
                       action, joint_names = action layout, one point per control step.
                       A chunk with no points means "stop now, hold".
    inference_heartbeat  std_msgs/Header  out, every 0.1 s: frame_id 'active' or 'idle'; the
                       chunk publisher holds when it stops (process died or hung)
    /diagnostics       diagnostic_msgs/DiagnosticArray  out: timings per chunk, waiting state
    ~/start ~/stop ~/reset   std_srvs/Trigger
A new instruction starts a new task; an empty instruction (or ~/stop) stops.
For a policy with a key-pose head, ``key_frame_grasp`` (default) executes the grasp instead
of decoding it: the key pose predicted from the task's first view is planned into a trajectory
(control/key_frame_grasp.py: approach with open grippers, close) published as ordinary chunks;
then the decoder acts (the lift). Where it is off (or the arms have no gripper),
``latch_key_pose`` (default) lets the decoder act on the task's first predicted key pose until
the robot reaches it (control/key_pose_latch.py). A waypoint base (mobile_base) does neither.
A new task or ~/reset starts afresh. Policies without a key-pose head (tiny) decode every chunk.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import replace

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from std_msgs.msg import Header
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from ..control.inference_trigger import InferenceTrigger, TriggerDecision, chunk_play_end
from ..control.key_frame_grasp import (
    KeyFrameGrasp,
    KeyFrameGraspUnavailable,
    supports_key_frame_grasp,
)
from ..control.key_pose_latch import REACH_TOLERANCE, KeyPoseLatch
from ..control.scheduler import step_index
from ..embodiment import Embodiment
from ..observation import ObservationNotReady
from ..ros.messages import chunk_to_msg, to_time
from ..ros.qos import COMMAND_PUBLISHER
from ..types import ActionChunk
from .common import (
    NodeParameters,
    RateLimitedLog,
    WaitingReporter,
    declare_embodiment,
    guard_timer,
    run_nodes,
    startup_line,
)
from .observation_node import ObservationNode
from .policy_loading import load_policy

#: how often the inference process says it is alive, s (the chunk publisher's watchdog
#: holds after the embodiment's chunk_timeout_s without one)
HEARTBEAT_PERIOD_S = 0.1


class InferenceNode(Node):
    """Runs the policy on fresh observations and publishes chunks on ``action_chunk``."""

    def __init__(self, observation: ObservationNode, embodiment: Embodiment | None = None, **kwargs):
        super().__init__("inference_node", **kwargs)
        self.embodiment = embodiment or declare_embodiment(self)
        self.observation = observation
        self.p = NodeParameters(
            self,
            fixed={
                "model": "tiny",  # a checkpoint folder, a hub id, or 'tiny' (untrained, offline)
                "device": "cpu",
                "dtype": "float32",
                "torch_threads": 1,
                "strategy": "async",  # synchronous | temporal_ensemble | async (as the chunk publisher)
                "chunk_topic": "action_chunk",
                "heartbeat_topic": "inference_heartbeat",
                "compile": "auto",  # fast path (model/fast_path.py): true | false | auto = on CUDA devices
            },
            runtime={
                "num_inference_steps": 10,
                "seed": 0,
                "replan_threshold": 0.5,  # async: request the next chunk when this fraction remains
                "actions_per_chunk": 0,  # synchronous: steps the chunk publisher plays; 0 = all
                # async: the actions that run while a chunk is computed are frozen into it
                # (real-time chunking by inpainting), so chunks join without a jump
                "rtc_prefix": True,
                "autostart": True,  # act on each new instruction; false: wait for ~/start
                # act on the task's first key pose until it is reached (control/key_pose_latch.py)
                "latch_key_pose": True,
                "key_pose_reach_tolerance": REACH_TOLERANCE,  # rad
                # execute the task's first key pose as a planned grasp (control/key_frame_grasp.py);
                # takes effect from the next task; policies without a key-pose head decode it
                "key_frame_grasp": True,
            },
            apply=self._apply,
        )
        self.policy = load_policy(self.p.values, self.embodiment, self.get_logger())
        self._warm_up()
        self.latch = KeyPoseLatch(self.embodiment, float(self.p["key_pose_reach_tolerance"]))
        if self.p["latch_key_pose"] and self.policy.fast is not None:
            self.get_logger().warning("latch_key_pose has no effect on the fast path (compile): it has no key-pose input")
        if self.p["key_frame_grasp"] and not supports_key_frame_grasp(self.embodiment):
            self.get_logger().info(f"key_frame_grasp has no effect on {self.embodiment.name}: no arm with a gripper")
        self.trigger = InferenceTrigger(
            strategy=self.p["strategy"], dt=self.embodiment.dt, replan_threshold=self.p["replan_threshold"]
        )
        self._latencies: deque[float] = deque(maxlen=9)  # node-clock seconds per chunk
        self.chunk_pub = self.create_publisher(JointTrajectory, self.p["chunk_topic"], COMMAND_PUBLISHER)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # the chunk publisher holds when these stop (this process died or hangs)
        self.heartbeat_pub = self.create_publisher(Header, self.p["heartbeat_topic"], COMMAND_PUBLISHER)
        self.create_timer(HEARTBEAT_PERIOD_S, guard_timer(self, self._heartbeat, "heartbeat"))
        self._log = RateLimitedLog(self.get_logger())
        self.waiting = WaitingReporter(self.get_logger())
        self.create_service(Trigger, "~/start", self._on_start)
        self.create_service(Trigger, "~/stop", self._on_stop)
        self.create_service(Trigger, "~/reset", self._on_reset)
        observation.on_instruction = self._on_instruction
        self._active = False  # until an instruction (autostart) or ~/start
        self._task = 0  # bumped by every start and stop: a chunk computed for an older task is dropped
        # held by task changes (callbacks) and by the worker from its task check to the publish,
        # so no chunk of an older task is published after a stop or a new instruction
        self._task_lock = threading.Lock()
        self._last_chunk: ActionChunk | None = None
        self._chunk_id = 0
        self._grasp_mode = False  # this task executes its grasp (key_frame_grasp when it began)
        self._grasp_pending = False  # ... and has not planned it yet
        self._grasp: KeyFrameGrasp | None = None  # the task's planned grasp while it plays
        # the latest planned grasp (kept after it played: diagnostics, tests) and when its first
        # command applies, s (node clock)
        self.last_grasp: KeyFrameGrasp | None = None
        self.grasp_start_s = 0.0
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._worker = threading.Thread(target=self._work, name="inference", daemon=True)
        self._worker.start()
        startup_line(
            self,
            ["(observations from observation_node, in process)"],
            [self.resolve_topic_name(t) for t in (self.p["chunk_topic"], self.p["heartbeat_topic"])] + ["/diagnostics"],
        )

    def _apply(self, changes: dict) -> None:
        """Validate run-time parameter changes, then apply them (raises ValueError to refuse)."""
        checks = {
            "num_inference_steps": lambda v: isinstance(v, int) and 1 <= v <= 1000,
            "seed": lambda v: isinstance(v, int),
            "replan_threshold": lambda v: isinstance(v, (int, float)) and 0.0 <= v <= 1.0,
            "actions_per_chunk": lambda v: isinstance(v, int) and 0 <= v <= self.embodiment.chunk_horizon,
            "rtc_prefix": lambda v: isinstance(v, bool),
            "autostart": lambda v: isinstance(v, bool),
            "latch_key_pose": lambda v: isinstance(v, bool),
            "key_pose_reach_tolerance": lambda v: isinstance(v, float) and v > 0,
            "key_frame_grasp": lambda v: isinstance(v, bool),
        }
        expected = {
            "num_inference_steps": "an integer in [1, 1000]",
            "seed": "an integer",
            "replan_threshold": "a fraction in [0, 1]",
            "actions_per_chunk": f"an integer in [0, {self.embodiment.chunk_horizon}] (0 = the whole chunk)",
            "rtc_prefix": "true or false",
            "autostart": "true or false",
            "latch_key_pose": "true or false",
            "key_pose_reach_tolerance": "a positive float, rad",
            "key_frame_grasp": "true or false",
        }
        for name, value in changes.items():
            if not checks[name](value):
                raise ValueError(f"{name} must be {expected[name]}, got {value!r}")
        if "replan_threshold" in changes:
            self.trigger = replace(self.trigger, replan_threshold=float(changes["replan_threshold"]))
        if "key_pose_reach_tolerance" in changes:
            self.latch.reach_tolerance = float(changes["key_pose_reach_tolerance"])
        if "latch_key_pose" in changes:
            self.latch.reset()  # switched on mid-task: latch from the next chunk, not an old pose

    def _heartbeat(self) -> None:
        if not self._worker.is_alive():
            return  # a dead worker is a dead inference: let the chunk publisher hold
        beat = Header(frame_id="active" if self._active else "idle")
        beat.stamp = self.get_clock().now().to_msg()
        self.heartbeat_pub.publish(beat)

    def _warm_up(self) -> None:
        """Fast path if asked, then one dummy chunk: the first real chunk is then not the one that compiles."""
        choice = str(self.p["compile"]).lower()
        if choice == "true" or (choice == "auto" and self.policy.device.type == "cuda"):
            self.policy.enable_fast_inference(compile=True)
        seconds = self.policy.warm_up(self.embodiment, num_steps=int(self.p["num_inference_steps"]))
        self.get_logger().info(f"warm-up chunk: {seconds * 1e3:.0f} ms (compiled: {bool(self.policy.fast and self.policy.fast.compile)})")

    def now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # -- task control -------------------------------------------------------------------
    def _on_instruction(self, text: str) -> None:
        if not text:
            self._halt("empty instruction")
        elif self.p["autostart"] or self._active:
            self._begin_task()
        else:
            self.get_logger().info("instruction stored; call ~/start to act on it (autostart is off)")

    def _begin_task(self) -> None:
        grasp_mode = (bool(self.p["key_frame_grasp"]) and supports_key_frame_grasp(self.embodiment)
                      and self.policy.predicts_key_poses)
        with self._task_lock:
            self._last_chunk = None  # a new task never continues the old task's chunk
            self.latch.reset()  # nor its plan
            self._grasp, self._grasp_mode, self._grasp_pending = None, grasp_mode, grasp_mode
            self._task += 1
            self._active = True
        self._wake.set()

    def _halt(self, why: str) -> None:
        with self._task_lock:
            self._task += 1
            self._active = False
            self._last_chunk = None
            self.latch.reset()
            self._grasp, self._grasp_mode, self._grasp_pending = None, False, False
        stop = JointTrajectory(joint_names=self.embodiment.action_names)
        stop.header.stamp = to_time(self.now_s())
        self.chunk_pub.publish(stop)
        self.get_logger().info(f"stopped ({why}): the chunk publisher holds")

    def _on_start(self, request, response):
        if not self.observation.assembler.instruction:
            response.success, response.message = False, "no instruction yet"
            return response
        self._begin_task()
        response.success, response.message = True, "started"
        return response

    def _on_stop(self, request, response):
        self._halt("stop service")
        response.success, response.message = True, "stopped"
        return response

    def _on_reset(self, request, response):
        self._halt("reset service")
        self.observation.assembler.clear()
        with self._task_lock:  # the worker numbers chunks under it
            self._chunk_id = 0
        response.success, response.message = True, "reset: waiting for fresh observations"
        return response

    # -- worker -------------------------------------------------------------------------------
    def _work(self) -> None:
        import torch

        torch.set_num_threads(int(self.p["torch_threads"]))
        while not self._closing.is_set():
            try:
                self._work_once()
            except Exception as exc:  # noqa: BLE001 - the worker must outlive any one observation or chunk
                self._log("infer", f"inference failed, the chunk publisher holds: {type(exc).__name__}: {exc}", "error")
                self._wake.wait(timeout=0.5)

    def _work_once(self) -> None:
        now = self.now_s()
        task = self._task  # before the observation: one assembled after a new instruction is newer
        decision = self._decide(now) if self._active else None
        if decision is None or not decision.request:
            self._wake.wait(timeout=self.embodiment.dt)
            self._wake.clear()
            return
        try:
            observation = self.observation.assembler.assemble(now)
        except ObservationNotReady as exc:
            self.waiting.waiting(str(exc), now)
            self._wake.wait(timeout=0.05)
            return
        self.waiting.ready("observation complete: inferring")
        self._infer(observation, now, decision.delay_steps, task)

    def _decide(self, now: float) -> TriggerDecision:
        last = self._last_chunk
        latency = float(np.median(self._latencies)) if self._latencies else 0.0
        return self.trigger.decide(
            now,
            last_start=last.start_time if last else None,
            last_end=(
                chunk_play_end(last.start_time, last.horizon, last.dt, self.p["actions_per_chunk"] or None)
                if last
                else None
            ),
            latency_s=latency,
        )

    def _frozen_prefix(self, now: float, delay_steps: int) -> tuple[np.ndarray | None, float]:
        """(actions of the last chunk that run during this inference, start time on its grid)."""
        last = self._last_chunk
        if not self.p["rtc_prefix"] or self.p["strategy"] != "async" or last is None:
            return None, now
        step = step_index(now, last.start_time, last.dt)
        # +1: the new chunk lands part-way through a control period
        frozen = min(delay_steps + 1, self.embodiment.chunk_horizon - 1)
        if step < 0 or step + frozen > last.horizon:
            return None, now
        return last.actions[step : step + frozen], last.start_time + step * last.dt

    def _infer(self, observation, observed_at: float, delay_steps: int, task: int) -> None:
        """Compute (or take from the planned grasp) the chunk for ``observation`` and publish
        it, unless task ``task`` (the one current when the observation was assembled) has
        been stopped or replaced meanwhile."""
        started = time.perf_counter()
        prefix, start_time = self._frozen_prefix(observed_at, delay_steps)
        grasp = self._grasp  # read once: a stop or a new task (callbacks) may clear it meanwhile
        chunk = self._grasp_chunk(grasp, start_time) if grasp is not None else None
        if grasp is not None and chunk is None:
            self._grasp = None  # played out
            self.get_logger().info("key-frame grasp done: the policy acts")
        computed = chunk is None  # the model runs (not a chunk of the planned grasp)
        # the fast path has no key-pose input; an executed grasp leaves the decoder nothing to latch
        latching = self.p["latch_key_pose"] and self.policy.fast is None and not self._grasp_mode
        if computed:
            chunk = self.policy.predict_chunk(
                observation,
                self.embodiment,
                seed=int(self.p["seed"]) + self._chunk_id,
                num_steps=int(self.p["num_inference_steps"]),
                prefix=prefix,
                key_pose=self.latch.key_pose_for(observation.state) if latching else None,
            )
            chunk.start_time = start_time
        with self._task_lock:  # a stop or new task waits until this chunk is published or dropped
            if not self._active or task != self._task:  # stopped or restarted since the observation
                return
            if self._grasp_pending:  # the task's first chunk: its key pose is the grasp
                self._grasp_pending = False
                chunk = self._plan_grasp(observation, chunk)
            if latching:
                self.latch.offer(chunk.key_pose)
            self._chunk_id += 1
            chunk.chunk_id = self._chunk_id
            chunk.timings["total"] = time.perf_counter() - started
            self._last_chunk = chunk
            self.chunk_pub.publish(chunk_to_msg(chunk))
        if computed:  # a planned chunk costs nothing: its figures would hide the model's latency
            self._latencies.append(self.now_s() - observed_at)
            self._publish_timings(chunk)

    def _plan_grasp(self, observation, predicted: ActionChunk) -> ActionChunk:
        """The task's first chunk: the grasp planned on the key pose ``predicted`` carries,
        starting now; ``predicted`` itself where no grasp can be planned."""
        try:
            if predicted.key_pose is None or observation.state is None:
                raise KeyFrameGraspUnavailable("the policy predicts no key pose, or the state is unknown")
            self._grasp = KeyFrameGrasp(self.embodiment, observation.state, predicted.key_pose)
        except KeyFrameGraspUnavailable as exc:
            self.get_logger().warning(f"key_frame_grasp: no grasp planned ({exc}): the decoder acts")
            return predicted
        self.grasp_start_s = self.now_s()  # the robot held still while the key pose was predicted
        self.last_grasp = self._grasp
        self.get_logger().info(
            f"key-frame grasp planned: {self._grasp.total_steps} steps "
            f"({self._grasp.total_steps * self.embodiment.dt:.1f} s), then the policy acts")
        first = self._grasp_chunk(self._grasp, self.grasp_start_s)
        first.timings = predicted.timings  # the model ran for it
        return first

    def _grasp_chunk(self, grasp: KeyFrameGrasp, start_time: float) -> ActionChunk | None:
        """``grasp``'s commands from ``start_time`` (s) on, or None once it has played out."""
        step = int(round((start_time - self.grasp_start_s) / self.embodiment.dt))
        if grasp.done(step):
            return None
        return ActionChunk(
            actions=grasp.actions(step, self.embodiment.chunk_horizon),
            names=list(self.embodiment.action_names),
            dt=self.embodiment.dt,
            start_time=self.grasp_start_s + step * self.embodiment.dt,
            embodiment=self.embodiment.name,
            key_pose=grasp.key_pose.copy(),
        )

    def _publish_timings(self, chunk: ActionChunk) -> None:
        status = DiagnosticStatus(
            level=DiagnosticStatus.OK,
            name=f"{self.get_name()}: inference",
            message=f"chunk {chunk.chunk_id}",
            hardware_id=self.embodiment.name,
            values=[KeyValue(key=f"{k}_ms", value=f"{v * 1e3:.1f}") for k, v in chunk.timings.items()],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(array)

    def on_shutdown(self) -> None:
        self._closing.set()
        self._wake.set()
        # a chunk being computed is dropped: the process must end within a few seconds
        self._worker.join(timeout=1.0)


def build_policy_nodes() -> list[Node]:
    observation = ObservationNode()
    return [observation, InferenceNode(observation, embodiment=observation.embodiment)]


def main(args: list[str] | None = None) -> int:
    """`ros2 run qwen_vla_ros inference_node`: observation + inference nodes in one process."""
    return run_nodes(build_policy_nodes, args)


if __name__ == "__main__":
    raise SystemExit(main())

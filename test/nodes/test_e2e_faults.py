"""Faults on the running simulated graph: fuzzed inputs on every subscribed topic, kill -9 of
inference, and SIGINT/SIGTERM shutdown with a process-tree check.

Numbers (messages fuzzed, holds, latencies, shutdown times) are printed: run with ``-s``.

Fuzzed: every camera and state topic, the instruction, action chunks, the inference
heartbeat and the controller command topics the sim consumes. Not fuzzed: ``e_stop``
(std_msgs/Bool has no malformed form: any value is a valid command) and ``/clock`` (the time
source is trusted by every ROS node; a forged clock is not a malformed message).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import psutil
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from fuzz_messages import (
    is_fuzz,
    malformed_chunks,
    malformed_commands,
    malformed_heartbeats,
    malformed_images,
    malformed_instructions,
    malformed_joint_states,
)
from node_test_helpers import wait_for
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Header, String
from trajectory_msgs.msg import JointTrajectory

from qwen_vla_ros.bringup import Graph, GraphConfig, child_environment
from qwen_vla_ros.embodiment import load_embodiment
from qwen_vla_ros.ros.commands import COMMAND_READERS
from qwen_vla_ros.ros.messages import message_class
from qwen_vla_ros.ros.qos import COMMAND, LATCHED, RECORD_RELIABLE, SENSOR

pytestmark = [pytest.mark.ros, pytest.mark.e2e]
GRAPH_NODES = {"sim_bridge", "observation_node", "inference_node", "chunk_publisher"}


class GraphWatcher(Node):
    """Observes the graph from outside, ignoring the fuzzer's own messages; never raises."""

    def __init__(self, context, embodiment):
        super().__init__("graph_watcher", context=context, parameter_overrides=[Parameter("use_sim_time", value=True)])
        self.emb = embodiment
        self.commands: list[tuple[float, str]] = []  # (sim s, topic) of the chunk publisher's commands
        self.unsafe: list[str] = []  # commands outside the limits or non-finite
        self.chunks: list[tuple[float, str]] = []  # (sim s, frame_id) of the inference node's chunks
        self.statuses: list[tuple[str, str, dict]] = []  # (name, message, values)
        self.joint_names: dict[str, list[str]] = {}
        self.last_heartbeat = -1.0  # sim s: stamp of the newest inference heartbeat
        self.instruction_pub = self.create_publisher(String, "instruction", LATCHED)
        for out in embodiment.outputs:
            msg_type, read = COMMAND_READERS[out.type]
            self.create_subscription(msg_type, out.topic, self._command_callback(out, read), RECORD_RELIABLE)
        self.create_subscription(JointTrajectory, "action_chunk", self._on_chunk, RECORD_RELIABLE)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)
        for src in embodiment.state_sources:
            self.create_subscription(JointState, src.topic, self._state_callback(src.topic), SENSOR)
        self.create_subscription(Header, "inference_heartbeat", self._on_heartbeat, COMMAND)

    def _on_heartbeat(self, msg: Header) -> None:
        if not is_fuzz(msg):
            self.last_heartbeat = max(self.last_heartbeat, msg.stamp.sec + msg.stamp.nanosec * 1e-9)

    def now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def instruct(self, text: str) -> None:
        self.instruction_pub.publish(String(data=text))

    def _command_callback(self, output, read):
        groups = [self.emb.group(g) for g in output.groups]

        def callback(msg) -> None:
            if is_fuzz(msg):
                return
            try:
                values, k = np.asarray(read(msg), dtype=float), 0
                for group in groups:
                    where = self.emb.group_slices[group.name]
                    part = values[k : k + where.stop - where.start]
                    k += where.stop - where.start
                    if group.kind == "gripper":
                        lo, hi = sorted((group.gripper.command_closed, group.gripper.command_open))
                    else:
                        lo, hi = self.emb.position_min[where], self.emb.position_max[where]
                    if not (np.all(np.isfinite(part)) and np.all(part >= lo - 1e-6) and np.all(part <= hi + 1e-6)):
                        self.unsafe.append(f"{output.topic}: {part.tolist()}")
                self.commands.append((self.now_s(), output.topic))
            except Exception as exc:  # noqa: BLE001 - a malformed command is unsafe, not a test crash
                self.unsafe.append(f"{output.topic}: unreadable ({exc})")

        return callback

    def _on_chunk(self, msg: JointTrajectory) -> None:
        if not is_fuzz(msg) and msg.points:
            self.chunks.append((self.now_s(), msg.header.frame_id))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            self.statuses.append((status.name, status.message, {kv.key: kv.value for kv in status.values}))

    def _state_callback(self, topic: str):
        def callback(msg: JointState) -> None:
            if not is_fuzz(msg) and len(msg.name) == len(msg.position) and msg.name:
                self.joint_names.setdefault(topic, list(msg.name))

        return callback

    def control(self, since_s: float = -1.0) -> list[dict]:
        """The chunk publisher's control statuses (values plus 'message')."""
        found = []
        for name, message, values in list(self.statuses):
            if name.endswith("chunk_publisher: control") and float(values.get("since_s", -1)) >= since_s:
                found.append({**values, "message": message})
        return found

    def chunks_after(self, t: float) -> int:
        return sum(1 for stamp, _ in self.chunks if stamp > t)

    def commands_after(self, t: float) -> int:
        return sum(1 for stamp, _ in self.commands if stamp > t)


def _follows(watcher: GraphWatcher, instruction: str, timeout_s: float = 120) -> None:
    """The graph acts on ``instruction``: new chunks arrive and the chunk publisher runs them."""
    t0 = watcher.now_s()
    watcher.instruct(instruction)
    assert wait_for(lambda: watcher.chunks_after(t0) >= 2, timeout_s=timeout_s), "no chunk after the instruction"
    assert wait_for(
        lambda: any(s["message"].startswith("run") for s in watcher.control(since_s=t0)), timeout_s=30
    ), watcher.control()[-3:]
    assert wait_for(lambda: watcher.commands_after(t0 + 0.5) > 20, timeout_s=30)


def _fuzz_plan(watcher: GraphWatcher, fuzzer: Node, emb) -> list[tuple[str, object, list, int]]:
    """(topic, publisher, messages, every) per subscribed topic; ``every``: publish every n-th round."""
    rng = np.random.default_rng(0)
    plan = []
    images = malformed_images(rng)
    for cam in emb.cameras:
        plan.append((cam.topic, fuzzer.create_publisher(Image, cam.topic, SENSOR), images, 1))
    for src in emb.state_sources:
        states = malformed_joint_states(watcher.joint_names[src.topic])
        plan.append((src.topic, fuzzer.create_publisher(JointState, src.topic, SENSOR), states, 1))
    chunks = malformed_chunks(emb.action_names, emb.home_position, emb.dt, watcher.now_s())
    plan.append(("action_chunk", fuzzer.create_publisher(JointTrajectory, "action_chunk", COMMAND), chunks, 1))
    for out in emb.outputs:
        width = sum(emb.group_slices[g].stop - emb.group_slices[g].start for g in out.groups)
        pub = fuzzer.create_publisher(message_class(out.type), out.topic, COMMAND)
        plan.append((out.topic, pub, malformed_commands(width, out.type), 1))
    plan.append(("instruction", fuzzer.create_publisher(String, "instruction", LATCHED), malformed_instructions(), 25))
    plan.append(("inference_heartbeat", fuzzer.create_publisher(Header, "inference_heartbeat", COMMAND), malformed_heartbeats(), 5))
    return plan


def test_fuzzed_inputs_kill_no_node_and_command_nothing_unsafe(ros_context, spinner, tmp_path):
    emb = load_embodiment("aloha_sim")
    logs = tmp_path / "logs"
    with Graph(GraphConfig(embodiment="aloha_sim", sim=True, model="tiny"), log_dir=logs) as graph:
        watcher = GraphWatcher(ros_context, emb)
        fuzzer = Node("fuzzer", context=ros_context)
        spinner.add(watcher, fuzzer)
        spinner.start()
        watcher.instruct("pick up the cube")
        assert wait_for(lambda: watcher.chunks, timeout_s=180), graph.exited()
        assert wait_for(lambda: len(watcher.joint_names) == len(emb.state_sources), timeout_s=30)
        plan = _fuzz_plan(watcher, fuzzer, emb)
        sent: Counter[str] = Counter()
        started, rounds = time.monotonic(), 0
        while sum(sent.values()) < 10_000:
            for topic, publisher, messages, every in plan:
                if rounds % every == 0:
                    publisher.publish(messages[(rounds // every) % len(messages)])
                    sent[topic] += 1
            rounds += 1
            time.sleep(0.001)  # let DDS breathe: the point is malformed input, not a flood
        fuzz_s = time.monotonic() - started

        def dropped() -> dict[str, int]:
            """Latest count of dropped (and, by the sim, refused) messages each node reports."""
            return {
                name: int(v["dropped_messages"]) + int(v.get("commands_refused", 0))
                for name, _, v in list(watcher.statuses)
                if "dropped_messages" in v
            }

        reporters = ("observation_node: observation", "chunk_publisher: control", "sim_bridge: sim")
        # every node has received and dropped malformed messages, and says so
        assert wait_for(lambda: all(dropped().get(name, 0) > 0 for name in reporters), timeout_s=30), dropped()
        assert graph.exited() == {}, f"node processes exited: {graph.exited()}"
        assert GRAPH_NODES <= set(watcher.get_node_names())
        dropped = dropped()
        print(f"\nfuzz: {sum(sent.values())} malformed messages in {fuzz_s:.1f} s over {len(sent)} topics "
              f"{dict(sent)}; dropped as reported on /diagnostics: {dropped}; "
              f"unsafe commands: {len(watcher.unsafe)} of {len(watcher.commands)}")
        assert sum(sent.values()) >= 10_000 and set(sent) >= {t for t, *_ in plan}
        assert watcher.unsafe == [], watcher.unsafe[:5]
        _follows(watcher, "transfer the cube to the other arm")
        assert graph.exited() == {}
        assert watcher.unsafe == [], watcher.unsafe[:5]
        spinner.remove_and_destroy(watcher, fuzzer)
    for log in logs.iterdir():
        assert "Traceback" not in log.read_text(), f"{log.name}: {log.read_text()[-3000:]}"


# -- bringup as a user runs it: kill -9, restart, SIGINT/SIGTERM -------------------------------
def _bringup(tmp_path, *extra: str, ignore_sigint: bool = False) -> tuple[subprocess.Popen, object]:
    log = open(tmp_path / "bringup.log", "w")  # noqa: SIM115 - closed by the caller
    command = [sys.executable, "-m", "qwen_vla_ros.cli", "bringup", "--embodiment", "aloha_sim", "--sim",
               "--model", "tiny", *extra]

    def background_job() -> None:  # what a shell does to a job started with '&'
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=child_environment(),
                               preexec_fn=background_job if ignore_sigint else None)
    return process, log


def _children(process: subprocess.Popen, name: str | None = None) -> list[psutil.Process]:
    found = []
    for child in psutil.Process(process.pid).children(recursive=True):
        try:
            if name is None or any(name in part for part in child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def _stop_and_check_tree(process: subprocess.Popen, signum: int, tmp_path) -> float:
    """Signal bringup; returns the seconds until it and every process under it are gone."""
    tree = _children(process)
    assert len(tree) == 3, [c.cmdline() for c in tree]
    sent = time.monotonic()
    process.send_signal(signum)
    try:
        code = process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    _, alive = psutil.wait_procs(tree, timeout=0.5)
    took = time.monotonic() - sent
    for leftover in alive:
        leftover.kill()
    text = (tmp_path / "bringup.log").read_text()
    assert alive == [], f"left behind: {[p.pid for p in alive]}"
    assert code == 0, text[-3000:]
    assert "final hold sent" in text, text[-3000:]
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-3000:]
    return took


def test_kill_9_inference_holds_within_the_timeout_restarts_and_resumes(ros_context, spinner, tmp_path):
    emb = load_embodiment("aloha_sim")
    process, log = _bringup(tmp_path)
    watcher = GraphWatcher(ros_context, emb)
    spinner.add(watcher)
    spinner.start()
    try:
        watcher.instruct("pick up the cube")
        assert wait_for(lambda: len(watcher.chunks) >= 3, timeout_s=180), (tmp_path / "bringup.log").read_text()[-3000:]
        (inference,) = _children(process, "inference_node")
        inference.kill()  # SIGKILL: no last words
        killed_at = watcher.now_s()

        def held() -> list[dict]:
            """Control statuses of a hold that began after the last heartbeat the test saw."""
            return [
                s for s in watcher.control()
                if s.get("hold_since_s") and float(s["hold_since_s"]) > watcher.last_heartbeat
            ]

        assert wait_for(held, timeout_s=30), watcher.control()[-3:]
        hold = held()[0]
        hold_since = float(hold["hold_since_s"])
        # measured from the last sign of life (the process died within 0.1 s after it)
        after_heartbeat = hold_since - watcher.last_heartbeat
        print(f"\nkill -9 inference: hold ({hold['cause']}) {after_heartbeat:.3f} s of sim time after its last "
              f"heartbeat, {hold_since - killed_at:.3f} s after the kill as this test's clock saw it "
              f"(chunk_timeout_s {emb.chunk_timeout_s})")
        # the timeout plus a few control periods of scheduling delay on a loaded machine
        assert after_heartbeat <= emb.chunk_timeout_s + 5 * emb.dt
        # the chunk publisher is still up and keeps publishing the hold
        assert wait_for(lambda: watcher.commands_after(killed_at + emb.chunk_timeout_s + 1.0) > 10, timeout_s=30)
        assert _children(process, "chunk_publisher") and process.poll() is None
        # bringup restarts inference; it acts on the next instruction
        assert wait_for(lambda: [p for p in _children(process, "inference_node") if p.pid != inference.pid],
                        timeout_s=30)
        _follows(watcher, "transfer the cube to the other arm", timeout_s=180)
        assert "restarting inference_node" in (tmp_path / "bringup.log").read_text()
        took = _stop_and_check_tree(process, signal.SIGTERM, tmp_path)
        print(f"SIGTERM to bringup: every process gone after {took:.2f} s")
        assert took < 3.5
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
        spinner.remove_and_destroy(watcher)


def test_sigint_to_a_background_bringup_stops_every_process(ros_context, spinner, tmp_path):
    """A job started with '&' inherits SIGINT ignored; bringup must still stop on it."""
    process, log = _bringup(tmp_path, ignore_sigint=True)
    probe = Node("shutdown_probe", context=ros_context)
    spinner.add(probe)
    spinner.start()
    try:
        assert wait_for(lambda: GRAPH_NODES <= set(probe.get_node_names()), timeout_s=180), (
            (tmp_path / "bringup.log").read_text()[-3000:]
        )
        took = _stop_and_check_tree(process, signal.SIGINT, tmp_path)
        print(f"\nSIGINT to background bringup: every process gone after {took:.2f} s")
        assert took < 3.5
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
        spinner.remove_and_destroy(probe)


@pytest.mark.parametrize("verb", ["demo", "eval"])
def test_sigterm_ends_demo_and_eval_with_every_process(tmp_path, verb):
    log = open(tmp_path / "run.log", "w")  # noqa: SIM115 - closed below
    extra = ["--episodes", "2"] if verb == "eval" else []
    process = subprocess.Popen(
        [sys.executable, "-m", "qwen_vla_ros.cli", verb, "--seconds", "600", "--output", str(tmp_path / "out"), *extra],
        stdout=log, stderr=subprocess.STDOUT, env=child_environment(),
    )
    try:
        # the episode runs: the graph is up and the model has sent its first chunk
        assert wait_for(lambda: "[episode]" in (tmp_path / "run.log").read_text(), timeout_s=180), (
            (tmp_path / "run.log").read_text()[-3000:]
        )
        tree = _children(process)
        assert len(tree) == 3, [c.cmdline() for c in tree]
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=10)
        _, alive = psutil.wait_procs(tree, timeout=0.5)
        took = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    print(f"\nSIGTERM to {verb}: every process gone after {took:.2f} s")
    text = (tmp_path / "run.log").read_text()
    assert alive == [] and took < 3.5
    assert code == 130 and "interrupted" in text and "Traceback" not in text, text[-3000:]
    assert "final hold sent" in (tmp_path / "out/logs/chunk_publisher.log").read_text()


def test_an_eval_stopped_midway_keeps_the_episodes_it_finished(tmp_path):
    """A 50-episode eval that stops at episode 48 (a timeout, Ctrl-C) must not lose the 47
    before it: eval.json is written with them and says where and why it stopped."""
    log = open(tmp_path / "run.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "qwen_vla_ros.cli", "eval", "--episodes", "8", "--seconds", "1.0", "--video", "0",
         "--output", str(tmp_path / "out")],
        stdout=log, stderr=subprocess.STDOUT, env=child_environment(),
    )
    try:
        assert wait_for(lambda: "[eval] episode 1 " in (tmp_path / "run.log").read_text(), timeout_s=240), (
            (tmp_path / "run.log").read_text()[-3000:]
        )
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    text = (tmp_path / "run.log").read_text()
    report = json.loads((tmp_path / "out" / "eval.json").read_text())
    finished = text.count("[eval] episode ")
    # the stop is a flag checked between waits, so it never lands between an episode and its line
    assert code == 130 and 1 <= report["episodes"] == finished < 8, text[-3000:]
    assert report["stopped"].startswith(f"after {finished} of 8 episodes")
    assert len(report["per_episode"]) == finished and "success" in report

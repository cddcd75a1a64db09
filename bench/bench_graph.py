#!/usr/bin/env python3
"""Node-graph benchmark: command-stream jitter and observation-to-first-command latency.

    python bench/bench_graph.py [--embodiment aloha_sim] [--seconds 10] [--trials 5]

Starts the inference process (tiny model) and the chunk publisher exactly as
`qwen-vla bringup` does, plays a fake rig on wall time (cameras 30 Hz, joint states 100 Hz),
and prints:

* the command stream's period: median and p99 of the intervals between consecutive
  commands on the first output topic, and their deviation from the control period;
* observation-to-first-command latency: from publishing an instruction (with fresh sensors
  flowing) to the first command driven by the resulting chunk, with the model's own compute
  (the inference node's reported total) subtracted: what the graph adds around the model.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(os.getpid() % 90 + 5))

import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from qwen_vla_ros.bringup import Graph, GraphConfig  # noqa: E402
from qwen_vla_ros.data.images import rgb_to_image_fields  # noqa: E402
from qwen_vla_ros.embodiment import load_embodiment  # noqa: E402
from qwen_vla_ros.ros.messages import message_class  # noqa: E402
from qwen_vla_ros.ros.qos import COMMAND, LATCHED, SENSOR  # noqa: E402

LOG_DIR = Path(tempfile.gettempdir()) / "qwen_vla_bench_graph"
ARM = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper", "left_finger", "right_finger"]


class FakeRig(Node):
    """Publishes sensors on wall time and timestamps everything the graph sends back."""

    def __init__(self, emb):
        super().__init__("bench_rig")
        self.emb = emb
        self.command_times: list[float] = []
        self.chunk_times: list[float] = []
        self.model_ms: list[float] = []
        image = Image(**rgb_to_image_fields(np.full((480, 640, 3), 90, np.uint8)))
        cams = [self.create_publisher(Image, c.topic, SENSOR) for c in emb.cameras]
        states = [self.create_publisher(JointState, s.topic, SENSOR) for s in emb.state_sources]
        self.instruction = self.create_publisher(String, "instruction", LATCHED)

        def publish_images() -> None:
            image.header.stamp = self.get_clock().now().to_msg()
            for pub in cams:
                pub.publish(image)

        def publish_states() -> None:
            msg = JointState(name=ARM, position=[0.0, -0.96, 1.16, 0.0, -0.3, 0.0, 1.0, 0.05, -0.05])
            msg.header.stamp = self.get_clock().now().to_msg()
            for pub in states:
                pub.publish(msg)

        self.create_timer(1 / 30, publish_images)
        self.create_timer(1 / 100, publish_states)
        first = emb.outputs[0]
        self.create_subscription(message_class(first.type), first.topic, lambda m: self.command_times.append(time.perf_counter()), COMMAND)
        self.create_subscription(JointTrajectory, "action_chunk", self._on_chunk, COMMAND)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)

    def _on_chunk(self, msg: JointTrajectory) -> None:
        if msg.points:
            self.chunk_times.append(time.perf_counter())

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            for kv in status.values:
                if status.name.endswith(": inference") and kv.key == "total_ms":
                    self.model_ms.append(float(kv.value))


def spin_for(executor, seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        executor.spin_once(timeout_sec=0.005)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embodiment", default="aloha_sim")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the jitter measurement")
    parser.add_argument("--trials", type=int, default=5, help="instruction-to-command trials")
    args = parser.parse_args()
    emb = load_embodiment(args.embodiment)
    with Graph(GraphConfig(embodiment=args.embodiment, model="tiny"), log_dir=LOG_DIR) as graph:
        rclpy.init()
        rig = FakeRig(emb)
        executor = SingleThreadedExecutor()
        executor.add_node(rig)
        latencies, model = [], []
        for trial in range(args.trials):
            rig.instruction.publish(String(data=""))
            spin_for(executor, 2.0 if trial else 20.0)  # the first trial waits for the model to load
            rig.chunk_times.clear()
            rig.model_ms.clear()
            t0 = time.perf_counter()
            rig.instruction.publish(String(data=f"pick up the cube, trial {trial}"))
            while not rig.chunk_times and time.perf_counter() - t0 < 30:
                spin_for(executor, 0.005)
            if not rig.chunk_times:
                print(f"trial {trial}: no chunk within 30 s; logs in {LOG_DIR}", file=sys.stderr)
                continue
            chunk_at = rig.chunk_times[0]
            spin_for(executor, 0.3)
            first_command = next(t for t in rig.command_times if t >= chunk_at)
            compute = rig.model_ms[0] / 1e3 if rig.model_ms else float("nan")
            latencies.append(first_command - t0 - compute)
            model.append(compute)
        rig.command_times.clear()
        spin_for(executor, args.seconds)
        intervals = np.diff(rig.command_times) * 1e3
        rig.destroy_node()
        rclpy.shutdown()
        exited = graph.exited()
    print(f"\nembodiment {emb.name}: control period {emb.dt * 1e3:.1f} ms, {len(intervals)} intervals over {args.seconds:g} s")
    if len(intervals):
        dev = np.abs(intervals - emb.dt * 1e3)
        print(f"  command period  median {np.median(intervals):6.2f} ms   p99 {np.percentile(intervals, 99):6.2f} ms")
        print(f"  |period - dt|   median {np.median(dev):6.2f} ms   p99 {np.percentile(dev, 99):6.2f} ms")
    if latencies:
        print(f"  observation -> first command, model compute excluded: median {statistics.median(latencies) * 1e3:6.1f} ms"
              f"   max {max(latencies) * 1e3:6.1f} ms   ({len(latencies)} trials)")
        print(f"  model compute per chunk (inference node's total): median {statistics.median(model) * 1e3:6.1f} ms")
    if exited:
        print(f"  node processes exited early: {exited}", file=sys.stderr)


if __name__ == "__main__":
    main()

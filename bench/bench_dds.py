#!/usr/bin/env python3
"""Camera-frame delivery between two processes: Fast DDS defaults vs config/dds/fastdds_large_frames.xml.

    python bench/bench_dds.py [--cameras 4] [--width 640] [--height 480] [--rate 15] [--seconds 30] [--load 3]

A publisher process sends ``--cameras`` RGB frames per tick, best effort (as camera drivers
do), to a reader process subscribed as the package's nodes are (sensor-data QoS). Both run
first with Fast DDS's defaults, then with the large-frame profile; ``--load N`` adds N busy
processes during each trial. Prints, per trial, the fraction of frames each camera's reader
got and the longest gap between two received frames (s).

``publish`` mode is the publisher itself (also used by test/nodes/test_dds_camera_frames.py):

    python bench/bench_dds.py publish --frames 45 [--prefix /dds_bench]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(os.getpid() % 90 + 5))


def camera_topics(prefix: str, cameras: int) -> list[str]:
    return [f"{prefix}/cam_{i}/image_raw" for i in range(cameras)]


def publish(args: argparse.Namespace) -> int:
    """Wait until every topic has a reader, then send ``--frames`` frames per camera at
    ``--rate`` Hz; each frame's header.frame_id is its index."""
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("dds_bench_publisher")
    publishers = [node.create_publisher(Image, t, qos_profile_sensor_data) for t in camera_topics(args.prefix, args.cameras)]
    pixels = np.random.default_rng(0).integers(0, 255, args.height * args.width * 3, dtype=np.uint8)
    frame = Image(height=args.height, width=args.width, encoding="rgb8", step=args.width * 3, data=pixels.tobytes())
    while min(p.get_subscription_count() for p in publishers) == 0:
        rclpy.spin_once(node, timeout_sec=0.05)
    time.sleep(0.5)  # matched on both sides before the first frame
    start = time.monotonic()
    for index in range(args.frames):
        time.sleep(max(0.0, start + index / args.rate - time.monotonic()))
        frame.header.frame_id = str(index)
        frame.header.stamp = node.get_clock().now().to_msg()
        for publisher in publishers:
            publisher.publish(frame)
    time.sleep(1.0)  # let the last frames leave before the segment goes away
    node.destroy_node()
    rclpy.shutdown()
    return 0


def read(args: argparse.Namespace) -> int:
    """Count frames per camera until 2 s past ``--seconds`` after the first one; print JSON."""
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("dds_bench_reader")
    arrivals: dict[str, list[float]] = {t: [] for t in camera_topics(args.prefix, args.cameras)}
    for topic in arrivals:
        node.create_subscription(Image, topic, lambda _m, t=topic: arrivals[t].append(time.monotonic()),
                                 qos_profile_sensor_data)
    while not any(arrivals.values()):
        rclpy.spin_once(node, timeout_sec=0.05)
    end = time.monotonic() + args.seconds + 2.0
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    expected = int(args.seconds * args.rate)
    print(json.dumps({t: {"received": len(times) / expected,
                          "max_gap_s": max(np.diff(times), default=float("inf"))} for t, times in arrivals.items()}))
    return 0


def trial(args: argparse.Namespace, profile: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")}
    if profile:
        from qwen_vla_ros.ros.dds import use_large_frame_transport

        use_large_frame_transport(env)
    common = ["--cameras", str(args.cameras), "--width", str(args.width), "--height", str(args.height),
              "--rate", str(args.rate), "--prefix", args.prefix]
    frames = int(args.seconds * args.rate)
    load = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    try:
        reader = subprocess.Popen([sys.executable, __file__, "read", "--seconds", str(args.seconds), *common],
                                  env=env, stdout=subprocess.PIPE, text=True)
        publisher = subprocess.Popen([sys.executable, __file__, "publish", "--frames", str(frames), *common], env=env)
        out, _ = reader.communicate(timeout=args.seconds + 120)
        publisher.wait(timeout=60)
    finally:
        for process in load:
            process.kill()
    return json.loads(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", default="compare", choices=["compare", "publish", "read"])
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--rate", type=float, default=15.0, help="frames per second per camera (Hz)")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--frames", type=int, default=45, help="publish mode: frames per camera")
    parser.add_argument("--load", type=int, default=0, help="busy processes during each trial")
    parser.add_argument("--prefix", default="/dds_bench")
    args = parser.parse_args()
    if args.mode == "publish":
        return publish(args)
    if args.mode == "read":
        return read(args)
    size_kib = args.width * args.height * 3 / 1024
    print(f"{args.cameras} cameras x {args.width}x{args.height} RGB ({size_kib:.0f} KiB) at {args.rate:g} Hz, "
          f"{args.seconds:g} s, {args.load} busy processes, {os.cpu_count()} CPUs")
    for name, profile in (("Fast DDS defaults", False), ("large-frame profile", True)):
        result = trial(args, profile)
        received = ", ".join(f"{r['received']:.0%}" for r in result.values())
        gaps = ", ".join(f"{r['max_gap_s']:.2f}" for r in result.values())
        print(f"{name:>20}: frames received per camera {received}; longest gap (s) {gaps}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

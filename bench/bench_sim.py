#!/usr/bin/env python3
"""Speed of the simulation core: physics step, render per camera, real-time factor.

Prints medians over a few hundred steps; runs in well under a minute on 2 CPU
cores with Mesa (llvmpipe) rendering. The real-time factor (RTF) is simulated
seconds per wall second: above 1 the sim could keep up with a wall clock,
below 1 the ROS graph must run on simulated time (/clock, use_sim_time).

    python bench/bench_sim.py [--steps 300] [--quality fast full]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from qwen_vla_ros.embodiment import load_embodiment
from qwen_vla_ros.sim import (
    GL_BACKEND,
    START_ARM_POSE,
    AlohaSim,
    KinematicBase,
    MobileBaseSim,
    SimCamera,
)

CONTROL_DT_S = 0.02  # 50 Hz, the ALOHA control period
RENDER_SIZES = ((224, 224), (240, 320), (480, 640))
RENDER_CAMERAS = {"cam_high": "top", "cam_left_wrist": "left_wrist", "cam_low": "angle"}


def median_ms(samples: list[float]) -> float:
    return 1e3 * statistics.median(samples)


def drive_arms(sim: AlohaSim, step: int) -> None:
    """A smooth motion around the start pose, so physics has work to do."""
    phase = 2 * np.pi * step * CONTROL_DT_S / 3.0  # one cycle per 3 s
    offsets = 0.3 * np.sin(phase + np.arange(6))
    start = np.array(START_ARM_POSE)
    sim.set_arm_targets("left", start + offsets)
    sim.set_arm_targets("right", start - offsets)
    opening = 0.5 + 0.5 * np.sin(phase)
    sim.set_gripper_opening("left", opening)
    sim.set_gripper_opening("right", 1.0 - opening)


def bench_physics(steps: int) -> None:
    sim = AlohaSim(cameras={})
    times = []
    for k in range(steps):
        drive_arms(sim, k)
        t0 = time.perf_counter()
        sim.step(CONTROL_DT_S)
        times.append(time.perf_counter() - t0)
    substeps = round(CONTROL_DT_S / sim.physics_timestep)
    print(f"physics: {median_ms(times):.3f} ms per 20 ms control step "
          f"({substeps} substeps of {1e3 * sim.physics_timestep:.0f} ms), physics-only RTF "
          f"{CONTROL_DT_S / statistics.median(times):.0f}")


def bench_render(quality: str, repeats: int) -> None:
    for height, width in RENDER_SIZES:
        cameras = {name: SimCamera(cam, height, width) for name, cam in RENDER_CAMERAS.items()}
        sim = AlohaSim(cameras=cameras, render_quality=quality)
        cells = []
        for name in cameras:
            sim.render(name)  # the first render creates the GL context
            times = []
            for k in range(repeats):
                drive_arms(sim, k)
                sim.step(CONTROL_DT_S)
                t0 = time.perf_counter()
                sim.render(name)
                times.append(time.perf_counter() - t0)
            cells.append(f"{name} {median_ms(times):5.1f}")
        sim.close()
        print(f"render {quality:4s} {height}x{width}: " + ", ".join(cells) + " ms")


def bench_realtime_factor(quality: str, steps: int, render_every: int) -> None:
    """aloha_sim's cameras rendered every ``render_every``-th control step at 50 Hz."""
    sim = AlohaSim.from_embodiment(load_embodiment("aloha_sim"), render_quality=quality)
    for name in sim.camera_names:
        sim.render(name)
    step_times = []
    for k in range(steps):
        t0 = time.perf_counter()
        drive_arms(sim, k)
        sim.step(CONTROL_DT_S)
        if k % render_every == 0:
            for name in sim.camera_names:
                sim.render(name)
        sim.joint_states("left")
        sim.joint_states("right")
        step_times.append(time.perf_counter() - t0)
    sim.close()
    total = sum(step_times)
    rate = 50.0 / render_every
    print(f"RTF {quality:4s} {len(sim.camera_names)} cams 224x224 at {rate:4.1f} Hz: "
          f"{steps * CONTROL_DT_S / total:5.2f} ({steps} steps, mean {1e3 * total / steps:.1f} ms "
          f"per step, median {median_ms(step_times):.1f} ms)")


def bench_mobile_base(steps: int) -> None:
    base = KinematicBase()
    times = []
    for _ in range(steps):
        base.set_cmd_vel(0.4, 0.3)
        t0 = time.perf_counter()
        base.step(0.1)
        times.append(time.perf_counter() - t0)
    world = MobileBaseSim()
    world.render()
    render_times = []
    for _ in range(min(steps, 50)):
        world.set_cmd_vel(0.4, 0.3)
        world.step(0.1)
        t0 = time.perf_counter()
        world.render()
        render_times.append(time.perf_counter() - t0)
    world.close()
    print(f"mobile base: kinematic step (0.1 s) {median_ms(times):.3f} ms, "
          f"front camera 224x224 render {median_ms(render_times):.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="control steps per RTF run")
    parser.add_argument("--render-repeats", type=int, default=15)
    parser.add_argument("--quality", nargs="+", default=["fast", "full"],
                        choices=["fast", "full"])
    args = parser.parse_args()
    print(f"MUJOCO_GL={os.environ.get('MUJOCO_GL')} (chosen: {GL_BACKEND}), "
          f"{os.cpu_count()} CPUs")
    bench_physics(args.steps)
    for quality in args.quality:
        bench_render(quality, args.render_repeats)
    for quality in args.quality:
        # Full quality is slow on CPU: fewer steps keep the whole bench under a minute.
        steps = args.steps if quality == "fast" else max(50, args.steps // 3)
        bench_realtime_factor(quality, steps, render_every=1)
        bench_realtime_factor(quality, steps, render_every=5)
    bench_mobile_base(args.steps)


if __name__ == "__main__":
    main()

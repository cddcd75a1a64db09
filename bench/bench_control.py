"""Time one ControlLoop.tick (and add_chunk) per embodiment and strategy.

Usage: python bench/bench_control.py [--ticks 3000]

Feeds smooth chunks on the control grid the way the inference node would (synchronous: a new
chunk when the last ran out, after a 60 ms inference pause; async: every half chunk;
temporal ensemble: every tick, so up to a horizon of overlapping chunks are averaged) and prints
the median and 99th percentile of the wall time of one call, in microseconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qwen_vla_ros.control import STRATEGIES, ControlLoop  # noqa: E402
from qwen_vla_ros.embodiment import Embodiment, load_embodiment  # noqa: E402
from qwen_vla_ros.types import ActionChunk  # noqa: E402


def smooth_chunk(emb: Embodiment, start: float, chunk_id: int) -> ActionChunk:
    """A slow sinusoid around home, well inside the limits (rig units)."""
    t = start + emb.dt * np.arange(emb.chunk_horizon)[:, None]
    phase = np.arange(emb.action_dim)[None, :]
    actions = emb.home_position + 0.1 * np.sin(0.5 * t + phase)
    return ActionChunk(actions, list(emb.action_names), emb.dt, start, emb.name, chunk_id)


def due(strategy: str, loop: ControlLoop, tick: int, now: float, last_added: float | None) -> bool:
    """Whether the simulated inference node delivers a chunk this tick."""
    emb = loop.embodiment
    if last_added is None or strategy == "temporal_ensemble":
        return True
    if strategy == "async":
        return now - last_added >= 0.5 * emb.chunk_horizon * emb.dt - 1e-9
    ran_out = last_added + emb.chunk_horizon * emb.dt
    return now >= ran_out + 0.06 - 1e-9  # synchronous: infer after the chunk, 60 ms


def bench(
    emb: Embodiment, strategy: str, ticks: int
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    loop = ControlLoop(emb, strategy)
    measured = emb.home_position
    tick_ns, add_ns = [], []
    last_added, chunk_id = None, 0
    for k in range(ticks):
        now = k * emb.dt
        if due(strategy, loop, k, now, last_added):
            chunk = smooth_chunk(emb, now - 0.03, chunk_id)  # 30 ms of latency
            begin = time.perf_counter_ns()
            loop.add_chunk(chunk, now)
            add_ns.append(time.perf_counter_ns() - begin)
            last_added, chunk_id = now, chunk_id + 1
        begin = time.perf_counter_ns()
        loop.tick(now, measured)
        tick_ns.append(time.perf_counter_ns() - begin)
    return np.array(tick_ns) / 1e3, np.array(add_ns) / 1e3, loop.diagnostics()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=3000, help="control ticks per case")
    args = parser.parse_args()
    print(
        f"{'embodiment':<13} {'strategy':<18} {'tick median':>11} {'tick p99':>9} "
        f"{'add median':>10} {'add p99':>8}  run/hold ticks   (microseconds)"
    )
    for name in ("aloha", "mobile_aloha"):
        emb = load_embodiment(name)
        for strategy in STRATEGIES:
            tick_us, add_us, stats = bench(emb, strategy, args.ticks)
            print(
                f"{name:<13} {strategy:<18} {np.median(tick_us):11.1f} {np.percentile(tick_us, 99):9.1f} "
                f"{np.median(add_us):10.1f} {np.percentile(add_us, 99):8.1f}  "
                f"{stats['run_ticks']}/{stats['hold_ticks']}"
            )


if __name__ == "__main__":
    main()

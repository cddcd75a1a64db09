#!/usr/bin/env python3
"""Data-loading throughput of LeRobotV3Dataset on a synthetic dataset, in samples/s.

Writes a synthetic LeRobot v3.0 dataset for an embodiment (timing the writer), then
reads samples in several orders, with the episode decode cache and without it
(seek and decode per sample). Single process, torch limited to one thread.

    python bench/bench_data.py [--embodiment aloha] [--episodes 6] [--length 150]
                               [--stored-size 224 224] [--samples N] [--workers 0]

Cached rows read one epoch (every frame once), so the one-off episode decodes are
amortised as in training; the uncached and thrashing rows read an eighth of it.
Synthetic frames are flat and decode faster than camera footage.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qwen_vla_ros.data.dataset import EpisodeBlockSampler, LeRobotV3Dataset  # noqa: E402
from qwen_vla_ros.data.synthetic import write_synthetic_dataset  # noqa: E402
from qwen_vla_ros.data.video import choose_codec  # noqa: E402
from qwen_vla_ros.embodiment import load_embodiment  # noqa: E402


def rate(dataset: LeRobotV3Dataset, order: list[int]) -> float:
    """Samples per second over ``order``."""
    start = time.perf_counter()
    for index in order:
        dataset[index]
    return len(order) / (time.perf_counter() - start)


def loader_rate(dataset: LeRobotV3Dataset, workers: int, samples: int) -> float:
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=8,
        sampler=EpisodeBlockSampler(dataset, episodes_per_block=2),
        num_workers=workers,
    )
    start, seen = time.perf_counter(), 0
    for batch in loader:
        seen += len(batch["instruction"])
        if seen >= samples:
            break
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embodiment", default="aloha")
    parser.add_argument("--episodes", type=int, default=6)
    parser.add_argument("--length", type=int, default=150, help="frames per episode")
    parser.add_argument("--stored-size", type=int, nargs=2, default=None, metavar=("H", "W"))
    parser.add_argument(
        "--samples", type=int, default=None, help="samples per measurement (default: one epoch)"
    )
    parser.add_argument(
        "--workers", type=int, default=0, help="also time a DataLoader with N workers"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    embodiment = load_embodiment(args.embodiment)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        root = write_synthetic_dataset(
            Path(tmp) / "bench", embodiment, episodes=args.episodes, episode_length=args.length,
            image_size=tuple(args.stored_size) if args.stored_size else None,
        )  # fmt: skip
        written = time.perf_counter() - start
        frames = args.episodes * args.length
        cameras = len(embodiment.cameras)
        print(
            f"embodiment {embodiment.name}: {cameras} cameras, {frames} frames, codec {choose_codec()}"
        )
        print(f"write: {written:.2f} s, {frames * cameras / written:.0f} camera frames/s encoded")
        size = args.stored_size or embodiment.cameras[0].image_size
        print(f"stored {size[0]}x{size[1]} px, served at {embodiment.cameras[0].image_size} px")

        rng = random.Random(0)
        count = min(args.samples or frames, frames)
        sequential = list(range(count))
        shuffled = rng.sample(range(frames), count)
        per_frame = shuffled[: max(1, count // 8)]  # the slow paths: fewer samples
        rows = [
            (
                "no images (state + action chunk only)",
                LeRobotV3Dataset(root, embodiment, cameras=[]),
                shuffled,
            ),
            ("cache, sequential order", LeRobotV3Dataset(root, embodiment), sequential),
            ("cache, episode-block shuffle", LeRobotV3Dataset(root, embodiment), None),
            (
                "cache, uniform shuffle (all episodes fit)",
                LeRobotV3Dataset(root, embodiment),
                shuffled,
            ),
            (
                "cache of ~1 episode, uniform shuffle",
                LeRobotV3Dataset(root, embodiment, cache_mb=1),
                per_frame,
            ),
            (
                "no cache: seek + decode per sample",
                LeRobotV3Dataset(root, embodiment, decode="frame"),
                per_frame,
            ),
        ]
        for label, dataset, order in rows:
            if order is None:
                order = list(EpisodeBlockSampler(dataset, episodes_per_block=2))[:count]
            speed = rate(dataset, order)
            misses = (
                f", {dataset.cache_misses} episode-camera decodes"
                if dataset.decode == "episode" and dataset.cameras
                else ""
            )
            print(f"{label:45s} {speed:8.1f} samples/s  ({len(order)} samples{misses})")
        if args.workers:
            dataset = LeRobotV3Dataset(root, embodiment)
            speed = loader_rate(dataset, args.workers, count)
            print(
                f"{'DataLoader, ' + str(args.workers) + ' workers, episode blocks':45s} {speed:8.1f} samples/s"
            )


if __name__ == "__main__":
    main()

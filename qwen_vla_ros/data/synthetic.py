"""A small synthetic LeRobot v3.0 dataset with structure a policy can learn (pure core).

Each episode picks one instruction ("reach the red marker", ...) and a marker
position (x, y) in [0.2, 0.8]^2 of the image. The episode's target pose is a fixed
smooth function of the marker position and the instruction; the state moves a
fixed fraction of the way to the target each step, and the action at t is the
state at t+1. So the action chunk is predictable from the state plus what the
images (marker position) and the instruction (marker colour, target offset) say,
and a model that reads both drives the validation loss down; one that ignores the
images cannot.

Cameras: the first shows the marker at its position; the others show it shifted by
the remaining distance to the target, so they change over the episode.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..embodiment import Embodiment
from .chunks import pose_steps
from .lerobot_v3 import EpisodeData, LeRobotV3Writer

SYNTHETIC_TASKS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("reach the red marker", (220, 40, 40)),
    ("reach the green marker", (40, 200, 60)),
    ("reach the blue marker", (40, 70, 230)),
    ("reach the yellow marker", (230, 210, 40)),
)
APPROACH_RATE = 0.08  # fraction of the remaining distance covered per step


def _unit_ranges(embodiment: Embodiment) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension (low, high) the synthetic motion stays in, rig units."""
    low, high = embodiment.position_min.copy(), embodiment.position_max.copy()
    span = high - low
    # Keep to the middle of each range: the edges of joint ranges are not poses a robot rests in.
    return low + 0.25 * span, high - 0.25 * span


def _target(embodiment: Embodiment, marker: np.ndarray, task: int, seed: int) -> np.ndarray:
    """Target in rig units: a fixed smooth map of the marker (x, y) and the task index."""
    rng = np.random.default_rng(seed)  # the map is fixed per dataset seed, not per episode
    dims = embodiment.action_dim
    weights = rng.normal(size=(2, dims))
    task_offsets = rng.uniform(-1.0, 1.0, size=(len(SYNTHETIC_TASKS), dims))
    unit = 0.5 + 0.35 * np.tanh(weights.T @ (marker - 0.5) * 2.0 + 0.5 * task_offsets[task])
    low, high = _unit_ranges(embodiment)
    return low + unit * (high - low)


def _frame(
    size_hw: tuple[int, int], centre: np.ndarray, colour: tuple[int, int, int], shade: int
) -> np.ndarray:
    height, width = size_hw
    image = np.full((height, width, 3), shade, dtype=np.uint8)
    image[: height // 8] = shade // 2  # a darker band: something fixed to see besides the marker
    x, y = int(centre[0] * (width - 1)), int(centre[1] * (height - 1))
    cv2.circle(image, (x, y), max(2, min(height, width) // 10), colour, thickness=-1)
    return image


def synthetic_episode(
    embodiment: Embodiment,
    length: int,
    image_sizes: dict[str, tuple[int, int]],
    rng: np.random.Generator,
    seed: int = 0,
) -> EpisodeData:
    """One synthetic episode (rig units) for the embodiment."""
    task = int(rng.integers(len(SYNTHETIC_TASKS)))
    text, colour = SYNTHETIC_TASKS[task]
    marker = rng.uniform(0.2, 0.8, size=2)
    target = _target(embodiment, marker, task, seed)
    low, high = _unit_ranges(embodiment)
    state = np.empty((length + 1, embodiment.action_dim))
    state[0] = np.clip(
        embodiment.home_position + rng.normal(0, 0.02, embodiment.action_dim), low, high
    )
    for t in range(length):
        state[t + 1] = state[t] + APPROACH_RATE * (target - state[t])
    action = state[1:].copy()
    observed = state[:-1].copy()
    for group in embodiment.action_groups:
        if group.kind == "base_waypoints":
            block = embodiment.group_slices[group.name]
            action[:, block] = pose_steps(state[:, block])  # stored as one-step motions
            observed[:, block] = 0.0
    progress = (target - state[:-1])[:, :2] / np.maximum(high - low, 1e-6)[:2]
    images = {}
    for number, (camera, size) in enumerate(image_sizes.items()):
        centres = (
            np.repeat(marker[None], length, 0)
            if number == 0
            else np.clip(0.5 + progress, 0.05, 0.95)
        )
        shade = 90 + 30 * number
        images[camera] = np.stack([_frame(size, c, colour, shade) for c in centres])
    return EpisodeData(task=text, state=observed, action=action, images=images)


def write_synthetic_dataset(
    root: str | Path,
    embodiment: Embodiment,
    *,
    episodes: int = 8,
    episode_length: int = 60,
    image_size: tuple[int, int] | None = None,
    seed: int = 0,
    codec: str | None = None,
    overwrite: bool = True,
) -> Path:
    """Write a synthetic LeRobot v3.0 dataset for ``embodiment``; returns its folder.

    Args:
        episode_length: frames per episode (at the embodiment's control rate).
        image_size: stored (height, width) px for every camera; default each camera's
            embodiment size. Smaller sizes write faster; the reader resizes on load.
    """
    sizes = {c.name: tuple(image_size or c.image_size) for c in embodiment.cameras}
    rng = np.random.default_rng(seed)
    waypoint_groups = [g.name for g in embodiment.action_groups if g.kind == "base_waypoints"]
    with LeRobotV3Writer(
        root,
        fps=embodiment.control_rate_hz,
        names=embodiment.action_names,
        cameras=sizes,
        robot_type=embodiment.name,
        codec=codec,
        overwrite=overwrite,
        horizon=embodiment.chunk_horizon,
        waypoint_slices=tuple(embodiment.group_slices[g] for g in waypoint_groups),
        metadata={"embodiment": embodiment.name, "source": "synthetic", "seed": seed},
    ) as writer:
        for _ in range(episodes):
            writer.add_episode(synthetic_episode(embodiment, episode_length, sizes, rng, seed))
    return Path(root)

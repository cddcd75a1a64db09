"""Shared fixtures: small embodiments (32x32 cameras, short chunks) and synthetic datasets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qwen_vla_ros.embodiment import load_embodiment
from qwen_vla_ros.training.config import load_stage_config
from qwen_vla_ros.training.rl import StepResult
from qwen_vla_ros.types import Observation

# Two cores are shared with other work.
torch.set_num_threads(1)

ALOHA_SMALL_YAML = """
extends: aloha_sim
name: aloha_small
control: {chunk_horizon: 8}
cameras:
  - {name: cam_high, topic: /cam_high/camera/color/image_rect_raw, image_size: [32, 32], required: true}
  - {name: cam_left_wrist, topic: /cam_left_wrist/camera/color/image_rect_raw, image_size: [32, 32], required: true}
"""

FR3_SMALL_YAML = """
extends: fr3_arm
name: fr3_small
control: {chunk_horizon: 8}
cameras:
  - {name: external, topic: /external_camera/color/image_raw, image_size: [32, 32], required: true}
"""


@pytest.fixture(scope="session")
def embodiment_files(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("embodiments")
    files = {}
    for name, text in (("aloha_small", ALOHA_SMALL_YAML), ("fr3_small", FR3_SMALL_YAML)):
        (root / f"{name}.yaml").write_text(text)
        files[name] = str(root / f"{name}.yaml")
    return files


@pytest.fixture(scope="session")
def datasets(tmp_path_factory, embodiment_files) -> dict[str, str]:
    """Synthetic LeRobot v3.0 datasets: aloha_small (10 episodes), fr3_small (4 episodes)."""
    from qwen_vla_ros.data.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("datasets")
    out = {}
    for name, episodes in (("aloha_small", 10), ("fr3_small", 4)):
        embodiment = load_embodiment(embodiment_files[name])
        out[name] = str(write_synthetic_dataset(root / name, embodiment, episodes=episodes, episode_length=24, seed=1))
    return out


def _small_config(stage: str, files: dict[str, str], data: dict[str, str], **overrides):
    """A shipped stage made tiny: small batches, few steps, no warm-up."""
    settings = {
        "embodiment": files["aloha_small"],
        "datasets": [] if stage == "rl" else [{"path": data["aloha_small"]}],
        "batch_size": 4,
        "max_steps": 2,
        "log_every": 1,
        "schedule": {"name": "constant", "warmup_steps": 0},
        "eval": {"every_steps": 100, "max_batches": 1, "val_fraction": 0.2},
    }
    for key, value in overrides.items():
        settings[key] = {**settings[key], **value} if isinstance(value, dict) and key in settings else value
    return load_stage_config(stage, settings)


class ReachEnv:
    """A tiny fake rig: the state jumps to the commanded action; reward grows near a goal."""

    def __init__(self, embodiment, config=None):
        self.embodiment = embodiment
        self.goal = embodiment.home_position + 0.1
        self.state = embodiment.home_position.copy()
        self.steps = 0

    def reset(self, seed: int) -> Observation:
        rng = np.random.default_rng(seed)
        self.state = self.embodiment.home_position + rng.normal(0.0, 0.05, self.embodiment.action_dim)
        return self.observe()

    def observe(self) -> Observation:
        images = {c.name: np.full((*c.image_size, 3), 100, np.uint8) for c in self.embodiment.cameras}
        return Observation(images=images, state=self.state.copy(), instruction="reach the goal")

    def step(self, action) -> StepResult:
        self.steps += 1
        self.state = np.clip(action, self.embodiment.position_min, self.embodiment.position_max)
        reward = float(np.exp(-np.linalg.norm(self.state - self.goal)))
        return StepResult(reward=reward, done=reward > 0.99)

    def close(self) -> None:
        pass


@pytest.fixture(scope="session")
def reach_env():
    """The fake rig class, as a fixture (test folders have no importable package)."""
    return ReachEnv


@pytest.fixture(scope="session")
def small_config(embodiment_files, datasets):
    """``small_config(stage, **overrides)``: a shipped stage made tiny (see _small_config)."""
    return lambda stage, **overrides: _small_config(stage, embodiment_files, datasets, **overrides)

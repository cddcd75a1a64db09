"""Shared fixtures: tiny offline policies, built once per test session."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qwen_vla_ros.model import QwenVLAPolicy, build_tiny_policy
from qwen_vla_ros.types import Observation

# Two cores are shared with other work: one torch thread keeps timings stable.
torch.set_num_threads(1)

SIGNED_ARM_YAML = """
name: signed_arm
prompt: A two-joint test arm with a flipped first joint. Action is two joint positions in radians.
control: {rate_hz: 20.0, chunk_horizon: 8}
cameras:
  - {name: top, topic: /top/image_raw, image_size: [32, 48]}
  - {name: side, topic: /side/image_raw, image_size: [32, 48], required: false}
state:
  - {name: arm, topic: /joint_states, joints: [j1, j2]}
action:
  - name: arm
    kind: joint_position
    joints:
      - {name: j1, min: -0.5, max: 1.5, max_velocity: 2.0, sign: -1, offset: 0.25, state: {source: arm, joint: j1}}
      - {name: j2, min: -1.0, max: 1.0, max_velocity: 2.0, state: {source: arm, joint: j2}}
outputs:
  - {topic: /arm_controller/commands, type: std_msgs/msg/Float64MultiArray, groups: [arm]}
"""


@pytest.fixture(scope="session")
def tiny_policy_dirs(tmp_path_factory) -> dict[str, object]:
    """Saved tiny untrained policies, one per backbone family, statistics for every shipped embodiment."""
    root = tmp_path_factory.mktemp("tiny_policies")
    return {
        family: build_tiny_policy(root / family, family=family)
        for family in ("qwen3_5", "qwen3_vl")
    }


@pytest.fixture(scope="session")
def policy(tiny_policy_dirs) -> QwenVLAPolicy:
    """The tiny Qwen3.5-based policy, loaded from disk (shared: never train it in tests)."""
    return QwenVLAPolicy.from_pretrained(tiny_policy_dirs["qwen3_5"]).eval()


@pytest.fixture(scope="session")
def signed_arm(tmp_path_factory):
    """A small custom embodiment with a sign flip and offset, and an optional camera."""
    from qwen_vla_ros.embodiment import load_embodiment

    path = tmp_path_factory.mktemp("embodiments") / "signed_arm.yaml"
    path.write_text(SIGNED_ARM_YAML)
    return load_embodiment(path)


def make_observation(
    embodiment, seed: int = 0, instruction: str = "pick up the cube"
) -> Observation:
    """Random images for every required camera and a state inside the limits (rig units)."""
    rng = np.random.default_rng(seed)
    images = {
        camera.name: rng.integers(0, 256, (*camera.image_size, 3), dtype=np.uint8)
        for camera in embodiment.cameras
        if camera.required
    }
    state = rng.uniform(embodiment.position_min, embodiment.position_max)
    return Observation(images=images, state=state, instruction=instruction, stamp=12.5)


@pytest.fixture(scope="session")
def observe():
    """The observation factory, as a fixture (test folders have no importable package)."""
    return make_observation

"""predict_chunks returns the head's key pose and can act on a given one (a latched plan)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qwen_vla_ros.embodiment import load_embodiment
from qwen_vla_ros.model import NormStats, QwenVLAPolicy, tiny_backbone


@pytest.fixture(scope="module")
def aloha():
    return load_embodiment("aloha_sim")


@pytest.fixture(scope="module")
def headed(aloha):
    model = QwenVLAPolicy.from_backbone(tiny_backbone("qwen3_5", seed=0), "tiny", seed=0)
    model.set_normalization(aloha.name, NormStats.from_limits(aloha))
    torch.manual_seed(0)
    model.add_key_pose_input()  # the head, and the decoder's input for its key pose
    with torch.no_grad():
        for weight in model.decoder.parameters():  # no zero-started gates: the key pose is read
            weight.add_(0.05 * torch.randn_like(weight))
    return model.eval()


def test_a_chunk_carries_the_key_pose_its_head_predicted(headed, aloha, observe, policy):
    chunk = headed.predict_chunk(observe(aloha), aloha, seed=1)
    assert chunk.key_pose.shape == (aloha.action_dim,) and np.isfinite(chunk.key_pose).all()
    assert policy.predict_chunk(observe(aloha), aloha, seed=1).key_pose is None  # no head, no key pose


def test_acting_on_the_predicted_key_pose_reproduces_the_free_chunk(headed, aloha, observe):
    observation = observe(aloha, seed=3)
    free = headed.predict_chunk(observation, aloha, seed=1)
    given = headed.predict_chunk(observation, aloha, seed=1, key_pose=free.key_pose)
    np.testing.assert_allclose(given.actions, free.actions, atol=1e-4)
    np.testing.assert_allclose(given.key_pose, free.key_pose, atol=1e-6)  # still the head's own
    other = headed.predict_chunk(observation, aloha, seed=1, key_pose=free.key_pose + 0.5)
    assert np.abs(other.actions - free.actions).max() > 1e-3  # the decoder reads it


def test_a_batch_takes_one_key_pose_for_all_or_one_each(headed, aloha, observe):
    observations = [observe(aloha, seed=s) for s in (4, 5)]
    pose = np.full(aloha.action_dim, 0.1)
    shared = headed.predict_chunks(observations, aloha, seed=2, key_pose=pose)
    each = headed.predict_chunks(observations, aloha, seed=2, key_pose=np.stack([pose, pose]))
    for a, b in zip(shared, each, strict=True):
        np.testing.assert_allclose(a.actions, b.actions, atol=1e-6)

"""The key-pose head's grounding pointer: a softmax over backbone tokens, added without
changing a trained head, saved with the policy."""

from __future__ import annotations

import numpy as np
import torch

from qwen_vla_ros.embodiment import load_embodiment
from qwen_vla_ros.model import NormStats, QwenVLAPolicy, tiny_backbone


def _policy():
    aloha = load_embodiment("aloha_sim")
    policy = QwenVLAPolicy.from_backbone(tiny_backbone("qwen3_5", seed=0), "tiny", seed=0)
    policy.set_normalization(aloha.name, NormStats.from_limits(aloha))
    policy.add_subgoal_head()
    return policy.eval(), aloha


def test_the_key_pose_follows_the_place_the_pointer_picks(observe, monkeypatch):
    policy, aloha = _policy()
    policy.add_grounding_pointer()
    assert policy.config.decoder.grounding and policy.decoder.key_pose.point_key is not None
    obs = observe(aloha, seed=2, instruction="pick up the blue cube")
    with torch.inference_mode():
        prepared = policy.prepare_observations([obs], aloha)
        features = policy.backbone(prepared.inputs)
    overhead = torch.nonzero(features.token_grid[0, :, 3] > 0).flatten()  # the first camera's tokens

    def key_pose_when_pointing_at(token):
        def peaked(query, memory, cond_mask):
            logits = torch.full(memory.shape[:2], -1e4)
            logits[:, token] = 0.0
            return logits

        monkeypatch.setattr(policy.decoder.key_pose, "pointer_logits", peaked)
        with torch.inference_mode():
            _, _, key_pose = policy.decoder.condition(features.features, features.mask, prepared.dim_mask,
                                                      features.token_grid)
        return key_pose

    first, last = key_pose_when_pointing_at(int(overhead[0])), key_pose_when_pointing_at(int(overhead[-1]))
    assert (first - last).abs().max() > 1e-3  # top-left and bottom-right of the image: another grasp


def test_pointer_logits_cover_every_real_token_and_no_padding(observe):
    policy, aloha = _policy()
    policy.add_grounding_pointer()
    observations = [observe(aloha, seed=1, instruction="pick up the red cube"),
                    observe(aloha, seed=2, instruction="grab the green cube and lift it off the table")]
    with torch.inference_mode():
        prepared = policy.prepare_observations(observations, aloha)
        features = policy.backbone(prepared.inputs)
        logits = policy.decoder.point(features.features, features.mask, features.token_grid)
    assert logits.shape == features.mask.shape
    assert torch.isfinite(logits[features.mask]).all()
    assert torch.isneginf(logits[~features.mask]).all() and (~features.mask).any()  # the shorter prompt is padded


def test_the_pointer_is_saved_and_loaded_with_the_policy(tmp_path, observe):
    policy, aloha = _policy()
    policy.add_grounding_pointer()
    with torch.no_grad():  # as if trained: what it points at now changes the key pose
        policy.decoder.key_pose.pointed.weight.normal_(0, 0.5)
    policy.save_pretrained(tmp_path / "policy")
    loaded = QwenVLAPolicy.from_pretrained(tmp_path / "policy").eval()
    assert loaded.config.decoder.grounding
    obs = observe(aloha, seed=4, instruction="pick up the green cube")
    np.testing.assert_allclose(loaded.predict_chunk(obs, aloha, seed=1).actions,
                               policy.predict_chunk(obs, aloha, seed=1).actions, atol=1e-6)

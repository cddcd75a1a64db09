"""Teacher forcing of the key pose: the decoder reads the true key pose while it trains.

Why it exists: trained only on the key-pose head's own predictions, the demo policy's decoder
learnt to ignore the key pose (closed loop with the expert's key pose put in did no better
than with a zero one; docs/training.md, "Stage 5c").
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qwen_vla_ros.embodiment import load_embodiment
from qwen_vla_ros.model import NormStats, QwenVLAPolicy, tiny_backbone
from qwen_vla_ros.model.dit import DiTConfig


def _policy(seed: int = 0, key_pose_input: bool = False) -> QwenVLAPolicy:
    aloha = load_embodiment("aloha_sim")
    model = QwenVLAPolicy.from_backbone(tiny_backbone("qwen3_5", seed=seed), "tiny", seed=seed)
    model.set_normalization(aloha.name, NormStats.from_limits(aloha))
    torch.manual_seed(seed)  # the head's fresh weights, whichever tests ran before in this process
    model.add_subgoal_head()
    if key_pose_input:
        model.add_key_pose_input()
    return model


def _batch(size: int, seed: int = 0) -> dict:
    """Chunks that hold still at a random key pose per sample; one instruction for all, no
    images: only the key pose tells the samples apart."""
    rng = np.random.default_rng(seed)
    poses = rng.uniform(-0.5, 0.5, size=(size, 14))
    return {
        "state": torch.zeros(size, 14),
        "actions": torch.tensor(np.repeat(poses[:, None], 4, axis=1), dtype=torch.float32),
        "instructions": ["hand over the cube"] * size,
        "embodiment": "aloha_sim",
        "subgoal": torch.tensor(poses, dtype=torch.float32),
    }


def test_teacher_rows_get_the_true_key_pose_token_and_the_rest_the_prediction():
    model = _policy()
    decoder = model.decoder
    cond = torch.randn(2, 5, decoder.config.cond_dim)
    dim_mask = torch.ones(2, decoder.config.max_action_dim)
    teacher = torch.randn(2, decoder.config.max_action_dim)
    with torch.no_grad():
        memory, _, predicted = decoder.condition(cond, None, dim_mask, None, teacher, torch.tensor([True, False]))
        own, _, _ = decoder.condition(cond, None, dim_mask)
    torch.testing.assert_close(memory[0, -1], decoder.key_pose.embed(teacher, dim_mask)[0, 0])
    torch.testing.assert_close(memory[1, -1], own[1, -1])  # not taught: its own prediction
    torch.testing.assert_close(memory[:, :-1], own[:, :-1])  # the backbone's tokens unchanged
    assert not torch.allclose(memory[0, -1], own[0, -1])
    assert predicted.shape == teacher.shape  # the head's prediction, for its loss


def test_teacher_forcing_applies_only_while_the_decoder_trains():
    model = _policy()
    batch = _batch(6)

    def per_sample(forcing: float) -> torch.Tensor:
        out = model.compute_loss(batch, generator=torch.Generator().manual_seed(3), subgoal_weight=1.0,
                                 teacher_forcing=forcing)
        return out["per_sample"]

    with torch.no_grad():
        for weight in model.decoder.parameters():  # no zero-started gates: the token is read
            weight.add_(0.05 * torch.randn_like(weight))
        model.eval()
        torch.testing.assert_close(per_sample(1.0), per_sample(0.0))  # validation sees the prediction
        model.train()
        taught, untaught = per_sample(1.0), per_sample(0.0)
    assert not torch.isclose(taught, untaught).any(), (taught, untaught)


@pytest.mark.parametrize("key_pose_input", [False, True], ids=["memory-token", "input"])
def test_a_taught_decoder_follows_the_key_pose(key_pose_input):
    model = _policy(key_pose_input=key_pose_input)
    model.train()
    batch = _batch(8)
    optimizer = torch.optim.Adam(model.decoder.parameters(), lr=3e-3)
    for step in range(300):
        out = model.compute_loss(batch, generator=torch.Generator().manual_seed(step), subgoal_weight=1.0,
                                 teacher_forcing=1.0)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()

    def flow_loss(forcing: float) -> float:
        losses = [model.compute_loss(batch, generator=torch.Generator().manual_seed(1000 + k), subgoal_weight=1.0,
                                     teacher_forcing=forcing)["flow_loss"] for k in range(8)]
        return float(torch.stack(losses).mean())

    with torch.no_grad():
        taught, own = flow_loss(1.0), flow_loss(0.0)
    # The head cannot tell the samples apart (same words, no images); the true key pose can.
    assert taught < 0.5 * own, (taught, own)


def test_the_key_pose_input_is_saved_with_the_policy(tmp_path, observe):
    model = _policy(key_pose_input=True).eval()
    assert model.config.decoder.key_pose_input and model.config.decoder.subgoal
    with torch.no_grad():  # a trained input: the chunk depends on it
        model.decoder.key_pose_in.weight.normal_(0, 0.5)
        for block in model.decoder.blocks:
            block.modulation[-1].weight.normal_(0, 0.05)
        model.decoder.action_out.weight.normal_(0, 0.05)
    model.save_pretrained(tmp_path / "policy")
    loaded = QwenVLAPolicy.from_pretrained(tmp_path / "policy").eval()
    assert loaded.config.decoder.key_pose_input
    aloha = load_embodiment("aloha_sim")
    obs = observe(aloha, seed=1, instruction="pick up the red cube")
    chunk = model.predict_chunk(obs, aloha, seed=5).actions
    np.testing.assert_allclose(loaded.predict_chunk(obs, aloha, seed=5).actions, chunk, atol=1e-6)
    with torch.no_grad():
        model.decoder.key_pose_in.weight.zero_()
    assert not np.allclose(model.predict_chunk(obs, aloha, seed=5).actions, chunk, atol=1e-4)


@pytest.mark.parametrize("part", ["grounding", "key_pose_input"])
def test_key_pose_parts_without_the_head_are_refused(part):
    """Without the head there is no key-pose token to point with or to feed in."""
    with pytest.raises(ValueError, match="needs subgoal=True"):
        DiTConfig(hidden_size=64, depth=2, num_heads=4, **{part: True})
    assert getattr(DiTConfig(hidden_size=64, depth=2, num_heads=4, subgoal=True, **{part: True}), part)

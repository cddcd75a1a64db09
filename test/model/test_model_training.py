"""The training API: loss masking, frozen backbone, and overfitting a handful of samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qwen_vla_ros.embodiment import load_embodiment
from qwen_vla_ros.model import NormStats, QwenVLAPolicy, tiny_backbone
from qwen_vla_ros.types import Observation

INSTRUCTIONS = ["pick up the red cube", "insert the peg", "open the drawer", "fold the towel"]


def fresh_policy(*embodiments, freeze=False, seed=0, family="qwen3_5"):
    model = QwenVLAPolicy.from_backbone(
        tiny_backbone(family, seed=seed), "tiny", freeze_backbone=freeze, seed=seed
    )
    for emb in embodiments:
        model.set_normalization(emb.name, NormStats.from_limits(emb))
    return model


def _loss(model, batch, seed=0):
    return model.compute_loss(batch, generator=torch.Generator().manual_seed(seed))["loss"]


def test_loss_ignores_padded_columns_and_padded_steps():
    aloha, base = load_embodiment("aloha_sim"), load_embodiment("mobile_base")
    model = fresh_policy(aloha, base)
    with torch.no_grad():  # non-zero output layer so the loss depends on predictions
        model.decoder.action_out.weight.normal_(0, 0.1)
    rng = np.random.default_rng(0)
    batch = {
        "state": torch.tensor(rng.normal(size=(2, 14)), dtype=torch.float32),
        "actions": torch.tensor(rng.normal(size=(2, 6, 14)), dtype=torch.float32),
        "action_is_pad": torch.tensor([[False] * 6, [False] * 4 + [True] * 2]),
        "instructions": ["hand over the cube", "drive to the door"],
        "embodiment": ["aloha_sim", "mobile_base"],
    }
    reference = _loss(model, batch)
    beyond_base = {k: v.clone() if torch.is_tensor(v) else v for k, v in batch.items()}
    beyond_base["actions"][1, :, 3:] += 5.0  # columns mobile_base does not have
    beyond_base["state"][1, 3:] -= 5.0
    beyond_base["actions"][1, 4:, :3] += 5.0  # steps flagged as padding
    torch.testing.assert_close(_loss(model, beyond_base), reference)
    used = {k: v.clone() if torch.is_tensor(v) else v for k, v in batch.items()}
    used["actions"][1, :4, :3] += 5.0
    assert not torch.allclose(_loss(model, used), reference)


def _image_batch(emb, size=2):
    generator = torch.Generator().manual_seed(0)
    images = {
        c.name: torch.randint(0, 256, (size, 32, 32, 3), generator=generator, dtype=torch.uint8)
        for c in emb.cameras
    }
    return {
        "images": images,
        "state": torch.zeros(size, emb.action_dim),
        "actions": torch.randn(size, 4, emb.action_dim, generator=generator),
        "instructions": INSTRUCTIONS[:size],
        "embodiment": emb,
    }


@pytest.mark.parametrize("freeze", [False, True])
def test_gradients_reach_the_backbone_only_when_unfrozen(freeze):
    emb = load_embodiment("aloha_sim")
    model = fresh_policy(emb, freeze=freeze).train()
    with torch.no_grad():
        model.decoder.action_out.weight.normal_(0, 0.1)
    assert model.backbone.training is not freeze
    _loss(model, _image_batch(emb)).backward()
    vision_grads = [p.grad for p in model.backbone.model.model.visual.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in vision_grads) is not freeze
    assert all(p.grad is not None for p in model.decoder.parameters() if p.requires_grad)


def test_image_mask_leaves_a_camera_out_for_one_sample():
    emb = load_embodiment("aloha_sim")
    model = fresh_policy(emb)
    from qwen_vla_ros.model.inputs import batch_prompts

    batch = _image_batch(emb)
    batch["image_mask"] = {"cam_high": torch.tensor([True, False])}
    prompts = batch_prompts(batch, [emb, emb])
    assert [name for name, _ in prompts[0].images] == emb.camera_names
    assert [name for name, _ in prompts[1].images] == ["cam_left_wrist", "cam_right_wrist"]
    assert torch.isfinite(_loss(model, batch))


def test_overfits_a_handful_of_samples():
    """Loss falls tenfold; sampled chunks move close to the demonstrated ones (rig units)."""
    emb = load_embodiment("aloha_sim")
    # Qwen3-VL's tiny text stack is 5x faster than Qwen3.5's linear-attention layers on CPU.
    model = fresh_policy(emb, freeze=True, family="qwen3_vl").train()
    stats = model.normalization_for(emb)
    rng = np.random.default_rng(0)
    state = rng.uniform(0.3 * stats.state.q01, 0.3 * stats.state.q99, (4, 14))
    goal = rng.uniform(0.5 * stats.action.q01, 0.5 * stats.action.q99, (4, 14))
    ramp = np.linspace(0.0, 1.0, emb.chunk_horizon)[None, :, None]
    targets = state[:, None] + (goal - state)[:, None] * ramp  # model units
    batch = {
        "state": torch.tensor(state, dtype=torch.float32),
        "actions": torch.tensor(targets, dtype=torch.float32),
        "instructions": INSTRUCTIONS,
        "embodiment": "aloha_sim",
    }
    steps, peak_lr = 400, 1e-2
    optimiser = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=peak_lr, weight_decay=0.0
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=peak_lr, total_steps=steps, pct_start=0.1
    )
    generator, losses = torch.Generator().manual_seed(0), []
    for _ in range(steps):
        loss = model.compute_loss(batch, generator=generator)["loss"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
    assert np.mean(losses[-20:]) < np.mean(losses[:10]) / 10, (losses[:10], losses[-20:])

    model.eval()
    observations = [
        Observation(images={}, state=emb.actions_to_rig(state[i]), instruction=INSTRUCTIONS[i])
        for i in range(4)
    ]
    predicted = np.stack(
        [c.actions for c in model.predict_chunks(observations, emb, seed=0, text_only=True)]
    )
    wanted = emb.actions_to_rig(targets)
    error = np.abs(predicted - wanted).mean()
    guess_the_mean = np.abs(wanted - wanted.mean(axis=0)).mean()
    assert error < 0.4 * guess_the_mean, (error, guess_the_mean)


def test_state_dropout_hides_the_state_of_the_dropped_samples_only():
    aloha = load_embodiment("aloha_sim")
    model = fresh_policy(aloha)
    with torch.no_grad():  # no zero-initialised gates: the action tokens see the state token
        for weight in model.decoder.parameters():
            weight.normal_(0, 0.05)
    rng = np.random.default_rng(0)
    batch = {
        "state": torch.tensor(rng.normal(size=(8, 14)), dtype=torch.float32),
        "actions": torch.tensor(rng.normal(size=(8, 6, 14)), dtype=torch.float32),
        "instructions": ["hand over the cube"] * 8,
        "embodiment": "aloha_sim",
    }
    moved = {**batch, "state": batch["state"] * 0.5}

    def losses(b, dropout):
        out = model.compute_loss(b, generator=torch.Generator().manual_seed(0), state_dropout=dropout)
        return out["per_sample"]

    everyone_dropped = losses(batch, 0.999999)
    torch.testing.assert_close(losses(moved, 0.999999), everyone_dropped)  # the state is not seen
    assert not torch.allclose(losses(moved, 0.0), losses(batch, 0.0))  # without dropout it is
    half = losses(moved, 0.5) - losses(batch, 0.5)  # same generator: the same samples dropped
    unchanged = torch.isclose(half, torch.zeros_like(half), atol=1e-7)
    assert 0 < int(unchanged.sum()) < 8, half


def test_key_pose_head_learns_its_targets_and_is_saved_with_the_policy(tmp_path, observe):
    aloha = load_embodiment("aloha_sim")
    model = fresh_policy(aloha)
    torch.manual_seed(0)  # the head's fresh weights, whichever tests ran before in this process
    model.add_subgoal_head()
    assert model.config.decoder.subgoal
    rng = np.random.default_rng(0)
    batch = {
        "state": torch.zeros(4, 14),
        "actions": torch.tensor(rng.normal(size=(4, 6, 14)), dtype=torch.float32),
        "instructions": INSTRUCTIONS,
        "embodiment": "aloha_sim",
        "subgoal": torch.tensor(rng.uniform(-1, 1, size=(4, 14)), dtype=torch.float32),
    }
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(80):
        out = model.compute_loss(batch, generator=torch.Generator().manual_seed(step), subgoal_weight=1.0)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(float(out["subgoal_loss"]))
    assert losses[-1] < 0.1 * losses[0], losses[::10]  # the instruction alone tells the four apart
    unknown = {k: v for k, v in batch.items() if k != "subgoal"}
    assert float(model.compute_loss(unknown, subgoal_weight=1.0)["subgoal_loss"]) == 0.0
    without = model.compute_loss(batch, generator=torch.Generator().manual_seed(0))
    assert float(without["loss"].detach()) == float(without["flow_loss"])  # weight 0: reported, not trained

    model.eval().save_pretrained(tmp_path / "policy")
    loaded = QwenVLAPolicy.from_pretrained(tmp_path / "policy").eval()
    assert loaded.config.decoder.subgoal
    obs = observe(aloha, seed=1, instruction=INSTRUCTIONS[0])
    np.testing.assert_allclose(loaded.predict_chunk(obs, aloha, seed=5).actions,
                               model.predict_chunk(obs, aloha, seed=5).actions, atol=1e-6)

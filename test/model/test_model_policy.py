"""QwenVLAPolicy inference: shapes per embodiment, units, save/load, determinism, caching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qwen_vla_ros.embodiment import list_shipped_embodiments, load_embodiment
from qwen_vla_ros.model import ModelInputError, NormStats, QwenVLAPolicy

SHIPPED = list_shipped_embodiments()


@pytest.fixture(scope="module")
def qwen3_vl_policy(tiny_policy_dirs):
    return QwenVLAPolicy.from_pretrained(tiny_policy_dirs["qwen3_vl"]).eval()


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("family", ["qwen3_5", "qwen3_vl"])
def test_chunk_has_the_embodiment_layout(name, family, policy, qwen3_vl_policy, observe):
    model = policy if family == "qwen3_5" else qwen3_vl_policy
    emb = load_embodiment(name)
    chunk = model.predict_chunk(observe(emb), emb, seed=0)
    assert chunk.actions.shape == (emb.chunk_horizon, emb.action_dim)
    assert np.isfinite(chunk.actions).all()
    assert chunk.names == emb.action_names and chunk.embodiment == emb.name
    assert chunk.dt == pytest.approx(emb.dt) and chunk.start_time == 12.5
    assert set(chunk.timings) == {"preprocess", "backbone", "decoder"}
    assert all(t > 0 for t in chunk.timings.values())


def test_untrained_chunk_is_seeded_noise_mapped_to_rig_units(policy, signed_arm, observe):
    """A fresh decoder predicts zero velocity, so the chunk is the initial noise de-normalised."""
    policy.set_normalization(signed_arm.name, NormStats.from_limits(signed_arm))
    chunk = policy.predict_chunk(observe(signed_arm), signed_arm, seed=7)
    noise = torch.randn(
        (1, signed_arm.chunk_horizon, policy.max_action_dim),
        generator=torch.Generator().manual_seed(7),
    )
    stats = policy.normalization_for(signed_arm)
    expected = signed_arm.actions_to_rig(stats.unnormalize_actions(noise[0, :, :2].numpy()))
    np.testing.assert_allclose(chunk.actions, expected, atol=1e-5)


def test_same_seed_same_chunk_other_seed_other_chunk(policy, observe):
    emb = load_embodiment("aloha_sim")
    obs = observe(emb)
    first = policy.predict_chunk(obs, emb, seed=3).actions
    np.testing.assert_array_equal(first, policy.predict_chunk(obs, emb, seed=3).actions)
    assert not np.allclose(first, policy.predict_chunk(obs, emb, seed=4).actions)


def _perturbed_copy(directory):
    """The tiny policy with a decoder nudged away from zero-init, so outputs use every input."""
    model = QwenVLAPolicy.from_pretrained(directory).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.decoder.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model


def test_save_and_reload_give_identical_chunks(tiny_policy_dirs, tmp_path, observe):
    model = _perturbed_copy(tiny_policy_dirs["qwen3_5"])
    emb = load_embodiment("mobile_aloha")
    obs = observe(emb)
    before = model.predict_chunk(obs, emb, seed=1).actions
    reloaded = QwenVLAPolicy.from_pretrained(model.save_pretrained(tmp_path / "copy"))
    np.testing.assert_array_equal(before, reloaded.predict_chunk(obs, emb, seed=1).actions)
    assert sorted(reloaded.norm_stats) == sorted(model.norm_stats)
    assert (tmp_path / "copy" / "backbone" / "tokenizer.json").is_file()
    assert (tmp_path / "copy" / "backbone" / "preprocessor_config.json").is_file()


def test_chunk_depends_on_images_state_and_instruction(tiny_policy_dirs, observe):
    model = _perturbed_copy(tiny_policy_dirs["qwen3_5"])
    emb = load_embodiment("aloha_sim")
    obs = observe(emb)
    base = model.predict_chunk(obs, emb, seed=0).actions
    other_image = observe(emb, seed=9)
    other_image.state = obs.state
    changed = {
        "images": other_image,
        "state": observe(emb, seed=0),
        "instruction": observe(emb, seed=0, instruction="wipe the table"),
    }
    changed["state"].state = obs.state + 0.1
    for what, variant in changed.items():
        assert not np.allclose(base, model.predict_chunk(variant, emb, seed=0).actions), what


def test_backbone_runs_once_per_chunk_and_decoder_once_per_step(policy, observe):
    emb = load_embodiment("aloha_sim")
    calls = {"backbone": 0, "decoder": 0}
    hooks = [
        policy.backbone.register_forward_hook(
            lambda *_: calls.__setitem__("backbone", calls["backbone"] + 1)
        ),
        policy.decoder.register_forward_hook(
            lambda *_: calls.__setitem__("decoder", calls["decoder"] + 1)
        ),
    ]
    try:
        policy.predict_chunk(observe(emb), emb, seed=0, num_steps=6)
        assert calls == {"backbone": 1, "decoder": 6}
        policy.predict_chunks([observe(emb, seed=s) for s in range(3)], emb, seed=0)
        assert calls["backbone"] == 2
        assert calls["decoder"] == 6 + policy.config.num_inference_steps
    finally:
        for hook in hooks:
            hook.remove()


def test_batched_prediction_gives_one_chunk_per_observation(policy, observe):
    emb = load_embodiment("fr3_arm")
    chunks = policy.predict_chunks([observe(emb, seed=s) for s in range(3)], emb, seed=2)
    assert [c.actions.shape for c in chunks] == [(emb.chunk_horizon, emb.action_dim)] * 3
    assert len({c.chunk_id for c in chunks}) == 3
    assert not np.allclose(chunks[0].actions, chunks[1].actions)


def test_optional_camera_may_be_absent_or_present(policy, signed_arm, observe):
    policy.set_normalization(signed_arm.name, NormStats.from_limits(signed_arm))
    obs = observe(signed_arm)
    assert set(obs.images) == {"top"}
    without = policy.prepare_observations([obs], signed_arm)
    obs.images["side"] = np.zeros((32, 48, 3), np.uint8)
    with_side = policy.prepare_observations([obs], signed_arm)
    assert (
        with_side.inputs["image_grid_thw"].shape[0] == 2 > without.inputs["image_grid_thw"].shape[0]
    )


def test_text_only_prediction_ignores_cameras(policy, observe):
    emb = load_embodiment("mobile_base")
    obs = observe(emb)
    obs.images = {}
    prepared = policy.prepare_observations([obs], emb, text_only=True)
    assert "pixel_values" not in prepared.inputs
    assert policy.predict_chunk(obs, emb, seed=0, text_only=True).actions.shape == (20, 3)


def test_from_backbone_joins_a_saved_backbone_with_a_fresh_decoder(tiny_policy_dirs, observe):
    model = QwenVLAPolicy.from_backbone(
        tiny_policy_dirs["qwen3_vl"] / "backbone", "tiny", max_horizon=32, seed=0
    )
    assert model.config.decoder.cond_dim == model.backbone.feature_dim
    emb = load_embodiment("mobile_base")
    model.set_normalization(emb.name, NormStats.from_limits(emb))
    assert model.predict_chunk(observe(emb), emb, seed=0).actions.shape == (20, 3)


def test_prefix_inpainting_starts_the_chunk_with_the_frozen_actions(tiny_policy_dirs, signed_arm, observe):
    """Real-time chunking: the actions that run while a chunk is computed are kept exactly,
    in rig units (sign flip and offset included), and the rest is denoised around them."""
    model = _perturbed_copy(tiny_policy_dirs["qwen3_5"])
    model.set_normalization(signed_arm.name, NormStats.from_limits(signed_arm))
    obs = observe(signed_arm)
    free = model.predict_chunk(obs, signed_arm, seed=5).actions
    prefix = np.array([[0.10, -0.20], [0.12, -0.18], [0.14, -0.16]])
    inpainted = model.predict_chunk(obs, signed_arm, seed=5, prefix=prefix).actions
    np.testing.assert_allclose(inpainted[:3], prefix, atol=1e-5)
    assert not np.allclose(inpainted[3:], free[3:], atol=1e-4)  # the continuation saw the prefix
    with pytest.raises(ModelInputError, match="prefix must be"):
        model.predict_chunk(obs, signed_arm, prefix=np.zeros((3, 5)))


def test_noise_scale_zero_gives_one_chunk_per_observation_on_both_paths(tiny_policy_dirs, tmp_path, observe):
    model = _perturbed_copy(tiny_policy_dirs["qwen3_5"])
    emb = load_embodiment("aloha_sim")
    obs = observe(emb)
    spread = model.predict_chunk(obs, emb, seed=3).actions
    model.set_noise_scale(0.0)
    centred = model.predict_chunk(obs, emb, seed=3).actions
    assert not np.allclose(spread, centred)
    np.testing.assert_array_equal(centred, model.predict_chunk(obs, emb, seed=4).actions)  # seed no longer matters
    reloaded = QwenVLAPolicy.from_pretrained(model.save_pretrained(tmp_path / "centred")).eval()
    assert reloaded.config.noise_scale == 0.0
    np.testing.assert_allclose(reloaded.predict_chunk(obs, emb, seed=5).actions, centred, atol=1e-6)
    reloaded.enable_fast_inference(compile=False)
    np.testing.assert_allclose(reloaded.predict_chunk(obs, emb, seed=6).actions, centred, atol=1e-5)
    with pytest.raises(ValueError, match="noise_scale"):
        model.set_noise_scale(1.5)


def test_relative_action_policy_adds_each_observation_state_and_keeps_the_prefix(signed_arm, observe):
    """Two policies with the same weights, one absolute, one relative with the same scales: the
    decoder computes the same normalised chunk, so the relative one's chunk is the absolute
    one's plus the observation's state (model units); a prefix is honoured either way."""
    from qwen_vla_ros.model import tiny_backbone
    from qwen_vla_ros.model.normalization import VectorStats

    emb = signed_arm
    policy = QwenVLAPolicy.from_backbone(tiny_backbone("qwen3_5", seed=0), "tiny", seed=0).eval()
    with torch.no_grad():  # a non-zero output layer, so chunks depend on the inputs
        policy.decoder.action_out.weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
    plain = NormStats.from_limits(emb)
    same_scales = VectorStats(plain.action.mean, plain.action.std, plain.action.q01, plain.action.q99)
    observations = [observe(emb, seed=i) for i in range(2)]

    def chunks(stats, prefix=None):
        policy.set_normalization(emb.name, stats)
        return np.stack([c.actions for c in policy.predict_chunks(observations, emb, seed=3, num_steps=2, prefix=prefix)])

    absolute, relative = chunks(plain), chunks(plain.with_relative_actions(same_scales, (0, 1)))
    for i, obs in enumerate(observations):
        expected = emb.actions_to_rig(emb.actions_to_model(absolute[i]) + emb.actions_to_model(obs.state))
        np.testing.assert_allclose(relative[i], expected, atol=1e-5)
    prefix = relative[0, :3]
    with_prefix = chunks(plain.with_relative_actions(same_scales, (0, 1)), prefix)
    np.testing.assert_allclose(with_prefix[:, :3], np.broadcast_to(prefix, (2, 3, 2)), atol=1e-5)

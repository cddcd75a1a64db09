"""Fine-tuning that fits: LoRA adapters, gradient checkpointing, bf16 frozen weights, memory report."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qwen_vla_ros.embodiment import load_embodiment
from qwen_vla_ros.model.inputs import batch_embodiment_names, batch_prompts
from qwen_vla_ros.model.policy import QwenVLAPolicy
from qwen_vla_ros.training.errors import TrainingConfigError
from qwen_vla_ros.training.freezing import set_train_mode
from qwen_vla_ros.training.lora import ADAPTER_DIR
from qwen_vla_ros.training.memory import ActivationShape, estimate_training_memory
from qwen_vla_ros.training.trainer import Trainer, load_initial_policy, prepare_policy_for_training
from qwen_vla_ros.types import Observation

LORA = {"enabled": True, "rank": 4, "alpha": 8.0}


def _observation(embodiment):
    images = {c.name: np.full((*c.image_size, 3), 90, np.uint8) for c in embodiment.cameras if c.required}
    return Observation(images=images, state=embodiment.home_position, instruction="reach the red marker")


def _features(policy, embodiment, reference):
    """Backbone features of one observation, prepared by ``reference`` (same tokens for both)."""
    prepared = reference.prepare_observations([_observation(embodiment)], embodiment)
    with torch.no_grad():
        return policy.backbone(prepared.inputs).features.float()


def test_lora_trains_adapters_and_decoder_only_and_saves_a_merged_policy(tmp_path, small_config, embodiment_files):
    config = small_config("sft", lora={**LORA, "save_adapters": True})
    before = {k: v.clone() for k, v in load_initial_policy("tiny", config).state_dict().items()}
    trainer = Trainer(config, "tiny", tmp_path, progress=False)
    summary = trainer.run()
    assert summary.step == 2
    after = trainer.policy.state_dict()
    changed = set()
    for key, value in after.items():
        if ".lora_" in key:
            changed.add("adapter")
            continue
        original = before[key.replace(".base_layer.", ".")]
        if not torch.equal(original, value):
            changed.add("decoder" if key.startswith("decoder.") else key)
    assert changed == {"adapter", "decoder"}  # base backbone weights untouched
    lora_b = [v for k, v in after.items() if ".lora_B." in k]
    assert lora_b and any(v.abs().max() > 0 for v in lora_b)  # B starts at zero and moved

    # final/ is an ordinary policy: the merged backbone computes what base + adapters computed
    embodiment = load_embodiment(embodiment_files["aloha_small"])
    loaded = QwenVLAPolicy.from_pretrained(tmp_path / "final")
    assert not any(".lora_" in k for k in loaded.state_dict())
    trainer.policy.eval()
    reference = trainer.policy
    torch.testing.assert_close(_features(loaded, embodiment, reference), _features(reference, embodiment, reference),
                               rtol=1e-4, atol=1e-5)
    chunk = loaded.predict_chunk(_observation(embodiment), embodiment, seed=0)
    assert chunk.actions.shape == (8, 14) and np.all(np.isfinite(chunk.actions))
    assert summary.memory_estimate["trainable"] == summary.parameters["decoder_trainable"] + summary.parameters[
        "backbone_trainable"]
    assert summary.peak_memory_bytes > 0

    # the adapters alone, in peft's format, rebuild the same model on the initial backbone
    from peft import PeftModel

    initial = load_initial_policy("tiny", config)
    adapted = PeftModel.from_pretrained(initial.backbone.model, str(tmp_path / "final" / ADAPTER_DIR))
    initial.backbone.model = adapted.merge_and_unload()
    initial.decoder.load_state_dict(loaded.decoder.state_dict())
    initial.norm_stats = dict(loaded.norm_stats)
    torch.testing.assert_close(_features(initial.eval(), embodiment, reference),
                               _features(loaded, embodiment, reference), rtol=1e-4, atol=1e-5)


def test_lora_on_vision_with_bf16_frozen_weights_and_checkpointing_trains(tmp_path, small_config, embodiment_files):
    config = small_config("sft", freeze="none", lora={**LORA, "vision": True}, frozen_dtype="bfloat16",
                          gradient_checkpointing={"backbone": True, "decoder": True})
    trainer = Trainer(config, "tiny", tmp_path, progress=False)
    dtypes = {n: p.dtype for n, p in trainer.policy.named_parameters()}
    assert any(".visual.blocks." in n and ".lora_A." in n for n in dtypes)
    assert all(d == torch.bfloat16 for n, d in dtypes.items() if n.startswith("backbone.") and ".lora_" not in n)
    assert all(d == torch.float32 for n, d in dtypes.items() if ".lora_" in n or n.startswith("decoder."))
    summary = trainer.run()
    assert summary.step == 2 and np.isfinite(summary.train_loss)
    loaded = QwenVLAPolicy.from_pretrained(tmp_path / "final")
    embodiment = load_embodiment(embodiment_files["aloha_small"])
    assert np.all(np.isfinite(loaded.predict_chunk(_observation(embodiment), embodiment, seed=0).actions))


def _loss_and_grads(config, batch, stats):
    policy = load_initial_policy("tiny", config)
    for name, value in stats.items():
        policy.set_normalization(name, value)
    prepare_policy_for_training(policy, config)
    checkpointing = any(getattr(m, "gradient_checkpointing", False) is True for m in policy.backbone.model.modules())
    assert checkpointing == policy.decoder.gradient_checkpointing == config.gradient_checkpointing.backbone
    with torch.no_grad():  # non-zero output layer, so gradients reach the backbone
        policy.decoder.action_out.weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
    set_train_mode(policy, config.freeze, config.text_only)
    loss = policy.compute_loss(batch, generator=torch.Generator().manual_seed(3))["loss"]
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in policy.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("lora", [False, True])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(small_config, datasets, lora):
    from qwen_vla_ros.training.data import norm_stats_from_sources, open_sources, validation_batches

    plain = small_config("sft", freeze="none", lora={**LORA, "enabled": lora})
    sources = open_sources(plain.datasets, plain.embodiment, text_only=False, val_fraction=0.2, seed=0)
    batch = validation_batches(sources, 2, 1)[0]
    recomputed = small_config("sft", freeze="none", lora={**LORA, "enabled": lora},
                              gradient_checkpointing={"backbone": True, "decoder": True})
    stats = norm_stats_from_sources(sources)
    loss, grads = _loss_and_grads(plain, batch, stats)
    loss_ckpt, grads_ckpt = _loss_and_grads(recomputed, batch, stats)
    torch.testing.assert_close(loss_ckpt, loss)
    assert grads.keys() == grads_ckpt.keys()
    assert any(n.startswith("backbone.") and g is not None and g.abs().max() > 0 for n, g in grads.items())
    for name, grad in grads.items():
        if grad is None:
            assert grads_ckpt[name] is None, name
        else:
            torch.testing.assert_close(grads_ckpt[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_lora_settings_are_checked(small_config):
    with pytest.raises(TrainingConfigError, match="freeze must be 'none' or 'vision'"):
        small_config("sft", freeze="all", lora={"enabled": True})
    with pytest.raises(TrainingConfigError, match="lora.vision"):
        small_config("sft", freeze="vision", lora={"enabled": True, "vision": True})
    with pytest.raises(TrainingConfigError, match="unknown key"):
        small_config("sft", lora={"enabled": True, "rnak": 4})
    with pytest.raises(TrainingConfigError, match="frozen_dtype"):
        small_config("sft", frozen_dtype="int8")
    config = small_config("sft", lora={"enabled": True, "target_modules": ["no_such_layer"]})
    from qwen_vla_ros.training.errors import TrainingError

    with pytest.raises(TrainingError, match="match no linear layer"):
        prepare_policy_for_training(load_initial_policy("tiny", config), config)


def test_memory_estimate_counts_parameters_gradients_optimizer_and_activations(small_config):
    config = small_config("sft", freeze="all")
    policy = load_initial_policy("tiny", config)
    prepare_policy_for_training(policy, config)
    decoder_bytes = sum(p.numel() * 4 for p in policy.decoder.parameters())
    estimate = estimate_training_memory(policy)
    assert estimate.parameters == sum(p.numel() * p.element_size() for p in policy.parameters())
    assert estimate.gradients == decoder_bytes and estimate.optimizer == 2 * decoder_bytes
    assert estimate.activations is None
    shape = ActivationShape(batch=4, tokens=100, vision_patches=64, horizon=8, value_bytes=4, decoder_value_bytes=4)
    frozen = estimate_training_memory(policy, shape).activations
    trained = small_config("sft", freeze="none")
    policy = load_initial_policy("tiny", trained)
    prepare_policy_for_training(policy, trained)
    full = estimate_training_memory(policy, shape).activations
    checkpointed = estimate_training_memory(policy, shape, backbone_checkpointing=True,
                                            decoder_checkpointing=True).activations
    # frozen backbone: only the decoder's 2 blocks of width 64 over 4 x 9 tokens (17 values per
    # token and unit) and its cross-attention keys and values of 4 x 100 backbone tokens, float32
    assert frozen == 4 * (4 * 9 * 64 * 2 * 17 + 2 * 2 * 64 * 4 * 100)
    assert frozen < full and checkpointed < full


def test_activation_shape_comes_from_a_real_batch(tmp_path, small_config):
    trainer = Trainer(small_config("sft"), "tiny", tmp_path, progress=False)
    batch = trainer.val_batches[0]
    embodiments = [trainer.policy.resolve_embodiment(e) for e in batch_embodiment_names(batch)]
    tokens = trainer.policy.backbone.prepare(batch_prompts(batch, embodiments))["input_ids"].shape[1]
    assert trainer.memory_estimate.activations > 0
    shape = trainer._activation_shape()
    assert (shape.batch, shape.tokens, shape.horizon) == (len(batch["instructions"]), tokens, 8)
    assert shape.vision_patches > 0

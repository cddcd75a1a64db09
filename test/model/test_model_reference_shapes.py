"""The Qwen3.5-4B-shaped backbone is built from its config on the meta device: counted, never allocated."""

from __future__ import annotations

import pytest
import torch

from qwen_vla_ros.model import QwenVLAPolicy, count_parameters, dit_preset
from qwen_vla_ros.model.reference_shapes import count_backbone_parameters, reference_backbone


def test_qwen3_5_4b_shape_counts_5_17_billion_parameters_on_the_meta_device():
    backbone = reference_backbone("qwen3_5-4b-shape", device="meta")
    assert all(p.is_meta for p in backbone.model.parameters())  # nothing allocated
    text = backbone.model.config.text_config
    assert (text.hidden_size, text.num_hidden_layers, text.layer_types[:4]) == (
        2560, 32, ["linear_attention"] * 3 + ["full_attention"])
    counts = count_backbone_parameters("qwen3_5-4b-shape")
    assert counts["total"] == pytest.approx(5.17e9, rel=0.002)
    assert counts["lm_head"] == 248_320 * 2560  # untied output head
    assert counts["total"] == counts["language_model"] + counts["vision"] + counts["lm_head"]
    assert count_parameters(dit_preset("paper", cond_dim=backbone.feature_dim)) == pytest.approx(1.156e9, rel=0.001)


def test_paper_scale_lora_memory_estimate_is_far_below_full_fine_tuning():
    from qwen_vla_ros.training.config import load_stage_config
    from qwen_vla_ros.training.memory import ActivationShape, estimate_training_memory
    from qwen_vla_ros.training.trainer import prepare_policy_for_training

    shape = ActivationShape(batch=16, tokens=301, vision_patches=588, horizon=50, value_bytes=2, decoder_value_bytes=2)
    totals = {}
    for name, overrides in (("full", {}), ("lora", {"lora": {"enabled": True}, "frozen_dtype": "bfloat16"})):
        with torch.device("meta"):
            policy = QwenVLAPolicy.from_backbone(
                reference_backbone("qwen3_5-4b-shape", device="meta", dtype=torch.float32), "paper")
        prepare_policy_for_training(policy, load_stage_config("sft", overrides))
        estimate = estimate_training_memory(policy, shape)
        totals[name] = estimate
    full, lora = totals["full"], totals["lora"]
    assert full.trainable == pytest.approx(4.206e9 + 1.156e9, rel=0.001)  # language model + decoder
    assert lora.trainable < 1.2e9 and lora.optimizer < full.optimizer / 4
    assert lora.parameters < full.parameters  # frozen backbone in bf16

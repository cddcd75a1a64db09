"""EMA of the decoder and freezing of backbone parts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from qwen_vla_ros.training.config import OptimizerConfig, load_stage_config
from qwen_vla_ros.training.ema import DecoderEMA
from qwen_vla_ros.training.freezing import (
    apply_freeze,
    count_parameters,
    parameter_groups,
    vision_tower,
)
from qwen_vla_ros.training.trainer import load_initial_policy


def test_ema_follows_the_weights_with_warm_up_and_restores_them():
    layer = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(0.0)
    ema = DecoderEMA(layer, decay=0.9)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    ema.update()  # decay min(0.9, 1/10) = 0.1: the shadow moves 90 % of the way
    assert torch.allclose(ema.shadow["weight"], torch.full((1, 2), 0.9))
    for _ in range(100):
        ema.update()
    assert ema.current_decay() == 0.9  # (1 + n) / (10 + n) passes 0.9 at n = 80
    with ema.applied():
        assert torch.allclose(layer.weight, ema.shadow["weight"])
    assert torch.equal(layer.weight, torch.ones(1, 2))
    restored = DecoderEMA(layer, decay=0.9)
    restored.load_state_dict(ema.state_dict())
    assert restored.updates == 101 and torch.equal(restored.shadow["weight"], ema.shadow["weight"])
    with pytest.raises(ValueError):
        DecoderEMA(layer, decay=1.0)


@pytest.fixture(scope="module")
def policy():
    return load_initial_policy("tiny", load_stage_config("sft"))


def _trainable(module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def test_freeze_modes(policy):
    apply_freeze(policy, "none")
    tower, head = vision_tower(policy), policy.backbone.model.lm_head
    assert _trainable(tower) > 0 and _trainable(head) == 0  # the LM head is unused by actions
    language = _trainable(policy.backbone)
    apply_freeze(policy, "vision")
    assert _trainable(tower) == 0 and _trainable(policy.backbone) == language - sum(p.numel() for p in tower.parameters())
    apply_freeze(policy, "none", text_only=True)
    assert _trainable(tower) == 0  # no images reach it
    apply_freeze(policy, "all")
    assert _trainable(policy.backbone) == 0 and policy.config.freeze_backbone
    assert count_parameters(policy)["decoder_trainable"] == _trainable(policy.decoder) > 0
    with pytest.raises(ValueError):
        apply_freeze(policy, "half")


def test_parameter_groups_scale_the_backbone_rate(policy):
    apply_freeze(policy, "vision")
    groups = parameter_groups(policy, OptimizerConfig(lr=1e-3, backbone_lr_scale=0.1, weight_decay=0.05))
    rates = {round(g["lr"], 8) for g in groups}
    assert rates == {1e-3, 1e-4}
    assert all(g["weight_decay"] == 0.0 for g in groups if g["params"][0].ndim < 2)
    total = sum(p.numel() for g in groups for p in g["params"])
    assert total == _trainable(policy)


def test_parameter_groups_give_the_key_pose_head_its_own_rate(policy):
    policy.add_grounding_pointer()
    groups = parameter_groups(policy, OptimizerConfig(lr=1e-3, backbone_lr_scale=0.5, key_pose_lr_scale=4.0))
    rate = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert {rate[id(p)] for p in policy.decoder.key_pose.parameters()} == {4e-3}  # the pointer too
    assert rate[id(policy.decoder.action_out.weight)] == 1e-3
    assert {rate[id(p)] for p in policy.backbone.parameters() if p.requires_grad} == {5e-4}
    assert len(rate) == sum(1 for p in policy.parameters() if p.requires_grad)  # each weight in one group


def test_init_from_a_bare_backbone_folder_adds_a_fresh_decoder(tmp_path):
    """--init with a Qwen VL model folder (no policy_config.json), as T2A starts from Qwen3.5-4B."""
    from qwen_vla_ros.model.tiny import build_tiny_backbone

    folder = build_tiny_backbone("qwen3_vl", tmp_path / "backbone")
    assert not (folder / "policy_config.json").exists()
    config = load_stage_config("t2a", {"decoder_preset": "tiny"})
    policy = load_initial_policy(str(folder), config)
    assert policy.config.decoder.hidden_size == load_initial_policy("tiny", config).config.decoder.hidden_size

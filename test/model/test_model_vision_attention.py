"""The batched vision attention gives the original per-image attention's results and gradients."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from qwen_vla_ros.model.processor import PromptSample
from qwen_vla_ros.model.tiny import tiny_backbone
from qwen_vla_ros.model.vision_attention import BATCHABLE


def vision_features_and_grads(backbone, inputs):
    backbone.model.zero_grad()
    out = backbone.model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
    features = out.pooler_output if hasattr(out, "pooler_output") else out
    features = torch.cat(features) if isinstance(features, (list, tuple)) else features
    (features * torch.linspace(-1, 1, features.numel()).reshape(features.shape)).sum().backward()
    grads = {n: p.grad.clone() for n, p in backbone.model.model.visual.named_parameters() if p.grad is not None}
    return features.detach(), grads


@pytest.mark.parametrize("family", ["qwen3_5", "qwen3_vl"])
def test_batched_attention_matches_the_per_image_loop(family):
    backbone = tiny_backbone(family, seed=1)
    rng = np.random.default_rng(0)
    images = [("cam_high", rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)),
              ("cam_left_wrist", rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))]
    inputs = backbone.prepare([PromptSample("robot", "task", images)] * 3)
    batched = vision_features_and_grads(backbone, inputs)
    modules = [m for m in backbone.model.modules() if type(m).__name__ in BATCHABLE]
    assert modules, "the tiny backbone has batchable vision attention modules"
    for module in modules:  # back to transformers' own forward (one attention call per image)
        module.forward = types.MethodType(type(module).forward, module)
    original = vision_features_and_grads(backbone, inputs)
    torch.testing.assert_close(batched[0], original[0], rtol=1e-5, atol=1e-5)
    assert batched[1].keys() == original[1].keys()
    for name in original[1]:
        torch.testing.assert_close(batched[1][name], original[1][name], rtol=1e-4, atol=1e-5, msg=name)

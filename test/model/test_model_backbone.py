"""The Qwen VL backbone wrapper: prompt, image-only processor, features, all three families."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qwen_vla_ros.model import ImageOnlyProcessor, PromptSample, QwenBackbone, build_chat_prompt
from qwen_vla_ros.model.processor import IMAGE_TOKEN
from qwen_vla_ros.model.tiny import build_tiny_backbone, tiny_backbone


def _images(count, size=(64, 96), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(count)]


def _sample(cameras=("cam_high", "cam_left_wrist"), instruction="stack the cups", seed=0):
    return PromptSample(
        "A test robot with two arms.",
        instruction,
        list(zip(cameras, _images(len(cameras), seed=seed), strict=True)),
    )


def test_chat_prompt_labels_each_camera_and_carries_embodiment_and_task():
    text = build_chat_prompt(_sample())
    assert text.startswith("<|im_start|>system\nA test robot with two arms.<|im_end|>")
    assert "cam_high: <|vision_start|><|image_pad|><|vision_end|>" in text
    assert (
        text.index("cam_high") < text.index("cam_left_wrist") < text.index("Task: stack the cups")
    )
    assert text.count(IMAGE_TOKEN) == 2
    assert IMAGE_TOKEN not in build_chat_prompt(PromptSample("robot", "move", []))


@pytest.fixture(scope="module")
def qwen35_backbone():
    return tiny_backbone("qwen3_5")


def test_image_only_processor_expands_one_slot_per_patch_group(qwen35_backbone):
    inputs = qwen35_backbone.prepare([_sample(), _sample(("front",), "go", seed=1)])
    grids = inputs["image_grid_thw"]
    assert grids.tolist() == [[1, 4, 6]] * 3  # 64x96 px, 16 px patches
    image_id = qwen35_backbone.processor.image_token_id
    per_sample = (inputs["input_ids"] == image_id).sum(dim=1).tolist()
    assert per_sample == [2 * 6, 6]  # 4*6 patches / (2x2 merge) per image
    assert torch.equal(inputs["mm_token_type_ids"].bool(), inputs["input_ids"] == image_id)
    assert inputs["attention_mask"][1].sum() < inputs["attention_mask"][0].sum()


@pytest.mark.parametrize("family", ["qwen3_5", "qwen3_vl", "qwen2_5_vl"])
def test_each_family_gives_masked_features_and_reloads_identically(family, tmp_path):
    original = tiny_backbone(family, seed=0)
    loaded = QwenBackbone.from_pretrained(build_tiny_backbone(family, tmp_path / family, seed=0))
    assert loaded.family == family and loaded.image_only_processor
    samples = [_sample(), _sample(("front",), "go", seed=1)]
    with torch.no_grad():
        features = loaded(loaded.prepare(samples))
        again = original(original.prepare(samples))
    assert features.features.shape[:2] == features.mask.shape
    assert features.features.shape[2] == loaded.feature_dim == 64
    assert features.mask[0].all() and not features.mask[1].all()
    torch.testing.assert_close(features.features, again.features)


def test_images_and_instruction_change_the_features(qwen35_backbone):
    with torch.no_grad():
        base = qwen35_backbone(qwen35_backbone.prepare([_sample(seed=0)])).features
        other_images = qwen35_backbone(qwen35_backbone.prepare([_sample(seed=5)])).features
        other_task = qwen35_backbone(
            qwen35_backbone.prepare([_sample(instruction="wipe the table")])
        ).features
    assert not torch.allclose(base, other_images)
    assert not torch.allclose(base[:, -1], other_task[:, -1])


def test_text_only_mode_has_no_pixels(qwen35_backbone):
    inputs = qwen35_backbone.prepare([PromptSample("A mobile base.", "drive to the door", [])])
    assert "pixel_values" not in inputs
    with torch.no_grad():
        features = qwen35_backbone(inputs)
    assert features.features.shape[0] == 1 and torch.isfinite(features.features).all()


def test_chosen_layers_are_concatenated():
    backbone = tiny_backbone("qwen3_vl")
    layered = QwenBackbone(backbone.model, backbone.processor, feature_layers=(1, -1))
    assert layered.feature_dim == 2 * backbone.hidden_size
    with torch.no_grad():
        inputs = backbone.prepare([_sample()])
        last = backbone(inputs).features
        both = layered(inputs).features
    torch.testing.assert_close(both[..., 64:], last)
    with pytest.raises(ValueError, match="out of range"):
        QwenBackbone(backbone.model, backbone.processor, feature_layers=(7,))


def test_processor_refuses_a_tokenizer_without_qwen_tokens():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    plain = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    )
    plain.unk_token = "[UNK]"
    with pytest.raises(ValueError, match="no <\\|image_pad\\|> token"):
        ImageOnlyProcessor(None, plain)


def test_unsupported_model_type_is_named():
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(
        LlamaConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            vocab_size=32,
        )
    )
    with pytest.raises(ValueError, match="model_type 'llama' is not supported"):
        QwenBackbone(model, None)

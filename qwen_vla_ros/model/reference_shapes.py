"""Published model shapes, built from configs with random weights (no download).

``qwen3_5-4b-shape`` is a Qwen3.5 backbone with Qwen3.5-4B's published shape: text hidden
2560, 32 layers (3 linear-attention layers per full-attention layer), 16 heads / 4 KV
heads of width 256, linear attention with 16 key / 32 value heads of width 128, MLP 9216,
vocabulary 248,320, untied output head; vision 24 blocks of width 1024, MLP 4096, 16
heads, output 2560. Built on the ``meta`` device it counts its parameters without
allocating any (5.17 B); on a GPU it is the backbone that ``bench/bench_model.py`` times.
Its tokenizer and image processor are the tiny offline ones (token ids below 1024, so the
embedding table is what the shape says): prompt lengths differ from the real tokenizer's
by a few tokens, image token counts are the same.
"""

from __future__ import annotations

import torch

from .backbone import QwenBackbone

SHAPES = ("qwen3_5-4b-shape",)

QWEN3_5_4B_TEXT = {
    "hidden_size": 2560,
    "num_hidden_layers": 32,
    "full_attention_interval": 4,
    "num_attention_heads": 16,
    "num_key_value_heads": 4,
    "head_dim": 256,
    "linear_num_key_heads": 16,
    "linear_num_value_heads": 32,
    "linear_key_head_dim": 128,
    "linear_value_head_dim": 128,
    "intermediate_size": 9216,
    "vocab_size": 248_320,
    "tie_word_embeddings": False,
}
QWEN3_5_4B_VISION = {
    "depth": 24,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_heads": 16,
    "out_hidden_size": 2560,
    "patch_size": 16,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
}


def reference_config(shape: str, tokenizer=None):
    """The Hugging Face config of a named shape; image/video token ids from ``tokenizer``
    (the tiny tokenizer's by default)."""
    from transformers import Qwen3_5Config

    from .tiny import _token_ids, build_tiny_tokenizer

    if shape not in SHAPES:
        raise ValueError(f"unknown backbone shape {shape!r}; choose one of {SHAPES}")
    tokenizer = tokenizer or build_tiny_tokenizer()
    text = {**QWEN3_5_4B_TEXT, "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id}
    return Qwen3_5Config(text_config=text, vision_config=dict(QWEN3_5_4B_VISION),
                         tie_word_embeddings=False, **_token_ids(tokenizer))


def reference_backbone(shape: str, *, device: torch.device | str = "meta", dtype: torch.dtype = torch.bfloat16,
                       seed: int = 0) -> QwenBackbone:
    """A random backbone of a named shape on ``device`` (``meta``: no memory, for counting)."""
    from transformers import AutoModelForImageTextToText
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from .processor import ImageOnlyProcessor
    from .tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    config = reference_config(shape, tokenizer)
    processor = ImageOnlyProcessor(Qwen2VLImageProcessorPil(patch_size=16, merge_size=2, temporal_patch_size=2),
                                   tokenizer)
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    return QwenBackbone(model.eval(), processor)


def count_backbone_parameters(shape: str) -> dict[str, int]:
    """Parameters of a named shape by part (language model, vision, output head, total),
    counted on the ``meta`` device."""
    backbone = reference_backbone(shape, device="meta")
    inner = backbone.model.model
    counts = {
        "language_model": sum(p.numel() for p in inner.language_model.parameters()),
        "vision": sum(p.numel() for p in inner.visual.parameters()),
        "lm_head": sum(p.numel() for p in backbone.model.lm_head.parameters()),
    }
    counts["total"] = sum(p.numel() for p in backbone.model.parameters())
    return counts

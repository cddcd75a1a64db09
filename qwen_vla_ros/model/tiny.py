"""Tiny, random, offline Qwen VL backbones and policies (tests, demo, node tests).

Nothing here downloads anything: the tokenizer is a byte-level BPE trained in a
fraction of a second on the embodiment prompts with Qwen's special tokens, and the
models are built from small configs (a few text layers of width 64, a 2-block
vision tower). The untrained policy's outputs are random but well-formed: right
shapes, right units, inside the rig's range scale (statistics from limits).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ..embodiment import list_shipped_embodiments, load_embodiment
from .backbone import QwenBackbone
from .normalization import NormStats
from .processor import QWEN_SPECIAL_TOKENS, ImageOnlyProcessor

TINY_FAMILIES = ("qwen3_5", "qwen3_vl", "qwen2_5_vl")
TINY_WIDTH = 64
_INSTRUCTIONS = (
    "pick up the red cube and hand it over",
    "insert the peg into the socket",
    "open the drawer and put the cup inside",
    "drive forward to the door and turn left",
    "fold the towel on the table",
)


def build_tiny_tokenizer(vocab_size: int = 1024):
    """A byte-level BPE tokenizer with Qwen's special tokens, trained offline (~0.1 s)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [load_embodiment(name).prompt for name in list_shipped_embodiments()]
    corpus += list(_INSTRUCTIONS) + ["system user assistant Task: cam_high cam_left_wrist front"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(QWEN_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(QWEN_SPECIAL_TOKENS[1:]),
    )


def _token_ids(tokenizer) -> dict[str, int]:
    ids = {
        "image_token_id": "<|image_pad|>",
        "video_token_id": "<|video_pad|>",
        "vision_start_token_id": "<|vision_start|>",
        "vision_end_token_id": "<|vision_end|>",
    }
    return {key: tokenizer.convert_tokens_to_ids(token) for key, token in ids.items()}


def tiny_config(family: str, tokenizer):
    """A small random config of one family: width 64, 2-4 text layers, 2 vision blocks."""
    from transformers import Qwen2_5_VLConfig, Qwen3_5Config, Qwen3VLConfig

    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": TINY_WIDTH,
        "intermediate_size": 2 * TINY_WIDTH,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    vision = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "out_hidden_size": TINY_WIDTH,
    }
    ids = _token_ids(tokenizer)
    if family == "qwen3_5":
        # Rotary dims = head_dim * partial_rotary_factor / 2 = 32 * 0.25 / 2 = 4 = sum(mrope_section).
        rope = {
            "rope_type": "default",
            "rope_theta": 10000.0,
            "partial_rotary_factor": 0.25,
            "mrope_section": [2, 1, 1],
            "mrope_interleaved": True,
        }
        text.update(
            num_hidden_layers=4,
            head_dim=32,
            rope_parameters=rope,
            linear_key_head_dim=16,
            linear_value_head_dim=16,
            linear_num_key_heads=2,
            linear_num_value_heads=4,
        )
        return Qwen3_5Config(
            text_config=text, vision_config={**vision, "num_position_embeddings": 256}, **ids
        )
    if family == "qwen3_vl":
        rope = {
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": [4, 2, 2],
            "mrope_interleaved": True,
        }
        text.update(num_hidden_layers=2, head_dim=16, rope_parameters=rope)
        vision.update(num_position_embeddings=256, deepstack_visual_indexes=[1])
        return Qwen3VLConfig(text_config=text, vision_config=vision, **ids)
    if family == "qwen2_5_vl":
        rope = {"rope_type": "mrope", "rope_theta": 10000.0, "mrope_section": [4, 2, 2]}
        text.update(num_hidden_layers=2, rope_parameters=rope, bos_token_id=None)
        vision.update(patch_size=14, window_size=112, fullatt_block_indexes=[1])
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)
    raise ValueError(f"unknown tiny family {family!r}; choose one of {TINY_FAMILIES}")


def tiny_backbone(family: str = "qwen3_5", seed: int = 0) -> QwenBackbone:
    """A random tiny backbone in memory, with an image-only processor (no torchvision)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = build_tiny_tokenizer()
    config = tiny_config(family, tokenizer)
    patch = 14 if family == "qwen2_5_vl" else 16
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=patch, merge_size=2, temporal_patch_size=2
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return QwenBackbone.from_config(config, ImageOnlyProcessor(image_processor, tokenizer))


def build_tiny_backbone(family: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Save a tiny random backbone (model, tokenizer, image processor) to ``out_dir``."""
    tiny_backbone(family, seed).save_pretrained(out_dir)
    return Path(out_dir)


def build_tiny_policy(
    out_dir: str | Path,
    family: str = "qwen3_5",
    embodiments: Sequence[str] | None = None,
    decoder_preset: str = "tiny",
    seed: int = 0,
    placeholder_stats: str = "limits",
) -> Path:
    """Save an untrained tiny policy with placeholder statistics.

    ``embodiments``: names or paths to give statistics to; default every shipped one.
    ``placeholder_stats``: ``limits`` (:meth:`NormStats.from_limits`) or ``home``
    (:meth:`NormStats.near_home`, what the demo runs: the untrained robot stays near home).
    """
    make_stats = {"limits": NormStats.from_limits, "home": NormStats.near_home}[placeholder_stats]
    from .policy import QwenVLAPolicy

    policy = QwenVLAPolicy.from_backbone(tiny_backbone(family, seed), decoder_preset, seed=seed)
    for name in embodiments or list_shipped_embodiments():
        embodiment = load_embodiment(name)
        policy.set_normalization(embodiment.name, make_stats(embodiment))
    return policy.save_pretrained(out_dir)

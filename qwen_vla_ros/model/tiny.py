"""Tiny, random, offline Qwen VL backbones and policies (tests, demo, node tests).

Nothing here downloads anything: the tokenizer is a byte-level BPE trained in a
fraction of a second on the embodiment prompts with Qwen's special tokens, and the
models are built from small configs (a few text layers of width 64, a 2-block
vision tower). The untrained policy's outputs are random but well-formed: right
shapes, right units, inside the rig's range scale (statistics from limits).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..embodiment import list_shipped_embodiments, load_embodiment
from .backbone import QwenBackbone
from .dit import DiTConfig
from .normalization import NormStats
from .processor import QWEN_SPECIAL_TOKENS, ImageOnlyProcessor

TINY_FAMILIES = ("qwen3_5", "qwen3_vl", "qwen2_5_vl")
TINY_WIDTH = 64


@dataclass(frozen=True)
class BackboneSize:
    """Shape of a small backbone built offline: text width and layers, vision tower shape."""

    text_width: int = TINY_WIDTH
    text_layers: int = 4  # Qwen3.5; the other families use half as many
    vision_width: int = 32
    vision_depth: int = 2
    vision_heads: int = 2
    patch_size: int = 16


#: ``tiny``: tests and smoke runs (about 1 M parameters). ``small``: the demo policy trained on
#: 2 CPU cores: a vision tower wide enough to locate objects (a width-32 tower did not learn
#: to ground colours in a probe; width 128 did) and 8-pixel patches for small camera images.
BACKBONE_SIZES = {
    "tiny": BackboneSize(),
    "small": BackboneSize(text_width=128, text_layers=4, vision_width=128, vision_depth=3,
                          vision_heads=4, patch_size=8),
}
_INSTRUCTIONS = (
    "pick up the red cube and hand it over",
    "insert the peg into the socket",
    "open the drawer and put the cup inside",
    "drive forward to the door and turn left",
    "fold the towel on the table",
    "pick up the green cube, lift the blue block, grab the yellow one",
    "drive to the red box, go over to the blue box, move next to the yellow box",
    "transfer the cube to the left arm, put the peg into the socket",
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


def tiny_config(family: str, tokenizer, size: str = "tiny"):
    """A small random config of one family (``size``: a key of :data:`BACKBONE_SIZES`)."""
    from transformers import Qwen2_5_VLConfig, Qwen3_5Config, Qwen3VLConfig

    shape = backbone_size(size)
    width = shape.text_width
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": width,
        "intermediate_size": 2 * width,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    vision = {
        "depth": shape.vision_depth,
        "hidden_size": shape.vision_width,
        "intermediate_size": 2 * shape.vision_width,
        "num_heads": shape.vision_heads,
        "out_hidden_size": width,
        "patch_size": shape.patch_size,
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
            num_hidden_layers=shape.text_layers,
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
        text.update(num_hidden_layers=max(2, shape.text_layers // 2), head_dim=16, rope_parameters=rope)
        vision.update(num_position_embeddings=256, deepstack_visual_indexes=[1])
        return Qwen3VLConfig(text_config=text, vision_config=vision, **ids)
    if family == "qwen2_5_vl":
        rope = {"rope_type": "mrope", "rope_theta": 10000.0, "mrope_section": [4, 2, 2]}
        text.update(num_hidden_layers=max(2, shape.text_layers // 2), rope_parameters=rope, bos_token_id=None)
        vision.update(patch_size=14 if size == "tiny" else shape.patch_size, window_size=112,
                      fullatt_block_indexes=[1])
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)
    raise ValueError(f"unknown tiny family {family!r}; choose one of {TINY_FAMILIES}")


def backbone_size(size: str) -> BackboneSize:
    if size not in BACKBONE_SIZES:
        raise ValueError(f"unknown backbone size {size!r}; choose one of {sorted(BACKBONE_SIZES)}")
    return BACKBONE_SIZES[size]


def as_loaded_tokenizer(tokenizer, config):
    """``tokenizer`` as :meth:`QwenBackbone.from_pretrained` will load it next to ``config``.

    Saved next to a Qwen config, a tokenizer comes back as that family's class, which applies
    Qwen's own pre-tokenizer (one token per digit, for one): a policy trained in memory on
    the tokenizer as built would read its prompts differently once saved and loaded.
    """
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="qwen-vla-tokenizer-") as folder:
        tokenizer.save_pretrained(folder)
        config.save_pretrained(folder)
        return AutoTokenizer.from_pretrained(folder, trust_remote_code=False)


def tiny_backbone(family: str = "qwen3_5", seed: int = 0, size: str = "tiny") -> QwenBackbone:
    """A random small backbone in memory, with an image-only processor (no torchvision)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    built = build_tiny_tokenizer()
    config = tiny_config(family, built, size)
    tokenizer = as_loaded_tokenizer(built, config)
    patch = config.vision_config.patch_size
    # Small simulated cameras: let the processor keep them at their size (>= 2x2 merged tokens).
    small_images = {} if size == "tiny" else {"min_pixels": (2 * 2 * patch) ** 2}
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=patch, merge_size=2, temporal_patch_size=2, **small_images
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return QwenBackbone.from_config(config, ImageOnlyProcessor(image_processor, tokenizer))


#: The decoder each offline size gets (a preset name or a DiT shape).
OFFLINE_DECODERS = {"tiny": "tiny", "small": DiTConfig(hidden_size=128, depth=4, num_heads=4)}


def offline_policy(family: str = "qwen3_5", size: str = "tiny", seed: int = 0):
    """A random, untrained policy of one offline size (no statistics yet)."""
    from .policy import QwenVLAPolicy

    backbone = tiny_backbone(family, seed, size)  # an unknown size is refused here, by name
    return QwenVLAPolicy.from_backbone(backbone, OFFLINE_DECODERS[size], seed=seed)


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
    size: str = "tiny",
) -> Path:
    """Save an untrained tiny policy with placeholder statistics.

    ``embodiments``: names or paths to give statistics to; default every shipped one.
    ``placeholder_stats``: ``limits`` (:meth:`NormStats.from_limits`) or ``home``
    (:meth:`NormStats.near_home`, what the demo runs: the untrained robot stays near home).
    """
    make_stats = {"limits": NormStats.from_limits, "home": NormStats.near_home}[placeholder_stats]
    from .policy import QwenVLAPolicy

    policy = QwenVLAPolicy.from_backbone(tiny_backbone(family, seed, size), decoder_preset, seed=seed)
    for name in embodiments or list_shipped_embodiments():
        embodiment = load_embodiment(name)
        policy.set_normalization(embodiment.name, make_stats(embodiment))
    return policy.save_pretrained(out_dir)

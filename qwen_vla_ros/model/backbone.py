"""The vision-language backbone: a Hugging Face Qwen VL model read as a feature extractor.

Supported model types (transformers 5.23): ``qwen3_5`` (and ``qwen3_5_moe``),
``qwen3_vl`` (and ``qwen3_vl_moe``), ``qwen2_5_vl``. The backbone reads the chat
prompt (embodiment description, labelled camera images, task) and returns
conditioning features for the action decoder: the last hidden state, or a
concatenation of chosen layers, with the attention mask. Qwen3.5 keeps a key/value
cache only on every fourth layer, so the decoder cross-attends to hidden states
rather than to per-layer caches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .processor import ImageOnlyProcessor, PromptSample, build_chat_prompt, load_processor
from .token_grid import image_token_grid
from .vision_attention import install_batched_vision_attention

#: model_type -> family name used across the package.
SUPPORTED_MODEL_TYPES: dict[str, str] = {
    "qwen3_5": "qwen3_5",
    "qwen3_5_moe": "qwen3_5",
    "qwen3_vl": "qwen3_vl",
    "qwen3_vl_moe": "qwen3_vl",
    "qwen2_5_vl": "qwen2_5_vl",
}


@dataclass
class BackboneFeatures:
    """Conditioning for the decoder: features (B, L, feature_dim) and mask (B, L), True = token."""

    features: torch.Tensor
    mask: torch.Tensor
    #: (B, L, GRID_FEATURES): where each image token sits in its camera image (token_grid.py)
    token_grid: torch.Tensor | None = None


def _is_lora_layer(module: nn.Module) -> bool:
    """A ``peft`` LoRA layer (duck-typed, so peft is imported only by whoever injected it)."""
    return hasattr(module, "lora_A") and hasattr(module, "get_delta_weight") and hasattr(module, "base_layer")


def merged_lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor] | None:
    """The model's state dict with every LoRA layer folded into a plain layer's keys:
    ``weight = W + (alpha / r) B A`` (computed in float32, stored in W's dtype), adapters
    dropped. None when the model has no LoRA layer (save as usual)."""
    layers = [(name, m) for name, m in model.named_modules() if _is_lora_layer(m)]
    if not layers:
        return None
    state = model.state_dict()
    for name, layer in layers:
        for key in [k for k in state if k.startswith(f"{name}.")]:
            del state[key]
        base = layer.get_base_layer()
        weight = base.weight.detach()
        merged = weight.float()
        if not getattr(layer, "merged", False):
            for adapter in layer.active_adapters:
                if adapter in layer.lora_A:
                    merged = merged + layer.get_delta_weight(adapter).detach().float()
        state[f"{name}.weight"] = merged.to(weight.dtype)
        if getattr(base, "bias", None) is not None:
            state[f"{name}.bias"] = base.bias.detach()
    return state


def model_family(config) -> str:
    """The family of a Hugging Face config, or a clear error for unsupported models."""
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"backbone model_type {model_type!r} is not supported; "
            f"use one of {sorted(SUPPORTED_MODEL_TYPES)}"
        )
    return SUPPORTED_MODEL_TYPES[model_type]


class QwenBackbone(nn.Module):
    """A Qwen VL model plus its processor, producing decoder conditioning.

    Args:
        model: an ``*ForConditionalGeneration`` model (``AutoModelForImageTextToText``).
        processor: the standard Qwen processor or an :class:`ImageOnlyProcessor`.
        feature_layers: hidden-state indices to concatenate (0 = embeddings, -1 = last,
            after the final norm); ``None`` for the last hidden state alone.
    """

    def __init__(self, model: nn.Module, processor, feature_layers: Sequence[int] | None = None):
        super().__init__()
        self.family = model_family(model.config)
        self.model = model
        # One attention call per image size in the vision tower instead of one per image:
        # same results, and a batch of small camera images trains many times faster.
        install_batched_vision_attention(model)
        self.processor = processor
        self.feature_layers = tuple(feature_layers) if feature_layers else None
        self._check_feature_layers()

    # -- construction ---------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
        attn_implementation: str | None = None,
        feature_layers: Sequence[int] | None = None,
        processor: str = "auto",
    ) -> QwenBackbone:
        """Load model and processor (local folder or hub id) with ``trust_remote_code=False``.

        ``processor``: ``auto`` (standard where torchvision exists), ``standard`` or ``image_only``.
        """
        from transformers import AutoModelForImageTextToText

        options = {"trust_remote_code": False}
        if dtype is not None:
            options["dtype"] = dtype
        if attn_implementation is not None:
            options["attn_implementation"] = attn_implementation
        model = AutoModelForImageTextToText.from_pretrained(str(name_or_path), **options)
        backbone = cls(model.eval(), load_processor(str(name_or_path), processor), feature_layers)
        return backbone.to(device) if device is not None else backbone

    @classmethod
    def from_config(
        cls, config, processor, feature_layers: Sequence[int] | None = None
    ) -> QwenBackbone:
        """A randomly initialised backbone from a Hugging Face config (tests, tiny models)."""
        from transformers import AutoModelForImageTextToText

        model = AutoModelForImageTextToText.from_config(config)
        return cls(model.eval(), processor, feature_layers)

    def save_pretrained(self, directory: str | Path) -> None:
        """Model weights (safetensors), config, tokenizer and processor, HF layout.

        LoRA adapters (``peft`` layers, see ``training.lora``) are saved merged into their
        base weights, so the folder loads as a plain model of the same architecture.
        """
        self.model.save_pretrained(directory, state_dict=merged_lora_state_dict(self.model))
        self.processor.save_pretrained(directory)

    # -- properties -----------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return int(self.model.config.text_config.hidden_size)

    @property
    def num_hidden_layers(self) -> int:
        return int(self.model.config.text_config.num_hidden_layers)

    @property
    def feature_dim(self) -> int:
        """Width of the features handed to the decoder."""
        return self.hidden_size * (len(self.feature_layers) if self.feature_layers else 1)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def image_only_processor(self) -> bool:
        return isinstance(self.processor, ImageOnlyProcessor)

    def _check_feature_layers(self) -> None:
        count = self.num_hidden_layers + 1  # hidden_states holds the embeddings too
        bad = [i for i in self.feature_layers or () if not -count <= i < count]
        if bad:
            raise ValueError(f"feature_layers {bad} out of range for {count} hidden states")

    # -- inputs and features ------------------------------------------------------------
    def prepare(self, samples: Sequence[PromptSample]) -> dict[str, torch.Tensor]:
        """Processor outputs for a batch, on the model's device (pixels in the model's dtype)."""
        texts = [build_chat_prompt(sample) for sample in samples]
        images = [image for sample in samples for _, image in sample.images]
        inputs = self.processor(
            text=texts, images=images or None, return_tensors="pt", padding=True
        )
        keep = (
            "input_ids",
            "attention_mask",
            "mm_token_type_ids",
            "pixel_values",
            "image_grid_thw",
        )
        prepared = {k: v.to(self.device) for k, v in dict(inputs).items() if k in keep}
        if "mm_token_type_ids" not in prepared:
            # Some standard processors omit it; the model needs it for 3-D (M-RoPE) positions.
            image_tokens = prepared["input_ids"] == self.model.config.image_token_id
            prepared["mm_token_type_ids"] = image_tokens.int()
        if "pixel_values" in prepared:
            prepared["pixel_values"] = prepared["pixel_values"].to(self.dtype)
        return prepared

    def forward(
        self, inputs: dict[str, torch.Tensor], language_model: nn.Module | None = None
    ) -> BackboneFeatures:
        """Run the language model over the prepared prompt once; no cache is kept.

        ``language_model``: a stand-in for ``self.model.model`` with the same weights (the
        fast path's compiled module).
        """
        outputs = (self.model.model if language_model is None else language_model)(
            **inputs,
            use_cache=False,
            output_hidden_states=self.feature_layers is not None,
            return_dict=True,
        )
        if self.feature_layers is None:
            features = outputs.last_hidden_state
        else:
            features = torch.cat([outputs.hidden_states[i] for i in self.feature_layers], dim=-1)
        grid = image_token_grid(inputs["input_ids"], inputs.get("image_grid_thw"), self.model.config.image_token_id,
                                self.model.config.vision_config.spatial_merge_size)
        return BackboneFeatures(features=features, mask=inputs["attention_mask"].bool(), token_grid=grid)

    def set_frozen(self, frozen: bool) -> None:
        """Freeze (no gradients, eval mode) or unfreeze the backbone's weights."""
        self.model.requires_grad_(not frozen)
        if frozen:
            self.model.eval()

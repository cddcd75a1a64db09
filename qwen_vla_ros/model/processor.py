"""Turning (embodiment prompt, instruction, labelled camera images) into backbone inputs.

Two processors produce the same tensors (``input_ids``, ``attention_mask``,
``mm_token_type_ids`` and, with images, ``pixel_values`` and ``image_grid_thw``):

* the standard Qwen processor (``AutoProcessor``), which needs torchvision for its
  video half;
* :class:`ImageOnlyProcessor`: the PIL image processor (``Qwen2VLImageProcessorPil``)
  plus the tokenizer. It does what the standard one does for images and works where
  torchvision is absent (it must never be installed next to CPU torch here).

The chat prompt follows Qwen's template: the embodiment description is the system
message; the user message holds one labelled image slot per camera, then the task.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

LOG = logging.getLogger(__name__)

IMAGE_TOKEN = "<|image_pad|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
#: Qwen's special tokens; a tokenizer built for a tiny model must have them all.
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    VISION_START,
    VISION_END,
    IMAGE_TOKEN,
    "<|video_pad|>",
)
PROCESSOR_KINDS = ("auto", "standard", "image_only")


@dataclass
class PromptSample:
    """One backbone input: what the robot is, what to do, and what each camera sees.

    Attributes:
        embodiment_prompt: natural-language description of the robot (``Embodiment.prompt``).
        instruction: the language task.
        images: ordered (camera name, (H, W, 3) uint8 RGB) pairs; empty for text-only.
    """

    embodiment_prompt: str
    instruction: str
    images: list[tuple[str, np.ndarray]] = field(default_factory=list)


def build_chat_prompt(sample: PromptSample) -> str:
    """The chat text, with one ``<|image_pad|>`` slot per image, labelled by camera name."""
    slots = "".join(
        f"{name}: {VISION_START}{IMAGE_TOKEN}{VISION_END}\n" for name, _ in sample.images
    )
    return (
        f"<|im_start|>system\n{sample.embodiment_prompt}<|im_end|>\n"
        f"<|im_start|>user\n{slots}Task: {sample.instruction}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


class ImageOnlyProcessor:
    """Qwen VL processing for images and text with the PIL image processor (no torchvision)."""

    def __init__(self, image_processor, tokenizer):
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        if self.image_token_id is None or self.image_token_id == tokenizer.unk_token_id:
            raise ValueError(
                f"the tokenizer has no {IMAGE_TOKEN} token; it is not a Qwen VL tokenizer"
            )

    def __call__(
        self,
        text: Sequence[str],
        images: Sequence[np.ndarray] | None = None,
        return_tensors: str = "pt",
        padding: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Tokenise ``text``, expanding each image slot to that image's patch-token count."""
        texts, image_inputs = list(text), {}
        if images:
            image_inputs = dict(self.image_processor(images=list(images), return_tensors="pt"))
            texts = self._expand_image_slots(texts, image_inputs["image_grid_thw"])
        encoded = dict(self.tokenizer(texts, padding=padding, return_tensors=return_tensors))
        encoded.pop("token_type_ids", None)
        # 0 = text, 1 = image token: the model needs this for its 3-D (M-RoPE) positions.
        encoded["mm_token_type_ids"] = (encoded["input_ids"] == self.image_token_id).int()
        return {**encoded, **image_inputs}

    def _expand_image_slots(self, texts: list[str], grids: torch.Tensor) -> list[str]:
        merge = self.image_processor.merge_size
        counts = [int(grid.prod()) // (merge * merge) for grid in grids]
        slots = sum(t.count(IMAGE_TOKEN) for t in texts)
        if slots != len(counts):
            raise ValueError(f"{slots} image slots in the text but {len(counts)} images")
        expanded, next_image = [], 0
        for text in texts:
            parts = text.split(IMAGE_TOKEN)
            pieces = [parts[0]]
            for part in parts[1:]:
                pieces.append(IMAGE_TOKEN * counts[next_image] + part)
                next_image += 1
            expanded.append("".join(pieces))
        return expanded

    def save_pretrained(self, directory: str | Path) -> None:
        self.tokenizer.save_pretrained(directory)
        self.image_processor.save_pretrained(directory)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path) -> ImageOnlyProcessor:
        from transformers import AutoImageProcessor, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=False)
        image_processor = AutoImageProcessor.from_pretrained(
            name_or_path, backend="pil", trust_remote_code=False
        )
        return cls(image_processor, tokenizer)


def load_processor(name_or_path: str | Path, kind: str = "auto"):
    """The standard Qwen processor where torchvision is importable, else the image-only one.

    ``kind``: ``auto``, ``standard`` (fail without torchvision) or ``image_only``.
    """
    from transformers.utils import is_torchvision_available

    if kind not in PROCESSOR_KINDS:
        raise ValueError(f"processor kind {kind!r} is not one of {PROCESSOR_KINDS}")
    if kind == "image_only" or (kind == "auto" and not is_torchvision_available()):
        return ImageOnlyProcessor.from_pretrained(name_or_path)
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(name_or_path, trust_remote_code=False)
    except (OSError, ValueError, TypeError, AttributeError, ImportError) as error:
        if kind == "standard":
            raise
        # A folder saved with only an image processor has no video half to load.
        LOG.warning(
            "standard processor unavailable for %s (%s); using the image-only one",
            name_or_path,
            error,
        )
        return ImageOnlyProcessor.from_pretrained(name_or_path)

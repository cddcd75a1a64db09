"""Training memory: an estimate printed before the first step, the measured peak after the last.

The estimate adds, per process:

* parameters: every weight at its storage dtype;
* gradients: one per trainable weight, same dtype;
* optimizer states: AdamW keeps two moments per trainable weight (same dtype);
* activations kept for the backward pass, from a rule of thumb for transformer layers
  (Korthikanti et al. 2022, "Reducing activation recomputation in large transformer
  models": about 34 bytes per token and hidden unit per layer in 16-bit with
  fused/flash attention, i.e. 17 stored values per token and unit), counted only for the
  parts that gradients flow through. With gradient checkpointing a part keeps one value
  per token and unit per layer (the layer inputs) plus one layer's full set during
  recomputation. The decoder's cross-attention also keeps its keys and values of the
  backbone tokens (2 values per token and unit per block).

It is an estimate, typically within a factor of about 1.5 of the measured peak: allocator
caching, temporary buffers and attention implementations move the real figure. FSDP
divides parameters, gradients and optimizer states by the number of processes; the
estimate printed is the unsharded one. The measured peak is
``torch.cuda.max_memory_allocated`` on CUDA, the process's resident-set high-water mark
(``ru_maxrss``, which includes data loading and Python) on CPU.
"""

from __future__ import annotations

import resource
from dataclasses import asdict, dataclass

import torch
from torch import nn

#: Stored activation values per token, hidden unit and layer (see the module docstring).
VALUES_PER_TOKEN_UNIT = 17
#: With checkpointing, a layer keeps only its input.
CHECKPOINTED_VALUES_PER_TOKEN_UNIT = 1
GIB = 2**30


@dataclass
class MemoryEstimate:
    """Bytes per process; ``activations`` None when no batch shape was known."""

    parameters: int
    gradients: int
    optimizer: int
    activations: int | None
    trainable: int
    total_parameters: int

    @property
    def total(self) -> int:
        return self.parameters + self.gradients + self.optimizer + (self.activations or 0)

    def to_text(self) -> str:
        acts = "not estimated" if self.activations is None else f"{self.activations / GIB:.2f}"
        return (f"memory estimate per process (GiB): parameters {self.parameters / GIB:.2f}, gradients "
                f"{self.gradients / GIB:.2f}, optimizer states {self.optimizer / GIB:.2f}, activations {acts}; "
                f"total {self.total / GIB:.2f} ({self.trainable:,} of {self.total_parameters:,} weights train)")

    def to_dict(self) -> dict:
        return {**asdict(self), "total": self.total}


@dataclass(frozen=True)
class ActivationShape:
    """What one training forward sees, per process.

    Attributes:
        batch: samples per micro-batch.
        tokens: backbone sequence length (prompt and image tokens, padded).
        vision_patches: vision-tower tokens per sample (before the patch merger), 0 without images.
        horizon: action steps per chunk.
        value_bytes: bytes per stored backbone activation value (2 in bf16 or under autocast).
        decoder_value_bytes: the same for the decoder.
    """

    batch: int
    tokens: int
    vision_patches: int
    horizon: int
    value_bytes: int
    decoder_value_bytes: int


def _trainable(module: nn.Module | None) -> bool:
    return module is not None and any(p.requires_grad for p in module.parameters())


def _layer_activations(layers: int, width: int, tokens: int, checkpointed: bool) -> int:
    """Stored values of ``layers`` transformer layers of ``width`` over ``tokens`` tokens."""
    if checkpointed:
        return tokens * width * (layers * CHECKPOINTED_VALUES_PER_TOKEN_UNIT + VALUES_PER_TOKEN_UNIT)
    return tokens * width * layers * VALUES_PER_TOKEN_UNIT


def activation_bytes(policy, shape: ActivationShape, *, backbone_checkpointing: bool,
                     decoder_checkpointing: bool) -> int:
    """Activations kept for the backward pass (see the module docstring), bytes."""
    from .freezing import vision_tower
    from .lora import language_model

    values = decoder_values = 0
    text = policy.backbone.model.config.text_config
    lm, tower = language_model(policy), vision_tower(policy)
    # Gradients flow through the whole language model whenever any of its weights (or the
    # vision tower's, upstream of it) train, LoRA adapters included.
    if _trainable(lm) or _trainable(tower):
        values += _layer_activations(text.num_hidden_layers, text.hidden_size, shape.batch * shape.tokens,
                                     backbone_checkpointing)
    if _trainable(tower) and shape.vision_patches:
        vision = policy.backbone.model.config.vision_config
        values += _layer_activations(vision.depth, vision.hidden_size, shape.batch * shape.vision_patches,
                                     backbone_checkpointing)
    decoder = policy.config.decoder
    action_tokens = shape.batch * (shape.horizon + 1)
    decoder_values += _layer_activations(decoder.depth, decoder.hidden_size, action_tokens, decoder_checkpointing)
    if not decoder_checkpointing:  # cross-attention keys and values of the backbone tokens, every block
        decoder_values += 2 * decoder.depth * decoder.hidden_size * shape.batch * shape.tokens
    return values * shape.value_bytes + decoder_values * shape.decoder_value_bytes


def estimate_training_memory(policy, shape: ActivationShape | None = None, *, backbone_checkpointing: bool = False,
                             decoder_checkpointing: bool = False) -> MemoryEstimate:
    """The estimate for ``policy`` as it will train (freezing, LoRA and dtypes applied).

    Works on the ``meta`` device too (nothing is allocated), so the paper-scale figure can be
    computed on a laptop.
    """
    parameters = gradients = trainable = total = 0
    for parameter in policy.parameters():
        size = parameter.numel() * parameter.element_size()
        parameters += size
        total += parameter.numel()
        if parameter.requires_grad:
            gradients += size
            trainable += parameter.numel()
    activations = None if shape is None else activation_bytes(
        policy, shape, backbone_checkpointing=backbone_checkpointing, decoder_checkpointing=decoder_checkpointing)
    return MemoryEstimate(parameters=parameters, gradients=gradients, optimizer=2 * gradients,
                          activations=activations, trainable=trainable, total_parameters=total)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> tuple[int, str]:
    """(bytes, what was measured): CUDA allocator peak, or the process's RSS high-water mark."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "torch.cuda.max_memory_allocated"
    # ru_maxrss is KiB on Linux
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "process RSS high-water mark"

"""Batched attention for the Qwen vision tower: one attention call per image size, not per image.

transformers' Qwen3.5 / Qwen3-VL vision attention (without flash-attention kernels) splits
the packed patch sequence at every image boundary and calls attention once per image, in a
Python loop. A robot batch holds many small images (3 cameras x 32 samples = 96 per
step), so the loop's per-call overhead dominates the vision tower on a CPU. Images of equal
size are independent attention problems of equal shape: gathered into one
(images, heads, patches, dim) tensor they take a single ``scaled_dot_product_attention``
call, with exactly the same result (tested against the original in
``test/model/test_model_vision_attention.py``).

:func:`install_batched_vision_attention` swaps the forward of every vision attention module
of a model (Qwen3.5 and Qwen3-VL families; their attention modules share one layout).
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn

#: Vision attention classes whose forward this module replaces (same fields and inputs).
BATCHABLE = ("Qwen3_5VisionAttention", "Qwen3VLVisionAttention", "Qwen3_5MoeVisionAttention", "Qwen3VLMoeVisionAttention")


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def _apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding as transformers applies it to vision q and k (in float32)."""
    dtype = x.dtype
    x = x.float()
    cos, sin = cos.unsqueeze(-2).float(), sin.unsqueeze(-2).float()
    return ((x * cos) + (_rotate_half(x) * sin)).to(dtype)


def batched_forward(
    self: nn.Module,
    hidden_states: torch.Tensor,
    cu_seqlens: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
    max_seqlen: int | None = None,
    **kwargs,
) -> torch.Tensor:
    """Drop-in forward of a Qwen vision attention module; attention per group of equal images."""
    seq_length = hidden_states.shape[0]
    query, key, value = (
        self.qkv(hidden_states).reshape(seq_length, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    )
    cos, sin = position_embeddings
    query, key = _apply_rotary(query, cos, sin), _apply_rotary(key, cos, sin)
    output = torch.empty_like(query)  # (patches, heads, head_dim)
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
    starts = cu_seqlens[:-1].tolist()
    for length in sorted(set(lengths)):
        firsts = torch.tensor([s for s, n in zip(starts, lengths, strict=True) if n == length], device=query.device)
        rows = (firsts[:, None] + torch.arange(length, device=query.device)[None]).reshape(-1)

        def gather(x: torch.Tensor, rows: torch.Tensor = rows, length: int = length) -> torch.Tensor:
            # (images * length, heads, dim) -> (images, heads, length, dim)
            return x.index_select(0, rows).reshape(-1, length, self.num_heads, x.shape[-1]).transpose(1, 2)

        attended = F.scaled_dot_product_attention(
            gather(query), gather(key), gather(value),
            dropout_p=self.attention_dropout if self.training else 0.0, scale=self.scaling,
        )
        output = output.index_copy(0, rows, attended.transpose(1, 2).reshape(-1, self.num_heads, output.shape[-1]))
    return self.proj(output.reshape(seq_length, -1))


def install_batched_vision_attention(model: nn.Module) -> int:
    """Replace the forward of every batchable vision attention module; returns how many.

    Models asking for flash-attention kernels keep their own (they already pack images).
    """
    replaced = 0
    for module in model.modules():
        if type(module).__name__ not in BATCHABLE:
            continue
        if "flash" in str(getattr(module.config, "_attn_implementation", "") or ""):
            continue
        module.forward = types.MethodType(batched_forward, module)
        replaced += 1
    return replaced

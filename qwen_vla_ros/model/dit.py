"""The action decoder: a diffusion transformer (DiT) over action tokens, in plain torch.

One token per future control step (``horizon`` tokens) plus one proprioceptive state
token. Every block applies, in order:

1. self-attention over [state, actions], modulated by the flow time (adaLN-zero);
2. cross-attention from those tokens to the projected backbone features;
3. an MLP, modulated by the flow time (adaLN-zero).

All robots share one action space: actions and state are padded to
``max_action_dim`` and a per-embodiment mask (1 = used dimension) is fed alongside
them, so one set of weights drives a 3-dim base and a 16-dim mobile ALOHA.
The output is the flow velocity for every padded dimension; callers drop padding.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .token_grid import GRID_FEATURES


@dataclass(frozen=True)
class DiTConfig:
    """Decoder shape. ``cond_dim`` is the backbone feature width (set from the backbone)."""

    hidden_size: int = 256
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    cond_dim: int = 2560
    max_action_dim: int = 32
    max_horizon: int = 64
    dropout: float = 0.0
    #: The key-pose head (``subgoal`` everywhere in configs and batches): predict the next key
    #: pose (:mod:`..data.keyframes`) with :class:`KeyPoseHead` and give it to every block as one
    #: more condition token.
    subgoal: bool = False
    #: Add a learned projection of each token's place in its camera image (token_grid.py)
    #: to its memory entry. Comes with the key-pose head, which needs to know *where*.
    token_positions: bool = False
    #: The key-pose head also *points*: a softmax over the memory tokens that a grounding loss
    #: trains to peak on the named object's image token (training/grounding.py); what it points
    #: at feeds the key pose. Comes with the key-pose head.
    grounding: bool = False
    #: The key-pose token also enters the blocks' input (added to the state and every action
    #: token), not only their memory: as one memory entry among hundreds, a trained decoder
    #: never learnt to read it (docs/training.md, "Stage 5c"). Comes with the key-pose head.
    key_pose_input: bool = False

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} must divide by num_heads {self.num_heads}"
            )
        for part in ("grounding", "key_pose_input"):
            if getattr(self, part) and not self.subgoal:
                raise ValueError(f"{part} belongs to the key-pose head: it needs subgoal=True")

    def to_dict(self) -> dict:
        return asdict(self)


#: Named decoder sizes. ``paper`` is the 1.15 B-parameter decoder of the Qwen-VLA
#: report when conditioned on a Qwen3.5-4B backbone (cond_dim 2560).
DIT_PRESETS: dict[str, DiTConfig] = {
    "tiny": DiTConfig(hidden_size=64, depth=2, num_heads=4),
    "small": DiTConfig(hidden_size=384, depth=6, num_heads=6),
    "paper": DiTConfig(hidden_size=1536, depth=22, num_heads=16),
}


def dit_preset(name: str, **overrides) -> DiTConfig:
    """A preset with fields replaced (``cond_dim``, ``max_action_dim``, ``max_horizon`` ...)."""
    if name not in DIT_PRESETS:
        raise ValueError(f"unknown decoder preset {name!r}; choose one of {sorted(DIT_PRESETS)}")
    return replace(DIT_PRESETS[name], **overrides)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of flow time t in [0, 1] (scaled by 1000), (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    angles = (t.float() * 1000.0)[:, None] * freqs[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class Attention(nn.Module):
    """Multi-head attention; ``kv`` absent means self-attention."""

    def __init__(self, dim: int, kv_dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads, self.dropout = num_heads, dropout
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(kv_dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, -1).transpose(1, 2)

    def forward(
        self, x: torch.Tensor, kv: torch.Tensor | None = None, kv_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        kv = x if kv is None else kv
        k, v = self.kv(kv).chunk(2, dim=-1)
        # kv_mask (B, L) True = attend; broadcast over heads and queries.
        mask = None if kv_mask is None else kv_mask[:, None, None, :].bool()
        out = F.scaled_dot_product_attention(
            self._heads(self.q(x)),
            self._heads(k),
            self._heads(v),
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out(out.transpose(1, 2).reshape(x.shape))


class DiTBlock(nn.Module):
    """Self-attention (adaLN-zero), cross-attention to conditioning, MLP (adaLN-zero)."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        dim = config.hidden_size
        self.norm_self = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.self_attn = Attention(dim, dim, config.num_heads, config.dropout)
        self.norm_cross = nn.LayerNorm(dim, eps=1e-6)
        self.cross_attn = Attention(dim, dim, config.num_heads, config.dropout)
        self.norm_mlp = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * config.mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim)
        )
        # shift, scale, gate for self-attention and for the MLP, from the time embedding.
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(
        self,
        x: torch.Tensor,
        time: torch.Tensor,
        cond: torch.Tensor,
        cond_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.modulation(time).chunk(6, dim=-1)
        x = x + gate_a[:, None] * self.self_attn(_modulate(self.norm_self(x), shift_a, scale_a))
        x = x + self.cross_attn(self.norm_cross(x), cond, cond_mask)
        return x + gate_m[:, None] * self.mlp(_modulate(self.norm_mlp(x), shift_m, scale_m))


class KeyPoseHead(nn.Module):
    """Predicts the episode's next key pose (:mod:`..data.keyframes`), a padded action row.

    A query made from the prompt's last token attends over every backbone token. The prompt
    ends with the instruction, so under causal attention the last token is one that has read
    the words; the image tokens before it hold where each object is. "The blue cube" is then
    a lookup: the query asks for blue, the attention finds the blue cube's patches, and an
    MLP turns what it gathered into the joints of the grasp. Also returns the prediction
    embedded as one condition token for the decoder's blocks.
    """

    def __init__(self, config: DiTConfig):
        super().__init__()
        dim, width = config.hidden_size, config.max_action_dim
        self.query_norm = nn.LayerNorm(config.cond_dim, eps=1e-6)
        self.query = nn.Linear(config.cond_dim, dim)
        self.attention = Attention(dim, dim, config.num_heads, 0.0)
        self.out = nn.Sequential(
            nn.LayerNorm(2 * dim, eps=1e-6), nn.Linear(2 * dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, width)
        )
        self.token = nn.Linear(2 * width, dim)
        self.point_key: nn.Linear | None = None
        self.pointed: nn.Linear | None = None
        self.pointed_place: nn.Linear | None = None
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        if config.grounding:
            self.add_pointer()

    def add_pointer(self) -> None:
        """The grounding pointer, fresh weights. No-op where present.

        The key pose reads two things from it: the memory entry it points at (starts unread)
        and that token's place in its image (token_grid.py), read from the start. The place
        is what decides the grasp, and a layer that starts at zero grows too slowly for it:
        Adam moves a weight by about the learning rate per step: a zero-started projection
        trained 1,500 steps at 1.5e-4 still had weights under 0.04 (docs/training.md, Stage 5).
        """
        if self.point_key is not None:
            return
        dim = self.query.out_features
        like = {"device": self.query.weight.device, "dtype": self.query.weight.dtype}
        self.point_key, self.pointed = nn.Linear(dim, dim, **like), nn.Linear(dim, dim, **like)
        self.pointed_place = nn.Linear(GRID_FEATURES, dim, **like)
        for layer in (self.point_key, self.pointed_place):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        nn.init.zeros_(self.pointed.weight)
        nn.init.zeros_(self.pointed.bias)

    def make_query(self, cond: torch.Tensor, cond_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, L, cond_dim) features -> (B, 1, hidden) query from the prompt's last token."""
        return self.query(self.query_norm(last_token(cond, cond_mask)))[:, None]

    def pointer_logits(self, query: torch.Tensor, memory: torch.Tensor, cond_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, 1, hidden) query, (B, L, hidden) memory -> (B, L) logits of where the named
        object is (padding at -inf). Needs the pointer (``DiTConfig.grounding``)."""
        if self.point_key is None:
            raise ValueError("this key-pose head has no grounding pointer (DiTConfig.grounding)")
        logits = (query @ self.point_key(memory).transpose(1, 2))[:, 0] / math.sqrt(memory.shape[-1])
        if cond_mask is not None:
            logits = logits.masked_fill(~cond_mask.bool(), float("-inf"))
        return logits

    def forward(
        self, cond: torch.Tensor, memory: torch.Tensor, cond_mask: torch.Tensor | None, dim_mask: torch.Tensor,
        token_grid: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, cond_dim) features, (B, L, hidden) projected memory, (B, L) mask, (B, D) used
        dimensions, (B, L, GRID_FEATURES) token places or None -> key pose (B, D), normalised
        action units, and its token (B, 1, hidden)."""
        query = self.make_query(cond, cond_mask)
        gathered = self.attention(query, memory, cond_mask)
        if self.pointed is not None:
            weights = self.pointer_logits(query, memory, cond_mask).softmax(dim=-1)[:, None]  # (B, 1, L)
            gathered = gathered + self.pointed(weights @ memory)
            if token_grid is not None:  # where the pointed-at token is: column, row, camera
                gathered = gathered + self.pointed_place(weights @ token_grid.to(weights.dtype))
        pose = self.out(torch.cat([gathered, query], dim=-1))[:, 0] * dim_mask
        return pose, self.embed(pose, dim_mask)

    def embed(self, pose: torch.Tensor, dim_mask: torch.Tensor) -> torch.Tensor:
        """(B, D) key pose (normalised action units), (B, D) used dimensions -> its condition
        token (B, 1, hidden) for the decoder's blocks."""
        return self.token(torch.cat([pose, dim_mask], dim=-1))[:, None]


class ActionDiT(nn.Module):
    """Predicts the flow velocity of a padded action chunk.

    Inputs of :meth:`forward` (normalised model units, padded to ``max_action_dim`` D):
        noisy_actions: (B, H, D), H <= max_horizon.
        time: (B,) flow time in [0, 1] (1 = pure noise).
        state: (B, D) proprioceptive state.
        dim_mask: (B, D) 1 for the embodiment's dimensions, 0 for padding.
        cond: (B, L, cond_dim) backbone features; cond_mask: (B, L) True = real token
            (or, with ``cond_projected``, the memory and mask of :meth:`condition`).
    Returns (B, H, D) velocity (noise - action).
    """

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = config
        dim, width = config.hidden_size, config.max_action_dim
        self.action_in = nn.Linear(2 * width, dim)
        self.state_in = nn.Linear(2 * width, dim)
        self.position = nn.Parameter(torch.zeros(1, config.max_horizon + 1, dim))
        self.time_mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.cond_norm = nn.LayerNorm(config.cond_dim, eps=1e-6)
        self.cond_proj = nn.Linear(config.cond_dim, dim)
        self.blocks = nn.ModuleList(DiTBlock(config) for _ in range(config.depth))
        self.final_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.action_out = nn.Linear(dim, width)
        # the key-pose head (see condition); built before reset_parameters initialises it
        self.key_pose = KeyPoseHead(config) if config.subgoal else None
        self.grid_proj = nn.Linear(GRID_FEATURES, dim) if config.token_positions else None
        self.key_pose_in = nn.Linear(dim, dim) if config.key_pose_input else None
        # Training only: recompute each block's activations in the backward pass.
        self.gradient_checkpointing = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """DiT initialisation: adaLN-zero gates and the output layer start at zero."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.position, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.modulation[-1].weight)
            nn.init.zeros_(block.modulation[-1].bias)
        for layer in (self.final_modulation[-1], self.action_out, self.grid_proj):
            if layer is not None:  # positions start unread: a trained decoder's memory is unchanged
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def add_subgoal_head(self) -> None:
        """Give a decoder built without them the key-pose head and token positions (fresh
        weights; the positions' projection starts at zero). No-op where present."""
        like = {"device": self.cond_proj.weight.device, "dtype": self.cond_proj.weight.dtype}
        if not self.config.subgoal:
            self.key_pose = KeyPoseHead(self.config).to(**like)
        if not self.config.token_positions:
            self.grid_proj = nn.Linear(GRID_FEATURES, self.config.hidden_size).to(**like)
            nn.init.zeros_(self.grid_proj.weight)
            nn.init.zeros_(self.grid_proj.bias)
        self.config = replace(self.config, subgoal=True, token_positions=True)

    def add_grounding_pointer(self) -> None:
        """Give the key-pose head (added if missing) its grounding pointer. No-op where present."""
        self.add_subgoal_head()
        self.key_pose.add_pointer()
        self.config = replace(self.config, grounding=True)

    def add_key_pose_input(self) -> None:
        """Give the decoder (with its key-pose head, added if missing) the key-pose input
        (fresh weights, xavier: a zero-started layer grows by about the learning rate per step,
        too slowly for a short stage). No-op where present."""
        self.add_subgoal_head()
        if self.key_pose_in is None:
            like = {"device": self.cond_proj.weight.device, "dtype": self.cond_proj.weight.dtype}
            self.key_pose_in = nn.Linear(self.config.hidden_size, self.config.hidden_size, **like)
            nn.init.xavier_uniform_(self.key_pose_in.weight)
            nn.init.zeros_(self.key_pose_in.bias)
        self.config = replace(self.config, key_pose_input=True)

    def memory(self, cond: torch.Tensor, token_grid: torch.Tensor | None = None) -> torch.Tensor:
        """Backbone features (B, L, cond_dim) -> the blocks' memory before the key-pose token."""
        dtype = self.cond_proj.weight.dtype
        memory = self.cond_proj(self.cond_norm(cond.to(dtype)))
        if self.grid_proj is not None and token_grid is not None:
            memory = memory + self.grid_proj(token_grid.to(dtype))
        return memory

    def point(self, cond: torch.Tensor, cond_mask: torch.Tensor | None, token_grid: torch.Tensor | None) -> torch.Tensor:
        """(B, L) logits of the grounding pointer over the backbone's tokens (see KeyPoseHead)."""
        if self.key_pose is None:
            raise ValueError("this decoder has no key-pose head to point with (DiTConfig.subgoal)")
        memory = self.memory(cond, token_grid)
        return self.key_pose.pointer_logits(self.key_pose.make_query(cond.to(memory.dtype), cond_mask), memory, cond_mask)

    def condition(
        self, cond: torch.Tensor, cond_mask: torch.Tensor | None, dim_mask: torch.Tensor,
        token_grid: torch.Tensor | None = None, teacher_pose: torch.Tensor | None = None,
        teacher_rows: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Backbone features (B, L, cond_dim) -> the blocks' memory (B, L', hidden), its mask,
        and the predicted key pose (B, max_action_dim; None without the head). Computed once
        per chunk and reused by every Euler step. ``token_grid``: (B, L, GRID_FEATURES) from
        :func:`.token_grid.image_token_grid` (read with ``token_positions``; None = unknown).

        The key pose comes from :class:`KeyPoseHead`; its token joins the memory, so every
        block can read where the episode's next grasp will be. Teacher forcing (training):
        rows where ``teacher_rows`` (B,) is True get the token of ``teacher_pose`` (B, D),
        the true key pose, instead of the prediction's; the returned key pose stays the
        prediction, for the head's loss.
        """
        dtype = self.cond_proj.weight.dtype
        memory = self.memory(cond, token_grid)
        if self.key_pose is None:
            return memory, cond_mask, None
        subgoal, token = self.key_pose(cond.to(dtype), memory, cond_mask, dim_mask.to(dtype), token_grid)
        if teacher_pose is not None and teacher_rows is not None:
            taught = self.key_pose.embed(teacher_pose.to(dtype), dim_mask.to(dtype))
            token = torch.where(teacher_rows.to(token.device)[:, None, None], taught, token)
        if cond_mask is not None:
            cond_mask = torch.cat([cond_mask.bool(), cond_mask.new_ones(len(cond_mask), 1).bool()], dim=1)
        return torch.cat([memory, token], dim=1), cond_mask, subgoal

    def forward(
        self,
        noisy_actions: torch.Tensor,
        time: torch.Tensor,
        state: torch.Tensor,
        dim_mask: torch.Tensor,
        cond: torch.Tensor,
        cond_mask: torch.Tensor | None = None,
        *,
        cond_projected: bool = False,
    ) -> torch.Tensor:
        horizon = noisy_actions.shape[1]
        if horizon > self.config.max_horizon:
            raise ValueError(
                f"horizon {horizon} exceeds the decoder's max_horizon {self.config.max_horizon}"
            )
        dtype = self.action_in.weight.dtype
        mask = dim_mask.to(dtype)
        actions = torch.cat(
            [noisy_actions.to(dtype), mask[:, None].expand(-1, horizon, -1)], dim=-1
        )
        state_token = self.state_in(torch.cat([state.to(dtype), mask], dim=-1))[:, None]
        x = (
            torch.cat([state_token, self.action_in(actions)], dim=1)
            + self.position[:, : horizon + 1]
        )
        time_emb = self.time_mlp(timestep_embedding(time, self.config.hidden_size).to(dtype))
        if not cond_projected:
            cond, cond_mask, _ = self.condition(cond, cond_mask, dim_mask)
        memory = cond
        if self.key_pose_in is not None:
            x = x + self.key_pose_in(memory[:, -1:])  # condition() puts the key-pose token last
        recompute = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            if recompute:
                # non-reentrant: correct with inputs that need no gradient; RNG state replayed
                x = checkpoint(block, x, time_emb, memory, cond_mask, use_reentrant=False)
            else:
                x = block(x, time_emb, memory, cond_mask)
        shift, scale = self.final_modulation(time_emb).chunk(2, dim=-1)
        return self.action_out(_modulate(self.final_norm(x[:, 1:]), shift, scale))


def last_token(features: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Each row's last real token (B, L, C) -> (B, C), whichever side the padding is on."""
    if mask is None:
        return features[:, -1]
    positions = torch.arange(features.shape[1], device=features.device)
    last = (mask.bool() * (positions + 1)).argmax(dim=1)
    return features[torch.arange(len(features), device=features.device), last]


def count_parameters(config: DiTConfig) -> int:
    """Parameters of a decoder of this shape, counted without allocating (meta device)."""
    with torch.device("meta"):
        return sum(p.numel() for p in ActionDiT(config).parameters())

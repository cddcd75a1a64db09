"""The training loss of :class:`~.policy.QwenVLAPolicy` (see its ``compute_loss`` for the batch
format): flow matching on the action chunk, plus the key-pose loss when the decoder has the
head (:class:`~.dit.KeyPoseHead`). Normalisation is applied here, per sample's embodiment.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..embodiment import Embodiment
from .flow import interpolate, masked_mse, padded_noise, sample_time, target_velocity
from .inputs import batch_arrays, batch_embodiment_names, batch_prompts

if TYPE_CHECKING:
    from .policy import QwenVLAPolicy


def flow_matching_loss(
    policy: QwenVLAPolicy, batch: dict, generator: torch.Generator | None, state_dropout: float,
    subgoal_weight: float, teacher_forcing: float = 0.0,
) -> dict[str, torch.Tensor]:
    """``loss``, ``flow_loss``, ``subgoal_loss``, ``time`` and ``per_sample`` of one batch.

    ``teacher_forcing``: while the decoder trains, the fraction of samples whose decoder
    reads the true key pose instead of the head's prediction (:meth:`.dit.ActionDiT.condition`).
    """
    embodiments = [policy.resolve_embodiment(e) for e in batch_embodiment_names(batch)]
    actions, state, step_mask = normalised_targets(policy, batch, embodiments)
    dims = [emb.action_dim for emb in embodiments]
    norm_state, dim_mask = policy._pad_rows(state, dims)
    if state_dropout > 0:
        dropped = torch.rand(len(dims), generator=generator) < state_dropout
        norm_state = norm_state * (~dropped).to(norm_state.dtype)[:, None].to(norm_state.device)
    norm_actions, _ = policy._pad_rows(actions, dims)
    inputs = policy.backbone.prepare(batch_prompts(batch, embodiments))
    with torch.no_grad() if policy.config.freeze_backbone else nullcontext():
        features = policy.backbone(inputs)
    size = (len(embodiments), actions.shape[1], policy.max_action_dim)
    flow_time = sample_time(size[0], generator, torch.device("cpu")).to(policy.device)
    noise = padded_noise(size, dim_mask.cpu(), generator, "cpu", torch.float32).to(policy.device)
    target_pose = normalised_key_pose(policy, batch, embodiments, dim_mask)
    teacher_rows = None  # drawn after the noise: the same generator gives the same noise either way
    if teacher_forcing > 0 and target_pose is not None and policy.decoder.training:
        teacher_rows = torch.rand(len(dims), generator=generator) < teacher_forcing
    memory, memory_mask, subgoal = policy.decoder.condition(features.features, features.mask, dim_mask,
                                                            features.token_grid, target_pose, teacher_rows)
    predicted = policy.decoder(
        interpolate(norm_actions, noise, flow_time), flow_time, norm_state, dim_mask, memory, memory_mask,
        cond_projected=True,
    )
    weights = dim_mask[:, None, :] * step_mask[..., None]
    target = target_velocity(norm_actions, noise)
    flow_loss = masked_mse(predicted, target, weights)
    subgoal_loss = _pose_error(subgoal, target_pose, dim_mask)
    return {
        "loss": flow_loss + subgoal_weight * subgoal_loss if subgoal_weight > 0 else flow_loss,
        "flow_loss": flow_loss.detach(),
        "subgoal_loss": subgoal_loss.detach(),
        "time": flow_time.detach(),
        "per_sample": masked_mse(predicted, target, weights, per_sample=True).detach(),
    }


def key_pose_loss(policy: QwenVLAPolicy, predicted: torch.Tensor | None, batch: dict,
                  embodiments: list[Embodiment], dim_mask: torch.Tensor) -> torch.Tensor:
    """MSE of the predicted key pose against ``batch['subgoal']``, normalised as actions are;
    0 without the head or without targets."""
    return _pose_error(predicted, normalised_key_pose(policy, batch, embodiments, dim_mask), dim_mask)


def _pose_error(predicted: torch.Tensor | None, target: torch.Tensor | None, dim_mask: torch.Tensor) -> torch.Tensor:
    """MSE over the used dimensions; 0 where either side is missing."""
    if predicted is None or target is None:
        return dim_mask.new_zeros(())
    return masked_mse(predicted, target.to(predicted.dtype), dim_mask)


def normalised_key_pose(policy: QwenVLAPolicy, batch: dict, embodiments: list[Embodiment],
                        dim_mask: torch.Tensor) -> torch.Tensor | None:
    """``batch['subgoal']`` normalised as actions are, padded (B, D); None without it."""
    if batch.get("subgoal") is None:
        return None
    rows = torch.as_tensor(batch["subgoal"]).detach().cpu().numpy().astype(np.float64)
    target = np.zeros((len(embodiments), policy.max_action_dim))
    for i, emb in enumerate(embodiments):
        target[i, : emb.action_dim] = policy.normalization_for(emb).normalize_actions(rows[i, : emb.action_dim])
    return torch.as_tensor(target, dtype=torch.float32, device=dim_mask.device)


def normalised_targets(policy: QwenVLAPolicy, batch: dict, embodiments: list[Embodiment]):
    """Normalised actions (B, H, D) and state (B, D) as numpy, and the step mask (B, H)."""
    actions, state, step_mask = batch_arrays(batch, embodiments, policy.config.decoder.max_horizon)
    norm_actions, norm_state = np.zeros_like(actions), np.zeros_like(state)
    for i, emb in enumerate(embodiments):
        stats, dim = policy.normalization_for(emb), emb.action_dim
        norm_actions[i, :, :dim] = stats.normalize_chunk(actions[i, :, :dim], state[i, :dim])
        norm_state[i, :dim] = stats.normalize_state(state[i, :dim])
    return norm_actions, norm_state, step_mask.to(policy.device)

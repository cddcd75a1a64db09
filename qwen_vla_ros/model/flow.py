"""Flow matching for action chunks, in the pi0 convention.

Flow time t runs from 1 (pure noise) to 0 (the action):

    x_t = t * noise + (1 - t) * action,      v = dx_t/dt = noise - action.

The decoder predicts v. Sampling integrates from t = 1 to t = 0 with Euler steps
using diffusers' ``FlowMatchEulerDiscreteScheduler`` (uniform sigmas 1, 1-1/N, ... 1/N),
whose step is x <- x + (t_next - t) * v. Padded action dimensions carry zero noise
and are left out of the loss, so they never influence the used dimensions' targets.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

#: Training times follow Beta(1.5, 1) (pi0), which favours the noisier end of the path.
TIME_BETA_ALPHA = 1.5
#: Smallest training time: t = 0 exactly would make the target independent of the input.
TIME_MIN = 1e-3

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def sample_time(
    batch: int, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """(batch,) training times in [TIME_MIN, 1], Beta(1.5, 1) by inverse CDF (seedable)."""
    uniform = torch.rand(batch, generator=generator, device=device)
    return uniform.pow(1.0 / TIME_BETA_ALPHA) * (1.0 - TIME_MIN) + TIME_MIN


def padded_noise(
    shape: tuple[int, ...], dim_mask: torch.Tensor, generator: torch.Generator | None, device, dtype
) -> torch.Tensor:
    """Gaussian noise (B, H, D) that is zero on padded dimensions (dim_mask (B, D) == 0)."""
    noise = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    return noise * dim_mask[:, None, :].to(dtype)


def interpolate(actions: torch.Tensor, noise: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
    """x_t = t * noise + (1 - t) * actions, with time (B,)."""
    t = time[:, None, None].to(actions.dtype)
    return t * noise + (1.0 - t) * actions


def target_velocity(actions: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return noise - actions


def masked_mse(
    prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, per_sample: bool = False
) -> torch.Tensor:
    """Mean squared error over the elements where mask (broadcastable) is 1.

    A scalar, or (B,) means per sample with ``per_sample``.
    """
    weights = mask.to(prediction.dtype).expand_as(prediction)
    squared = (prediction.float() - target.float()).pow(2) * weights
    if per_sample:
        axes = tuple(range(1, prediction.ndim))
        return squared.sum(axes) / weights.sum(axes).clamp_min(1.0)
    return squared.sum() / weights.sum().clamp_min(1.0)


def euler_scheduler(num_steps: int) -> FlowMatchEulerDiscreteScheduler:
    """A fresh scheduler (it keeps a step index, so one per sampling call) with N uniform steps."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1.0 / num_steps, num_steps))
    return scheduler


def euler_sample(
    velocity: VelocityFn, noise: torch.Tensor, num_steps: int, prefix: torch.Tensor | None = None
) -> torch.Tensor:
    """Integrate dx/dt = velocity(x, t) from t = 1 (noise) to t = 0; returns x_0.

    ``velocity(x_t, t)`` gets t as a (B,) tensor in [0, 1]. It is called exactly
    ``num_steps`` times; anything expensive it needs (backbone features) belongs
    outside it.

    ``prefix`` (B, d, A): actions the chunk must start with (real-time chunking, the
    training-free hard-inpainting variant): after every step the first d actions are reset
    to the prefix noised to the current time, ``t * noise + (1 - t) * prefix``, so the model
    denoises the rest of the chunk as a continuation of them, and x_0 starts with them exactly.
    """
    scheduler = euler_scheduler(num_steps)
    batch = noise.shape[0]
    sample = _inpaint(noise, noise, prefix, 1.0)
    for timestep in scheduler.timesteps:
        time = (timestep / scheduler.config.num_train_timesteps).expand(batch).to(noise.device)
        predicted = velocity(sample, time)
        sample = scheduler.step(predicted, timestep, sample, return_dict=False)[0].to(noise.dtype)
        sample = _inpaint(sample, noise, prefix, float(scheduler.sigmas[scheduler.step_index]))
    return sample


def _inpaint(sample: torch.Tensor, noise: torch.Tensor, prefix: torch.Tensor | None, t: float) -> torch.Tensor:
    if prefix is None or prefix.shape[1] == 0:
        return sample
    steps = prefix.shape[1]
    sample = sample.clone()
    sample[:, :steps] = t * noise[:, :steps] + (1.0 - t) * prefix
    return sample

"""The fast inference path: static shapes, a compiled Euler loop, a compiled backbone.

What a chunk costs on a GPU is mostly kernel-launch overhead (a 4B backbone and ten
decoder steps are about 4 TFLOP: milliseconds of arithmetic), so this path removes launches:

* the prompt is padded on the right to a multiple of ``prompt_bucket`` tokens, so every
  observation of an embodiment (image token count fixed by its cameras) has one of a few
  shapes. The padding is masked out for the decoder, and in a causal backbone tokens never
  see later ones, so the features of the real tokens do not change;
* the whole Euler loop (condition projection, N decoder steps, real-time-chunking
  inpainting) is one function without Python state (:func:`euler_loop`), compiled once per
  shape with ``torch.compile`` — on CUDA with ``mode="reduce-overhead"`` (CUDA graphs: the
  loop is captured once and replayed). The inpainting prefix is a full-length tensor with a
  step mask, so the number of frozen steps does not change the shape;
* the backbone's transformer (``model.model``) is compiled with ``dynamic=False`` (one
  graph per bucket; data-dependent parts of the vision tower run between graphs);
* on CUDA the decoder runs in bfloat16 (the sample is integrated in float32).

Noise is drawn outside the compiled code from the caller's generator, so a seed gives the
same chunk on both paths up to float/bf16 tolerance. Compilation happens on the first call
of each shape (seconds to minutes): :meth:`QwenVLAPolicy.warm_up` makes that call at start.
If compiling or running a compiled function fails, the path logs it once and continues
eagerly (the padding and dtype stay).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

from .backbone import BackboneFeatures, QwenBackbone
from .dit import ActionDiT
from .flow import euler_scheduler

LOG = logging.getLogger(__name__)
#: Prompt lengths are rounded up to a multiple of this many tokens.
DEFAULT_PROMPT_BUCKET = 64


def euler_loop(
    decoder: ActionDiT,
    features: torch.Tensor,
    feature_mask: torch.Tensor,
    state: torch.Tensor,
    dim_mask: torch.Tensor,
    noise: torch.Tensor,
    prefix: torch.Tensor,
    prefix_mask: torch.Tensor,
    sigmas: torch.Tensor,
    times: torch.Tensor,
    token_grid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Integrate the flow from noise (t = 1) to actions (t = 0); :func:`flow.euler_sample` in
    plain tensor code, so it can be compiled and captured whole.

    Args:
        features, feature_mask: backbone features (B, L, C) and mask (B, L).
        state, dim_mask: normalised padded state (B, D) and used-dimension mask (B, D).
        noise: (B, H, D) initial sample.
        prefix, prefix_mask: (B, H, D) actions the chunk starts with and (B, H, 1) 1 where a
            step is frozen (all zero: no prefix).
        sigmas: (N + 1,) float32 flow times from 1 down to 0; times: (N,) the times the
            decoder is given (the scheduler's timesteps / 1000, as the eager sampler).
        token_grid: (B, L, GRID_FEATURES) image-token positions of the features, or None.
    Returns (B, H, D) float32 actions, normalised.
    """
    memory, feature_mask, _ = decoder.condition(features, feature_mask, dim_mask, token_grid)
    batch = noise.shape[0]
    sample = noise.float()
    for i in range(times.shape[0]):
        velocity = decoder(sample, times[i].expand(batch), state, dim_mask, memory, feature_mask, cond_projected=True)
        sample = sample + (sigmas[i + 1] - sigmas[i]) * velocity.float()
        noised_prefix = sigmas[i + 1] * noise + (1.0 - sigmas[i + 1]) * prefix
        sample = torch.where(prefix_mask > 0, noised_prefix.float(), sample)
    return sample


def pad_prompt(inputs: dict[str, torch.Tensor], bucket: int, pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad ``input_ids`` (pad token), ``attention_mask`` and ``mm_token_type_ids`` (0)
    to the next multiple of ``bucket`` tokens; pixel inputs unchanged."""
    length = inputs["input_ids"].shape[1]
    extra = -length % bucket
    if extra == 0:
        return inputs
    padded = dict(inputs)
    for key, value in (("input_ids", pad_token_id), ("attention_mask", 0), ("mm_token_type_ids", 0)):
        if key in inputs:
            tensor = inputs[key]
            fill = torch.full((tensor.shape[0], extra), value, dtype=tensor.dtype, device=tensor.device)
            padded[key] = torch.cat([tensor, fill], dim=1)
    return padded


class FastInference:
    """The fast path of one policy; made by :meth:`QwenVLAPolicy.enable_fast_inference`.

    Attributes:
        compile: compiled functions are in use (False after a failure: eager from then on).
        prompt_bucket: prompt lengths are padded to a multiple of this (tokens).
    """

    def __init__(self, backbone: QwenBackbone, decoder: ActionDiT, *, compile: bool, prompt_bucket: int,
                 compile_backbone: bool):
        if prompt_bucket < 1:
            raise ValueError(f"prompt_bucket must be >= 1 token, got {prompt_bucket}")
        self.backbone, self.decoder = backbone, decoder
        self.compile = compile
        self.prompt_bucket = prompt_bucket
        tokenizer = getattr(backbone.processor, "tokenizer", None)
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_token_id = int(pad if pad is not None else getattr(backbone.model.config, "pad_token_id", 0) or 0)
        self._sampler: Callable = euler_loop
        self._language: nn.Module | None = None
        if compile:
            cuda = next(decoder.parameters()).device.type == "cuda"
            # CUDA graphs only where they exist; elsewhere inductor's fused kernels
            self._sampler = torch.compile(euler_loop, mode="reduce-overhead" if cuda else None, dynamic=False)
            if compile_backbone:
                self._language = torch.compile(backbone.model.model, dynamic=False)

    def _fall_back(self, what: str, error: Exception) -> None:
        LOG.warning("fast path: compiled %s failed (%s: %s); running eagerly from now on",
                    what, type(error).__name__, error)
        self.compile = False
        self._sampler, self._language = euler_loop, None

    def features(self, inputs: dict[str, torch.Tensor]) -> BackboneFeatures:
        """Backbone features of bucket-padded inputs."""
        inputs = pad_prompt(inputs, self.prompt_bucket, self.pad_token_id)
        if self._language is not None:
            try:
                return self.backbone.forward(inputs, language_model=self._language)
            except Exception as error:  # noqa: BLE001 - any compiler failure: stay correct, run eagerly
                self._fall_back("backbone", error)
        return self.backbone(inputs)

    def sample(self, features: BackboneFeatures, state: torch.Tensor, dim_mask: torch.Tensor, noise: torch.Tensor,
               num_steps: int, prefix: torch.Tensor | None) -> torch.Tensor:
        """Normalised actions (B, H, D) from noise; ``prefix`` (B, d, D) or None, as the eager sampler."""
        scheduler = euler_scheduler(num_steps)
        device = noise.device
        sigmas = scheduler.sigmas.to(device=device, dtype=torch.float32)
        times = (scheduler.timesteps / scheduler.config.num_train_timesteps).to(device=device, dtype=torch.float32)
        full_prefix = torch.zeros_like(noise)
        prefix_mask = torch.zeros(*noise.shape[:2], 1, device=device, dtype=noise.dtype)
        if prefix is not None and prefix.shape[1] > 0:
            full_prefix[:, : prefix.shape[1]] = prefix.to(noise.dtype)
            prefix_mask[:, : prefix.shape[1]] = 1.0
        arguments = (self.decoder, features.features, features.mask, state, dim_mask, noise, full_prefix,
                     prefix_mask, sigmas, times, features.token_grid)
        if self.compile:
            try:
                # CUDA graphs reuse their output buffer at the next replay: keep a copy
                return self._sampler(*arguments).clone()
            except Exception as error:  # noqa: BLE001 - any compiler failure: stay correct, run eagerly
                self._fall_back("Euler loop", error)
        return euler_loop(*arguments)

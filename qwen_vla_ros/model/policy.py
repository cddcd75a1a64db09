"""QwenVLAPolicy: Qwen VL backbone + DiT flow-matching decoder, one set of weights per fleet.

Inference, per chunk: check the observation, normalise the state (rig units ->
model units -> statistics of that embodiment), run the backbone ONCE over the
embodiment prompt, the labelled images and the instruction, then integrate the
flow with N Euler steps that reuse the cached (projected) backbone features, and
map the result back (un-normalise -> ``embodiment.actions_to_rig``).
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..embodiment import Embodiment, load_embodiment
from ..types import ActionChunk, Observation
from . import checkpoint as ckpt
from .backbone import BackboneFeatures, QwenBackbone
from .config import PolicyConfig
from .dit import ActionDiT, DiTConfig, dit_preset
from .errors import MissingNormalizationError, ModelInputError
from .fast_path import DEFAULT_PROMPT_BUCKET, FastInference
from .flow import euler_sample, padded_noise
from .inputs import check_vector, observation_prompt
from .losses import flow_matching_loss
from .normalization import NormStats, load_norm_stats, save_norm_stats

EmbodimentLike = Embodiment | str


@dataclass
class PreparedObservations:
    """Backbone inputs plus the padded, normalised state of a batch of observations."""

    embodiment: Embodiment
    stats: NormStats
    inputs: dict[str, torch.Tensor]
    state: torch.Tensor  # (B, max_action_dim)
    dim_mask: torch.Tensor  # (B, max_action_dim), 1 = used dimension
    model_state: np.ndarray  # (B, action_dim) the state in model units, where relative chunks start


class QwenVLAPolicy(nn.Module):
    """The whole policy. Build with :meth:`from_backbone` or :meth:`from_pretrained`."""

    def __init__(
        self,
        backbone: QwenBackbone,
        config: PolicyConfig,
        norm_stats: dict[str, NormStats] | None = None,
        decoder: ActionDiT | None = None,
    ):
        super().__init__()
        if backbone.feature_dim != config.decoder.cond_dim:
            raise ValueError(
                f"decoder cond_dim {config.decoder.cond_dim} != backbone feature width {backbone.feature_dim}"
            )
        self.config = config
        self.backbone = backbone
        self.decoder = decoder if decoder is not None else ActionDiT(config.decoder)
        self.norm_stats: dict[str, NormStats] = dict(norm_stats or {})
        self._embodiments: dict[str, Embodiment] = {}
        self._chunk_ids = itertools.count(1)
        self.fast: FastInference | None = None  # see enable_fast_inference
        self.set_backbone_frozen(config.freeze_backbone)

    # -- construction, saving ---------------------------------------------------------------
    @classmethod
    def from_backbone(
        cls,
        backbone: QwenBackbone | str | Path,
        decoder: str | DiTConfig = "small",
        *,
        max_action_dim: int = 32,
        max_horizon: int = 64,
        num_inference_steps: int = 10,
        feature_layers: Sequence[int] | None = None,
        freeze_backbone: bool = False,
        seed: int | None = None,
        **backbone_options,
    ) -> QwenVLAPolicy:
        """A pretrained (or tiny) backbone joined to a fresh decoder preset.

        ``backbone``: a :class:`QwenBackbone`, a local folder or a hub id; ``backbone_options``
        go to :meth:`QwenBackbone.from_pretrained` (dtype, device, attn_implementation, processor),
        as does ``feature_layers`` (a given :class:`QwenBackbone` keeps its own layers).
        ``decoder``: a preset name (``tiny``, ``small``, ``paper``) or a :class:`DiTConfig`;
        ``seed`` fixes the decoder's initial weights.
        """
        if not isinstance(backbone, QwenBackbone):
            backbone = QwenBackbone.from_pretrained(
                backbone, feature_layers=feature_layers, **backbone_options
            )
        shape = {
            "cond_dim": backbone.feature_dim,
            "max_action_dim": max_action_dim,
            "max_horizon": max_horizon,
        }
        decoder_config = (
            dit_preset(decoder, **shape)
            if isinstance(decoder, str)
            else DiTConfig(**{**decoder.to_dict(), **shape})
        )
        config = PolicyConfig(
            decoder_config, num_inference_steps, backbone.feature_layers, freeze_backbone
        )
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            head = ActionDiT(decoder_config)
        return cls(backbone, config, decoder=head).to(backbone.device)

    @classmethod
    def from_pretrained(
        cls,
        dir_or_hub_id: str | Path,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
        decoder_dtype: torch.dtype | None = None,
        attn_implementation: str | None = None,
        processor: str = "auto",
    ) -> QwenVLAPolicy:
        """Load a folder written by :meth:`save_pretrained` (or download a hub snapshot).

        ``dtype`` applies to the backbone; the decoder stays float32 unless ``decoder_dtype``.
        """
        root = ckpt.resolve_checkpoint_dir(dir_or_hub_id)
        config = PolicyConfig.from_dict(
            ckpt.read_json(root / ckpt.CONFIG_FILE), str(root / ckpt.CONFIG_FILE)
        )
        ckpt.check_backbone_files(root / ckpt.BACKBONE_DIR)
        backbone = QwenBackbone.from_pretrained(
            root / ckpt.BACKBONE_DIR,
            dtype=dtype,
            attn_implementation=attn_implementation,
            feature_layers=config.feature_layers,
            processor=processor,
        )
        if backbone.feature_dim != config.decoder.cond_dim:
            raise ckpt.CheckpointError(
                f"{root}: decoder expects {config.decoder.cond_dim}-wide features, backbone gives {backbone.feature_dim}"
            )
        decoder = ActionDiT(config.decoder)
        ckpt.load_decoder(root / ckpt.DECODER_FILE, decoder)
        stats = load_norm_stats(root / ckpt.NORMALIZATION_FILE)
        policy = cls(backbone, config, stats, decoder)
        if decoder_dtype is not None:
            policy.decoder.to(decoder_dtype)
        return policy.to(device) if device is not None else policy

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write config, decoder (safetensors), statistics and the backbone folder."""
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(root / ckpt.BACKBONE_DIR)
        ckpt.save_decoder(root / ckpt.DECODER_FILE, self.decoder)
        ckpt.write_json(root / ckpt.CONFIG_FILE, self.config.to_dict())
        save_norm_stats(root / ckpt.NORMALIZATION_FILE, self.norm_stats)
        return root

    # -- settings ---------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.decoder.parameters()).device

    @property
    def max_action_dim(self) -> int:
        return self.config.decoder.max_action_dim

    @property
    def predicts_key_poses(self) -> bool:
        """Whether the decoder has a key-pose head (every chunk then carries ``key_pose``)."""
        return self.decoder.key_pose is not None

    def set_backbone_frozen(self, frozen: bool) -> None:
        """Freeze the backbone (decoder-only training) or let gradients reach it."""
        self.config = dataclasses.replace(self.config, freeze_backbone=frozen)
        self.backbone.set_frozen(frozen)

    def train(self, mode: bool = True) -> QwenVLAPolicy:
        super().train(mode)
        if self.config.freeze_backbone:
            self.backbone.eval()  # a frozen backbone never switches to training behaviour
        return self

    def set_normalization(self, embodiment_name: str, stats: NormStats | dict) -> None:
        """Store statistics (model units) for one embodiment; saved with the checkpoint."""
        if isinstance(stats, dict):
            stats = NormStats.from_dict(stats, embodiment_name)
        if stats.dim > self.max_action_dim:
            raise ModelInputError(
                f"{embodiment_name}: {stats.dim} dims exceed max_action_dim {self.max_action_dim}"
            )
        self.norm_stats[embodiment_name] = stats

    def resolve_embodiment(self, embodiment: EmbodimentLike) -> Embodiment:
        """An :class:`Embodiment` as is; a name or path is loaded once and cached."""
        if isinstance(embodiment, Embodiment):
            return embodiment
        if str(embodiment) not in self._embodiments:
            self._embodiments[str(embodiment)] = load_embodiment(embodiment)
        return self._embodiments[str(embodiment)]

    def normalization_for(self, embodiment: Embodiment) -> NormStats:
        """The embodiment's statistics; a clear error when the checkpoint has none."""
        stats = self.norm_stats.get(embodiment.name)
        if stats is None:
            raise MissingNormalizationError(
                f"this policy has no normalisation statistics for embodiment {embodiment.name!r} "
                f"(it has {sorted(self.norm_stats) or 'none'}); compute them from demonstrations "
                "with NormStats.from_arrays and call policy.set_normalization, or for an untrained "
                "demo only use NormStats.from_limits(embodiment)"
            )
        if stats.dim != embodiment.action_dim:
            raise ModelInputError(
                f"statistics for {embodiment.name!r} have {stats.dim} dims, the embodiment has "
                f"{embodiment.action_dim} actions: recompute them for this action layout"
            )
        if (
            embodiment.action_dim > self.max_action_dim
            or embodiment.chunk_horizon > self.config.decoder.max_horizon
        ):
            raise ModelInputError(
                f"embodiment {embodiment.name!r} ({embodiment.action_dim} dims, horizon "
                f"{embodiment.chunk_horizon}) exceeds the decoder's max_action_dim "
                f"{self.max_action_dim} or max_horizon {self.config.decoder.max_horizon}"
            )
        return stats

    # -- inference ----------------------------------------------------------------------------
    def predict_chunk(
        self,
        observation: Observation,
        embodiment: EmbodimentLike,
        *,
        seed: int | None = None,
        **options,
    ) -> ActionChunk:
        """One action chunk (embodiment.chunk_horizon, action_dim) in rig units; see predict_chunks."""
        return self.predict_chunks([observation], embodiment, seed=seed, **options)[0]

    def predict_chunks(
        self,
        observations: Sequence[Observation],
        embodiment: EmbodimentLike,
        *,
        seed: int | None = None,
        text_only: bool = False,
        num_steps: int | None = None,
        prefix: np.ndarray | None = None,
        key_pose: np.ndarray | None = None,
    ) -> list[ActionChunk]:
        """Action chunks for a batch of observations of one embodiment.

        Args:
            observations: images at the embodiment's image_size, state in rig units.
            embodiment: an :class:`Embodiment` or the name of a shipped one.
            seed: fixes the initial noise (same seed, same inputs -> same chunks).
            text_only: ignore images (text-to-action mode).
            num_steps: Euler steps (default from the config).
            prefix: (d, action_dim) rig-unit actions every chunk must start with, d < horizon:
                the part of the previous chunk that runs while this one is computed
                (real-time chunking by inpainting; see ``flow.euler_sample``).
            key_pose: (action_dim,) or (B, action_dim) rig units: the decoder acts on this key
                pose instead of the one its head predicts (a latched plan,
                :class:`..control.key_pose_latch.KeyPoseLatch`); eager path only.
        Returns:
            One :class:`ActionChunk` per observation: ``start_time`` is the observation's
            stamp, ``timings`` the batch's seconds for preprocess, backbone and decoder,
            ``key_pose`` the head's prediction.
        """
        clock, timings = time.perf_counter(), {}
        prepared = self.prepare_observations(observations, embodiment, text_only=text_only)
        generator = None if seed is None else torch.Generator(self.device).manual_seed(seed)
        with torch.inference_mode():
            clock = self._lap(timings, "preprocess", clock)
            fast = self.fast
            features = self.backbone(prepared.inputs) if fast is None else fast.features(prepared.inputs)
            clock = self._lap(timings, "backbone", clock)
            prefix_rows = self._prefix_tensor(prefix, prepared, len(observations))
            horizon, predicted_pose = prepared.embodiment.chunk_horizon, None
            if key_pose is not None and fast is not None:
                raise ValueError("a given key pose needs the eager path: the fast path has no key-pose input")
            if fast is None:
                given = None if key_pose is None else self._key_pose_tensor(key_pose, prepared, len(observations))
                actions, predicted_pose = self.sample_actions(features, prepared.state, prepared.dim_mask, horizon,
                                                              generator, num_steps, prefix_rows, given)
            else:
                shape = (len(observations), horizon, self.max_action_dim)
                noise = self._initial_noise(shape, prepared.dim_mask, generator, prepared.state.dtype)
                actions = fast.sample(features, prepared.state, prepared.dim_mask, noise,
                                      num_steps or self.config.num_inference_steps, prefix_rows)
            self._lap(timings, "decoder", clock)
        return self._to_chunks(actions, prepared, observations, timings, predicted_pose)

    def enable_fast_inference(
        self,
        compile: bool | None = None,
        *,
        decoder_dtype: torch.dtype | None = None,
        prompt_bucket: int = DEFAULT_PROMPT_BUCKET,
        compile_backbone: bool | None = None,
    ) -> FastInference:
        """Switch :meth:`predict_chunks` to the fast path (see :mod:`.fast_path`).

        ``compile``: ``torch.compile`` the Euler loop (CUDA graphs on CUDA); None = on CUDA
        devices only. ``compile_backbone``: also the backbone (with ``compile``); None = on
        CUDA only (on CPU it compiles for minutes and runs no faster). ``decoder_dtype``:
        None = bfloat16 on CUDA, unchanged elsewhere. Call after moving the policy to its device.
        """
        cuda = self.device.type == "cuda"
        compile_backbone = cuda if compile_backbone is None else compile_backbone
        dtype = decoder_dtype if decoder_dtype is not None else (torch.bfloat16 if cuda else None)
        if dtype is not None:
            self.decoder.to(dtype)
        self.fast = FastInference(self.backbone, self.decoder, compile=cuda if compile is None else bool(compile),
                                  prompt_bucket=prompt_bucket, compile_backbone=compile_backbone)
        return self.fast

    def warm_up(self, embodiment: EmbodimentLike, *, num_steps: int | None = None, batch_size: int = 1,
                instruction: str = "pick up the object and place it in the box") -> float:
        """Run one dummy chunk (grey images, home state) so the first real one is not the one
        that compiles, allocates and initialises; returns its seconds."""
        emb = self.resolve_embodiment(embodiment)
        images = {c.name: np.full((*c.image_size, 3), 128, np.uint8) for c in emb.cameras if c.required}
        observation = Observation(images=images, state=emb.home_position, instruction=instruction)
        started = time.perf_counter()
        self.predict_chunks([observation] * batch_size, emb, seed=0, num_steps=num_steps)
        return time.perf_counter() - started

    def prepare_observations(
        self,
        observations: Sequence[Observation],
        embodiment: EmbodimentLike,
        *,
        text_only: bool = False,
    ) -> PreparedObservations:
        """Check observations and build backbone inputs and the normalised, padded state."""
        emb = self.resolve_embodiment(embodiment)
        stats = self.normalization_for(emb)
        if not observations:
            raise ModelInputError("no observations given")
        prompts = [observation_prompt(obs, emb, text_only) for obs in observations]
        model_state = np.stack([
            emb.actions_to_model(check_vector(obs.state, emb.state_dim, f"state of {emb.name}"))
            for obs in observations
        ])
        states = [stats.normalize_state(row) for row in model_state]
        state, dim_mask = self._pad_rows(np.stack(states), [emb.action_dim] * len(states))
        return PreparedObservations(emb, stats, self.backbone.prepare(prompts), state, dim_mask, model_state)

    def sample_actions(
        self,
        features: BackboneFeatures,
        state: torch.Tensor,
        dim_mask: torch.Tensor,
        horizon: int,
        generator: torch.Generator | None = None,
        num_steps: int | None = None,
        prefix: torch.Tensor | None = None,
        key_pose: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Normalised, padded actions (B, horizon, max_action_dim) from cached backbone features,
        and the key-pose head's prediction (B, max_action_dim; None without the head).
        ``prefix`` (B, d, max_action_dim), normalised: the actions every chunk starts with;
        ``key_pose`` (B, max_action_dim), normalised: the key pose to act on instead."""
        # once, reused by every step
        rows = None if key_pose is None else torch.ones(len(key_pose), dtype=torch.bool, device=key_pose.device)
        memory, memory_mask, predicted = self.decoder.condition(features.features, features.mask, dim_mask,
                                                                features.token_grid, key_pose, rows)

        def velocity(sample: torch.Tensor, flow_time: torch.Tensor) -> torch.Tensor:
            return self.decoder(
                sample, flow_time, state, dim_mask, memory, memory_mask, cond_projected=True
            )

        shape = (state.shape[0], horizon, self.max_action_dim)
        noise = self._initial_noise(shape, dim_mask, generator, state.dtype)
        return euler_sample(velocity, noise, num_steps or self.config.num_inference_steps, prefix), predicted

    def _key_pose_tensor(self, key_pose: np.ndarray, prepared: PreparedObservations, batch: int) -> torch.Tensor:
        """Rig-unit key poses ((action_dim,) or (B, action_dim)) normalised and padded (B, max_action_dim)."""
        emb = prepared.embodiment
        rows = np.broadcast_to(np.asarray(key_pose, dtype=np.float64), (batch, emb.action_dim))
        padded = np.zeros((batch, self.max_action_dim))
        padded[:, : emb.action_dim] = prepared.stats.normalize_actions(emb.actions_to_model(rows))
        return torch.as_tensor(padded, dtype=prepared.state.dtype, device=self.device)

    def _initial_noise(self, shape, dim_mask: torch.Tensor, generator, dtype) -> torch.Tensor:
        """Where every chunk's flow starts (both samplers): padded noise times ``noise_scale``."""
        return self.config.noise_scale * padded_noise(shape, dim_mask, generator, self.device, dtype)

    def _to_chunks(
        self, actions, prepared: PreparedObservations, observations, timings, key_poses=None
    ) -> list[ActionChunk]:
        emb = prepared.embodiment
        model_units = prepared.stats.unnormalize_chunk(
            actions[..., : emb.action_dim].float().cpu().numpy(), prepared.model_state
        )
        rig = emb.actions_to_rig(model_units)
        poses = [None] * len(observations) if key_poses is None else emb.actions_to_rig(
            prepared.stats.unnormalize_actions(key_poses[:, : emb.action_dim].float().cpu().numpy()))
        return [
            ActionChunk(
                actions=rig[i],
                names=list(emb.action_names),
                dt=emb.dt,
                start_time=float(obs.stamp),
                embodiment=emb.name,
                chunk_id=next(self._chunk_ids),
                timings=dict(timings),
                key_pose=poses[i],
            )
            for i, obs in enumerate(observations)
        ]

    def _lap(self, timings: dict[str, float], phase: str, since: float) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # GPU work is asynchronous; time it honestly
        now = time.perf_counter()
        timings[phase] = now - since
        return now

    def _prefix_tensor(self, prefix, prepared: PreparedObservations, batch: int) -> torch.Tensor | None:
        """Rig-unit prefix (d, action_dim) -> normalised, padded (batch, d, max_action_dim)."""
        if prefix is None or len(prefix) == 0:
            return None
        emb = prepared.embodiment
        rows = np.asarray(prefix, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != emb.action_dim or len(rows) >= emb.chunk_horizon:
            raise ModelInputError(
                f"prefix must be (d < {emb.chunk_horizon}, {emb.action_dim}) actions, got {rows.shape}"
            )
        if not np.all(np.isfinite(rows)):
            raise ModelInputError("prefix contains NaN or inf")
        # one prefix for the batch, normalised from each observation's state (relative chunks)
        normalised = prepared.stats.normalize_chunk(emb.actions_to_model(rows)[None], prepared.model_state)
        padded, _ = self._pad_rows(np.broadcast_to(normalised, (batch, *normalised.shape[1:])), [emb.action_dim] * batch)
        return padded.to(prepared.state.dtype)

    def _pad_rows(self, rows: np.ndarray, dims: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, ..., d) rows, sample i using its first dims[i] columns -> (B, ..., D) and (B, D) mask."""
        padded = torch.zeros(*rows.shape[:-1], self.max_action_dim)
        mask = torch.zeros(len(dims), self.max_action_dim)
        for i, dim in enumerate(dims):
            padded[i, ..., :dim] = torch.as_tensor(rows[i, ..., :dim], dtype=torch.float32)
            mask[i, :dim] = 1.0
        return padded.to(self.device), mask.to(self.device)

    # -- training ------------------------------------------------------------------------------
    def compute_loss(
        self, batch: dict, *, generator: torch.Generator | None = None, state_dropout: float = 0.0,
        subgoal_weight: float = 0.0, teacher_forcing: float = 0.0,
    ) -> dict[str, torch.Tensor]:
        """Flow-matching loss of one batch (normalisation is applied here).

        Batch format (B samples; D >= every sample's action_dim, extra columns ignored):
            ``images``: optional dict camera -> uint8 (B, H, W, 3) RGB; absent or empty = text-only.
            ``image_mask``: optional dict camera -> bool (B,), False where a sample lacks that camera.
            ``state``: float (B, D), model units, not normalised.
            ``actions``: float (B, H, D), model units, not normalised, H <= max_horizon.
            ``action_is_pad``: optional bool (B, H), True = padded step (left out of the loss).
            ``instructions``: list of B non-empty strings.
            ``embodiment``: one name / :class:`Embodiment` for the batch, or a list of B.
            ``subgoal``: optional float (B, D) next key pose, model units (:mod:`..data.keyframes`).
        Computed by :func:`.losses.flow_matching_loss`. Returns ``loss`` (scalar,
        differentiable: the flow loss plus ``subgoal_weight`` times
        ``subgoal_loss``), ``flow_loss``, ``subgoal_loss`` (MSE of the decoder's key-pose
        prediction, normalised units; 0 without the head or the targets), ``time`` (B,) and
        ``per_sample`` (B,) flow losses.
        ``generator`` (CPU) makes the flow times and noise reproducible. ``state_dropout``: the
        fraction of samples whose normalised state is replaced by 0 (the dataset mean), so the
        decoder must read the scene from the images and the instruction. ``teacher_forcing``:
        the fraction of samples whose decoder reads the true key pose (``subgoal``) instead of
        the head's prediction, while the decoder is in training mode.
        """
        return flow_matching_loss(self, batch, generator, state_dropout, subgoal_weight, teacher_forcing)

    def add_subgoal_head(self) -> None:
        """Give the decoder the key-pose head (fresh weights) if it has none; see
        :meth:`.dit.ActionDiT.condition`. The saved config records it."""
        self.decoder.add_subgoal_head()
        self.config = dataclasses.replace(self.config, decoder=self.decoder.config)

    def set_noise_scale(self, scale: float) -> None:
        """Start every chunk's flow from noise times ``scale`` in [0, 1] (see
        :class:`.config.PolicyConfig`); saved with the policy."""
        self.config = dataclasses.replace(self.config, noise_scale=float(scale))

    def add_key_pose_input(self) -> None:
        """Give the decoder the key-pose input (:meth:`.dit.ActionDiT.add_key_pose_input`)."""
        self.decoder.add_key_pose_input()
        self.config = dataclasses.replace(self.config, decoder=self.decoder.config)

    def add_grounding_pointer(self) -> None:
        """Give the key-pose head (added if missing) its grounding pointer; see
        :class:`.dit.KeyPoseHead` and :mod:`qwen_vla_ros.training.grounding`."""
        self.decoder.add_grounding_pointer()
        self.config = dataclasses.replace(self.config, decoder=self.decoder.config)

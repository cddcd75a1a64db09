"""The training loop shared by every stage, on one CPU, one GPU or many through ``accelerate``.

One process per device (``accelerate launch``); this module only talks to
``accelerate.Accelerator``, so the same code runs single-process, DDP and FSDP. Per
optimizer step: ``grad_accum_steps`` micro-batches (gradient sync only on the last),
gradient clipping, AdamW, the learning-rate schedule (stepped once per optimizer step,
whatever the number of processes), the decoder EMA. Every ``eval.every_steps`` the
held-out loss is computed (with the EMA decoder when enabled: the weights that get
saved); every ``checkpoint.every_steps`` a resumable checkpoint is written. At the end
``<output>/final`` holds a ``QwenVLAPolicy.save_pretrained`` folder with normalisation
statistics computed from the training data.

Randomness is derived from (seed, process, step, micro-step): batches and flow noise of a
resumed run are those the uninterrupted run would have used.
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from ..embodiment import load_embodiment
from ..model.inputs import batch_embodiment_names, batch_prompts
from ..model.normalization import NormStats
from ..model.policy import QwenVLAPolicy
from . import checkpoints as ckpt
from .config import StageConfig
from .data import norm_stats_from_sources, open_sources, training_batches, validation_batches
from .ema import DecoderEMA
from .errors import TrainingError
from .freezing import apply_freeze, count_parameters, parameter_groups, set_train_mode
from .hooks import PolicyLoss, load_image_text_hook
from .lora import (
    ADAPTER_DIR,
    apply_lora,
    cast_frozen,
    enable_gradient_checkpointing,
    lora_parameter_count,
    save_adapters,
)
from .memory import ActivationShape, estimate_training_memory, peak_memory_bytes, reset_peak_memory
from .rl import EnvFactory, RolloutSource, load_env_factory, run_episode
from .summary import TrainSummary

FINAL_DIR = "final"
SUMMARY_FILE = "train_summary.json"


def step_seed(*parts: int) -> int:
    """A 63-bit seed from integers (seed, rank, step, ...), for torch generators."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def load_initial_policy(init: str, config: StageConfig) -> QwenVLAPolicy:
    """``tiny``/``small`` build a random policy offline (model.tiny); a policy folder (``policy_config.json``)
    or hub id loads it; a bare Qwen VL model folder (``config.json``, e.g. Qwen3.5-4B) gets a
    fresh decoder of ``config.decoder_preset`` (the usual start of T2A)."""
    from ..model.tiny import BACKBONE_SIZES, offline_policy

    if init in BACKBONE_SIZES:  # a random policy built offline: ``tiny`` or ``small``
        return offline_policy(config.tiny_family, init, seed=config.seed)
    folder = Path(init)
    if folder.is_dir() and not (folder / "policy_config.json").is_file() and (folder / "config.json").is_file():
        return QwenVLAPolicy.from_backbone(str(folder), config.decoder_preset, seed=config.seed)
    return QwenVLAPolicy.from_pretrained(init)


def prepare_policy_for_training(policy: QwenVLAPolicy, config: StageConfig, *, train_lm_head: bool = False) -> None:
    """Which weights train and how they are stored: freezing, LoRA adapters, frozen-weight
    dtype, gradient checkpointing (in that order: LoRA freezes the base weights it adapts);
    and the inference noise scale the saved policy keeps."""
    apply_freeze(policy, config.freeze, text_only=config.text_only, train_lm_head=train_lm_head)
    if config.lora.enabled:
        apply_lora(policy, config.lora, seed=config.seed)
    if config.frozen_dtype is not None:
        cast_frozen(policy, getattr(torch, config.frozen_dtype))
    enable_gradient_checkpointing(policy, config.gradient_checkpointing)
    if config.noise_scale is not None:  # an inference setting, saved with the policy
        policy.set_noise_scale(config.noise_scale)


def make_accelerator(config: StageConfig, cpu: bool = False):
    """An Accelerator; DDP looks for unused weights only when backbone parts train.

    Without any accelerator device the processes run on the CPU: accelerate only joins
    processes started by ``accelerate launch``/``torchrun`` into one gloo group when told
    ``cpu=True``, otherwise each would silently train alone.
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    cpu = cpu or not torch.accelerator.is_available()
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=config.freeze != "all")]
    accelerator = Accelerator(cpu=cpu, kwargs_handlers=handlers)
    if cpu and accelerator.num_processes > 1 and os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        shard_cpu_processes(accelerator)
    return accelerator


def shard_cpu_processes(accelerator) -> None:
    """FSDP over a gloo group of CPU processes, as configured by ``accelerate launch``.

    accelerate builds its FSDP state only for accelerator devices: on CPU it silently falls
    back to data parallelism and ignores the FSDP settings. The processes are already one
    gloo group, so switching the shared state to FSDP, with the plugin read from the launch
    configuration (``FSDP_*`` variables), makes ``prepare``, ``save_state`` and
    ``get_state_dict`` take accelerate's own FSDP paths (what the CPU test runs).
    """
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin()
    if plugin.fsdp_version != 2:
        raise TrainingError("FSDP on CPU processes needs fsdp_version: 2 (FSDP1 shards on accelerator devices only)")
    accelerator.state.fsdp_plugin = plugin
    # every later AcceleratorState() copies the process state over its own: set both
    PartialState().distributed_type = DistributedType.FSDP
    accelerator.state.distributed_type = DistributedType.FSDP


@dataclass
class _Progress:
    losses: list[float]
    grad_norm: float = float("nan")
    subgoal_losses: list[float] = field(default_factory=list)


class Trainer:
    """Builds everything for one stage and runs it; see :func:`train`."""

    def __init__(self, config: StageConfig, init: str, output: str | Path, *, env_factory: EnvFactory | None = None,
                 progress: bool = True, accelerator=None):
        from transformers import get_scheduler

        self.config, self.init, self.output = config, init, Path(output)
        self.accelerator = accelerator or make_accelerator(config)
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        self.show_progress = progress and self.accelerator.is_main_process
        self.policy = load_initial_policy(init, config)
        self.sources = open_sources(
            config.datasets, config.embodiment, text_only=config.text_only,
            val_fraction=config.eval.val_fraction, seed=config.seed,
        )
        if not self.sources and config.stage != "rl":
            raise TrainingError(f"stage {config.stage} needs at least one dataset (--dataset PATH)")
        self._set_norm_stats()
        self.val_batches = validation_batches(self.sources, config.batch_size, config.eval.max_batches)
        self.val_subgoal_loss = float("nan")  # key-pose loss of the latest evaluate()
        hook = load_image_text_hook(config.image_text)
        self.hook = hook
        if config.subgoal_weight > 0:
            self.policy.add_subgoal_head()  # before the optimizer, so its weights train
        if config.key_pose_teacher_forcing > 0:
            self.policy.add_key_pose_input()  # what the decoder is taught, it reads in its input
        if hook is not None and callable(getattr(hook, "prepare", None)):
            hook.prepare(self.policy, dict(config.image_text.options))  # heads the hook trains
        prepare_policy_for_training(self.policy, config, train_lm_head=hook is not None)
        self.memory_estimate = self._estimate_memory()
        optimizer = torch.optim.AdamW(
            parameter_groups(self.policy, config.optimizer), betas=config.optimizer.betas, eps=config.optimizer.eps
        )
        self.scheduler = get_scheduler(
            config.schedule.name, optimizer, num_warmup_steps=config.schedule.warmup_steps,
            num_training_steps=config.max_steps,
        )
        self.model, self.optimizer = self.accelerator.prepare(PolicyLoss(self.policy, hook, config.image_text, config.state_dropout,
                                                                        config.subgoal_weight,
                                                                        config.key_pose_teacher_forcing), optimizer)
        self.policy = self.accelerator.unwrap_model(self.model).policy
        self.ema = DecoderEMA(self.policy.decoder, config.ema.decay) if config.ema.enabled else None
        self.state = ckpt.TrainerState(stage=config.stage)
        self.env_factory = env_factory
        self.rl_source: RolloutSource | None = None
        self._env = None  # RL: made on the first rollout

    # -- setup ----------------------------------------------------------------------------
    def _estimate_memory(self):
        """Print (main process) and return the memory estimate, activations from one held-out batch."""
        estimate = estimate_training_memory(
            self.policy, self._activation_shape(),
            backbone_checkpointing=self.config.gradient_checkpointing.backbone,
            decoder_checkpointing=self.config.gradient_checkpointing.decoder,
        )
        if self.config.lora.enabled:
            self._print(f"lora: {lora_parameter_count(self.policy):,} adapter weights (rank {self.config.lora.rank})")
        self._print(estimate.to_text())
        return estimate

    def _activation_shape(self) -> ActivationShape | None:
        if not self.val_batches:
            return None
        batch = self.val_batches[0]
        embodiments = [self.policy.resolve_embodiment(e) for e in batch_embodiment_names(batch)]
        inputs = self.policy.backbone.prepare(batch_prompts(batch, embodiments))
        size = len(batch["instructions"])
        patches = inputs["pixel_values"].shape[0] // size if "pixel_values" in inputs else 0
        autocast = self.accelerator.mixed_precision in ("bf16", "fp16")
        return ActivationShape(
            batch=size, tokens=int(inputs["input_ids"].shape[1]), vision_patches=int(patches),
            horizon=int(np.asarray(batch["actions"]).shape[1]),
            value_bytes=2 if autocast else self.policy.backbone.dtype.itemsize,
            decoder_value_bytes=2 if autocast else next(self.policy.decoder.parameters()).element_size(),
        )

    def _relative_embodiments(self) -> list[str]:
        """Embodiments whose chunks are relative: as configured, else as the --init policy has them."""
        names = {s.embodiment.name for s in self.sources}
        if self.config.relative_actions is not None:
            return sorted(names) if self.config.relative_actions else []
        known = self.policy.norm_stats
        return sorted(n for n in names if n in known and known[n].relative)

    def _kept(self, name: str, from_data: NormStats) -> NormStats:
        """norm_stats: keep -- the --init policy's statistics; where this stage switches relative
        actions on or off, its absolute ones kept and the motions' statistics from the data added
        (or dropped), so the key poses' scale does not move."""
        kept = self.policy.norm_stats[name]
        self._print(f"keeping the initial policy's statistics for {name!r} (norm_stats: keep)")
        if from_data.relative and not kept.relative:
            self._print(f"  with relative actions for {name!r}: motion statistics from this stage's data")
            return kept.with_relative_actions(from_data.motions, from_data.relative_dims)
        if kept.relative and self.config.relative_actions is False:
            return kept.absolute()
        return kept

    def _set_norm_stats(self) -> None:
        for name, stats in norm_stats_from_sources(self.sources, self._relative_embodiments()).items():
            if self.config.norm_stats == "keep" and name in self.policy.norm_stats:
                stats = self._kept(name, stats)
            self.policy.set_normalization(name, stats)
        if self.config.stage == "rl" and self.rl_embodiment.name not in self.policy.norm_stats:
            self._print(f"warning: no statistics for {self.rl_embodiment.name!r} in the policy or data; "
                        "using the embodiment's limits (give --dataset to compute them)")
            self.policy.set_normalization(self.rl_embodiment.name, NormStats.from_limits(self.rl_embodiment))

    @cached_property
    def rl_embodiment(self):
        """The simulated robot: --embodiment, else the first dataset's."""
        if self.config.embodiment:
            return load_embodiment(self.config.embodiment)
        if self.sources:
            return self.sources[0].embodiment
        raise TrainingError("stage rl needs --embodiment (the simulated robot)")

    def resume(self) -> None:
        found = ckpt.latest_checkpoint(self.output)
        if found is None:
            raise TrainingError(f"--resume: no complete checkpoint under {self.output / ckpt.CHECKPOINTS}")
        self.state = ckpt.load_checkpoint(self.accelerator, found, self.config.stage, self.ema, self.scheduler)
        self._print(f"resumed from {found} at step {self.state.step}")

    def _batches(self):
        config, start = self.config, self.state.step
        if config.stage != "rl":
            return training_batches(self.sources, config.batch_size, config.grad_accum_steps, config.seed,
                                    self.rank, start, config.num_workers)
        if self.accelerator.distributed_type.name == "FSDP":
            raise TrainingError("stage rl rolls out the unsharded policy: use DDP or one process, not FSDP")
        demos = (training_batches(self.sources, config.batch_size, 1, config.seed, self.rank, start, config.num_workers)
                 if self.sources and config.rl.demo_fraction > 0 else None)
        embodiment = self.rl_embodiment
        self.rl_source = RolloutSource(
            config.rl, embodiment, embodiment.chunk_horizon, self._collect_episodes, batch_size=config.batch_size,
            micro_steps=config.grad_accum_steps, seed=config.seed, rank=self.rank, text_only=config.text_only,
            demo_batches=demos,
        )
        return self.rl_source.batches(start)

    def _collect_episodes(self, step: int, round_number: int, count: int):
        embodiment = self.rl_embodiment
        if self._env is None:
            self._env = (self.env_factory or load_env_factory(self.config.rl.env))(embodiment, self.config.rl)

        def act(observation, seed):
            chunk = self.policy.predict_chunk(observation, embodiment, seed=seed, text_only=self.config.text_only)
            return chunk.actions

        self.policy.eval()
        own_noise = self.policy.config.noise_scale
        if self.config.rl.rollout_noise_scale is not None:
            self.policy.set_noise_scale(self.config.rl.rollout_noise_scale)
        try:
            episodes = [
                run_episode(self._env, act, self.config.rl,
                            step_seed(self.config.seed, self.rank, step, round_number, i) % 2**31)
                for i in range(count)
            ]
        finally:
            self.policy.set_noise_scale(own_noise)
            set_train_mode(self.policy, self.config.freeze, self.config.text_only)
        returns = [e.episode_return for e in episodes]
        self._print(f"rl round {round_number}: {count} episodes, mean return {np.mean(returns):.3f}, "
                    f"successes {sum(e.success(self.config.rl.success_threshold) for e in episodes)}")
        return episodes

    # -- steps ----------------------------------------------------------------------------
    def _optimizer_step(self, batches, progress: _Progress) -> None:
        config, step = self.config, self.state.step
        for micro in range(config.grad_accum_steps):
            last = micro == config.grad_accum_steps - 1
            generator = torch.Generator().manual_seed(step_seed(config.seed, self.rank, step, micro))
            with nullcontext() if last else self.accelerator.no_sync(self.model):
                out = self.model(next(batches), generator=generator, step=step)
                self.accelerator.backward(out["loss"] / config.grad_accum_steps)
            # the action loss, comparable with the validation loss (an image-text hook adds to "loss")
            progress.losses.append(float(out["action_loss"].detach()))
            progress.subgoal_losses.append(float(out["subgoal_loss"].detach()))
        if config.clip_grad_norm is not None:
            norm = self.accelerator.clip_grad_norm_(self.model.parameters(), config.clip_grad_norm)
            progress.grad_norm = float(norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update()
        self.state.step += 1

    @torch.no_grad()
    def evaluate(self) -> float | None:
        """Mean held-out loss (EMA decoder when enabled), identical batches and noise every time."""
        if not self.val_batches:
            return None
        self.policy.eval()
        total = torch.zeros(3, device=self.accelerator.device)  # flow loss, key-pose loss (sums), samples
        rounds = -(-len(self.val_batches) // self.world)  # every process runs as many forwards (FSDP)
        with self.ema.applied() if self.ema is not None else nullcontext():
            for k in range(rounds):
                index = k * self.world + self.rank
                batch = self.val_batches[min(index, len(self.val_batches) - 1)]
                generator = torch.Generator().manual_seed(step_seed(self.config.seed, 99991, index))
                out = self.model(batch, generator=generator, step=None)
                size = float(len(batch["instructions"])) if index < len(self.val_batches) else 0.0
                total += torch.stack([out["action_loss"].float() * size, out["subgoal_loss"].float() * size,
                                      torch.tensor(size, device=total.device)])
            self._reshard()  # the EMA swaps weights back on the shards
        set_train_mode(self.policy, self.config.freeze, self.config.text_only)
        total = self.accelerator.reduce(total, reduction="sum")
        self.val_subgoal_loss = float(total[1] / total[2])
        return float(total[0] / total[2])

    def _reshard(self) -> None:
        """FSDP2 keeps the root unit's weights gathered after a forward without backward;
        shard them again so code that swaps weights (the EMA) sees the sharded tensors."""
        if hasattr(self.model, "reshard"):
            self.model.reshard()

    # -- saving ---------------------------------------------------------------------------
    def export(self, directory: Path) -> Path:
        """Write the final policy (EMA decoder when enabled) with ``save_pretrained``."""
        self.accelerator.wait_for_everyone()
        with self.ema.applied() if self.ema is not None else nullcontext():
            if self.accelerator.distributed_type.name == "FSDP":
                state = self.accelerator.get_state_dict(self.model)  # gathered on the main process
                if self.accelerator.is_main_process:
                    full = load_initial_policy(self.init, self.config)
                    prepare_policy_for_training(full, self.config, train_lm_head=self.hook is not None)
                    full.load_state_dict({k.removeprefix("policy."): v for k, v in state.items()})
                    full.norm_stats = dict(self.policy.norm_stats)
                    self._save_policy(full, directory)
            elif self.accelerator.is_main_process:
                self._save_policy(self.policy, directory)
        self.accelerator.wait_for_everyone()
        return directory

    def _save_policy(self, policy: QwenVLAPolicy, directory: Path) -> None:
        """``save_pretrained`` (LoRA merged into the backbone), and the adapters alone if asked."""
        policy.save_pretrained(directory)
        if self.config.lora.enabled and self.config.lora.save_adapters:
            save_adapters(policy, directory / ADAPTER_DIR)

    def _mean_over_processes(self, value: float) -> float:
        tensor = torch.tensor(value, dtype=torch.float32, device=self.accelerator.device)
        return float(self.accelerator.reduce(tensor, reduction="mean"))

    def _print(self, text: str) -> None:
        if self.accelerator.is_main_process:
            from tqdm import tqdm

            tqdm.write(text)

    def _progress_line(self, loss: float, grad_norm: float, steps_per_s: float, key_pose: str | None) -> str:
        key = f", key-pose loss {key_pose}" if key_pose is not None else ""
        return (f"step {self.state.step}/{self.config.max_steps}: train loss {loss:.4f}{key}, "
                f"lr {self.scheduler.get_last_lr()[0]:.2e}, grad norm {grad_norm:.3f}, {steps_per_s:.2f} steps/s")

    # -- the loop -------------------------------------------------------------------------
    def run(self, resume: bool = False) -> TrainSummary:
        from tqdm import tqdm

        config = self.config
        if resume:
            self.resume()
        start_step = self.state.step
        if not self.state.evals:  # a resumed run keeps the loss measured before any training
            self._record_eval(self.evaluate(), float("nan"))
        reset_peak_memory(self.accelerator.device)
        started = time.perf_counter()
        batches = self._batches()
        set_train_mode(self.policy, config.freeze, config.text_only)
        bar = tqdm(total=config.max_steps, initial=start_step, disable=not self.show_progress, desc=config.stage)
        progress = _Progress(losses=[])
        train_losses: list[float] = []
        while self.state.step < config.max_steps:
            self._optimizer_step(batches, progress)
            bar.update(1)
            if self.state.step % config.log_every == 0 or self.state.step == config.max_steps:
                train_losses.append(self._mean_over_processes(float(np.mean(progress.losses))))
                extra = {"key_pose": f"{np.mean(progress.subgoal_losses):.4f}"} if config.subgoal_weight > 0 else {}
                bar.set_postfix(loss=f"{train_losses[-1]:.4f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}",
                                grad=f"{progress.grad_norm:.3f}", **extra)
                if not self.show_progress:  # a log file (nohup, CI) gets a line instead of the bar
                    rate = (self.state.step - start_step) / max(time.perf_counter() - started, 1e-9)
                    self._print(self._progress_line(train_losses[-1], progress.grad_norm, rate, extra.get("key_pose")))
                progress.losses, progress.subgoal_losses = [], []
            if self.state.step % config.eval.every_steps == 0 and self.state.step < config.max_steps:
                self._record_eval(self.evaluate(), train_losses[-1] if train_losses else float("nan"))
            if self.state.step % config.checkpoint.every_steps == 0 or self.state.step == config.max_steps:
                ckpt.save_checkpoint(self.accelerator, self.output, self.state, self.ema, self.scheduler,
                                     config.checkpoint.keep_last)
        bar.close()
        if self._env is not None:
            self._env.close()
        if callable(getattr(self.hook, "close", None)):
            self.hook.close()  # a hook's simulators and renderers (training/grounding.py)
        elapsed = time.perf_counter() - started
        self.peak_memory = peak_memory_bytes(self.accelerator.device)
        final_val = self.evaluate()
        self._record_eval(final_val, train_losses[-1] if train_losses else float("nan"))
        policy_dir = self.export(self.output / FINAL_DIR)
        return self._summary(start_step, elapsed, train_losses, policy_dir)

    def _record_eval(self, val_loss: float | None, train_loss: float) -> None:
        if self.state.evals and self.state.evals[-1]["step"] == self.state.step:
            return  # already evaluated at this step (resume, or the last step)
        record = {"step": self.state.step, "val_loss": val_loss, "train_loss": train_loss}
        key_pose = ""
        if self.config.subgoal_weight > 0 and val_loss is not None:
            record["val_subgoal_loss"] = self.val_subgoal_loss
            key_pose = f", key-pose loss {self.val_subgoal_loss:.4f}"
        self.state.evals.append(record)
        if val_loss is not None:
            self._print(f"step {self.state.step}: val loss {val_loss:.4f}{key_pose}"
                        + ("" if np.isnan(train_loss) else f", train loss {train_loss:.4f}"))

    def _summary(self, start_step: int, elapsed: float, train_losses: list[float], policy_dir: Path) -> TrainSummary:
        vals = [e["val_loss"] for e in self.state.evals if e["val_loss"] is not None]
        steps_done = self.state.step - start_step
        summary = TrainSummary(
            stage=self.config.stage, processes=self.world, device=str(self.accelerator.device),
            start_step=start_step, step=self.state.step, samples_per_step=self.config.batch_size
            * self.config.grad_accum_steps * self.world,
            train_loss=train_losses[-1] if train_losses else None,
            initial_val_loss=vals[0] if vals else None, final_val_loss=vals[-1] if vals else None,
            steps_per_s=steps_done / elapsed if elapsed > 0 and steps_done else 0.0, seconds=elapsed,
            policy_dir=str(policy_dir), checkpoint_dir=str(ckpt.latest_checkpoint(self.output) or ""),
            parameters=count_parameters(self.policy),
            rl_rounds=[vars(r) for r in self.rl_source.rounds] if self.rl_source else [],
            memory_estimate=self.memory_estimate.to_dict(),
            peak_memory_bytes=self.peak_memory[0], peak_memory_source=self.peak_memory[1],
        )
        if self.accelerator.is_main_process:
            summary.write(self.output / SUMMARY_FILE)
        return summary


def train(config: StageConfig, init: str, output: str | Path, *, resume: bool = False,
          env_factory: EnvFactory | None = None, progress: bool = True, accelerator=None) -> TrainSummary:
    """Run one stage; returns (and writes to ``<output>/train_summary.json``) its summary.

    Args:
        config: the validated stage config (:func:`~.config.load_stage_config`).
        init: ``tiny`` (random tiny policy, offline) or a ``save_pretrained`` folder.
        output: run folder: ``final/`` (the policy), ``checkpoints/``, the summary.
        resume: continue from the latest complete checkpoint in ``output``.
        env_factory: RL only: ``(embodiment, rl_config) -> RolloutEnv`` (default: MuJoCo ALOHA).
    """
    trainer = Trainer(config, init, output, env_factory=env_factory, progress=progress, accelerator=accelerator)
    return trainer.run(resume=resume)

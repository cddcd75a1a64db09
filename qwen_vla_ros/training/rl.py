"""RL stage: reward-weighted flow matching on the policy's own rollouts in simulation.

Algorithm (reward-weighted regression, Peters & Schaal 2007, applied to a flow policy):

1. Roll out the current policy in the environment: at every replanning point predict a
   chunk, execute its first ``execute_steps`` actions, observe again. An episode's return
   R is the best reward reached, in [0, 1] (1 = task solved).
2. Give each episode a weight: ``reward_weighted``: w = exp((R - max R) / temperature);
   ``filtered_bc``: w = 1 if R >= success_threshold else 0 (behaviour cloning of
   successes only).
3. Train with the ordinary flow-matching loss on samples drawn from the replay buffer with
   probability proportional to w. Each sample is an observation at a replanning point
   with, as target, the actions actually executed over the next horizon (padded at the
   episode end), exactly like a demonstration chunk.

Drawing samples in proportion to w makes the plain loss an unbiased estimate of the
weighted loss sum_i w_i L_i / sum_i w_i, the M-step of reward-weighted regression: the
policy moves toward the actions of its better episodes. It needs no likelihood of a flow
policy (which is expensive) and no critic, and stays stable; its limits are that it only
re-weights what the policy already does (exploration comes from the flow's noise, at
``RLConfig.rollout_noise_scale`` during rollouts), and
rollouts cost far more than updates. ``demo_fraction`` mixes demonstration batches in to
keep the policy near the demonstrations.

The environment is injectable: any factory ``(embodiment, rl_config) -> RolloutEnv``. The
default is :class:`~qwen_vla_ros.training.sim_env.AlohaSimEnv` (MuJoCo, no ROS).
Each process of a distributed run collects its own episodes (different seeds) and weights
them among themselves. The buffer is not saved in checkpoints: a resumed run starts by
collecting a fresh round.
"""

from __future__ import annotations

import importlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from ..embodiment import Embodiment
from ..types import Observation
from .config import RLConfig
from .errors import TrainingError

#: Rounds collected in a row without a single success before filtered_bc gives up.
MAX_EMPTY_ROUNDS = 5


@dataclass
class StepResult:
    """What one control step gave: reward in [0, 1], whether the episode ended, and the
    action actually applied (rig units) where the environment clamped it (None = as given).
    """

    reward: float
    done: bool
    applied: np.ndarray | None = None


class RolloutEnv(Protocol):
    """An environment the RL stage can roll a policy out in (rig units, simulated time)."""

    def reset(self, seed: int) -> Observation: ...

    def observe(self) -> Observation: ...

    def step(self, action: np.ndarray) -> StepResult: ...

    def close(self) -> None: ...


EnvFactory = Callable[[Embodiment, RLConfig], RolloutEnv]
#: (observation, seed) -> (horizon, action_dim) actions in rig units.
ActFn = Callable[[Observation, int], np.ndarray]


@dataclass
class Episode:
    """One rollout: observations at the replanning points and every executed action."""

    seed: int
    observations: list[Observation] = field(default_factory=list)
    plan_steps: list[int] = field(default_factory=list)  # control step of each observation
    actions: list[np.ndarray] = field(default_factory=list)  # executed, rig units
    episode_return: float = 0.0

    def success(self, threshold: float) -> bool:
        return self.episode_return >= threshold


def load_env_factory(spec: str | None) -> EnvFactory:
    """``module:callable`` to a factory; None gives the MuJoCo ALOHA sim."""
    if spec is None:
        from .sim_env import AlohaSimEnv

        return AlohaSimEnv.factory
    module_name, _, attribute = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as error:
        raise TrainingError(f"rl.env {spec!r}: cannot load 'module:callable' ({error})") from error


def run_episode(env: RolloutEnv, act: ActFn, config: RLConfig, seed: int) -> Episode:
    """Roll out for ``config.episode_steps`` control steps, replanning every ``execute_steps``."""
    episode = Episode(seed=seed)
    observation = env.reset(seed)
    step = 0
    while step < config.episode_steps:
        chunk = np.asarray(act(observation, seed * 1000 + len(episode.observations)))
        episode.observations.append(observation)
        episode.plan_steps.append(step)
        for action in chunk[: config.execute_steps]:
            result = env.step(action)
            # Learn from what was executed: a clamped action is what the rig really did.
            executed = action if result.applied is None else result.applied
            episode.actions.append(np.asarray(executed, dtype=np.float64))
            episode.episode_return = max(episode.episode_return, float(result.reward))
            step += 1
            if result.done or step >= config.episode_steps:
                return episode
        observation = env.observe()
    return episode


def episode_weights(returns: np.ndarray, config: RLConfig) -> np.ndarray:
    """Unnormalised weight per episode (see the module docstring)."""
    returns = np.asarray(returns, dtype=np.float64)
    if config.method == "filtered_bc":
        return (returns >= config.success_threshold).astype(np.float64)
    return np.exp((returns - returns.max()) / config.temperature)


def episode_samples(episode: Episode, embodiment: Embodiment, horizon: int) -> list[dict]:
    """One training sample per replanning point; the target is what was executed next."""
    executed = embodiment.actions_to_model(np.stack(episode.actions))
    samples = []
    for observation, start in zip(episode.observations, episode.plan_steps, strict=True):
        rows = np.minimum(start + np.arange(horizon), len(executed) - 1)
        samples.append(
            {
                "images": {k: v for k, v in observation.images.items() if k in embodiment.camera_names},
                "state": embodiment.actions_to_model(observation.state).astype(np.float32),
                "action": executed[rows].astype(np.float32),
                "action_is_pad": start + np.arange(horizon) >= len(executed),
                "instruction": observation.instruction,
            }
        )
    return samples


class ReplayBuffer:
    """The most recent episodes' samples, each carrying its episode's weight."""

    def __init__(self, config: RLConfig, embodiment: Embodiment, horizon: int):
        self.config, self.embodiment, self.horizon = config, embodiment, horizon
        self.episodes: deque[tuple[Episode, list[dict]]] = deque(maxlen=config.buffer_episodes)

    def add(self, episodes: list[Episode]) -> None:
        for episode in episodes:
            if episode.actions:
                self.episodes.append((episode, episode_samples(episode, self.embodiment, self.horizon)))

    def sample_weights(self) -> tuple[list[dict], np.ndarray]:
        """All samples and their sampling probabilities (zero total = nothing to learn from)."""
        if not self.episodes:
            return [], np.zeros(0)
        weights = episode_weights(np.array([e.episode_return for e, _ in self.episodes]), self.config)
        samples = [s for _, group in self.episodes for s in group]
        per_sample = np.concatenate([np.full(len(g), w) for (_, g), w in zip(self.episodes, weights, strict=True)])
        return samples, per_sample


def collate_rollout_samples(samples: list[dict], embodiment: Embodiment, text_only: bool) -> dict:
    """Buffer samples -> the batch format of ``QwenVLAPolicy.compute_loss``."""
    batch = {
        "state": torch.as_tensor(np.stack([s["state"] for s in samples])),
        "actions": torch.as_tensor(np.stack([s["action"] for s in samples])),
        "action_is_pad": torch.as_tensor(np.stack([s["action_is_pad"] for s in samples])),
        "instructions": [s["instruction"] for s in samples],
        "embodiment": embodiment,
    }
    if not text_only:
        cameras = [c for c in embodiment.camera_names if c in samples[0]["images"]]
        batch["images"] = {c: torch.as_tensor(np.stack([s["images"][c] for s in samples])) for c in cameras}
    return batch


@dataclass
class RoundStats:
    """Outcome of one collection round."""

    round: int
    step: int
    episodes: int
    mean_return: float
    success_rate: float


class RolloutSource:
    """Endless micro-batches for the RL stage: collects rounds of episodes, then samples.

    Args:
        collect: ``(step, round, count) -> episodes`` (the trainer rolls out the live policy;
            step and round together make the episode seeds unique, also after a resume).
        demo_batches: optional endless demonstration micro-batches (``demo_fraction``).
    """

    def __init__(
        self,
        config: RLConfig,
        embodiment: Embodiment,
        horizon: int,
        collect: Callable[[int, int, int], list[Episode]],
        *,
        batch_size: int,
        micro_steps: int,
        seed: int,
        rank: int,
        text_only: bool,
        demo_batches: Iterator[dict] | None = None,
    ):
        self.config, self.embodiment = config, embodiment
        self.buffer = ReplayBuffer(config, embodiment, horizon)
        self.collect = collect
        self.batch_size, self.micro_steps = batch_size, micro_steps
        self.seed, self.rank, self.text_only = seed, rank, text_only
        self.demo_batches = demo_batches
        self.rounds: list[RoundStats] = []

    def _collect_round(self, step: int) -> None:
        number = len(self.rounds)
        episodes = self.collect(step, number, self.config.episodes_per_round)
        returns = np.array([e.episode_return for e in episodes])
        self.buffer.add(episodes)
        self.rounds.append(
            RoundStats(number, step, len(episodes), float(returns.mean()),
                       float((returns >= self.config.success_threshold).mean()))
        )

    def _weighted_batch(self, step: int, micro: int) -> dict:
        samples, weights = self.buffer.sample_weights()
        rng = np.random.default_rng([self.seed, self.rank, step, micro, 11])
        picked = rng.choice(len(samples), size=self.batch_size, p=weights / weights.sum())
        return collate_rollout_samples([samples[i] for i in picked], self.embodiment, self.text_only)

    def _ensure_learnable(self, step: int) -> None:
        for _ in range(MAX_EMPTY_ROUNDS):
            if self.buffer.sample_weights()[1].sum() > 0:
                return
            self._collect_round(step)
        raise TrainingError(
            f"{MAX_EMPTY_ROUNDS} further rounds of rollouts without one episode that has a positive "
            f"weight (method {self.config.method}, success_threshold {self.config.success_threshold}); "
            "use method reward_weighted, a lower threshold, or a better initial policy"
        )

    def batches(self, start_step: int) -> Iterator[dict]:
        step = start_step
        while True:
            if step % self.config.updates_per_round == 0 or not self.buffer.episodes:
                self._collect_round(step)
            for micro in range(self.micro_steps):
                rng = np.random.default_rng([self.seed, self.rank, step, micro, 13])
                if self.demo_batches is not None and rng.random() < self.config.demo_fraction:
                    yield next(self.demo_batches)
                    continue
                self._ensure_learnable(step)
                yield self._weighted_batch(step, micro)
            step += 1

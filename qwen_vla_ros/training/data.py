"""Training data: held-out splits, weighted dataset mixing, batches, normalisation statistics.

Mixing: every batch comes from ONE dataset, drawn with probability weight / sum(weights).
One dataset per batch keeps camera sets and image sizes uniform inside a batch (embodiments
differ in both), while over many steps the mix follows the weights.

Determinism: the batch of (step, micro-step, rank) is a pure function of the seed. Each
dataset has an endless stream of sample positions (an epoch is a shuffled list of episode
blocks, see :class:`~qwen_vla_ros.data.dataset.EpisodeBlockSampler`, so a video segment is
decoded about once per epoch); resuming at step s replays only the cheap dataset draws of
steps < s, so a resumed run sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..data.dataset import LeRobotV3Dataset
from ..data.layout import ACTION_KEY, STATE_KEY
from ..embodiment import Embodiment, load_embodiment
from ..model.normalization import NormStats, VectorStats
from .config import DatasetEntry
from .errors import TrainingError

EPISODES_PER_BLOCK = 4


@dataclass
class TrainingSource:
    """One dataset of the mix, split into training and validation episodes."""

    entry: DatasetEntry
    embodiment: Embodiment
    train: LeRobotV3Dataset
    val: LeRobotV3Dataset | None


def split_episodes(count: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, val) episode indices; val holds round(fraction * count) episodes, at least one.

    No validation split when ``val_fraction`` is 0 or there is a single episode.
    """
    if count < 1:
        raise TrainingError("the dataset has no episodes")
    order = np.random.default_rng(seed).permutation(count).tolist()
    if val_fraction <= 0 or count < 2:
        return sorted(order), []
    n_val = min(count - 1, max(1, round(val_fraction * count)))
    return sorted(order[:-n_val]), sorted(order[-n_val:])


def open_sources(
    entries: Sequence[DatasetEntry],
    default_embodiment: str | None,
    *,
    text_only: bool,
    val_fraction: float,
    seed: int,
) -> list[TrainingSource]:
    """Open every dataset of the mix (no images at all in text-only mode)."""
    sources = []
    for number, entry in enumerate(entries):
        name = entry.embodiment or default_embodiment
        if not name:
            raise TrainingError(f"dataset {entry.path}: no embodiment given (set --embodiment or datasets[].embodiment)")
        embodiment = load_embodiment(name)
        cameras = [] if text_only else None  # [] skips video decoding entirely
        probe = LeRobotV3Dataset(entry.path, embodiment, cameras=cameras)
        train_eps, val_eps = split_episodes(len(probe.episodes), val_fraction, seed + number)
        train = LeRobotV3Dataset(entry.path, embodiment, cameras=cameras, episodes=train_eps)
        val = LeRobotV3Dataset(entry.path, embodiment, cameras=cameras, episodes=val_eps) if val_eps else None
        if len(train) == 0:
            raise TrainingError(f"dataset {entry.path}: no training frames")
        sources.append(TrainingSource(entry, embodiment, train, val))
    return sources


def norm_stats_from_sources(sources: Sequence[TrainingSource], relative: Sequence[str] = ()) -> dict[str, NormStats]:
    """Statistics per embodiment (model units) from the datasets' ``meta/stats.json``.

    Datasets of one embodiment are pooled: count-weighted mean and variance, the widest
    q01/q99 (a conservative range). Embodiments named in ``relative`` (that have joint
    positions) also get relative-action statistics, from the training episodes' rows.
    """
    grouped: dict[str, list[TrainingSource]] = {}
    for source in sources:
        grouped.setdefault(source.embodiment.name, []).append(source)
    stats = {}
    for name, group in grouped.items():
        entry = NormStats(action=_pooled(group, ACTION_KEY), state=_pooled(group, STATE_KEY))
        dims = relative_dims(group[0].embodiment) if name in relative else ()
        stats[name] = entry.with_relative_actions(relative_action_stats(group, dims), dims) if dims else entry
    return stats


def relative_dims(embodiment: Embodiment) -> tuple[int, ...]:
    """Action dimensions a relative-action policy predicts from the chunk's start state:
    joint positions (arm joints); grippers and base motions stay as stored."""
    mask = embodiment.dims_of_kind.get("joint_position")
    return () if mask is None else tuple(int(i) for i in np.flatnonzero(mask))


def relative_action_stats(group: Sequence[TrainingSource], dims: tuple[int, ...],
                          max_rows: int = 1_000_000) -> VectorStats:
    """Statistics of chunk step minus start state on ``dims`` (len(dims),) over the training
    episodes of one embodiment's datasets, model units.

    A chunk at frame t holds the actions of frames t .. t+H-1 (the last one repeats past the
    end, as the loader pads). Frames are strided so that at most ``max_rows`` chunk steps are
    pooled (quantiles of a million values are exact enough and cost a second).
    """
    embodiment = group[0].embodiment
    horizon = embodiment.chunk_horizon
    frames = sum(len(s.train) for s in group)
    stride = max(1, int(np.ceil(frames * horizon / max_rows)))
    deltas = []
    for source in group:
        for episode in source.train.episode_ids:
            state, action = source.train.episode_rows(episode)
            starts = np.arange(0, len(action), stride)
            steps = np.minimum(starts[:, None] + np.arange(horizon), len(action) - 1)
            deltas.append(action[steps][..., dims] - state[starts][:, None, dims])
    return VectorStats.from_array(np.concatenate(deltas).reshape(-1, len(dims)), "relative actions")


def _pooled(group: Sequence[TrainingSource], key: str) -> VectorStats:
    stats = [s.train.stats[key] for s in group]
    counts = np.array([float(np.asarray(s.get("count", [1])).ravel()[0]) for s in stats])
    weights = counts / counts.sum()
    means = np.stack([s["mean"] for s in stats])
    mean = (weights[:, None] * means).sum(0)
    second = (weights[:, None] * (np.stack([s["std"] for s in stats]) ** 2 + means**2)).sum(0)
    return VectorStats(
        mean=mean,
        std=np.sqrt(np.maximum(second - mean**2, 0.0)),
        q01=np.min([s["q01"] for s in stats], axis=0),
        q99=np.max([s["q99"] for s in stats], axis=0),
    )


# -- samples to batches -------------------------------------------------------------------
class MixtureDataset(Dataset):
    """Index by (source number, position) into several datasets."""

    def __init__(self, datasets: Sequence[Dataset]):
        self.datasets = list(datasets)

    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        source, position = key
        return self.datasets[source][position]


def collate_samples(samples: list[dict]) -> dict:
    """Samples of one dataset -> the batch format of ``QwenVLAPolicy.compute_loss``.

    ``embodiment`` stays a name here; the trainer swaps in the :class:`Embodiment`.
    """
    names = {s["embodiment"] for s in samples}
    if len(names) != 1:
        raise TrainingError(f"a batch mixes embodiments {sorted(names)}; batches come from one dataset")
    cameras = samples[0]["images"].keys()
    return {
        "images": {c: torch.stack([s["images"][c] for s in samples]) for c in cameras},
        "state": torch.stack([s["state"] for s in samples]),
        "actions": torch.stack([s["action"] for s in samples]),
        "action_is_pad": torch.stack([s["action_is_pad"] for s in samples]),
        "subgoal": torch.stack([s["subgoal"] for s in samples]) if all("subgoal" in s for s in samples) else None,
        "instructions": [s["instruction"] for s in samples],
        "embodiment": names.pop(),
    }


def episode_ranges(dataset: LeRobotV3Dataset) -> dict[int, tuple[int, int]]:
    """Episode -> (first, end) positions in ``dataset`` (its frames are episode after episode)."""
    lengths = [dataset.episode_length(e) for e in dataset.episode_ids]
    ends = np.cumsum(lengths)
    return {e: (int(end - n), int(end)) for e, n, end in zip(dataset.episode_ids, lengths, ends, strict=True)}


def _epoch_order(ranges: dict[int, tuple[int, int]], seed: Sequence[int]) -> np.ndarray:
    """Positions of one epoch: shuffled blocks of a few episodes, shuffled inside each block."""
    rng = np.random.default_rng(list(seed))
    episodes = rng.permutation(sorted(ranges)).tolist()
    order = []
    for first in range(0, len(episodes), EPISODES_PER_BLOCK):
        block = [p for e in episodes[first : first + EPISODES_PER_BLOCK] for p in range(*ranges[e])]
        order.extend(rng.permutation(block).tolist())
    return np.asarray(order, dtype=np.int64)


class MixtureBatchSampler(Sampler[list[tuple[int, int]]]):
    """Endless, deterministic batches of (source, position) keys from ``start_step`` on.

    Args:
        datasets: the training datasets of the mix.
        weights: sampling weight per dataset.
        batch_size: samples per micro-batch.
        micro_steps: micro-batches per optimizer step (gradient accumulation).
        seed, rank: the stream of this process.
        start_step: first optimizer step to produce batches for (resume).
    """

    def __init__(self, datasets, weights, batch_size: int, micro_steps: int, seed: int, rank: int, start_step: int = 0):
        self.datasets = list(datasets)
        total = float(sum(weights))
        self.probabilities = np.asarray(weights, dtype=np.float64) / total
        self.batch_size, self.micro_steps = batch_size, micro_steps
        self.seed, self.rank, self.start_step = seed, rank, start_step
        self._ranges = [episode_ranges(d) for d in self.datasets]
        self._orders: dict[tuple[int, int], np.ndarray] = {}

    def _choose(self, step: int, micro: int) -> int:
        if len(self.datasets) == 1:
            return 0
        rng = np.random.default_rng([self.seed, self.rank, step, micro, 7])
        return int(rng.choice(len(self.datasets), p=self.probabilities))

    def _positions(self, source: int, start: int) -> list[int]:
        size = len(self.datasets[source])
        picked = []
        for offset in range(start, start + self.batch_size):
            epoch, index = divmod(offset, size)
            key = (source, epoch)
            if key not in self._orders:
                self._orders = {k: v for k, v in self._orders.items() if k[0] != source}  # keep one epoch
                self._orders[key] = _epoch_order(self._ranges[source], (self.seed, self.rank, source, epoch))
            picked.append(int(self._orders[key][index]))
        return picked

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        consumed = [0] * len(self.datasets)  # samples drawn so far from each dataset
        for step in range(self.start_step):
            for micro in range(self.micro_steps):
                consumed[self._choose(step, micro)] += self.batch_size
        step = self.start_step
        while True:
            for micro in range(self.micro_steps):
                source = self._choose(step, micro)
                yield [(source, p) for p in self._positions(source, consumed[source])]
                consumed[source] += self.batch_size
            step += 1


def training_batches(
    sources: Sequence[TrainingSource], batch_size: int, micro_steps: int, seed: int, rank: int,
    start_step: int, num_workers: int,
) -> Iterator[dict]:
    """Endless micro-batches (a DataLoader, so video decoding can run in worker processes)."""
    sampler = MixtureBatchSampler(
        [s.train for s in sources], [s.entry.weight for s in sources], batch_size, micro_steps, seed, rank, start_step
    )
    loader = DataLoader(
        MixtureDataset([s.train for s in sources]),
        batch_sampler=sampler,
        collate_fn=collate_samples,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )
    embodiments = {s.embodiment.name: s.embodiment for s in sources}
    for batch in loader:
        yield {**batch, "embodiment": embodiments[batch["embodiment"]]}


def validation_batches(sources: Sequence[TrainingSource], batch_size: int, max_batches: int) -> list[dict]:
    """Fixed validation batches, spread evenly over each source's held-out frames.

    Each source with a validation split gets up to ``max_batches`` batches; the same
    batches are used at every evaluation so the losses are comparable.
    """
    batches = []
    for source in sources:
        if source.val is None:
            continue
        wanted = min(len(source.val), batch_size * max_batches)
        positions = np.linspace(0, len(source.val) - 1, wanted).round().astype(int)
        for first in range(0, wanted, batch_size):
            samples = [source.val[int(p)] for p in positions[first : first + batch_size]]
            batches.append({**collate_samples(samples), "embodiment": source.embodiment})
    return batches

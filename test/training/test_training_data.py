"""Training data: held-out splits, deterministic weighted mixing, statistics from the data."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from qwen_vla_ros.data.dataset import LeRobotV3Dataset
from qwen_vla_ros.embodiment import load_embodiment
from qwen_vla_ros.training.config import DatasetEntry
from qwen_vla_ros.training.data import (
    MixtureBatchSampler,
    episode_ranges,
    norm_stats_from_sources,
    open_sources,
    split_episodes,
    training_batches,
    validation_batches,
)
from qwen_vla_ros.training.errors import TrainingError


def test_split_holds_out_whole_episodes():
    train, val = split_episodes(10, 0.2, seed=3)
    assert len(val) == 2 and sorted(train + val) == list(range(10))
    assert split_episodes(10, 0.2, seed=3) == (train, val)
    assert split_episodes(1, 0.5, seed=0) == ([0], [])  # one episode: nothing to hold out
    assert split_episodes(5, 0.0, seed=0)[1] == []
    with pytest.raises(TrainingError):
        split_episodes(0, 0.1, seed=0)


def test_sources_split_and_statistics_come_from_the_data(embodiment_files, datasets):
    sources = open_sources([DatasetEntry(path=datasets["aloha_small"])], embodiment_files["aloha_small"],
                           text_only=False, val_fraction=0.2, seed=0)
    source = sources[0]
    assert not set(source.train.episode_ids) & set(source.val.episode_ids)
    stats = norm_stats_from_sources(sources)["aloha_small"]
    actions = np.stack([source.train[i]["action"].numpy()[0] for i in range(len(source.train))])
    # The dataset's statistics cover every frame; the training frames' mean is close to it.
    assert np.allclose(stats.action.mean, actions.mean(0), atol=0.05)
    assert np.all(stats.action.q01 <= stats.action.q99)


def test_relative_action_statistics_are_those_of_motions_from_each_chunk_start(embodiment_files, datasets):
    sources = open_sources([DatasetEntry(path=datasets["aloha_small"])], embodiment_files["aloha_small"],
                           text_only=True, val_fraction=0.2, seed=0)
    source = sources[0]
    stats = norm_stats_from_sources(sources, relative=["aloha_small"])["aloha_small"]
    grippers = [i for i, name in enumerate(source.embodiment.action_names) if "gripper" in name]
    assert stats.relative and set(stats.relative_dims) == set(range(14)) - set(grippers)
    # the loader's chunks minus their start states, on the joints: what the statistics describe
    samples = [source.train[i] for i in range(len(source.train))]
    motions = np.concatenate([s["action"].numpy() - s["state"].numpy()[None] for s in samples])
    joints = list(stats.relative_dims)
    np.testing.assert_allclose(stats.relative_action.mean[joints], motions[:, joints].mean(0), atol=1e-5)
    np.testing.assert_allclose(stats.relative_action.q99[joints], np.quantile(motions[:, joints], 0.99, axis=0), atol=1e-5)
    np.testing.assert_allclose(stats.relative_action.q99[grippers], stats.action.q99[grippers])  # absolute
    assert not norm_stats_from_sources(sources)["aloha_small"].relative


def test_text_only_sources_load_no_images(embodiment_files, datasets):
    sources = open_sources([DatasetEntry(path=datasets["aloha_small"])], embodiment_files["aloha_small"],
                           text_only=True, val_fraction=0.2, seed=0)
    batch = next(training_batches(sources, 3, 1, seed=0, rank=0, start_step=0, num_workers=0))
    assert batch["images"] == {} and batch["actions"].shape == (3, 8, 14)
    assert batch["embodiment"].name == "aloha_small" and len(batch["instructions"]) == 3


def test_episode_ranges_match_the_dataset(embodiment_files, datasets):
    embodiment = load_embodiment(embodiment_files["aloha_small"])
    dataset = LeRobotV3Dataset(datasets["aloha_small"], embodiment, cameras=[], episodes=[1, 4, 7])
    assert episode_ranges(dataset) == {e: dataset.episode_row_range(e) for e in (1, 4, 7)}


def _keys(sampler, count):
    return [tuple(map(tuple, batch)) for batch in itertools.islice(iter(sampler), count)]


def test_mixture_sampler_is_deterministic_resumable_and_weighted(embodiment_files, datasets):
    a = LeRobotV3Dataset(datasets["aloha_small"], load_embodiment(embodiment_files["aloha_small"]), cameras=[])
    f = LeRobotV3Dataset(datasets["fr3_small"], load_embodiment(embodiment_files["fr3_small"]), cameras=[])
    make = lambda start: MixtureBatchSampler([a, f], [3.0, 1.0], 4, 2, seed=5, rank=0, start_step=start)  # noqa: E731
    full = _keys(make(0), 40)
    assert full == _keys(make(0), 40)
    assert _keys(make(7), 26) == full[14:]  # step 7 starts at micro-batch 14 (2 per step)
    assert _keys(MixtureBatchSampler([a, f], [3.0, 1.0], 4, 2, seed=5, rank=1), 40) != full
    sources = [{k[0] for k in batch} for batch in full]
    assert all(len(s) == 1 for s in sources)  # one dataset per batch
    share = np.mean([s == {0} for s in sources])
    assert 0.55 < share < 0.95  # weight 3:1 -> about 75 % of the batches
    firsts = [k for batch in full if batch[0][0] == 0 for k in batch]
    assert len(set(firsts)) == min(len(firsts), len(a))  # an epoch has no repeats


def test_validation_batches_are_fixed_and_cover_each_source(embodiment_files, datasets):
    sources = open_sources(
        [DatasetEntry(path=datasets["aloha_small"]),
         DatasetEntry(path=datasets["fr3_small"], embodiment=embodiment_files["fr3_small"])],
        embodiment_files["aloha_small"], text_only=False, val_fraction=0.25, seed=0,
    )
    batches = validation_batches(sources, batch_size=4, max_batches=2)
    names = [b["embodiment"].name for b in batches]
    assert names.count("aloha_small") == 2 and names.count("fr3_small") == 2
    again = validation_batches(sources, batch_size=4, max_batches=2)
    assert all(np.array_equal(x["actions"], y["actions"]) for x, y in zip(batches, again, strict=True))
    assert set(batches[-1]["images"]) == {"external"}


def test_a_dataset_without_an_embodiment_is_refused(datasets):
    with pytest.raises(TrainingError, match="no embodiment"):
        open_sources([DatasetEntry(path=datasets["aloha_small"])], None, text_only=True, val_fraction=0.1, seed=0)

"""RL pieces: rollouts with replanning, the weights of reward-weighted flow matching, the sim env."""

from __future__ import annotations

import numpy as np
import pytest

from qwen_vla_ros.embodiment import load_embodiment
from qwen_vla_ros.training.config import RLConfig
from qwen_vla_ros.training.errors import TrainingError
from qwen_vla_ros.training.rl import (
    MAX_EMPTY_ROUNDS,
    ReplayBuffer,
    RolloutSource,
    episode_weights,
    run_episode,
)


@pytest.fixture(scope="module")
def aloha_small(embodiment_files):
    return load_embodiment(embodiment_files["aloha_small"])


@pytest.fixture(scope="module")
def ReachEnv(reach_env):  # the class, under its own name
    return reach_env


def _ramp_policy(embodiment):
    """Chunks whose k-th action is home + 0.01 * (k + 1) in every dimension."""
    def act(observation, seed):
        return embodiment.home_position + 0.01 * (np.arange(embodiment.chunk_horizon)[:, None] + 1)
    return act


def test_episode_replans_every_execute_steps_and_keeps_executed_actions(aloha_small, ReachEnv):
    config = RLConfig(episode_steps=10, execute_steps=4)
    episode = run_episode(ReachEnv(aloha_small), _ramp_policy(aloha_small), config, seed=3)
    assert episode.plan_steps == [0, 4, 8]
    assert len(episode.actions) == 10 and len(episode.observations) == 3
    assert np.allclose(episode.actions[5], aloha_small.home_position + 0.02)  # 2nd action of the 2nd chunk
    assert 0.0 < episode.episode_return <= 1.0


def test_buffer_targets_are_the_next_executed_actions(aloha_small, ReachEnv):
    config = RLConfig(episode_steps=10, execute_steps=4)
    episode = run_episode(ReachEnv(aloha_small), _ramp_policy(aloha_small), config, seed=3)
    buffer = ReplayBuffer(config, aloha_small, horizon=8)
    buffer.add([episode])
    samples, weights = buffer.sample_weights()
    assert len(samples) == 3 and np.allclose(weights, 1.0)
    executed = aloha_small.actions_to_model(np.stack(episode.actions))
    second = samples[1]  # planned at step 4: targets are executed steps 4..9, then padding
    assert np.allclose(second["action"][:6], executed[4:10])
    assert second["action_is_pad"].tolist() == [False] * 6 + [True] * 2
    assert np.allclose(second["action"][6:], executed[9])


def test_reward_weights_prefer_better_episodes_and_filtering_drops_failures():
    returns = np.array([0.2, 1.0, 0.6])
    weighted = episode_weights(returns, RLConfig(method="reward_weighted", temperature=0.25))
    assert weighted[1] == 1.0 and weighted[1] > weighted[2] > weighted[0]
    assert np.isclose(weighted[2] / weighted[0], np.exp(0.4 / 0.25))
    assert episode_weights(returns, RLConfig(method="filtered_bc", success_threshold=0.9)).tolist() == [0, 1, 0]


def test_filtered_bc_without_any_success_stops_with_a_clear_error(aloha_small, ReachEnv):
    config = RLConfig(method="filtered_bc", episodes_per_round=1, episode_steps=3, execute_steps=3)
    calls = []

    def collect(step, round_number, count):
        calls.append(round_number)
        return [run_episode(ReachEnv(aloha_small), _ramp_policy(aloha_small), config, seed=round_number)]

    source = RolloutSource(config, aloha_small, 8, collect, batch_size=2, micro_steps=1, seed=0, rank=0, text_only=True)
    with pytest.raises(TrainingError, match="without one episode"):
        next(source.batches(0))
    assert len(calls) == 1 + MAX_EMPTY_ROUNDS


def test_rollout_batches_sample_in_proportion_to_weight(aloha_small, ReachEnv):
    config = RLConfig(method="filtered_bc", success_threshold=0.5, episodes_per_round=2, episode_steps=4,
                      execute_steps=4, updates_per_round=1000)
    good = {"seed": None}

    def collect(step, round_number, count):
        episodes = [run_episode(ReachEnv(aloha_small), _ramp_policy(aloha_small), config, seed=s) for s in (1, 2)]
        episodes[0].episode_return, episodes[1].episode_return = 0.9, 0.1
        good["seed"] = episodes[0].seed
        return episodes

    source = RolloutSource(config, aloha_small, 8, collect, batch_size=6, micro_steps=1, seed=0, rank=0, text_only=False)
    batch = next(source.batches(0))
    good_state = aloha_small.actions_to_model(ReachEnv(aloha_small).reset(good["seed"]).state)
    assert np.allclose(batch["state"].numpy(), good_state.astype(np.float32))  # only the success is drawn
    assert set(batch["images"]) == {"cam_high", "cam_left_wrist"} and batch["images"]["cam_high"].shape == (6, 32, 32, 3)
    assert source.rounds[0].success_rate == 0.5


def test_aloha_sim_env_observes_steps_and_clamps(aloha_small):
    from qwen_vla_ros.training.sim_env import AlohaSimEnv

    env = AlohaSimEnv(aloha_small, "transfer_cube", "hand the cube over")
    try:
        first = env.reset(seed=0)
        assert set(first.images) == {"cam_high", "cam_left_wrist"} and first.images["cam_high"].shape == (32, 32, 3)
        assert first.state.shape == (14,) and first.instruction == "hand the cube over"
        jump = first.state + 1.0  # far more than one step's allowance
        result = env.step(jump)
        assert np.allclose(result.applied - first.state, aloha_small.step_limits, atol=1e-9)
        assert 0.0 <= result.reward <= 1.0 and not result.done
        assert env.sim.episode_time > 0.0
    finally:
        env.close()

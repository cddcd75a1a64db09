"""Normalisation statistics: computed from data, round trips, limits placeholder, JSON, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qwen_vla_ros.embodiment import load_embodiment
from qwen_vla_ros.model import CheckpointError, ModelInputError, NormStats
from qwen_vla_ros.model.normalization import VectorStats, load_norm_stats, save_norm_stats


def _data(seed=0):
    rng = np.random.default_rng(seed)
    actions = rng.normal([0.0, 5.0, -2.0], [1.0, 0.1, 3.0], size=(400, 10, 3))
    states = rng.normal([0.0, 5.0, -2.0], [1.0, 0.1, 3.0], size=(400, 3))
    return actions, states


def test_quantile_mode_maps_q01_q99_to_minus_one_and_one():
    actions, states = _data()
    stats = NormStats.from_arrays(actions, states, mode="quantile")
    flat = actions.reshape(-1, 3)
    q01, q99 = np.quantile(flat, 0.01, axis=0), np.quantile(flat, 0.99, axis=0)
    np.testing.assert_allclose(stats.normalize_actions(q01), -1.0, atol=1e-9)
    np.testing.assert_allclose(stats.normalize_actions(q99), 1.0, atol=1e-9)
    inside = np.mean(np.abs(stats.normalize_actions(flat)) <= 1.0)
    assert 0.97 < inside < 0.99


def test_mean_std_mode_standardises():
    actions, states = _data()
    stats = NormStats.from_arrays(actions, states, mode="mean_std")
    normalised = stats.normalize_state(states)
    np.testing.assert_allclose(normalised.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(normalised.std(axis=0), 1.0, atol=1e-9)


@pytest.mark.parametrize("mode", ["quantile", "mean_std"])
def test_unnormalize_inverts_normalize(mode):
    actions, states = _data(1)
    stats = NormStats.from_arrays(actions, states, mode=mode)
    np.testing.assert_allclose(
        stats.unnormalize_actions(stats.normalize_actions(actions)), actions, atol=1e-9
    )


def test_constant_dimension_is_centred_not_divided_by_zero():
    actions = np.zeros((50, 4, 2))
    actions[..., 1] = np.linspace(-1, 1, 4)
    actions[..., 0] = 3.0
    stats = NormStats.from_arrays(actions, actions[:, 0])
    normalised = stats.normalize_actions(np.array([3.5, 0.0]))
    assert np.isfinite(normalised).all()
    assert normalised[0] == pytest.approx(0.5)
    assert stats.unnormalize_actions(normalised)[0] == pytest.approx(3.5)


def test_from_limits_uses_model_units(signed_arm):
    stats = NormStats.from_limits(signed_arm)
    assert stats.source == "limits"
    # j1: rig = -model + 0.25, rig range [-0.5, 1.5] -> model range [-1.25, 0.75].
    np.testing.assert_allclose(stats.action.q01, [-1.25, -1.0])
    np.testing.assert_allclose(stats.action.q99, [0.75, 1.0])
    rig_limits = np.stack([signed_arm.position_min, signed_arm.position_max])
    normalised = stats.normalize_actions(signed_arm.actions_to_model(rig_limits))
    np.testing.assert_allclose(np.sort(normalised, axis=0), [[-1, -1], [1, 1]])


def test_from_limits_covers_every_shipped_dimension():
    for name in ("aloha", "mobile_base"):
        emb = load_embodiment(name)
        stats = NormStats.from_limits(emb)
        assert stats.dim == emb.action_dim
        assert (stats.action.q99 > stats.action.q01).all()


def test_json_round_trip(tmp_path):
    actions, states = _data()
    original = {
        "arm": NormStats.from_arrays(actions, states),
        "base": NormStats.from_arrays(actions, states, "mean_std"),
    }
    save_norm_stats(tmp_path / "stats.json", original)
    loaded = load_norm_stats(tmp_path / "stats.json")
    assert loaded.keys() == original.keys()
    for name in original:
        assert loaded[name].mode == original[name].mode
        np.testing.assert_array_equal(loaded[name].action.q99, original[name].action.q99)
        np.testing.assert_array_equal(loaded[name].state.std, original[name].state.std)


def test_bad_statistics_files_are_named(tmp_path):
    path = tmp_path / "stats.json"
    path.write_text(json.dumps({"arm": {"action": {"mean": [0.0]}, "state": {}}}))
    with pytest.raises(CheckpointError, match="arm.action: needs numeric lists"):
        load_norm_stats(path)
    path.write_text('{"arm": ')
    with pytest.raises(CheckpointError, match="invalid normalisation statistics"):
        load_norm_stats(path)


def test_nan_in_data_is_rejected():
    actions, states = _data()
    actions[3, 2, 1] = np.nan
    with pytest.raises(ModelInputError, match="NaN or inf"):
        NormStats.from_arrays(actions, states)


def test_near_home_placeholder_keeps_untrained_outputs_close_to_home():
    emb = load_embodiment("aloha_sim")
    stats = NormStats.near_home(emb)
    assert stats.source == "home"
    # the untrained decoder emits about +-3 normalised units: that must stay near home
    extreme = stats.unnormalize_actions(np.full((1, emb.action_dim), 3.0))[0]
    span = emb.position_max - emb.position_min
    assert np.all(np.abs(extreme - emb.home_position) <= 0.031 * span + 1e-9)


def _relative(mode="quantile"):
    """Statistics of a 3-dim layout whose first two dimensions are relative (joints, a gripper)."""
    actions, states = _data(2)
    plain = NormStats.from_arrays(actions, states, mode=mode)
    motions = (actions - states[:, None, :])[..., :2]
    return plain, plain.with_relative_actions(VectorStats.from_array(motions), (0, 1))


@pytest.mark.parametrize("mode", ["quantile", "mean_std"])
def test_relative_chunks_are_motions_from_the_start_state(mode):
    plain, relative = _relative(mode)
    actions, states = _data(3)
    chunk, start = actions[0], states[0]
    normalised = relative.normalize_chunk(chunk, start)
    np.testing.assert_allclose(relative.unnormalize_chunk(normalised, start), chunk, atol=1e-9)
    # staying where the chunk starts is the relative statistics' image of zero motion
    still = relative.normalize_chunk(np.tile(start, (10, 1)), start)
    np.testing.assert_allclose(still[:, :2], relative.relative_action.normalize(np.zeros((10, 3)), mode)[:, :2])
    np.testing.assert_allclose(relative.relative_action.q99[2], plain.action.q99[2])
    # the gripper dimension is absolute: as the plain statistics normalise it
    np.testing.assert_allclose(normalised[:, 2], plain.normalize_actions(chunk)[:, 2])
    # batched: (B, H, D) chunks with (B, D) start states
    batch = relative.normalize_chunk(actions[:4], states[:4])
    np.testing.assert_allclose(batch[1], relative.normalize_chunk(actions[1], states[1]))
    # without relative statistics the start state changes nothing
    np.testing.assert_allclose(plain.normalize_chunk(chunk, start), plain.normalize_actions(chunk))


def test_relative_statistics_round_trip_through_json_and_are_checked(tmp_path):
    _, relative = _relative()
    save_norm_stats(tmp_path / "stats.json", {"arm": relative})
    loaded = load_norm_stats(tmp_path / "stats.json")["arm"]
    assert loaded.relative and loaded.relative_dims == (0, 1)
    np.testing.assert_allclose(loaded.relative_action.q99, relative.relative_action.q99)
    # the motions alone round-trip through with_relative_actions; absolute() drops them
    again = relative.absolute().with_relative_actions(relative.motions, relative.relative_dims)
    np.testing.assert_allclose(again.relative_action.q01, relative.relative_action.q01)
    assert not relative.absolute().relative and relative.absolute().motions is None
    with pytest.raises(ValueError, match="both their statistics and their dimensions"):
        NormStats(relative.action, relative.state, relative_action=relative.relative_action)
    with pytest.raises(ValueError, match="outside"):
        relative.with_relative_actions(VectorStats.from_array(np.zeros((4, 2))), (0, 5))
    with pytest.raises(ValueError, match="2 dims for the 1 dimensions"):
        relative.with_relative_actions(VectorStats.from_array(np.zeros((4, 2))), (0,))

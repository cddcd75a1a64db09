"""The inference node's `model` parameter: the tiny untrained policy serves any embodiment file,
a missing checkpoint is a clear error."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from qwen_vla_ros.embodiment import load_embodiment
from qwen_vla_ros.nodes.policy_loading import load_policy

MINIMAL = Path(__file__).resolve().parents[1] / "embodiment" / "minimal.yaml"
PARAMS = {"device": "cpu", "dtype": "float32"}


def test_tiny_policy_gets_placeholder_stats_for_a_users_own_embodiment():
    emb = load_embodiment(MINIMAL)  # not shipped: the cached tiny policy has no stats for it
    policy = load_policy({**PARAMS, "model": "tiny"}, emb, logging.getLogger("test"))
    assert policy.norm_stats[emb.name].source == "home"


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    emb = load_embodiment("aloha_sim")
    with pytest.raises((ValueError, LookupError), match="no such folder"):
        load_policy({**PARAMS, "model": str(tmp_path / "nope")}, emb, logging.getLogger("test"))

"""ObservationAssembler.stale_state_sources: what the chunk publisher holds for (pure, no ROS)."""

from __future__ import annotations

from qwen_vla_ros.embodiment import load_embodiment
from qwen_vla_ros.observation import ObservationAssembler


def test_missing_old_and_pre_reset_state_sources_are_named():
    emb = load_embodiment("aloha_sim")
    state = ObservationAssembler(emb)
    left, right = emb.state_sources
    assert [line.split("'")[1] for line in state.stale_state_sources(10.0)] == [left.name, right.name]
    state.add_joint_values(left.name, {"waist": 0.0}, 10.0, 10.0)
    state.add_joint_values(right.name, {"waist": 0.0}, 10.0, 10.0)
    assert state.stale_state_sources(10.0 + left.max_age_s / 2) == []
    state.add_joint_values(right.name, {"waist": 0.0}, 10.5, 10.5)
    (line,) = state.stale_state_sources(10.5)
    assert left.topic in line and "max_age_s" in line
    # a reading a little ahead of this clock (arrival order) is fresh
    (line,) = state.stale_state_sources(10.5 - right.max_age_s / 2)
    assert left.topic in line
    # the clock went back (simulation reset): readings from before it are not fresh
    assert len(state.stale_state_sources(1.0)) == 2

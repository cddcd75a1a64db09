"""Recorded commands as actions: streamed trajectory points, judged episodes, waypoint bases."""

from __future__ import annotations

import math

import numpy as np
from data_recordings import CAMERA_HZ, COMMAND_HZ, STATE_HZ, RecordingSpec, joint_positions

from qwen_vla_ros.data.convert import convert_recordings
from qwen_vla_ros.data.gaps import latest_indices
from qwen_vla_ros.data.layout import read_frames, read_tasks

CAMERA_PHASE, COMMAND_PHASE = 0.003, 0.001  # as in data_recordings.write_recording


def test_a_point_streamed_one_period_ahead_is_the_action_of_the_tick_it_was_sent_at(
    recording_factory, small_aloha, tmp_path
):
    """The chunk publisher and the sim's expert send one point reached in one control period
    (time_from_start = dt) every tick: the action of a tick is the point sent at it, as for
    the gripper's Float64MultiArray and the direct path of `collect`. Placed at its due time,
    each point was removed by the next message (due when that one starts), and the arm's
    actions fell back to the next state."""
    spec = RecordingSpec(episodes=[("reach", 0.2, 1.2)], time_from_start=small_aloha.dt)
    report = convert_recordings([recording_factory(spec)], tmp_path / "ds", small_aloha, progress=False)
    assert report.action_sources["left_arm"] == {"commands on /follower_left/arm_controller/joint_trajectory"}
    columns = read_frames(tmp_path / "ds", ["action", "timestamp"])
    ticks = _first_tick(0.2) + np.asarray(columns["timestamp"], dtype=np.float64)
    sent = [math.floor((t - COMMAND_PHASE) * COMMAND_HZ + 1e-6) / COMMAND_HZ + COMMAND_PHASE for t in ticks]
    expected = np.stack([joint_positions(t + spec.command_lead, 0) for t in sent])
    assert np.allclose(columns["action"][:, :6], expected, atol=1e-5)


def _first_tick(start: float) -> float:
    """The first control tick of an episode opening at ``start`` s: where the 100 Hz states
    and the 30 Hz cameras (phase 3 ms) have both spoken."""
    first_state = math.ceil(start * STATE_HZ - 1e-6) / STATE_HZ
    first_frame = math.ceil((start - CAMERA_PHASE) * CAMERA_HZ - 1e-6) / CAMERA_HZ + CAMERA_PHASE
    return max(start, first_state, first_frame)


def test_episodes_judged_failed_are_left_out_unless_kept(recording_factory, small_aloha, tmp_path):
    spec = RecordingSpec(failed=("put it down",))
    recording = recording_factory(spec)
    report = convert_recordings([recording], tmp_path / "ds", small_aloha, progress=False)
    assert report.episodes == 1 and read_tasks(tmp_path / "ds") == ["pick up the cube"]
    assert len(report.skipped) == 1 and "judged failed" in report.skipped[0]
    kept = convert_recordings([recording], tmp_path / "all", small_aloha, progress=False, keep_failed=True)
    assert kept.episodes == 2 and not kept.skipped


def test_a_sample_stamped_on_a_tick_is_at_the_tick_despite_float_rounding():
    stamps = np.array([3_320_000_000, 3_340_000_000]) * 1e-9  # whole ns, as recorded
    ticks = 3.32 + 0.02 * np.arange(2)  # a float sum: 3.34 is one ulp below the second stamp
    assert ticks[1] < stamps[1]
    assert latest_indices(stamps, ticks).tolist() == [0, 1]


def test_messages_a_lagging_recorder_got_after_the_end_mark_still_belong_to_the_episode(
    recording_factory, small_aloha, tmp_path
):
    """Under load the recorder's clock runs ahead of its backlog: the last 0.5 s of an episode
    arrive after its end mark. Stamped inside the episode, they are part of it."""
    frames = {}
    for lag in (0.0, 0.5):
        # late enough that no message stamped 0 (read as "no stamp") is read with it
        spec = RecordingSpec(episodes=[("reach", 2.6, 3.4)], duration=4.0, receive_lag=lag)
        report = convert_recordings([recording_factory(spec)], tmp_path / f"lag{lag}", small_aloha,
                                    progress=False, use_stamps="auto")
        assert report.episodes == 1 and not report.skipped, report
        frames[lag] = read_frames(tmp_path / f"lag{lag}", ["observation.state"])["observation.state"]
    assert len(frames[0.5]) == len(frames[0.0]) and np.allclose(frames[0.5], frames[0.0])

"""Conversion that never loses the good episodes: gaps bridged or masked, bad episodes skipped,
recordings cut off by a crash salvaged (issue 10 item 5)."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from data_recordings import CAMERA_HZ, RecordingSpec, joint_positions

from qwen_vla_ros.data.convert import convert_recordings
from qwen_vla_ros.data.errors import DatasetError
from qwen_vla_ros.data.gaps import GapPolicy, source_gaps, valid_segments
from qwen_vla_ros.data.layout import read_episodes, read_frames
from qwen_vla_ros.data.mcap_io import read_recording
from qwen_vla_ros.data.salvage import is_closed_mcap, salvage_recording


def test_gap_classification_and_segments():
    times = np.array([0.0, 0.1, 0.2, 0.45, 0.5, 1.5, 1.6])
    ticks = np.arange(0.0, 1.61, 0.05)
    gaps = source_gaps(times, ticks, max_age_s=0.1, bridge_s=0.3)
    assert [(round(a, 2), round(b, 2), bridged) for a, b, bridged in gaps.gaps] == [
        (0.2, 0.45, True), (0.5, 1.5, False)
    ]  # fmt: skip
    masked = ticks[gaps.masked]
    assert masked.min() > 0.6 - 1e-9 and masked.max() < 1.5
    assert valid_segments(~gaps.masked, min_ticks=5) == [slice(0, 13)]  # 1.5-1.6 s: too short
    assert valid_segments(np.array([True, True, False, True]), 1) == [slice(0, 2), slice(3, 4)]


def _convert(recordings, tmp_path, emb, **kwargs):
    return convert_recordings(recordings, tmp_path / "ds", emb, progress=False, **kwargs)


def test_short_state_gap_is_bridged_by_interpolation(recording_factory, small_aloha, tmp_path):
    gap = (0.5, 0.65)  # 0.15 s without left-arm joint states: longer than max_age_s 0.1
    report = _convert([recording_factory(RecordingSpec(state_gap=gap))], tmp_path, small_aloha)
    assert report.episodes == 2 and not report.skipped and not report.masked, report
    assert any("/follower_left/joint_states" in line for line in report.bridged), report
    columns = read_frames(tmp_path / "ds", ["observation.state", "timestamp", "episode_index"])
    first = columns["episode_index"] == 0
    start = RecordingSpec().episodes[0][1]
    first_frame = math.ceil((start - 0.003) * CAMERA_HZ) / CAMERA_HZ + 0.003  # grid starts here
    ticks = max(start, first_frame) + columns["timestamp"][first]
    inside = (ticks > gap[0]) & (ticks < gap[1] - 0.01)
    assert inside.sum() >= 5
    for k in np.nonzero(inside)[0]:  # interpolated between the messages around the gap
        truth = joint_positions(ticks[k], 0)
        assert np.abs(columns["observation.state"][first][k, :6] - truth).max() < 0.02
    strict = tmp_path / "strict"
    with pytest.raises(DatasetError, match="stale source /follower_left/joint_states"):
        convert_recordings([recording_factory(RecordingSpec(state_gap=gap))], strict, small_aloha,
                           progress=False, strict=True)  # fmt: skip


def test_long_gap_masks_frames_and_keeps_the_valid_stretches(
    recording_factory, small_aloha, tmp_path
):
    spec = RecordingSpec(
        episodes=[("pick up the cube", 0.1, 1.3), ("put it down", 1.35, 2.95)], camera_gap=(1.5, 1.9)
    )
    report = _convert([recording_factory(spec)], tmp_path, small_aloha,
                      gaps=GapPolicy(min_segment_s=0.1))  # fmt: skip
    assert any("/cam_high/image_raw" in line and "masked" in line for line in report.masked)
    episodes = read_episodes(tmp_path / "ds")
    assert len(episodes) == report.episodes == 3  # episode 1 split around its masked ticks
    masked_frames = report.masked_frames
    assert 0.4 * 50 - 12 <= masked_frames <= 0.4 * 50 + 2, masked_frames
    assert "frames left out" in str(report)


def test_unusable_episodes_are_skipped_and_the_rest_converted(
    recording_factory, small_aloha, tmp_path
):
    good = recording_factory(RecordingSpec())
    no_camera = recording_factory(RecordingSpec(cameras=("cam_high", "cam_left_wrist")))
    nan_late = recording_factory(RecordingSpec(nan_command_at=1.8))
    report = _convert([good, no_camera, nan_late], tmp_path, small_aloha)
    # good: 2 episodes; no_camera: skipped whole; nan_late: episode 0 and 1.6-1.8 s of episode 1
    assert report.episodes == 3, report
    lines = "\n".join(report.skipped)
    assert "rec1.mcap (all episodes): missing camera /cam_right_wrist" in lines
    assert "rec2.mcap#1: no valid stretch" in lines
    assert any("NaN or infinite" in line for line in report.masked)
    with pytest.raises(DatasetError, match="no usable episode"):
        _convert([recording_factory(RecordingSpec(right_joints=tuple(f"j{i}" for i in range(8))))],
                 tmp_path / "other", small_aloha)  # fmt: skip


def _chunk_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) byte offsets of the file's chunk records, read independently of mcap."""
    spans, offset = [], 8
    while offset + 9 <= len(data):
        opcode, length = data[offset], struct.unpack_from("<Q", data, offset + 1)[0]
        if opcode == 0x06:
            spans.append((offset, offset + 9 + length))
        if opcode == 0x0F:  # data end
            break
        offset += 9 + length
    return spans


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_recording_cut_mid_chunk_is_salvaged_and_converted(
    recording_factory, small_aloha, tmp_path, compression
):
    spec = RecordingSpec(chunk_size=16 * 1024, compression=compression)
    complete = recording_factory(spec, name="complete.mcap")
    data = complete.read_bytes()
    spans = _chunk_spans(data)
    start, end = spans[int(len(spans) * 0.6)]
    cut = tmp_path / "killed.mcap"
    cut.write_bytes(data[: (start + end) // 2])  # what a SIGKILL leaves: no summary, a torn chunk
    assert not is_closed_mcap(cut)
    salvage = salvage_recording(cut, tmp_path / "recovered.mcap")
    whole = read_recording(complete)
    recovered = read_recording(salvage.output)
    total = sum(len(s) for s in whole.series.values())
    assert 0 < salvage.messages < total
    if compression == "none":  # an uncompressed torn chunk gives up its complete messages
        assert salvage.messages_from_cut_chunk > 0
    for topic, series in recovered.series.items():  # a prefix of every topic, byte for byte
        assert np.array_equal(series.log_times, whole.series[topic].log_times[: len(series)])
    assert recovered.episodes[0].task == "pick up the cube"
    report = _convert([cut], tmp_path, small_aloha)
    assert report.salvaged and "recovered" in report.salvaged[0], report
    assert report.episodes >= 1 and report.frames > 0
    assert len(read_frames(tmp_path / "ds", ["action"])["action"]) == report.frames


def test_a_source_that_stops_before_the_episode_ends_is_reported_as_trimmed(
    recording_factory, small_aloha, tmp_path
):
    # episode 0 is 0.1 .. 1.3 s; the left arm's joint states stop at 0.9 s and resume at 1.5 s
    report = _convert([recording_factory(RecordingSpec(state_gap=(0.9, 1.5)))], tmp_path, small_aloha)
    assert report.episodes == 2 and not report.skipped, report
    assert len(report.trimmed) == 1 and "/follower_left/joint_states stopped" in report.trimmed[0], report
    assert "#0" in report.trimmed[0] and "1 episode ends trimmed" in str(report)
    clean = _convert([recording_factory(RecordingSpec())], tmp_path / "clean", small_aloha)
    assert not clean.trimmed, clean

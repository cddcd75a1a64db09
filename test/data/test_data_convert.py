"""MCAP recordings -> LeRobot v3.0: alignment on the control grid, stats, errors, atomicity."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
from data_recordings import (
    CAMERA_HZ,
    COMMAND_HZ,
    STATE_HZ,
    RecordingSpec,
    camera_colour,
    gripper_opening,
    joint_positions,
)

from qwen_vla_ros.data.convert import convert_recordings
from qwen_vla_ros.data.dataset import LeRobotV3Dataset
from qwen_vla_ros.data.errors import DatasetError
from qwen_vla_ros.data.layout import read_episodes, read_frames, read_tasks

CAMERA_PHASE, COMMAND_PHASE = 0.003, 0.001  # as in conftest.write_recording


def _latest(time_s: float, rate_hz: float, phase: float = 0.0) -> float:
    """Time of the newest message of a periodic stream at or before ``time_s``."""
    return math.floor((time_s - phase) * rate_hz + 1e-6) / rate_hz + phase


def _expected_ticks(start: float, end: float, dt: float) -> np.ndarray:
    first_state = math.ceil(start * STATE_HZ - 1e-6) / STATE_HZ
    first_frame = math.ceil((start - CAMERA_PHASE) * CAMERA_HZ - 1e-6) / CAMERA_HZ + CAMERA_PHASE
    t0 = max(start, first_state, first_frame)
    return t0 + dt * np.arange(int(math.floor((end - t0) / dt + 1e-9)) + 1)


def _no_leftovers(parent, name: str) -> bool:
    return not any(p.name == name or p.name.startswith(f".{name}.") for p in parent.iterdir())


@pytest.fixture
def converted(recording_factory, small_aloha, tmp_path):
    spec = RecordingSpec()
    report = convert_recordings(
        [recording_factory(spec)], tmp_path / "ds", small_aloha, progress=False
    )
    return tmp_path / "ds", spec, report


def test_conversion_writes_the_v3_layout(converted, small_aloha):
    root, spec, report = converted
    info = json.loads((root / "meta/info.json").read_text())
    assert (
        info["codebase_version"] == "v3.0"
        and info["fps"] == 50
        and info["robot_type"] == "small_aloha"
    )
    assert info["total_episodes"] == 2 and info["total_tasks"] == 2
    for camera in small_aloha.camera_names:
        feature = info["features"][f"observation.images.{camera}"]
        assert feature["dtype"] == "video" and feature["shape"] == [48, 64, 3]
        assert feature["info"]["video.codec"] in ("av1", "h264", "mpeg4")
    assert info["features"]["action"]["names"] == small_aloha.action_names
    assert read_tasks(root) == [task for task, _, _ in spec.episodes]
    episodes = read_episodes(root)
    assert sum(e["length"] for e in episodes) == info["total_frames"] == report.frames
    assert episodes[1]["dataset_from_index"] == episodes[0]["dataset_to_index"]
    key = "videos/observation.images.cam_high"
    assert episodes[1][f"{key}/from_timestamp"] == pytest.approx(episodes[0]["length"] / 50)
    assert (root / "data/chunk-000/file-000.parquet").is_file()
    assert "commands on" in next(iter(report.action_sources["left_arm"]))


def test_rows_are_aligned_to_the_control_grid(converted, small_aloha):
    root, spec, _ = converted
    columns = read_frames(root, ["observation.state", "action", "episode_index"])
    grip = small_aloha.group_slices["left_gripper"].start
    for episode, (_, start, end) in enumerate(spec.episodes):
        ticks = _expected_ticks(start, end, small_aloha.dt)
        rows = columns["episode_index"] == episode
        state, action = columns["observation.state"][rows], columns["action"][rows]
        assert len(state) == len(ticks)
        for k in (0, len(ticks) // 2, len(ticks) - 1):
            t_state = _latest(ticks[k], STATE_HZ)
            t_command = _latest(ticks[k], COMMAND_HZ, COMMAND_PHASE)
            assert np.allclose(state[k, :6], joint_positions(t_state, 0), atol=1e-5)
            assert state[k, grip] == pytest.approx(gripper_opening(t_state, 0), abs=1e-4)
            assert np.allclose(
                action[k, :6], joint_positions(t_command + spec.command_lead, 0), atol=1e-5
            )
            assert action[k, grip] == pytest.approx(
                gripper_opening(t_command + spec.command_lead, 0), abs=1e-4
            )
            assert np.allclose(
                action[k, 7:13], joint_positions(t_command + spec.command_lead, 1), atol=1e-5
            )


def test_reader_returns_aligned_samples(converted, small_aloha):
    root, spec, _ = converted
    dataset = LeRobotV3Dataset(root, small_aloha, horizon=10)
    columns = read_frames(root, ["action"])
    ticks = _expected_ticks(spec.episodes[0][1], spec.episodes[0][2], small_aloha.dt)
    last = len(ticks) - 1
    for k in (0, 7, last - 3):
        sample = dataset[k]
        assert sample["instruction"] == "pick up the cube" and sample["embodiment"] == "small_aloha"
        assert sample["state"].shape == (14,) and sample["action"].shape == (10, 14)
        expected_pad = np.arange(k, k + 10) > last
        assert np.array_equal(sample["action_is_pad"].numpy(), expected_pad)
        rows = np.minimum(np.arange(k, k + 10), last)
        assert np.allclose(sample["action"].numpy(), columns["action"][rows], atol=1e-6)
        frame = round((_latest(ticks[k], CAMERA_HZ, CAMERA_PHASE) - CAMERA_PHASE) * CAMERA_HZ)
        for camera, image in sample["images"].items():
            assert image.shape == (48, 64, 3), camera
            assert np.abs(image.numpy().reshape(-1, 3).mean(0) - camera_colour(frame)).max() < 4, (
                camera
            )
    assert dataset[last + 1]["instruction"] == "put it down"


def test_missing_commands_fall_back_to_the_next_state(recording_factory, small_aloha, tmp_path):
    spec = RecordingSpec(commands=False, episodes=[("wave", 0.2, 1.0)])
    report = convert_recordings(
        [recording_factory(spec)], tmp_path / "ds", small_aloha, progress=False
    )
    columns = read_frames(tmp_path / "ds", ["observation.state", "action"])
    state, action = columns["observation.state"], columns["action"]
    assert np.allclose(action[:-1], state[1:]) and np.allclose(action[-1], state[-1])
    assert all("next tick" in next(iter(how)) for how in report.action_sources.values())


def test_stats_match_the_data(converted, small_aloha):
    root, _, _ = converted
    stats = json.loads((root / "meta/stats.json").read_text())
    columns = read_frames(root, ["observation.state", "action"])
    for key in ("observation.state", "action"):
        values = columns[key].astype(np.float64)
        assert np.allclose(stats[key]["mean"], values.mean(0), atol=1e-6)
        assert np.allclose(stats[key]["std"], values.std(0), atol=1e-6)
        assert np.allclose(stats[key]["min"], values.min(0)) and np.allclose(
            stats[key]["max"], values.max(0)
        )
        assert np.allclose(stats[key]["q01"], np.quantile(values, 0.01, axis=0), atol=1e-6)
        assert np.allclose(stats[key]["q99"], np.quantile(values, 0.99, axis=0), atol=1e-6)
        assert stats[key]["count"] == [len(values)]
    image = np.array(stats["observation.images.cam_high"]["mean"])
    assert image.shape == (3, 1, 1) and 0.0 < image.min() and image.max() < 1.0
    dataset = LeRobotV3Dataset(root, small_aloha)
    assert np.allclose(dataset.stats["action"]["mean"], stats["action"]["mean"])
    episode_stats = (
        pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet")
        .column("stats/action/max")
        .to_pylist()
    )
    assert np.allclose(np.max(episode_stats, axis=0), stats["action"]["max"])


@pytest.mark.parametrize(
    ("spec", "episode", "field", "reason"),
    [
        (
            RecordingSpec(cameras=("cam_high", "cam_left_wrist")),
            "rec1.mcap (all episodes)",
            "observation.images.cam_right_wrist",
            "missing camera",
        ),
        (RecordingSpec(nan_command_at=1.8), "rec1.mcap#1", "action/left_arm/elbow", "NaN"),
        (
            RecordingSpec(bad_gripper_width=True),
            "rec1.mcap#0",
            "action/left_gripper",
            "wrong dimension",
        ),
        (RecordingSpec(episodes=[]), "rec1.mcap#0", "task", "no task text"),
        (
            RecordingSpec(camera_gap=(2.0, 2.5)),
            "rec1.mcap#1",
            "observation.images.cam_high",
            "stale source /cam_high/image_raw",
        ),
        (
            RecordingSpec(right_joints=tuple(f"j{i}" for i in range(8))),
            "rec1.mcap#0",
            "observation.state/right_arm/waist",
            "joint 'waist' is not in the JointState names",
        ),
    ],
    ids=[
        "missing-camera",
        "nan-action",
        "wrong-dimension",
        "no-task",
        "stale-camera",
        "missing-joint",
    ],
)
def test_strict_bad_recordings_name_episode_and_field_and_leave_nothing(
    recording_factory, small_aloha, tmp_path, spec, episode, field, reason
):
    good = recording_factory(RecordingSpec())
    bad = recording_factory(spec)  # rec1.mcap: converted after a good recording was written
    with pytest.raises(DatasetError, match=reason) as caught:
        convert_recordings([good, bad], tmp_path / "ds", small_aloha, progress=False, strict=True)
    assert caught.value.episode == episode and caught.value.field == field
    assert _no_leftovers(tmp_path, "ds")


def test_existing_dataset_is_kept_unless_overwritten(converted, recording_factory, small_aloha):
    root, _, _ = converted
    before = (root / "meta/info.json").read_text()
    with pytest.raises(FileExistsError):
        convert_recordings([recording_factory()], root, small_aloha, progress=False)
    assert (root / "meta/info.json").read_text() == before
    with pytest.raises(DatasetError):
        convert_recordings(
            [recording_factory(RecordingSpec(nan_command_at=0.5))],
            root,
            small_aloha,
            overwrite=True,
            progress=False,
        )
    assert (
        root / "meta/info.json"
    ).read_text() == before  # a failed overwrite keeps the old dataset
    spec = RecordingSpec(episodes=[("only one", 0.2, 0.9)])
    convert_recordings([recording_factory(spec)], root, small_aloha, overwrite=True, progress=False)
    assert json.loads((root / "meta/info.json").read_text())["total_episodes"] == 1
    assert len(list(root.parent.glob(".ds.*"))) == 0  # no partial folder left behind


def test_truncated_video_is_reported_by_the_reader(converted, small_aloha):
    root, _, _ = converted
    video = root / "videos/observation.images.cam_left_wrist/chunk-000/file-000.mp4"
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    dataset = LeRobotV3Dataset(root, small_aloha)
    with pytest.raises(DatasetError) as caught:
        dataset[len(dataset) - 1]
    assert caught.value.field == "observation.images.cam_left_wrist" and caught.value.episode == 1


def test_convert_verb_reports_a_bad_codec_in_one_line(recording_factory, small_aloha, tmp_path, capsys):
    import argparse

    from qwen_vla_ros.data import convert

    parser = argparse.ArgumentParser()
    convert.add_arguments(parser)
    recording = recording_factory(RecordingSpec(episodes=[("pick", 0.2, 0.9)]))
    args = parser.parse_args(
        [str(recording), "--embodiment", small_aloha.source_path, "--out", str(tmp_path / "ds"), "--codec", "bogus"]
    )
    assert convert.run(args) == 1
    assert "conversion failed" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


def test_convert_verb_writes_lossless_video_when_asked(recording_factory, small_aloha, tmp_path):
    import argparse
    import json

    from qwen_vla_ros.data import convert

    parser = argparse.ArgumentParser()
    convert.add_arguments(parser)
    recording = recording_factory(RecordingSpec(episodes=[("pick", 0.2, 0.9)]))
    args = parser.parse_args([str(recording), "--embodiment", small_aloha.source_path, "--out",
                              str(tmp_path / "ds"), "--video-quality", "lossless"])
    assert convert.run(args) == 0
    info = json.loads((tmp_path / "ds/meta/info.json").read_text())
    video = info["features"]["observation.images.cam_left_wrist"]["info"]
    assert (video["video.codec"], video["video.pix_fmt"], video["video.crf"]) == ("h264", "yuv444p", 0)
    sample = LeRobotV3Dataset(tmp_path / "ds", small_aloha)[0]
    image = sample["images"]["cam_left_wrist"].numpy().reshape(-1, 3).astype(float)
    assert np.ptp(image, axis=0).max() <= 2  # a flat colour stays flat (no 4:2:0 / crf 30 noise)

"""LeRobot round trip: what the writer stores is what LeRobot's tools expect, and datasets as
LeRobot's recorders write them (motor names, image features, their statistics) are read."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import av
import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from lerobot_layout import LeRobotSpec, episode_frames, episode_vectors, write_lerobot_dataset

from qwen_vla_ros.data.dataset import LeRobotV3Dataset, recompute_stats
from qwen_vla_ros.data.errors import DatasetError
from qwen_vla_ros.data.layout import read_frames, read_package_metadata
from qwen_vla_ros.data.lerobot_v3 import EpisodeData, LeRobotV3Writer
from qwen_vla_ros.data.stats import QUANTILES, STAT_NAMES, channel_histograms, histogram_stats
from qwen_vla_ros.data.synthetic import write_synthetic_dataset
from qwen_vla_ros.embodiment import load_embodiment
from qwen_vla_ros.embodiment.loader import EmbodimentError

#: The top-level keys LeRobot's ``DatasetInfo`` (v3.0) writes; nothing else belongs in info.json.
LEROBOT_INFO_KEYS = {
    "codebase_version", "robot_type", "total_episodes", "total_frames", "total_tasks",
    "chunks_size", "data_files_size_in_mb", "video_files_size_in_mb", "fps", "splits",
    "data_path", "video_path", "features",
}  # fmt: skip
SO100_MOTORS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]

SO100_YAML = """
name: so100_test
prompt: A single SO-100 arm with five joints and a gripper, seen by one front camera.
control: {rate_hz: 30.0, chunk_horizon: 4}
cameras:
  - {name: front, topic: /front/image_raw, image_size: [16, 16]}
state:
  - {name: arm, topic: /joint_states, joints: [shoulder_pan, shoulder_lift, elbow_flex, wrist_flex, wrist_roll, gripper]}
action:
  - name: arm
    kind: joint_position
    joints:
      - {name: shoulder_pan, min: -100, max: 100, max_velocity: 50, state: {source: arm, joint: shoulder_pan}}
      - {name: shoulder_lift, min: -100, max: 100, max_velocity: 50, state: {source: arm, joint: shoulder_lift}}
      - {name: elbow_flex, min: -100, max: 100, max_velocity: 50, sign: -1, offset: 2.0, state: {source: arm, joint: elbow_flex}}
      - {name: wrist_flex, min: -100, max: 100, max_velocity: 50, state: {source: arm, joint: wrist_flex}}
      - {name: wrist_roll, min: -100, max: 100, max_velocity: 50, state: {source: arm, joint: wrist_roll}}
  - name: gripper
    kind: gripper
    joints:
      - {name: gripper, min: -100, max: 100, max_velocity: 50, state: {source: arm, joint: gripper}}
outputs:
  - {topic: /arm/commands, type: std_msgs/msg/Float64MultiArray, groups: [arm, gripper]}
"""

# Two arms whose joints share names: the motor names need the embodiment file's mapping.
TWO_ARMS_YAML = """
name: two_arms_test
prompt: Two mirrored two-joint arms side by side, seen by one camera from above.
control: {rate_hz: 30.0, chunk_horizon: 4}
cameras:
  - {name: cam_high, topic: /cam_high/image_raw, image_size: [16, 16]}
state:
  - {name: joints, topic: /joint_states, joints: [lw, le, rw, re]}
action:
  - name: left_arm
    kind: joint_position
    joints:
      - {name: waist, min: -100, max: 100, max_velocity: 50, state: {source: joints, joint: lw}}
      - {name: elbow, min: -100, max: 100, max_velocity: 50, state: {source: joints, joint: le}}
  - name: right_arm
    kind: joint_position
    joints:
      - {name: waist, min: -100, max: 100, max_velocity: 50, state: {source: joints, joint: rw}}
      - {name: elbow, min: -100, max: 100, max_velocity: 50, state: {source: joints, joint: re}}
outputs:
  - {topic: /arms/commands, type: std_msgs/msg/Float64MultiArray, groups: [left_arm, right_arm]}
"""
TWO_ARMS_MAPPING = """
dataset_names:
  joints: {left_arm/waist: left_waist, left_arm/elbow: left_elbow, right_arm/waist: right_waist,
           right_arm/elbow: right_elbow}
  cameras: {cam_high: top}
"""
TWO_ARMS_MOTORS = ["right_waist", "right_elbow", "left_waist", "left_elbow"]  # not the embodiment's order


@pytest.fixture(scope="module")
def so100(tmp_path_factory):
    path = tmp_path_factory.mktemp("embodiments") / "so100_test.yaml"
    path.write_text(SO100_YAML)
    return load_embodiment(path)


def _two_arms(tmp_path, mapping: str = TWO_ARMS_MAPPING):
    path = tmp_path / "two_arms_test.yaml"
    path.write_text(TWO_ARMS_YAML + mapping)
    return load_embodiment(path)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory, so100):
    root = tmp_path_factory.mktemp("synthetic") / "so100"
    return write_synthetic_dataset(root, so100, episodes=3, episode_length=10, image_size=(16, 16), seed=2)


# -- what the writer stores --------------------------------------------------------------
def test_every_feature_has_per_episode_and_dataset_statistics_in_lerobots_layout(synthetic):
    info = json.loads((synthetic / "meta/info.json").read_text())
    episodes = pq.read_table(synthetic / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    stats = json.loads((synthetic / "meta/stats.json").read_text())
    assert set(stats) == set(info["features"])
    for key, feature in info["features"].items():
        if feature["dtype"] in ("video", "image"):
            shape = (3, 1, 1)
        else:
            shape = tuple(feature["shape"])
        for name in STAT_NAMES:
            expected = (1,) if name == "count" else shape
            assert np.asarray(stats[key][name]).shape == expected, (key, name)
            assert all(np.asarray(e[f"stats/{key}/{name}"]).shape == expected for e in episodes), (key, name)
    # LeRobot rebuilds stats.json from the episode rows (count-weighted mean and variance,
    # min of minima, max of maxima); that must give back what the writer stored.
    for key in info["features"]:
        counts = np.array([e[f"stats/{key}/count"][0] for e in episodes], float)
        means = np.array([e[f"stats/{key}/mean"] for e in episodes])
        variances = np.array([e[f"stats/{key}/std"] for e in episodes]) ** 2
        weights = (counts / counts.sum()).reshape(-1, *[1] * (means.ndim - 1))
        mean = (weights * means).sum(0)
        std = np.sqrt((weights * (variances + (means - mean) ** 2)).sum(0))
        assert np.allclose(mean, stats[key]["mean"], atol=1e-6), key
        assert np.allclose(std, stats[key]["std"], atol=1e-6), key
        assert np.allclose(np.min([e[f"stats/{key}/min"] for e in episodes], 0), stats[key]["min"])
        assert np.allclose(np.max([e[f"stats/{key}/max"] for e in episodes], 0), stats[key]["max"])
        assert stats[key]["count"] == [int(counts.sum())]
    assert stats["index"]["max"] == [29] and isinstance(stats["index"]["max"][0], int)
    assert stats["timestamp"]["q50"] == pytest.approx([4.5 / 30])


def test_image_statistics_are_per_channel_levels_of_the_frames(tmp_path, so100):
    rng = np.random.default_rng(4)
    frames = rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    frames[..., 2] //= 4  # a darker blue channel
    stats = histogram_stats(channel_histograms(frames), len(frames))
    pixels = frames.reshape(-1, 3) / 255.0
    assert np.allclose(stats["mean"][:, 0, 0], pixels.mean(0))
    assert np.allclose(stats["std"][:, 0, 0], pixels.std(0))
    assert np.allclose(stats["min"][:, 0, 0], pixels.min(0)) and np.allclose(stats["max"][:, 0, 0], pixels.max(0))
    for name, q in QUANTILES.items():
        assert np.allclose(stats[name][:, 0, 0], np.quantile(pixels, q, axis=0, method="inverted_cdf")), name
    assert stats["count"].tolist() == [6]
    with LeRobotV3Writer(tmp_path / "ds", fps=30, names=so100.action_names, cameras={"front": (16, 16)}) as writer:
        writer.add_episode(EpisodeData("wave", np.zeros((6, 6)), np.zeros((6, 6)), {"front": frames}))
    stored = pq.read_table(tmp_path / "ds/meta/episodes/chunk-000/file-000.parquet").to_pylist()[0]
    assert np.allclose(stored["stats/observation.images.front/q90"], stats["q90"])


def test_info_holds_lerobots_keys_and_video_encoder_settings(synthetic, tmp_path, so100):
    info = json.loads((synthetic / "meta/info.json").read_text())
    assert set(info) == LEROBOT_INFO_KEYS
    video = info["features"]["observation.images.front"]["info"]
    assert (video["video.g"], video["video.crf"], video["video.pix_fmt"]) == (2, 30, "yuv420p")
    assert video["video.codec"] in ("av1", "h264", "mpeg4") and video["is_depth_map"] is False
    path = synthetic / "videos/observation.images.front/chunk-000/file-000.mp4"
    with av.open(str(path)) as container:
        keyframes = [p.is_keyframe for p in container.demux(container.streams.video[0]) if p.size]
    assert len(keyframes) == 30 and all(keyframes[::2])  # a keyframe at least every 2nd frame
    assert read_package_metadata(synthetic) == {"embodiment": "so100_test", "source": "synthetic", "seed": 2}
    # Datasets written before meta/qwen_vla.json kept the notes in info.json; still read.
    old = tmp_path / "old"
    write_synthetic_dataset(old, so100, episodes=1, episode_length=4, image_size=(16, 16))
    (old / "meta/qwen_vla.json").unlink()
    (old / "meta/info.json").write_text(json.dumps({**info, "qwen_vla": {"embodiment": "so100_test"}}))
    assert read_package_metadata(old) == {"embodiment": "so100_test"}
    with pytest.raises(ValueError, match="not be LeRobot info.json keys"):
        LeRobotV3Writer(tmp_path / "bad", fps=30, names=so100.action_names, cameras={}, extra_info={"mine": 1})


# -- what the reader accepts -------------------------------------------------------------
@pytest.mark.parametrize("fixed", [True, False], ids=["fixed-size-lists", "variable-lists"])
def test_reads_a_lerobot_recorder_dataset_with_motor_names_and_image_features(tmp_path, so100, fixed):
    order = [3, 0, 5, 1, 4, 2]  # the dataset lists the motors in another order than the embodiment
    spec = LeRobotSpec(names=[SO100_MOTORS[i] + ".pos" for i in order], fixed_size_lists=fixed)
    root = write_lerobot_dataset(tmp_path / "so100", spec)
    dataset = LeRobotV3Dataset(root, so100)
    assert len(dataset) == 36 and dataset.cameras == ["front"]
    position = {name: order.index(i) for i, name in enumerate(SO100_MOTORS)}  # embodiment dim -> column
    columns = [position[m] for m in SO100_MOTORS]
    state, action = episode_vectors(spec, 1)
    sample = dataset[12 + 3]  # episode 1, frame 3
    assert (sample["episode_index"], sample["frame_index"]) == (1, 3)
    rig_state = state[3, columns].astype(np.float64)
    assert np.allclose(sample["state"], so100.actions_to_model(rig_state), atol=1e-5)
    assert np.allclose(sample["action"][0], so100.actions_to_model(action[3, columns]), atol=1e-5)
    assert sample["instruction"] == "put it down"
    expected = cv2.resize(episode_frames(spec, 1, "front")[3], (16, 16), interpolation=cv2.INTER_AREA)
    assert np.abs(sample["images"]["front"].numpy().astype(int) - expected).max() <= 1
    frame_mode = LeRobotV3Dataset(root, so100, decode="frame")
    assert np.array_equal(frame_mode[15]["images"]["front"], sample["images"]["front"])
    stats = dataset.stats["observation.state"]  # the dataset's stats, reordered and in model units
    all_states = np.concatenate([episode_vectors(spec, e)[0] for e in range(3)])[:, columns]
    model = so100.actions_to_model(all_states.astype(np.float64))
    assert np.allclose(stats["mean"], model.mean(0), atol=1e-4)
    assert np.allclose(stats["min"], model.min(0), atol=1e-4)  # elbow_flex has sign -1: min/max swap
    assert np.allclose(stats["q10"], np.quantile(model, 0.10, axis=0), atol=1e-4)


def test_motors_dict_names_map_through_the_embodiment_file_or_the_reader(tmp_path):
    spec = LeRobotSpec(names=TWO_ARMS_MOTORS, names_style="motors", cameras={"top": (16, 16)}, with_stats=False,
                       task_index_name=None)  # fmt: skip
    root = write_lerobot_dataset(tmp_path / "aloha_like", spec)
    mapped = LeRobotV3Dataset(root, _two_arms(tmp_path))
    assert mapped[12]["instruction"] == "put it down"  # task text from an unnamed pandas index
    columns = [TWO_ARMS_MOTORS.index(n) for n in ("left_waist", "left_elbow", "right_waist", "right_elbow")]
    state, _ = episode_vectors(spec, 0)
    assert np.allclose(mapped[2]["state"], state[2, columns], atol=1e-5)
    assert mapped.cameras == ["cam_high"] and mapped[2]["images"]["cam_high"].shape == (16, 16, 3)
    assert np.allclose(mapped.stats["action"]["mean"][0], mapped._action[:, 0].mean())  # from rows: no stats.json
    bare = _two_arms(tmp_path, mapping="")
    names = {"joints": {"left_arm/waist": "left_waist", "left_arm/elbow": "left_elbow",
                        "right_arm/waist": "right_waist", "right_arm/elbow": "right_elbow"},
             "cameras": {"cam_high": "observation.images.top"}}  # fmt: skip
    argument = LeRobotV3Dataset(root, bare, names=names)
    assert np.array_equal(argument[7]["state"], mapped[7]["state"])
    stats = recompute_stats(root, bare, names=names)  # stored in the dataset's order
    assert np.allclose(stats["action"]["mean"], np.concatenate(
        [episode_vectors(spec, e)[1] for e in range(3)]).mean(0), atol=1e-5)  # fmt: skip


def test_what_cannot_be_mapped_is_named(tmp_path, so100):
    spec = LeRobotSpec(names=TWO_ARMS_MOTORS, names_style="motors", cameras={"top": (16, 16)})
    root = write_lerobot_dataset(tmp_path / "aloha_like", spec)
    with pytest.raises(DatasetError, match=r"no dataset dimension for embodiment dimension 'left_arm/waist'.*"
                       r"dataset_names.joints") as caught:  # fmt: skip
        LeRobotV3Dataset(root, _two_arms(tmp_path, mapping=""))
    assert caught.value.field == "observation.state/left_arm/waist"
    joints_only = "dataset_names:\n  joints: " + TWO_ARMS_MAPPING.split("joints: ")[1].split("  cameras")[0]
    with pytest.raises(DatasetError, match=r"missing camera.*observation.images.top.*dataset_names.cameras") as caught:
        LeRobotV3Dataset(root, _two_arms(tmp_path, mapping=joints_only))
    assert caught.value.field == "observation.images.cam_high"
    extra = write_lerobot_dataset(tmp_path / "seven", LeRobotSpec(names=[m + ".pos" for m in SO100_MOTORS] + ["x.pos"]))
    with pytest.raises(DatasetError, match="wrong dimension") as caught:
        LeRobotV3Dataset(extra, so100)
    assert caught.value.field == "observation.state"
    renamed = write_lerobot_dataset(tmp_path / "renamed", LeRobotSpec(names=[*SO100_MOTORS[:5], "gripper.pos"]))
    jaw = write_lerobot_dataset(tmp_path / "jaw", LeRobotSpec(names=[*SO100_MOTORS[:5], "jaw"]))
    with pytest.raises(DatasetError, match=r"'gripper/gripper' \(looked for .*'gripper.pos'"):
        LeRobotV3Dataset(jaw, so100)
    assert len(LeRobotV3Dataset(renamed, so100)) == 36  # plain motor names match too
    with pytest.raises(DatasetError, match=r"\['gripper.pos'\] feed several embodiment dimensions"):
        LeRobotV3Dataset(tmp_path / "renamed", so100, names={"joints": {"arm/shoulder_pan": "gripper.pos"}})
    with pytest.raises(EmbodimentError, match="not action dimensions"):
        _two_arms(tmp_path, mapping="dataset_names:\n  joints: {left_arm/wrist: w}\n")
    with pytest.raises(EmbodimentError, match="more than one entry"):
        _two_arms(tmp_path, mapping="dataset_names:\n  joints: {left_arm/waist: w, right_arm/waist: w}\n")


def test_trains_a_few_steps_on_a_lerobot_recorder_dataset(tmp_path):
    embodiment_file = tmp_path / "so100_test.yaml"
    embodiment_file.write_text(SO100_YAML)
    spec = LeRobotSpec(names=[m + ".pos" for m in SO100_MOTORS], lengths=(12, 9, 15, 10))
    root = write_lerobot_dataset(tmp_path / "so100", spec)
    assert read_frames(root, ["action"])["action"].shape == (46, 6)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "qwen_vla_ros.cli", "train", "--stage", "sft", "--dataset", str(root),
               "--embodiment", str(embodiment_file), "--init", "tiny", "--output", str(tmp_path / "run"),
               "--max-steps", "2", "--batch-size", "2", "--no-progress", "--cpu",
               "--set", "eval.every_steps=2", "--set", "eval.max_batches=1"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((tmp_path / "run/train_summary.json").read_text())
    assert summary["step"] == 2 and np.isfinite(summary["final_val_loss"])

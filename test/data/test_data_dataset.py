"""The reader (samples, chunks, padding, caching, stats in model units), the writer's checks,
and the synthetic dataset's learnable structure."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from torch.utils.data import DataLoader

from qwen_vla_ros.data.chunks import pose_steps
from qwen_vla_ros.data.dataset import EpisodeBlockSampler, LeRobotV3Dataset, recompute_stats
from qwen_vla_ros.data.errors import DatasetError
from qwen_vla_ros.data.layout import read_frames
from qwen_vla_ros.data.lerobot_v3 import EpisodeData, LeRobotV3Writer
from qwen_vla_ros.data.synthetic import SYNTHETIC_TASKS, write_synthetic_dataset
from qwen_vla_ros.embodiment import load_embodiment

FLIPPED_ARM_YAML = """
name: flipped_arm
prompt: A two-joint test arm with a gripper; joint j1 is mounted mirrored.
control: {rate_hz: 20.0, chunk_horizon: 6}
cameras:
  - {name: top, topic: /top/image_raw, image_size: [32, 48]}
state:
  - {name: arm, topic: /joint_states, joints: [j1, j2, finger]}
action:
  - name: arm
    kind: joint_position
    joints:
      - {name: j1, min: -1.0, max: 1.0, max_velocity: 2.0, sign: -1, offset: 0.25, state: {source: arm, joint: j1}}
      - {name: j2, min: -1.0, max: 1.0, max_velocity: 2.0, offset: -0.5, state: {source: arm, joint: j2}}
  - name: gripper
    kind: gripper
    joints:
      - {name: gripper, min: 0.0, max: 1.0, max_velocity: 2.0, state: {source: arm, joint: finger}}
outputs:
  - {topic: /arm/commands, type: std_msgs/msg/Float64MultiArray, groups: [arm, gripper]}
"""


@pytest.fixture(scope="module")
def aloha():
    return load_embodiment("aloha")


@pytest.fixture(scope="module")
def aloha_dataset(tmp_path_factory, aloha):
    root = tmp_path_factory.mktemp("synthetic") / "aloha"
    return write_synthetic_dataset(
        root, aloha, episodes=4, episode_length=30, image_size=(32, 32), seed=3
    )


@pytest.fixture(scope="module")
def flipped(tmp_path_factory):
    path = tmp_path_factory.mktemp("flipped") / "flipped_arm.yaml"
    path.write_text(FLIPPED_ARM_YAML)
    return load_embodiment(path)


def test_samples_have_model_shapes_and_padded_chunks(aloha_dataset, aloha):
    dataset = LeRobotV3Dataset(aloha_dataset, aloha)
    columns = read_frames(aloha_dataset, ["observation.state", "action"])
    assert len(dataset) == 120 and dataset.horizon == aloha.chunk_horizon == 50
    sample = dataset[35]  # episode 1, frame 5
    assert (sample["episode_index"], sample["frame_index"]) == (1, 5)
    assert set(sample["images"]) == set(aloha.camera_names)
    for image in sample["images"].values():
        assert (
            image.shape == (224, 224, 3) and str(image.dtype) == "torch.uint8"
        )  # resized from 32x32
    assert sample["state"].shape == (14,) and np.allclose(
        sample["state"], columns["observation.state"][35]
    )
    assert sample["action"].shape == (50, 14) and sample["action_is_pad"].shape == (50,)
    assert int(sample["action_is_pad"].sum()) == 50 - 25  # frames 5..29 are real
    assert np.allclose(sample["action"][:25], columns["action"][35:60])
    assert np.allclose(sample["action"][25:], columns["action"][59])  # the last action repeats
    assert (
        sample["instruction"] in [t for t, _ in SYNTHETIC_TASKS] and sample["embodiment"] == "aloha"
    )


def test_episode_cache_and_per_frame_seeking_agree(aloha_dataset, aloha):
    cached = LeRobotV3Dataset(aloha_dataset, aloha, cameras=["cam_high", "cam_left_wrist"])
    seeking = LeRobotV3Dataset(
        aloha_dataset, aloha, cameras=["cam_high", "cam_left_wrist"], decode="frame"
    )
    for index in (0, 29, 31, 77, 119):
        a, b = cached[index]["images"], seeking[index]["images"]
        assert all(np.array_equal(a[c].numpy(), b[c].numpy()) for c in a)
    for index in range(60, 90):
        cached[index]
    assert cached.cache_misses == 2 * 4  # each (episode, camera) pair decoded once
    assert cached.cache_hits > 0


def test_loader_with_episode_blocks_visits_every_sample_once(aloha_dataset, aloha):
    dataset = LeRobotV3Dataset(
        aloha_dataset, aloha, horizon=8, cameras=["cam_high"], episodes=[1, 3]
    )
    sampler = EpisodeBlockSampler(dataset, episodes_per_block=1, seed=7)
    assert sorted(sampler) == list(range(60))
    loader = DataLoader(dataset, batch_size=6, sampler=sampler)
    batch = next(iter(loader))
    assert batch["images"]["cam_high"].shape == (6, 224, 224, 3)
    assert batch["action"].shape == (6, 8, 14) and len(batch["instruction"]) == 6
    assert (
        set(batch["episode_index"].tolist()) <= {1, 3}
        and len(set(batch["episode_index"].tolist())) == 1
    )


def test_model_units_apply_sign_and_offset_to_samples_and_stats(tmp_path, flipped):
    root = write_synthetic_dataset(
        tmp_path / "flipped", flipped, episodes=3, episode_length=12, seed=5
    )
    dataset = LeRobotV3Dataset(root, flipped)
    rig = read_frames(root, ["observation.state", "action"])
    model_actions = (rig["action"].astype(np.float64) - [0.25, -0.5, 0.0]) * [-1, 1, 1]
    assert np.allclose(
        dataset[4]["state"],
        (rig["observation.state"][4] - [0.25, -0.5, 0.0]) * [-1, 1, 1],
        atol=1e-6,
    )
    assert np.allclose(dataset[4]["action"][0], model_actions[4], atol=1e-6)
    stats = dataset.stats["action"]
    assert np.allclose(stats["mean"], model_actions.mean(0), atol=1e-6)
    assert np.allclose(stats["std"], model_actions.std(0), atol=1e-6)
    assert np.allclose(stats["min"], model_actions.min(0), atol=1e-6)  # min/max swap on j1
    assert np.allclose(stats["max"], model_actions.max(0), atol=1e-6)
    assert np.allclose(stats["q01"], np.quantile(model_actions, 0.01, axis=0), atol=1e-6)
    assert np.allclose(stats["q90"], np.quantile(model_actions, 0.90, axis=0), atol=1e-6)  # q10/q90 swap on j1
    assert np.allclose(stats["q50"], np.median(model_actions, axis=0), atol=1e-6)


def test_waypoint_chunks_are_poses_in_the_frame_at_the_sample(tmp_path):
    base = load_embodiment("mobile_base")  # 10 Hz, horizon 20, waypoints x, y, yaw
    radius, rate = 1.5, 0.4  # driving a circle: rad/s
    times = np.arange(31) * base.dt
    poses = np.stack(
        [radius * np.sin(rate * times), radius * (1 - np.cos(rate * times)), rate * times], 1
    )
    steps = pose_steps(poses)  # the stored per-frame motion, (30, 3)
    frames = np.zeros((30, 224, 224, 3), np.uint8)
    with LeRobotV3Writer(tmp_path / "circle", fps=10, names=base.action_names, cameras={"front": (224, 224)},
                         horizon=20, waypoint_slices=(slice(0, 3),)) as writer:  # fmt: skip
        writer.add_episode(
            EpisodeData("drive in a circle", np.zeros((30, 3)), steps, {"front": frames})
        )
    sample = LeRobotV3Dataset(tmp_path / "circle", base)[4]
    ahead = rate * base.dt * np.arange(1, 21)
    expected = np.stack([radius * np.sin(ahead), radius * (1 - np.cos(ahead)), ahead], 1)
    assert not sample["action_is_pad"].any()  # frames 4..23 of 30 are all real
    assert np.allclose(sample["action"].numpy(), expected, atol=1e-5)
    assert np.allclose(sample["state"].numpy(), 0.0)
    stop = rate * base.dt * 26  # the key pose: where the base stops (frame 30), seen from frame 4
    assert np.allclose(sample["subgoal"].numpy(), [radius * np.sin(stop), radius * (1 - np.cos(stop)), stop], atol=1e-5)
    late = LeRobotV3Dataset(tmp_path / "circle", base)[
        25
    ]  # 5 real steps, then the final pose repeats
    assert np.allclose(late["action"][5:].numpy(), late["action"][4].numpy())
    assert late["action_is_pad"][5:].all() and not late["action_is_pad"][:5].any()
    assert np.allclose(late["action"][4].numpy(), expected[4], atol=1e-5)
    stats = json.loads((tmp_path / "circle/meta/stats.json").read_text())["action"]
    assert stats["max"][2] == pytest.approx(
        rate * base.dt * 20, abs=1e-4
    )  # chunk values, not steps
    recomputed = recompute_stats(tmp_path / "circle", base)
    assert np.allclose(recomputed["action"]["max"], stats["max"], atol=1e-6)


def test_reader_rejects_datasets_that_do_not_fit(aloha_dataset, aloha, tmp_path):
    with pytest.raises(DatasetError, match="wrong dimension") as caught:
        LeRobotV3Dataset(aloha_dataset, load_embodiment("mobile_aloha"))
    assert caught.value.field == "observation.state"
    with pytest.raises(DatasetError, match="missing camera") as caught:
        LeRobotV3Dataset(aloha_dataset, aloha, cameras=["cam_top"])
    assert caught.value.field == "observation.images.cam_top"
    copy = tmp_path / "copy"
    write_synthetic_dataset(copy, aloha, episodes=2, episode_length=10, image_size=(32, 32))
    info = json.loads((copy / "meta/info.json").read_text())
    (copy / "meta/info.json").write_text(json.dumps({**info, "fps": 30}))
    with pytest.raises(DatasetError, match="control rate") as caught:
        LeRobotV3Dataset(copy, aloha)
    assert caught.value.field == "fps"
    (copy / "meta/info.json").write_text(json.dumps(info))
    data_path = copy / "data/chunk-000/file-000.parquet"
    table = pq.read_table(data_path)
    actions = table.column("action").combine_chunks().flatten().to_numpy().copy()
    actions[14 * 13 + 2] = np.nan  # episode 1, frame 3, dimension 2
    column = pa.FixedSizeListArray.from_arrays(pa.array(actions, pa.float32()), 14)
    pq.write_table(
        table.set_column(table.schema.get_field_index("action"), "action", column), data_path
    )
    with pytest.raises(DatasetError, match="frame 3, dimension 'left_arm/elbow'") as caught:
        LeRobotV3Dataset(copy, aloha)
    assert caught.value.episode == 1 and caught.value.field == "action"


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        (
            {"images": {"top": np.zeros((3, 32, 48, 3), np.uint8)}},
            "observation.images.top",
            "truncated video: 3 of 5",
        ),
        ({"images": {}}, "observation.images.top", "missing camera"),
        (
            {"images": {"top": np.zeros((5, 32, 40, 3), np.uint8)}},
            "observation.images.top",
            "expected",
        ),
        (
            {"images": {"top": np.zeros((5, 32, 48, 3), np.uint8), "side": []}},
            "observation.images.side",
            "not features",
        ),
        ({"state": np.zeros((5, 4))}, "observation.state", r"expected \(frames > 0, 3\)"),
        ({"action": np.full((5, 3), np.inf)}, "action/arm/j1", "NaN or infinite value at frame 0"),
        ({"task": ""}, "task", "no task text"),
    ],
    ids=[
        "truncated",
        "missing-camera",
        "frame-size",
        "unknown-camera",
        "state-dimension",
        "inf-action",
        "no-task",
    ],
)
def test_writer_errors_name_episode_and_field_and_leave_nothing(
    tmp_path, flipped, change, field, reason
):
    good = {"task": "wave", "state": np.zeros((5, 3)), "action": np.zeros((5, 3)),
            "images": {"top": np.zeros((5, 32, 48, 3), np.uint8)}}  # fmt: skip
    writer = LeRobotV3Writer(
        tmp_path / "ds", fps=20, names=flipped.action_names, cameras={"top": (32, 48)}
    )
    writer.add_episode(EpisodeData(**good))
    with pytest.raises(DatasetError, match=reason) as caught:
        writer.add_episode(EpisodeData(**{**good, **change}, label="take 2"))
    assert caught.value.episode == "take 2" and caught.value.field == field
    assert list(tmp_path.iterdir()) == []  # the partial folder is gone, no dataset appeared
    with pytest.raises(RuntimeError, match="already finished or aborted"):
        writer.finalize()


def test_synthetic_actions_need_the_images_to_be_predicted(tmp_path, aloha):
    """Held-out episodes: a linear model that sees the marker beats one that does not."""
    root = write_synthetic_dataset(
        tmp_path / "learn", aloha, episodes=40, episode_length=6, image_size=(64, 64), seed=1
    )
    dataset = LeRobotV3Dataset(root, aloha, horizon=1, cameras=["cam_high"])
    tasks = [t for t, _ in SYNTHETIC_TASKS]
    rows = []
    for index in range(len(dataset)):
        sample = dataset[index]
        pixels = sample["images"]["cam_high"].numpy().astype(int)
        ys, xs = np.nonzero(pixels.max(-1) - pixels.min(-1) > 60)  # the coloured marker
        rows.append((sample["episode_index"], tasks.index(sample["instruction"]), sample["state"].numpy(),
                     sample["action"][0].numpy(), [xs.mean() / 223, ys.mean() / 223]))  # fmt: skip
    episode = np.array([r[0] for r in rows])
    task = np.array([r[1] for r in rows])
    state, action, marker = (np.array([r[i] for r in rows]) for i in (2, 3, 4))
    train = episode < 30

    def features(rows_mask: np.ndarray, dim: int, use_marker: bool) -> np.ndarray:
        extra = marker[rows_mask] if use_marker else np.zeros((rows_mask.sum(), 0))
        return np.c_[state[rows_mask, dim], extra, np.ones(rows_mask.sum())]

    def held_out_error(use_marker: bool) -> float:
        total = 0.0
        for k in range(len(tasks)):
            fit, test = train & (task == k), ~train & (task == k)
            if test.sum() == 0 or fit.sum() < 4:
                continue
            for d in range(aloha.action_dim):
                coef, *_ = np.linalg.lstsq(features(fit, d, use_marker), action[fit, d], rcond=None)
                total += float(
                    ((features(test, d, use_marker) @ coef - action[test, d]) ** 2).sum()
                )
        return total

    assert held_out_error(True) < 0.4 * held_out_error(False)

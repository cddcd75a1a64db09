"""Write small datasets the way LeRobot's own writer lays them out, without this package's writer.

What LeRobot 0.4 / 0.6 writes for a recorder dataset with image (not video) cameras:

* info.json: features with ``<motor>.pos`` names (or, in datasets converted from v2,
  ``{"motors": [...]}``), camera features of dtype "image" with names
  [height, width, channels], ``video_path: null``;
* data parquet: vectors as fixed-size (or, with older ``datasets``, variable) float32
  lists, each image a ``{"bytes": PNG, "path": "frame-000000.png"}`` struct cell;
* meta/episodes: one row per episode with ``stats/<feature>/<stat>`` columns for every
  feature: vectors (D,), scalars (1,), images nested (3, 1, 1) in [0, 1], counts (1,)
  int64, integer columns' min/max int64;
* meta/stats.json: the same statistics over the whole dataset; meta/tasks.parquet with
  the task text as the pandas index ("task"; unnamed, ``__index_level_0__``, in 0.4).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
INDEX_FEATURES = {
    "timestamp": "float32",
    "frame_index": "int64",
    "episode_index": "int64",
    "index": "int64",
    "task_index": "int64",
}


@dataclass
class LeRobotSpec:
    """What to write: names as the dataset spells them, cameras (H, W), episodes."""

    names: list[str]
    cameras: dict[str, tuple[int, int]] = field(default_factory=lambda: {"front": (24, 32)})
    fps: int = 30
    lengths: tuple[int, ...] = (12, 9, 15)
    tasks: tuple[str, ...] = ("pick up the cube", "put it down")
    names_style: str = "list"  # "list", "motors" ({"motors": [...]}) or "none"
    fixed_size_lists: bool = True
    with_stats: bool = True
    task_index_name: str = "task"  # LeRobot 0.4 saved the tasks' pandas index unnamed
    robot_type: str = "so100_follower"
    seed: int = 0


def _stats(values: np.ndarray) -> dict[str, list]:
    values = np.asarray(values)
    as_float = values.astype(np.float64)
    stats = {
        "min": values.min(0),
        "max": values.max(0),
        "mean": as_float.mean(0),
        "std": as_float.std(0),
        "count": np.array([len(values)], np.int64),
    }
    stats.update({k: np.quantile(as_float, q, axis=0) for k, q in QUANTILES.items()})
    return {k: np.asarray(v).tolist() for k, v in stats.items()}


def _image_stats(frames: np.ndarray) -> dict[str, list]:
    """Per channel, (3, 1, 1) nested lists in [0, 1]; count = frames."""
    pixels = frames.reshape(-1, 3).astype(np.float64) / 255.0
    stats = _stats(pixels)
    out = {k: [[[v]] for v in values] for k, values in stats.items() if k != "count"}
    out["count"] = [len(frames)]
    return out


def episode_frames(spec: LeRobotSpec, episode: int, camera: str) -> np.ndarray:
    """The RGB frames written for one episode and camera (a ramp that differs per frame)."""
    height, width = spec.cameras[camera]
    frames = np.zeros((spec.lengths[episode], height, width, 3), np.uint8)
    for t in range(len(frames)):
        frames[t, :, :, episode % 3] = 20 * episode + 5 * t
        frames[t, : height // 2, : width // 2, 1] = 200  # a block, to tell orientation
    return frames


def episode_vectors(spec: LeRobotSpec, episode: int) -> tuple[np.ndarray, np.ndarray]:
    """(state, action) of one episode: dimension d of frame t is 10 * d + t / 100 + episode."""
    t = np.arange(spec.lengths[episode])[:, None] / 100.0
    state = 10.0 * np.arange(len(spec.names))[None, :] + t + episode
    return state.astype(np.float32), (state + 0.5).astype(np.float32)


def _vector_column(values: np.ndarray, fixed: bool) -> pa.Array:
    flat = pa.array(values.astype(np.float32).ravel(), pa.float32())
    if fixed:
        return pa.FixedSizeListArray.from_arrays(flat, values.shape[1])
    offsets = pa.array(np.arange(0, values.size + 1, values.shape[1], dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, flat)


def _png(rgb: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return buffer.tobytes()


def _features(spec: LeRobotSpec) -> dict:
    names = {"list": spec.names, "motors": {"motors": spec.names}, "none": None}[spec.names_style]
    vector = {"dtype": "float32", "shape": [len(spec.names)], "names": names}
    features = {"observation.state": dict(vector), "action": dict(vector)}
    for camera, (height, width) in spec.cameras.items():
        features[f"observation.images.{camera}"] = {
            "dtype": "image",
            "shape": [height, width, 3],
            "names": ["height", "width", "channels"],
        }
    for key, dtype in INDEX_FEATURES.items():
        features[key] = {"dtype": dtype, "shape": [1], "names": None}
    return features


def write_lerobot_dataset(root: Path, spec: LeRobotSpec) -> Path:
    """Write the dataset at ``root`` (created); returns ``root``."""
    root = Path(root)
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    (root / "data/chunk-000").mkdir(parents=True)
    columns: dict[str, list] = {k: [] for k in _features(spec)}
    episode_rows, all_stats = [], {k: [] for k in _features(spec)}
    start = 0
    for episode, length in enumerate(spec.lengths):
        task_index = episode % len(spec.tasks)
        state, action = episode_vectors(spec, episode)
        frame_index = np.arange(length)
        values = {
            "observation.state": state,
            "action": action,
            "timestamp": (frame_index / spec.fps).astype(np.float32),
            "frame_index": frame_index,
            "episode_index": np.full(length, episode),
            "index": start + frame_index,
            "task_index": np.full(length, task_index),
        }
        row = {
            "episode_index": episode,
            "tasks": [spec.tasks[task_index]],
            "length": length,
            "data/chunk_index": 0,
            "data/file_index": 0,
            "dataset_from_index": start,
            "dataset_to_index": start + length,
        }
        for camera in spec.cameras:
            key = f"observation.images.{camera}"
            frames = episode_frames(spec, episode, camera)
            values[key] = frames
            columns[key] += [{"bytes": _png(f), "path": f"frame-{t:06d}.png"} for t, f in enumerate(frames)]
        for key, array in values.items():
            if not key.startswith("observation.images."):
                columns[key].append(array)
            stats = _image_stats(array) if key.startswith("observation.images.") else _stats(array)
            all_stats[key].append(array)
            if spec.with_stats:
                row.update({f"stats/{key}/{name}": value for name, value in stats.items()})
        row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
        episode_rows.append(row)
        start += length

    table = {}
    for key, parts in columns.items():
        if key in ("observation.state", "action"):
            table[key] = _vector_column(np.concatenate(parts), spec.fixed_size_lists)
        elif key.startswith("observation.images."):
            table[key] = pa.array(parts, pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
        else:
            table[key] = pa.array(np.concatenate(parts).astype(INDEX_FEATURES[key]))
    pq.write_table(pa.table(table), root / "data/chunk-000/file-000.parquet")
    pq.write_table(pa.Table.from_pylist(episode_rows), root / "meta/episodes/chunk-000/file-000.parquet")
    column = spec.task_index_name or "__index_level_0__"
    tasks = pa.table({"task_index": pa.array(range(len(spec.tasks)), pa.int64()), column: list(spec.tasks)})
    pandas_meta = {"index_columns": [column], "columns": []}  # what pandas.to_parquet records
    tasks = tasks.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})
    pq.write_table(tasks, root / "meta/tasks.parquet")
    if spec.with_stats:
        stats = {
            key: _image_stats(np.concatenate(parts)) if key.startswith("observation.images.")
            else _stats(np.concatenate(parts))
            for key, parts in all_stats.items()
        }
        (root / "meta/stats.json").write_text(json.dumps(stats, indent=4))
    total = sum(spec.lengths)
    info = {
        "codebase_version": "v3.0",
        "robot_type": spec.robot_type,
        "total_episodes": len(spec.lengths),
        "total_frames": total,
        "total_tasks": len(spec.tasks),
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 200,
        "fps": spec.fps,
        "splits": {"train": f"0:{len(spec.lengths)}"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": None,
        "features": _features(spec),
    }
    (root / "meta/info.json").write_text(json.dumps(info, indent=4))
    return root

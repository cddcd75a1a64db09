"""Write a LeRobot v3.0 dataset, atomically (pure core).

Everything goes into a hidden sibling folder ``.<name>.partial-<id>`` that is renamed
to the dataset folder only after every file is written and every video verified.
On any error the partial folder is deleted, so a failed conversion leaves nothing
that looks like a dataset. Bad episodes raise :class:`DatasetError` naming the
episode and the field.

What LeRobot's own tools expect is kept: every feature has per-episode statistics in
the ``stats/<feature>/<stat>`` columns of meta/episodes (see :mod:`.stats`), info.json
holds only LeRobot's keys (with each video's encoder settings), and this package's own
notes go to meta/qwen_vla.json.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import layout as L
from .chunks import all_chunks
from .errors import DatasetError
from .stats import array_stats, channel_histograms, histogram_stats, with_blocks_from, write_stats
from .video import (
    CODECS,
    DEFAULT_CRF,
    DEFAULT_GOP,
    PIX_FMT,
    VideoError,
    VideoFileWriter,
    choose_codec,
    count_frames,
    encoder_settings,
)

_MB = 1024 * 1024
_STATS_PIXELS_PER_SIDE = 64  # colour statistics look at about this many pixels per image side


@dataclass
class EpisodeData:
    """One episode on the control grid, in rig units.

    Attributes:
        task: the language instruction.
        state: (T, D) measured state per frame.
        action: (T, D) action per frame.
        images: camera name -> T RGB uint8 frames, (T, H, W, 3) array or any iterable.
        label: how errors name the episode (e.g. ``run3.mcap#2``); defaults to its index.
    """

    task: str
    state: np.ndarray
    action: np.ndarray
    images: dict[str, Any] = field(default_factory=dict)
    label: str | None = None


@dataclass
class _VideoShard:
    writer: VideoFileWriter
    chunk_index: int
    file_index: int
    expected: dict[Path, int] = field(default_factory=dict)


class LeRobotV3Writer:
    """Collect episodes and write them as one LeRobot v3.0 dataset at ``root``.

    Args:
        fps: frames per second of every feature (the control rate), Hz.
        names: the state/action layout, ``group/joint`` per dimension.
        cameras: camera name -> stored (height, width) px.
        robot_type: stored in info.json (the embodiment name).
        codec: a PyAV encoder (default: :func:`choose_codec`).
        crf: video quality (lower is better; LeRobot's default 30; 0 is lossless with x264).
        pix_fmt: ``yuv420p`` (LeRobot's default) or ``yuv444p`` (full colour resolution,
            for small images; see :data:`.video.PIX_FMTS`).
        horizon: chunk length used for the statistics of waypoint dimensions.
        waypoint_slices: action slices stored as one-step motions (see :mod:`.chunks`).
        gop: frames between video keyframes (LeRobot's default 2: fast random access).
        metadata: this package's notes on the dataset (embodiment, source), written to
            meta/qwen_vla.json (never into info.json, which LeRobot rewrites).
        extra_info: older spelling of ``metadata`` as ``{"qwen_vla": {...}}``; other keys
            are refused (info.json keeps LeRobot's keys only).
    """

    def __init__(
        self,
        root: str | Path,
        *,
        fps: float,
        names: list[str],
        cameras: dict[str, tuple[int, int]],
        robot_type: str = "",
        codec: str | None = None,
        crf: int = DEFAULT_CRF,
        overwrite: bool = False,
        horizon: int = 1,
        waypoint_slices: tuple[slice, ...] = (),
        data_file_mb: float = L.DEFAULT_DATA_FILE_MB,
        video_file_mb: float = L.DEFAULT_VIDEO_FILE_MB,
        chunks_size: int = L.DEFAULT_CHUNKS_SIZE,
        extra_info: dict[str, Any] | None = None,
        gop: int = DEFAULT_GOP,
        metadata: dict[str, Any] | None = None,
        pix_fmt: str = PIX_FMT,
    ):
        self.root = Path(root)
        if self.root.exists() and not overwrite:
            raise FileExistsError(f"{self.root} exists; pass overwrite=True to replace it")
        self.fps, self.names, self.cameras = float(fps), list(names), dict(cameras)
        self.robot_type, self.crf, self.horizon = robot_type, crf, int(horizon)
        self.codec = codec or choose_codec()
        self.waypoint_slices = tuple(waypoint_slices)
        self._limits = (data_file_mb * _MB, video_file_mb * _MB, int(chunks_size))
        self.gop, self.pix_fmt = int(gop), pix_fmt
        self.metadata = L.package_metadata(metadata, extra_info)
        self._tmp = self.root.parent / f".{self.root.name}.partial-{uuid.uuid4().hex[:8]}"
        self._tmp.mkdir(parents=True)
        self._tasks: dict[str, int] = {}
        self._episodes: list[dict[str, Any]] = []
        self._pending: list[pa.Table] = []
        self._data_at = (0, 0)
        self._videos: dict[str, _VideoShard] = {}
        self._states: list[np.ndarray] = []
        self._actions: list[np.ndarray] = []
        self._action_chunks: list[np.ndarray] = []
        self._image_histograms = {c: np.zeros((3, 256), np.int64) for c in self.cameras}
        self._frames = 0
        self._done = False

    # -- episodes ----------------------------------------------------------------------
    def add_episode(self, episode: EpisodeData) -> int:
        """Validate and write one episode; returns its episode_index.

        Any error aborts the whole dataset (its videos would hold a partial episode).
        """
        self._check_usable()
        try:
            return self._add_episode(episode)
        except BaseException:
            self.abort()
            raise

    def _add_episode(self, episode: EpisodeData) -> int:
        index = len(self._episodes)
        label = episode.label if episode.label is not None else index
        state, action = self._validated(episode, label)
        length = len(state)
        videos = {
            cam: self._encode(cam, episode.images.get(cam), length, label) for cam in self.cameras
        }
        task_index = self._tasks.setdefault(episode.task, len(self._tasks))
        if sum(t.nbytes for t in self._pending) >= self._limits[0]:
            self._flush_data()  # episodes never straddle data files
        table = self._append_rows(index, state, action, task_index)
        stats = self._stats_of_episode(table, {cam: v[1] for cam, v in videos.items()})
        locations = {cam: v[0] for cam, v in videos.items()}
        self._episodes.append(self._episode_row(index, episode.task, length, locations, stats))
        self._frames += length
        return index

    def _validated(self, episode: EpisodeData, label: str | int) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(episode.task, str) or not episode.task.strip():
            raise DatasetError("the episode has no task text", episode=label, field="task")
        width = len(self.names)
        arrays = []
        for key, values in ((L.STATE_KEY, episode.state), (L.ACTION_KEY, episode.action)):
            values = np.asarray(values, dtype=np.float64)
            if values.ndim != 2 or values.shape[1] != width or values.shape[0] == 0:
                raise DatasetError(
                    f"has shape {values.shape}, expected (frames > 0, {width})",
                    episode=label,
                    field=key,
                )
            bad = np.argwhere(~np.isfinite(values))
            if len(bad):
                frame, dim = (int(v) for v in bad[0])
                raise DatasetError(
                    f"NaN or infinite value at frame {frame}, dimension '{self.names[dim]}' "
                    f"({len(bad)} bad values)",
                    episode=label,
                    field=f"{key}/{self.names[dim]}",
                )
            arrays.append(values)
        if len(arrays[0]) != len(arrays[1]):
            raise DatasetError(
                f"{len(arrays[1])} actions for {len(arrays[0])} states",
                episode=label,
                field=L.ACTION_KEY,
            )
        unknown = sorted(set(episode.images) - set(self.cameras))
        if unknown:
            raise DatasetError(
                f"camera(s) {unknown} are not features of this dataset ({sorted(self.cameras)})",
                episode=label,
                field=L.image_key(unknown[0]),
            )
        return arrays[0], arrays[1]

    def _encode(
        self, camera: str, frames: Iterable[np.ndarray] | None, length: int, label
    ) -> tuple[dict[str, Any], np.ndarray]:
        """Append one episode's frames to the camera's video; returns where they are (the
        episode row's ``videos/...`` entries) and their (3, 256) pixel-level counts."""
        key = L.image_key(camera)
        if frames is None:
            raise DatasetError(
                "missing camera: no frames for this episode", episode=label, field=key
            )
        shard = self._video_shard(camera)
        start = shard.writer.frames
        histograms = np.zeros((3, 256), np.int64)
        stride = max(1, max(self.cameras[camera]) // _STATS_PIXELS_PER_SIDE)
        count = 0
        for frame in frames:
            if count >= length:
                raise DatasetError(f"more than {length} frames", episode=label, field=key)
            frame = np.asarray(frame)
            if frame.shape != (*self.cameras[camera], 3) or frame.dtype != np.uint8:
                raise DatasetError(
                    f"frame {count} is {frame.shape} {frame.dtype}, expected "
                    f"{(*self.cameras[camera], 3)} uint8",
                    episode=label,
                    field=key,
                )
            shard.writer.add(frame)
            histograms += channel_histograms(frame, stride)
            count += 1
        if count != length:
            raise DatasetError(
                f"truncated video: {count} of {length} frames", episode=label, field=key
            )
        path = shard.writer.path
        shard.expected[path] = shard.writer.frames
        self._image_histograms[camera] += histograms
        location = {
            f"videos/{key}/chunk_index": shard.chunk_index,
            f"videos/{key}/file_index": shard.file_index,
            f"videos/{key}/from_timestamp": start / self.fps,
            f"videos/{key}/to_timestamp": (start + length) / self.fps,
        }
        return location, histograms

    def _video_shard(self, camera: str) -> _VideoShard:
        """The open video file for a camera; a new one once the current file is large."""
        shard = self._videos.get(camera)
        # The muxer creates the file lazily, so a missing file is an empty one.
        if shard is not None and _file_size(shard.writer.path) < self._limits[1]:
            return shard
        chunk, file = (0, 0)
        expected: dict[Path, int] = {}
        if shard is not None:
            shard.writer.close()
            chunk, file = L.next_chunk_file(shard.chunk_index, shard.file_index, self._limits[2])
            expected = shard.expected
        relative = L.VIDEO_PATH.format(
            video_key=L.image_key(camera), chunk_index=chunk, file_index=file
        )
        writer = VideoFileWriter(
            self._tmp / relative, self.fps, self.cameras[camera], self.codec, self.crf, self.gop, self.pix_fmt
        )
        self._videos[camera] = _VideoShard(writer, chunk, file, expected)
        return self._videos[camera]

    def _append_rows(
        self, index: int, state: np.ndarray, action: np.ndarray, task_index: int
    ) -> pa.Table:
        length, width = state.shape
        frame_index = np.arange(length, dtype=np.int64)
        table = pa.table(
            {
                L.STATE_KEY: pa.FixedSizeListArray.from_arrays(
                    pa.array(state.astype(np.float32).ravel()), width
                ),
                L.ACTION_KEY: pa.FixedSizeListArray.from_arrays(
                    pa.array(action.astype(np.float32).ravel()), width
                ),
                "timestamp": pa.array((frame_index / self.fps).astype(np.float32)),
                "frame_index": pa.array(frame_index),
                "episode_index": pa.array(np.full(length, index, np.int64)),
                "index": pa.array(self._frames + frame_index),
                "task_index": pa.array(np.full(length, task_index, np.int64)),
            }
        )
        self._pending.append(table)
        self._states.append(state)
        self._actions.append(action)
        if self.waypoint_slices:
            self._action_chunks.append(all_chunks(action, self.horizon, self.waypoint_slices))
        return table

    def _stats_of_episode(
        self, table: pa.Table, histograms: dict[str, np.ndarray]
    ) -> dict[str, dict[str, np.ndarray]]:
        """Every feature's statistics over one episode, in info.json's feature order."""
        action_chunks = self._action_chunks[-1] if self.waypoint_slices else None
        stats = {
            L.STATE_KEY: array_stats(self._states[-1]),
            L.ACTION_KEY: self._action_stats(self._actions[-1], action_chunks),
        }
        for camera, counts in histograms.items():
            stats[L.image_key(camera)] = histogram_stats(counts, table.num_rows)
        for key in L.INDEX_KEYS:
            stats[key] = array_stats(table.column(key).to_numpy())
        return stats

    def _action_stats(self, actions: np.ndarray, chunks: np.ndarray | None) -> dict:
        """Action statistics; waypoint dimensions: those of their chunk values."""
        stats = array_stats(actions)
        if chunks is None:
            return stats
        return with_blocks_from(stats, array_stats(chunks), self.waypoint_slices)

    def _episode_row(self, index, task, length, videos, stats) -> dict[str, Any]:
        row: dict[str, Any] = {
            "episode_index": index,
            "tasks": [task],
            "length": length,
            "data/chunk_index": self._data_at[0],
            "data/file_index": self._data_at[1],
            "dataset_from_index": self._frames,
            "dataset_to_index": self._frames + length,
            **{k: v for cam_videos in videos.values() for k, v in cam_videos.items()},
            "meta/episodes/chunk_index": 0,
            "meta/episodes/file_index": 0,
        }
        for key, values in stats.items():
            for name, value in values.items():
                row[f"stats/{key}/{name}"] = np.asarray(value).tolist()
        return row

    def _flush_data(self) -> None:
        """Write the pending episodes' rows as one data file and move on to the next file."""
        if not self._pending:
            return
        chunk, file = self._data_at
        path = self._tmp / L.DATA_PATH.format(chunk_index=chunk, file_index=file)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables(self._pending), path)
        self._pending = []
        self._data_at = L.next_chunk_file(chunk, file, self._limits[2])

    # -- finishing ---------------------------------------------------------------------
    def finalize(self) -> Path:
        """Write metadata and statistics, verify videos, and move the dataset into place."""
        self._check_usable()
        try:
            if not self._episodes:
                raise DatasetError("no episodes were added", field="episodes")
            self._flush_data()
            self._close_and_verify_videos()
            self._write_metadata()
            self._move_into_place()
        except BaseException:
            self.abort()
            raise
        self._done = True
        return self.root

    def _close_and_verify_videos(self) -> None:
        for camera, shard in self._videos.items():
            shard.writer.close()
            for path, expected in shard.expected.items():
                try:
                    found = count_frames(path)
                except VideoError as exc:
                    raise DatasetError(str(exc), field=L.image_key(camera)) from exc
                if found != expected:
                    raise DatasetError(
                        f"truncated video {path.name}: {found} of {expected} frames were written",
                        field=L.image_key(camera),
                    )

    def _write_metadata(self) -> None:
        tasks = sorted(self._tasks, key=self._tasks.get)
        (self._tmp / "meta").mkdir(parents=True, exist_ok=True)
        pq.write_table(L.tasks_table(tasks), self._tmp / L.TASKS_PATH)
        episodes_path = self._tmp / L.EPISODES_PATH.format(chunk_index=0, file_index=0)
        episodes_path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(self._episodes), episodes_path)
        write_stats(self._tmp / L.STATS_PATH, self._dataset_stats())
        info = self._info(len(tasks))
        (self._tmp / L.INFO_PATH).write_text(json.dumps(info, indent=4), encoding="utf-8")
        if self.metadata:
            (self._tmp / L.PACKAGE_META_PATH).write_text(
                json.dumps(self.metadata, indent=4), encoding="utf-8"
            )

    def _dataset_stats(self) -> dict[str, dict[str, np.ndarray]]:
        """Exact statistics over every frame (LeRobot's own aggregation of the per-episode
        statistics can only bound quantiles)."""
        chunks = np.concatenate(self._action_chunks) if self.waypoint_slices else None
        stats = {
            L.STATE_KEY: array_stats(np.concatenate(self._states)),
            L.ACTION_KEY: self._action_stats(np.concatenate(self._actions), chunks),
        }
        for camera, counts in self._image_histograms.items():
            stats[L.image_key(camera)] = histogram_stats(counts, self._frames)
        lengths = [len(s) for s in self._states]
        frame_index = np.concatenate([np.arange(n) for n in lengths])
        task_of_episode = [self._tasks[e["tasks"][0]] for e in self._episodes]
        columns = {
            "timestamp": (frame_index / self.fps).astype(np.float32),
            "frame_index": frame_index,
            "episode_index": np.repeat(np.arange(len(lengths)), lengths),
            "index": np.arange(self._frames),
            "task_index": np.repeat(task_of_episode, lengths),
        }
        stats.update({key: array_stats(values) for key, values in columns.items()})
        return stats

    def _info(self, total_tasks: int) -> dict[str, Any]:
        vector = {"dtype": "float32", "shape": [len(self.names)], "names": list(self.names)}
        features: dict[str, Any] = {L.STATE_KEY: dict(vector), L.ACTION_KEY: dict(vector)}
        codec_name = CODECS[self.codec][0]
        for camera, (height, width) in self.cameras.items():
            features[L.image_key(camera)] = {
                "dtype": "video",
                "shape": [height, width, 3],
                "names": ["height", "width", "channels"],
                "info": {
                    "video.height": height,
                    "video.width": width,
                    "video.codec": codec_name,
                    "video.fps": _plain_number(self.fps),
                    "video.channels": 3,
                    "has_audio": False,
                    **encoder_settings(self.codec, self.gop, self.crf, self.pix_fmt),
                    "is_depth_map": False,
                },
            }
        features.update(json.loads(json.dumps(L.DEFAULT_FEATURES)))
        return {
            "codebase_version": L.CODEBASE_VERSION,
            "robot_type": self.robot_type,
            "total_episodes": len(self._episodes),
            "total_frames": self._frames,
            "total_tasks": total_tasks,
            "chunks_size": self._limits[2],
            "data_files_size_in_mb": _plain_number(self._limits[0] / _MB),
            "video_files_size_in_mb": _plain_number(self._limits[1] / _MB),
            "fps": _plain_number(self.fps),
            "splits": {"train": f"0:{len(self._episodes)}"},
            "data_path": L.DATA_PATH,
            "video_path": L.VIDEO_PATH if self.cameras else None,
            "features": features,
        }

    def _move_into_place(self) -> None:
        trash = None
        if self.root.exists():
            trash = self.root.parent / f".{self.root.name}.old-{uuid.uuid4().hex[:8]}"
            self.root.rename(trash)
        self._tmp.rename(self.root)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)

    def abort(self) -> None:
        """Drop everything written so far (the dataset folder is never created)."""
        for shard in self._videos.values():
            shard.writer.abort()
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._done = True

    def _check_usable(self) -> None:
        if self._done:
            raise RuntimeError("this writer has already finished or aborted")

    def __enter__(self) -> LeRobotV3Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._done:
            return
        if exc_type is not None:
            self.abort()
        else:
            self.finalize()


def _plain_number(value: float) -> int | float:
    """50.0 -> 50 (LeRobot stores fps as an int), 12.5 stays a float."""
    return int(value) if float(value).is_integer() else float(value)


def _file_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0

"""Training samples from a LeRobot v3.0 dataset (pure core, torch Dataset).

A sample at frame t of an episode holds the camera images at t, the state at t
and the chunk of the next ``horizon`` actions (t .. t+H-1), all in the
embodiment's model units, and ``subgoal``, the action at the next key pose (a grasp or the
episode end, see :mod:`.keyframes`). Past the episode end the last action repeats and
``action_is_pad`` is True (see :mod:`.chunks` for waypoint groups).

Datasets from LeRobot's own recorders are read as they are: motor names are matched
to the embodiment (:mod:`.feature_map`), and cameras may be videos or ``image``
features (PNG/JPEG cells in the data files).

Video decoding is the cost: with ``decode="episode"`` (default) a camera's whole
episode segment is decoded in one forward pass on first use and kept in an LRU
cache bounded by ``cache_mb``; :class:`EpisodeBlockSampler` orders a shuffled
epoch so that each episode is decoded about once. ``decode="frame"`` seeks and
decodes per sample instead (little memory, slow; see bench/bench_data.py).
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..embodiment import Embodiment
from ..embodiment.schema import DatasetNames
from . import layout as L
from .chunks import action_chunk, all_chunks, integrate_steps, slice_key, waypoint_slices
from .errors import DatasetError
from .feature_map import resolve_features
from .images import ImageConversionError, compressed_to_rgb, resize_rgb
from .keyframes import gripper_slices, key_pose, keyframes
from .stats import (
    STAT_NAMES,
    array_stats,
    load_stats,
    select_dimensions,
    stats_to_model_units,
    with_blocks_from,
    write_stats,
)
from .video import VideoError, decode_frame, decode_frames


class LeRobotV3Dataset(Dataset):
    """Samples for one embodiment from a LeRobot v3.0 dataset folder.

    Args:
        root: the dataset folder (holding meta/, data/, videos/).
        embodiment: the robot the dataset was recorded on; its action layout and rate
            must match the dataset (else :class:`DatasetError`); images are resized to
            its camera sizes.
        horizon: actions per chunk (default: the embodiment's chunk_horizon).
        cameras: camera names to load (default: the embodiment's cameras present in the
            dataset; a required one that is missing is an error).
        names: dataset names of joints and cameras, on top of the embodiment file's
            ``dataset_names`` (``{"joints": {"arm/j1": "j1.pos"}, "cameras": {...}}``).
        episodes: episode indices to use (e.g. a train/validation split); default all.
        decode: ``"episode"`` (decode segments once, cache) or ``"frame"`` (seek per sample).
        cache_mb: memory bound of the decoded-frame cache, MiB (per process / worker).
    """

    def __init__(
        self,
        root: str | Path,
        embodiment: Embodiment,
        horizon: int | None = None,
        cameras: Sequence[str] | None = None,
        *,
        episodes: Sequence[int] | None = None,
        decode: str = "episode",
        cache_mb: float = 2048,
        names: DatasetNames | Mapping | None = None,
    ):
        if decode not in ("episode", "frame"):
            raise ValueError(f"decode must be 'episode' or 'frame', not {decode!r}")
        self.root = Path(root)
        self.embodiment = embodiment
        self.horizon = int(horizon or embodiment.chunk_horizon)
        self.decode = decode
        self.info = L.read_info(self.root)
        self.fps = float(self.info["fps"])
        self._check_rate()
        self.features = resolve_features(self.info, embodiment, cameras, names)
        self.cameras = list(self.features.camera_keys)
        self.image_sizes = {c: self._image_size(c) for c in self.cameras}
        self.tasks = L.read_tasks(self.root)
        self.episodes = L.read_episodes(self.root)
        self._load_rows()
        chosen = range(len(self.episodes)) if episodes is None else episodes
        self.episode_ids = [self._checked_episode(e) for e in chosen]
        self._frames = self._rows_of(self.episode_ids)
        self._row_ranges: dict[int, tuple[int, int]] = {}  # episode -> positions, filled on use
        self._episode_starts = np.array([e["dataset_from_index"] for e in self.episodes], np.int64)
        self._waypoints = waypoint_slices(embodiment)
        self._poses: dict[int, dict[tuple[int, int], np.ndarray]] = {}
        self._grippers = gripper_slices(embodiment)
        self._keyframes: dict[int, np.ndarray] = {}
        self._cache: OrderedDict[tuple[int, str], np.ndarray] = OrderedDict()
        self._cache_bytes = 0
        self._cache_limit = int(cache_mb * 1024 * 1024)
        self.cache_hits = self.cache_misses = 0

    def _load_rows(self) -> None:
        """State, action and task index of every frame, checked against the metadata."""
        columns = L.read_frames(
            self.root, [L.STATE_KEY, L.ACTION_KEY, "episode_index", "frame_index", "task_index"]
        )
        # Columns in the embodiment's order, whatever the dataset's order.
        self._state = columns[L.STATE_KEY][:, self.features.state_index].astype(np.float64)
        self._action = columns[L.ACTION_KEY][:, self.features.action_index].astype(np.float64)
        self._task_index = columns["task_index"].astype(np.int64)
        self._check_rows(columns)

    def _rows_of(self, episodes: list[int]) -> np.ndarray:
        """Data rows of the chosen episodes, in order: position i of the dataset -> row."""
        ranges = [
            np.arange(self.episodes[e]["dataset_from_index"], self.episodes[e]["dataset_to_index"])
            for e in episodes
        ]
        return np.concatenate(ranges).astype(np.int64) if ranges else np.zeros(0, np.int64)

    # -- checks ----------------------------------------------------------------------
    def _check_rate(self) -> None:
        if abs(self.fps - self.embodiment.control_rate_hz) > 1e-6:
            raise DatasetError(
                f"dataset fps {self.fps} Hz differs from the embodiment's control rate "
                f"{self.embodiment.control_rate_hz} Hz",
                field="fps",
            )

    def _image_size(self, camera: str) -> tuple[int, int]:
        for spec in self.embodiment.cameras:
            if spec.name == camera:
                return tuple(spec.image_size)
        shape = self.info["features"][self.features.camera_keys[camera]]["shape"]
        return int(shape[0]), int(shape[1])

    def _check_rows(self, columns: dict[str, np.ndarray]) -> None:
        total = len(self._state)
        if total != int(self.info["total_frames"]):
            raise DatasetError(
                f"{total} data rows, info.json says {self.info['total_frames']}", field="data"
            )
        if not np.array_equal(columns["index"], np.arange(total)):
            raise DatasetError("the 'index' column is not 0..N-1", field="index")
        for episode in self.episodes:
            start, end = int(episode["dataset_from_index"]), int(episode["dataset_to_index"])
            rows = columns["episode_index"][start:end]
            if end - start != int(episode["length"]) or not np.all(
                rows == episode["episode_index"]
            ):
                raise DatasetError(
                    f"rows {start}:{end} do not hold this episode's {episode['length']} frames",
                    episode=episode["episode_index"],
                    field="dataset_from_index",
                )
        bad = np.argwhere(~np.isfinite(self._action))
        if len(bad):
            frame = int(bad[0][0])
            raise DatasetError(
                f"NaN or infinite action at frame {columns['frame_index'][frame]}, "
                f"dimension '{self.embodiment.action_names[bad[0][1]]}'",
                episode=int(columns["episode_index"][frame]),
                field=L.ACTION_KEY,
            )

    def _checked_episode(self, episode: int) -> int:
        if not 0 <= int(episode) < len(self.episodes):
            raise DatasetError(
                f"no such episode (the dataset has {len(self.episodes)})", episode=episode
            )
        return int(episode)

    # -- samples -----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._frames)

    def __getitem__(self, item: int) -> dict[str, Any]:
        row = int(self._frames[item])
        episode = self._episode_of(row)
        meta = self.episodes[episode]
        start = int(meta["dataset_from_index"])
        frame = row - start
        actions = self._action[start : int(meta["dataset_to_index"])]
        chunk, is_pad = action_chunk(
            actions, frame, self.horizon, self._waypoints, self._episode_poses(episode, actions)
        )
        poses = self._episode_poses(episode, actions)
        if episode not in self._keyframes:
            self._keyframes[episode] = keyframes(actions, self._grippers)
        subgoal = key_pose(actions, frame, self._keyframes[episode], self._waypoints, poses)
        state = self._state[row].copy()
        for block in self._waypoints:
            state[block] = 0.0  # waypoints have no measured state (embodiment convention)
        return {
            "images": {c: torch.from_numpy(self._image(episode, c, frame)) for c in self.cameras},
            "state": torch.from_numpy(self.embodiment.actions_to_model(state).astype(np.float32)),
            "action": torch.from_numpy(self.embodiment.actions_to_model(chunk).astype(np.float32)),
            "action_is_pad": torch.from_numpy(is_pad),
            "subgoal": torch.from_numpy(self.embodiment.actions_to_model(subgoal).astype(np.float32)),
            "instruction": self.tasks[int(self._task_index[row])],
            "embodiment": self.embodiment.name,
            "episode_index": episode,
            "frame_index": frame,
            "timestamp": frame / self.fps,
        }

    def _episode_of(self, row: int) -> int:
        return int(np.searchsorted(self._episode_starts, row, side="right") - 1)

    def _episode_poses(
        self, episode: int, actions: np.ndarray
    ) -> dict[tuple[int, int], np.ndarray]:
        if not self._waypoints:
            return {}
        if episode not in self._poses:
            self._poses[episode] = {
                slice_key(b): integrate_steps(actions[:, b]) for b in self._waypoints
            }
        return self._poses[episode]

    # -- images ------------------------------------------------------------------------
    def _image(self, episode: int, camera: str, frame: int) -> np.ndarray:
        key = self.features.camera_keys[camera]
        if self.decode == "frame" and self.features.camera_dtypes[key] == "video":
            path, start, _ = L.video_location(self.episodes[episode], key)
            try:
                return decode_frame(
                    self.root / path, start + frame / self.fps, self.fps, self.image_sizes[camera]
                )
            except VideoError as exc:
                raise DatasetError(str(exc), episode=episode, field=key) from exc
        if self.decode == "frame":  # an image feature: decode one cell, cache nothing
            cells = L.image_cells(self.root, self.episodes[episode], key)
            return self._decode_cells(episode, key, cells[frame : frame + 1], camera)[0]
        # A copy: callers may edit samples in place (augmentation), the cache must not change.
        return self.episode_frames(episode, camera)[frame].copy()

    def episode_frames(self, episode: int, camera: str) -> np.ndarray:
        """All frames of one episode and camera, (T, H, W, 3) uint8 at the model size (cached)."""
        cache_key = (episode, camera)
        cached = self._cache.get(cache_key)
        if cached is not None:
            self._cache.move_to_end(cache_key)
            self.cache_hits += 1
            return cached
        self.cache_misses += 1
        meta = self.episodes[episode]
        key = self.features.camera_keys[camera]
        if self.features.camera_dtypes[key] == "image":
            cells = L.image_cells(self.root, meta, key)
            frames = self._decode_cells(episode, key, cells, camera)
        else:
            path, start, _ = L.video_location(meta, key)
            try:
                frames = decode_frames(
                    self.root / path, start, int(meta["length"]), self.fps, self.image_sizes[camera]
                )
            except VideoError as exc:
                raise DatasetError(str(exc), episode=episode, field=key) from exc
        self._cache[cache_key] = frames
        self._cache_bytes += frames.nbytes
        while self._cache_bytes > self._cache_limit and len(self._cache) > 1:
            _, dropped = self._cache.popitem(last=False)
            self._cache_bytes -= dropped.nbytes
        return frames

    def _decode_cells(self, episode: int, key: str, cells: list, camera: str) -> np.ndarray:
        """Image-feature cells ({"bytes": PNG/JPEG, "path": file}) to (N, H, W, 3) uint8."""
        size = self.image_sizes[camera]
        out = np.empty((len(cells), *size, 3), dtype=np.uint8)
        for number, cell in enumerate(cells):
            data = (cell or {}).get("bytes")
            try:
                if data is None and (cell or {}).get("path"):
                    data = (self.root / cell["path"]).read_bytes()
                if data is None:
                    raise ImageConversionError("the cell holds neither bytes nor a path")
                out[number] = resize_rgb(compressed_to_rgb("image", data), size)
            except (ImageConversionError, OSError) as exc:
                raise DatasetError(f"image {number}: {exc}", episode=episode, field=key) from None
        return out

    # -- statistics --------------------------------------------------------------------
    @property
    def stats(self) -> dict[str, dict[str, np.ndarray]]:
        """State and action statistics in model units and the embodiment's order.

        From meta/stats.json; where it lacks a feature or a statistic (datasets of older
        LeRobot versions), from this dataset's rows.
        """
        if not hasattr(self, "_stats"):
            path = self.root / L.STATS_PATH
            stored = load_stats(path) if path.exists() else {}
            self._stats = {}
            for key, index, rows in (
                (L.STATE_KEY, self.features.state_index, self._state),
                (L.ACTION_KEY, self.features.action_index, self._action),
            ):
                values = stored.get(key, {})
                if all(name in values for name in STAT_NAMES):
                    values = select_dimensions(values, index)
                else:
                    values = self._row_stats(key, rows)
                # model = (rig - offset) * sign, per dimension (embodiment calibration)
                self._stats[key] = stats_to_model_units(
                    values,
                    np.array([j.sign for j in self.embodiment.joints], dtype=np.float64),
                    np.array([j.offset for j in self.embodiment.joints], dtype=np.float64),
                )
        return self._stats

    def _row_stats(self, key: str, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Statistics of every row (rig units); waypoint actions: of their chunk values."""
        if key != L.ACTION_KEY or not self._waypoints:
            return array_stats(rows)
        return _with_chunk_stats(
            array_stats(rows),
            [rows[e["dataset_from_index"] : e["dataset_to_index"]] for e in self.episodes],
            self.horizon,
            self._waypoints,
        )

    def episode_length(self, episode: int) -> int:
        return int(self.episodes[episode]["length"])

    def episode_rows(self, episode: int) -> tuple[np.ndarray, np.ndarray]:
        """(state, action) of every frame of ``episode``, (T, D) each, model units (no chunks)."""
        meta = self.episodes[self._checked_episode(episode)]
        rows = slice(int(meta["dataset_from_index"]), int(meta["dataset_to_index"]))
        return self.embodiment.actions_to_model(self._state[rows]), self.embodiment.actions_to_model(self._action[rows])

    def episode_row_range(self, episode: int) -> tuple[int, int]:
        """Positions in this dataset (``self[i]``) that belong to ``episode`` (computed once)."""
        ranges = self._row_ranges
        if episode not in ranges:
            meta = self.episodes[episode]
            positions = np.nonzero(
                (self._frames >= meta["dataset_from_index"]) & (self._frames < meta["dataset_to_index"])
            )[0]
            ranges[episode] = (int(positions[0]), int(positions[-1]) + 1) if len(positions) else (0, 0)
        return ranges[episode]


class EpisodeBlockSampler(Sampler[int]):
    """Shuffled sample order that visits a few episodes at a time.

    Episodes are shuffled and taken ``episodes_per_block`` at a time; the samples of a
    block are shuffled among themselves. With a cache that holds a block, every
    episode's video is decoded about once per epoch.
    """

    def __init__(self, dataset: LeRobotV3Dataset, episodes_per_block: int = 4, seed: int = 0):
        self.dataset, self.block, self.seed, self.epoch = (
            dataset,
            max(1, episodes_per_block),
            seed,
            0,
        )

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[int]:
        rng = random.Random(self.seed + self.epoch)
        self.epoch += 1
        order = list(self.dataset.episode_ids)
        rng.shuffle(order)
        for first in range(0, len(order), self.block):
            positions = [
                p
                for e in order[first : first + self.block]
                for p in range(*self.dataset.episode_row_range(e))
            ]
            rng.shuffle(positions)
            yield from positions


def _with_chunk_stats(
    stats: dict[str, np.ndarray],
    episodes: list[np.ndarray],
    horizon: int,
    blocks: tuple[slice, ...],
) -> dict[str, np.ndarray]:
    """Action statistics whose waypoint dimensions are those of the episodes' chunk values."""
    chunks = np.concatenate([all_chunks(e, horizon, blocks) for e in episodes])
    return with_blocks_from(stats, array_stats(chunks), blocks)


def recompute_stats(
    root: str | Path,
    embodiment: Embodiment,
    horizon: int | None = None,
    names: DatasetNames | Mapping | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Recompute state/action statistics over the data files and rewrite meta/stats.json.

    Other features' statistics already in the file are kept. Values stay in the
    dataset's order and units; waypoint dimensions get the statistics of their chunk
    values (what the model sees), other dimensions those of the rows.
    """
    root = Path(root)
    features = resolve_features(L.read_info(root), embodiment, cameras=[], names=names)
    columns = L.read_frames(root, [L.STATE_KEY, L.ACTION_KEY])
    stats = load_stats(root / L.STATS_PATH) if (root / L.STATS_PATH).exists() else {}
    stats[L.STATE_KEY] = array_stats(columns[L.STATE_KEY])
    stats[L.ACTION_KEY] = array_stats(columns[L.ACTION_KEY])
    blocks = waypoint_slices(embodiment)
    if blocks:
        ordered = columns[L.ACTION_KEY][:, features.action_index]  # the embodiment's order
        episodes = [ordered[e["dataset_from_index"] : e["dataset_to_index"]] for e in L.read_episodes(root)]
        chunked = _with_chunk_stats(
            array_stats(ordered), episodes, int(horizon or embodiment.chunk_horizon), blocks
        )
        for name, values in stats[L.ACTION_KEY].items():
            if name != "count":
                values[features.action_index] = chunked[name]
    tmp = root / (L.STATS_PATH + ".tmp")
    write_stats(tmp, stats)
    tmp.replace(root / L.STATS_PATH)
    return stats

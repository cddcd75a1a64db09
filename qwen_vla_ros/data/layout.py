"""The LeRobot dataset v3.0 layout: paths, feature keys, and reading the metadata (pure core).

    meta/info.json                      fps, features, counts, path templates
    meta/stats.json                     per-feature min/max/mean/std/count/q01/q10/q50/q90/q99
    meta/qwen_vla.json                  this package's own notes (embodiment, source); not LeRobot's
    meta/tasks.parquet                  task text (pandas index "task") -> task_index
    meta/episodes/chunk-000/file-000.parquet   one row per episode: length, tasks, where
                                        its rows and video segments are, per-episode stats
    data/chunk-XXX/file-XXX.parquet     many episodes per file, one row per frame; camera
                                        features of dtype "image" are cells here
                                        ({"bytes": PNG/JPEG, "path": ...}, LeRobot's image layout)
    videos/<key>/chunk-XXX/file-XXX.mp4 camera features of dtype "video": many episodes per
                                        file, frame i at i / fps

Values follow LeRobot's ``lerobot/datasets/utils.py`` (v3.0) so LeRobot can load
what this package writes; LeRobot itself is not installed here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import DatasetError

CODEBASE_VERSION = "v3.0"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
PACKAGE_META_PATH = "meta/qwen_vla.json"
LEGACY_PACKAGE_KEY = "qwen_vla"  # where older datasets of this package kept it, in info.json
TASKS_PATH = "meta/tasks.parquet"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE + ".parquet"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
DEFAULT_CHUNKS_SIZE = 1000  # files per chunk folder
DEFAULT_DATA_FILE_MB = 100
DEFAULT_VIDEO_FILE_MB = 500

STATE_KEY = "observation.state"
ACTION_KEY = "action"
IMAGE_PREFIX = "observation.images."
INDEX_KEYS = ("timestamp", "frame_index", "episode_index", "index", "task_index")
DEFAULT_FEATURES: dict[str, dict[str, Any]] = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}


CAMERA_DTYPES = ("video", "image")


def image_key(camera: str) -> str:
    return IMAGE_PREFIX + camera


def camera_features(info: dict[str, Any]) -> dict[str, str]:
    """Feature key -> dtype ("video" or "image") of every camera feature in info.json."""
    return {
        key: feature["dtype"]
        for key, feature in info["features"].items()
        if isinstance(feature, dict) and feature.get("dtype") in CAMERA_DTYPES
    }


def next_chunk_file(chunk_index: int, file_index: int, chunks_size: int) -> tuple[int, int]:
    """The (chunk, file) after this one: a new chunk folder every ``chunks_size`` files."""
    if file_index + 1 >= chunks_size:
        return chunk_index + 1, 0
    return chunk_index, file_index + 1


# -- tasks ---------------------------------------------------------------------------
def tasks_table(tasks: list[str]) -> pa.Table:
    """tasks.parquet as LeRobot writes it with pandas: column task_index, index named "task"."""
    table = pa.table(
        {
            "task_index": pa.array(range(len(tasks)), pa.int64()),
            "task": pa.array(tasks, pa.string()),
        }
    )
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [
            {
                "name": None,
                "field_name": None,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": {"encoding": "UTF-8"},
            }
        ],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
             "numpy_type": "int64", "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode",
             "numpy_type": "object", "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }  # fmt: skip
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def _task_column(table: pa.Table) -> str | None:
    """The column holding the task text: "task", or the pandas index column it was saved as
    (LeRobot 0.4 saved an unnamed index, ``__index_level_0__``)."""
    if "task" in table.column_names:
        return "task"
    pandas_meta = (table.schema.metadata or {}).get(b"pandas")
    if pandas_meta:
        index_columns = json.loads(pandas_meta).get("index_columns", [])
        named = [c for c in index_columns if isinstance(c, str) and c in table.column_names]
        if len(named) == 1:
            return named[0]
    return None


def read_tasks(root: Path) -> list[str]:
    """Task texts by task_index."""
    table = _read_parquet(root / TASKS_PATH, "meta/tasks.parquet")
    task_column = _task_column(table)
    if task_column is None or "task_index" not in table.column_names:
        raise DatasetError(
            "needs a 'task_index' column and the task text (column or pandas index 'task')",
            field=TASKS_PATH,
        )
    by_index = dict(
        zip(
            table.column("task_index").to_pylist(),
            table.column(task_column).to_pylist(),
            strict=True,
        )
    )
    if sorted(by_index) != list(range(len(by_index))):
        raise DatasetError(f"task_index values {sorted(by_index)} are not 0..n-1", field=TASKS_PATH)
    return [by_index[i] for i in range(len(by_index))]


# -- info, episodes, data --------------------------------------------------------------
def read_info(root: Path) -> dict[str, Any]:
    path = root / INFO_PATH
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(
            f"{root} is not a LeRobot dataset (no {INFO_PATH})", field=INFO_PATH
        ) from None
    except ValueError as exc:
        raise DatasetError(f"not valid JSON: {exc}", field=INFO_PATH) from None
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3."):
        raise DatasetError(
            f"codebase_version '{version}' is not v3.x (convert v2.x datasets with LeRobot first)",
            field=INFO_PATH,
        )
    for key in ("fps", "features", "total_episodes", "total_frames"):
        if key not in info:
            raise DatasetError(f"missing key '{key}'", field=INFO_PATH)
    return info


def read_package_metadata(root: Path) -> dict[str, Any]:
    """This package's notes on a dataset (embodiment, source): meta/qwen_vla.json.

    Datasets written before that file existed kept them under info.json's "qwen_vla" key;
    a dataset from elsewhere has none ({}).
    """
    path = Path(root) / PACKAGE_META_PATH
    if path.exists():
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise DatasetError(f"not valid JSON: {exc}", field=PACKAGE_META_PATH) from None
    return dict(read_info(Path(root)).get(LEGACY_PACKAGE_KEY) or {})


def package_metadata(
    metadata: dict[str, Any] | None, extra_info: dict[str, Any] | None
) -> dict[str, Any]:
    """The writer's notes for meta/qwen_vla.json, from ``metadata`` and the older
    ``extra_info={"qwen_vla": {...}}`` (any other extra key would not be LeRobot's)."""
    extra = dict(extra_info or {})
    merged = dict(extra.pop(LEGACY_PACKAGE_KEY, None) or {})
    if extra:
        raise ValueError(
            f"extra_info keys {sorted(extra)} would not be LeRobot info.json keys; "
            "pass package notes as metadata= (written to meta/qwen_vla.json)"
        )
    merged.update(metadata or {})
    return merged


def _read_parquet(path: Path, label: str, **options: Any) -> pa.Table:
    try:
        return pq.read_table(path, **options)
    except FileNotFoundError:
        raise DatasetError(f"missing file {path}", field=label) from None
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(f"unreadable parquet {path}: {exc}", field=label) from None


def read_episodes(root: Path) -> list[dict[str, Any]]:
    """Episode rows (all meta/episodes files), sorted by episode_index; stats columns dropped."""
    files = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    if not files:
        raise DatasetError("no episode metadata files", field="meta/episodes")
    rows: list[dict[str, Any]] = []
    for path in files:
        table = _read_parquet(path, "meta/episodes")
        keep = [c for c in table.column_names if not c.startswith("stats/")]
        rows.extend(table.select(keep).to_pylist())
    rows.sort(key=lambda r: r["episode_index"])
    if [r["episode_index"] for r in rows] != list(range(len(rows))):
        raise DatasetError("episode_index values are not 0..n-1", field="meta/episodes")
    return rows


def read_frames(root: Path, columns: list[str]) -> dict[str, np.ndarray]:
    """The given data columns over all data files, in global ``index`` order, as numpy."""
    files = sorted((root / "data").glob("chunk-*/file-*.parquet"))
    if not files:
        raise DatasetError("no data parquet files", field="data")
    wanted = list(dict.fromkeys([*columns, "index"]))
    tables = []
    for path in files:
        label = str(path.relative_to(root))
        try:
            present = pq.read_schema(path).names
        except (pa.ArrowException, OSError) as exc:
            raise DatasetError(f"unreadable parquet {path}: {exc}", field=label) from None
        missing = [c for c in wanted if c not in present]
        if missing:
            raise DatasetError(f"{label} lacks columns {missing}", field=missing[0])
        # Only the wanted columns: image-dtype camera columns hold every frame's bytes.
        tables.append(_read_parquet(path, label, columns=wanted))
    table = pa.concat_tables(tables)
    order = np.argsort(table.column("index").to_numpy(), kind="stable")
    out = {}
    for name in wanted:
        try:
            out[name] = column_to_numpy(table.column(name))[order]
        except DatasetError as exc:
            raise DatasetError(exc.reason, field=name) from None
    return out


def column_to_numpy(column: pa.ChunkedArray) -> np.ndarray:
    """A scalar column to (N,), a fixed-size or variable list column to (N, D).

    LeRobot writes vectors as variable lists (``datasets.Sequence``); every row must
    then have the same length.
    """
    column = column.combine_chunks()
    if pa.types.is_fixed_size_list(column.type):
        width = column.type.list_size
        return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        lengths = np.diff(column.offsets.to_numpy())
        if len(column) and (column.null_count or np.any(lengths != lengths[0])):
            raise DatasetError(f"rows of unequal length {sorted(set(lengths.tolist()))[:4]}")
        width = int(lengths[0]) if len(column) else 0
        return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)
    return column.to_numpy(zero_copy_only=False)


def image_cells(root: Path, episode: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The ``{"bytes", "path"}`` cells of an image-dtype camera for one episode, in frame order."""
    relative = DATA_PATH.format(
        chunk_index=int(episode["data/chunk_index"]), file_index=int(episode["data/file_index"])
    )
    index = int(episode["episode_index"])
    table = _read_parquet(
        root / relative,
        relative,
        columns=[key, "frame_index"],
        filters=[("episode_index", "=", index)],
    )
    order = np.argsort(table.column("frame_index").to_numpy(), kind="stable")
    cells = table.column(key).to_pylist()
    if len(cells) != int(episode["length"]):
        raise DatasetError(
            f"{relative} holds {len(cells)} image rows, the episode has {episode['length']} frames",
            episode=index,
            field=key,
        )
    return [cells[i] for i in order]


def video_location(episode: dict[str, Any], key: str) -> tuple[str, float, float]:
    """(relative mp4 path, from_timestamp s, to_timestamp s) of one episode's segment of
    the video feature ``key`` (e.g. ``observation.images.cam_high``)."""
    try:
        chunk = int(episode[f"videos/{key}/chunk_index"])
        file = int(episode[f"videos/{key}/file_index"])
        start = float(episode[f"videos/{key}/from_timestamp"])
        end = float(episode[f"videos/{key}/to_timestamp"])
    except KeyError as exc:
        raise DatasetError(
            f"episode metadata lacks {exc.args[0]}", episode=episode.get("episode_index"), field=key
        ) from None
    return VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=file), start, end

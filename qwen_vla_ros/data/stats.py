"""Normalisation statistics as LeRobot v3.0 stores them (pure core).

Every feature gets min, max, mean, std, count and the quantiles q01, q10, q50, q90, q99:

* vectors (state, action): one value per dimension, shape (D,);
* scalar columns (timestamp, frame_index, episode_index, index, task_index): shape (1,);
* images: per channel, shape (3, 1, 1), pixel values scaled to [0, 1];
* count: shape (1,), frames (image features: the frames the statistics were taken over).

``meta/stats.json`` holds the whole dataset, and each row of ``meta/episodes`` holds its
episode's statistics in ``stats/<feature>/<stat>`` columns (LeRobot rebuilds stats.json
from those when it deletes or splits episodes). Vector quantiles here are exact
(:func:`numpy.quantile`, linear); image statistics come from per-channel histograms of
the 256 pixel levels, so their quantiles are exact levels too. Stored values are in the
dataset's (rig) units; :func:`stats_to_model_units` maps state and action statistics
through the embodiment's ``sign``/``offset``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DatasetError

#: Quantile statistic names -> fraction, as LeRobot names them.
QUANTILES: dict[str, float] = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
STAT_NAMES = ("min", "max", "mean", "std", "count", *QUANTILES)
PIXEL_LEVELS = 256


def array_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """Statistics over the first axis of (N, ...) values; count has shape (1,).

    min and max keep an integer column's type (as LeRobot stores them), the rest is float64.
    """
    raw = np.asarray(values)
    if raw.ndim == 1:
        raw = raw[:, None]  # a scalar column: statistics of shape (1,)
    if raw.shape[0] == 0:
        raise DatasetError("no values to compute statistics over")
    if not np.issubdtype(raw.dtype, np.integer):
        raw = raw.astype(np.float64)
    values = raw.astype(np.float64)
    stats = {
        "min": raw.min(axis=0),
        "max": raw.max(axis=0),
        "mean": values.mean(axis=0),
        "std": values.std(axis=0),
        "count": np.array([values.shape[0]], dtype=np.int64),
    }
    quantiles = np.quantile(values, list(QUANTILES.values()), axis=0)
    stats.update(zip(QUANTILES, quantiles, strict=True))
    return stats


def channel_histograms(frames: np.ndarray, stride: int = 1) -> np.ndarray:
    """(channels, 256) counts of each pixel level in (N, H, W, C) or (H, W, C) uint8 frames.

    ``stride`` keeps every stride-th row and column (colour statistics need few pixels).
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise DatasetError(f"image statistics need uint8 frames, not {frames.dtype}")
    pixels = frames[..., ::stride, ::stride, :].reshape(-1, frames.shape[-1])
    return np.stack(
        [np.bincount(pixels[:, c], minlength=PIXEL_LEVELS) for c in range(pixels.shape[1])]
    ).astype(np.int64)


def histogram_stats(histograms: np.ndarray, frames: int) -> dict[str, np.ndarray]:
    """Per-channel image statistics, shape (C, 1, 1) in [0, 1], from (C, 256) level counts.

    A quantile is the lowest level whose cumulative share reaches it (inverse CDF).
    """
    histograms = np.asarray(histograms, dtype=np.float64)
    totals = histograms.sum(axis=1)
    if frames < 1 or np.any(totals == 0):
        raise DatasetError("no pixels to compute image statistics over")
    levels = np.arange(histograms.shape[1], dtype=np.float64) / (PIXEL_LEVELS - 1)
    mean = histograms @ levels / totals
    variance = histograms @ levels**2 / totals - mean**2
    present = histograms > 0
    stats = {
        "min": levels[present.argmax(axis=1)],
        "max": levels[histograms.shape[1] - 1 - present[:, ::-1].argmax(axis=1)],
        "mean": mean,
        "std": np.sqrt(np.maximum(variance, 0.0)),
    }
    shares = np.cumsum(histograms, axis=1) / totals[:, None]
    for name, fraction in QUANTILES.items():
        # The smallest level with share >= fraction (a little slack for rounding).
        stats[name] = levels[(shares >= fraction - 1e-12).argmax(axis=1)]
    out = {k: v.reshape(-1, 1, 1) for k, v in stats.items()}
    out["count"] = np.array([frames], dtype=np.int64)
    return out


def to_json(stats: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, Any]]:
    return {
        feature: {name: np.asarray(value).tolist() for name, value in values.items()}
        for feature, values in stats.items()
    }


def write_stats(path: Path, stats: dict[str, dict[str, np.ndarray]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_json(stats), indent=4), encoding="utf-8")


def load_stats(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """stats.json as numpy arrays; raises :class:`DatasetError` when absent or broken."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"missing {path}", field="meta/stats.json") from None
    except ValueError as exc:
        raise DatasetError(f"not valid JSON: {exc}", field="meta/stats.json") from None
    return {
        feature: {name: np.asarray(value, dtype=np.float64) for name, value in values.items()}
        for feature, values in raw.items()
    }


def with_blocks_from(
    stats: dict[str, np.ndarray], other: dict[str, np.ndarray], blocks: tuple[slice, ...]
) -> dict[str, np.ndarray]:
    """``stats`` with the dimensions in ``blocks`` taken from ``other`` (count is kept).

    Waypoint action dimensions use the statistics of their chunk values, which is what the
    model is trained on, while the stored rows are one-step motions.
    """
    for name, values in stats.items():
        for block in blocks:
            if name != "count":
                values[block] = other[name][block]
    return stats


def select_dimensions(stats: dict[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    """Statistics of a vector feature reordered to ``index`` (dataset -> embodiment order)."""
    return {
        name: np.asarray(value) if name == "count" else np.asarray(value)[index]
        for name, value in stats.items()
    }


def stats_to_model_units(
    stats: dict[str, np.ndarray], sign: np.ndarray, offset: np.ndarray
) -> dict[str, np.ndarray]:
    """Statistics of rig values r mapped to model values m = (r - offset) * sign.

    Means and quantiles move with the affine map; std is unchanged; where sign is -1
    min and max swap, and so do mirrored quantiles (q01 and q99, q10 and q90).
    """
    sign = np.asarray(sign, dtype=np.float64)
    offset = np.asarray(offset, dtype=np.float64)
    out = dict(stats)

    def mapped(name: str) -> np.ndarray:
        return (np.asarray(stats[name], dtype=np.float64) - offset) * sign

    flipped = sign < 0
    pairs = [("min", "max")] + [
        (low, f"q{100 - int(low[1:]):02d}") for low in QUANTILES if int(low[1:]) <= 50
    ]
    for low, high in pairs:
        if low in stats and high in stats:
            lo, hi = mapped(low), mapped(high)
            out[low] = np.where(flipped, hi, lo)
            out[high] = np.where(flipped, lo, hi)
    if "mean" in stats:
        out["mean"] = mapped("mean")
    return out

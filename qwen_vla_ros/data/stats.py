"""Normalisation statistics: min, max, mean, std, count, q01, q99 per feature (pure core).

``meta/stats.json`` follows LeRobot: one entry per feature, each statistic a list
with the feature's shape (images: per channel, shape (3, 1, 1), values in [0, 1]).
Stored values are in the dataset's (rig) units; :func:`stats_to_model_units` maps
state and action statistics through the embodiment's ``sign``/``offset``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DatasetError

STAT_NAMES = ("min", "max", "mean", "std", "count", "q01", "q99")


def array_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """Statistics over the first axis of (N, ...) values (float64)."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape[0] == 0:
        raise DatasetError("no values to compute statistics over")
    return {
        "min": values.min(axis=0),
        "max": values.max(axis=0),
        "mean": values.mean(axis=0),
        "std": values.std(axis=0),
        "count": np.array([values.shape[0]]),
        "q01": np.quantile(values, 0.01, axis=0),
        "q99": np.quantile(values, 0.99, axis=0),
    }


def image_stats(frames: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel statistics of (N, H, W, 3) uint8 frames, scaled to [0, 1], shape (3, 1, 1)."""
    frames = np.asarray(frames)
    pixels = frames.reshape(-1, frames.shape[-1]).astype(np.float64) / 255.0
    stats = array_stats(pixels)
    out = {k: v.reshape(-1, 1, 1) for k, v in stats.items() if k != "count"}
    out["count"] = np.array([frames.shape[0]])
    return out


def to_json(stats: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, Any]]:
    return {
        feature: {name: np.asarray(value).tolist() for name, value in values.items()}
        for feature, values in stats.items()
    }


def write_stats(path: Path, stats: dict[str, dict[str, np.ndarray]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_json(stats), indent=2), encoding="utf-8")


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


def stats_to_model_units(
    stats: dict[str, np.ndarray], sign: np.ndarray, offset: np.ndarray
) -> dict[str, np.ndarray]:
    """Statistics of rig values r mapped to model values m = (r - offset) * sign.

    Means and quantiles move with the affine map; std is unchanged; min/max and
    q01/q99 swap where sign is -1.
    """
    sign = np.asarray(sign, dtype=np.float64)
    offset = np.asarray(offset, dtype=np.float64)
    out = dict(stats)

    def mapped(name: str) -> np.ndarray:
        return (np.asarray(stats[name], dtype=np.float64) - offset) * sign

    flipped = sign < 0
    for low, high in (("min", "max"), ("q01", "q99")):
        if low in stats and high in stats:
            lo, hi = mapped(low), mapped(high)
            out[low] = np.where(flipped, hi, lo)
            out[high] = np.where(flipped, lo, hi)
    if "mean" in stats:
        out["mean"] = mapped("mean")
    return out

"""Helpers shared by the control-core tests (a uniquely named module, imported by the tests)."""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the package is used from the source tree, not installed
    sys.path.insert(0, str(ROOT))

from qwen_vla_ros.embodiment import Embodiment, load_embodiment  # noqa: E402
from qwen_vla_ros.types import ActionChunk  # noqa: E402


@cache
def embodiment(name: str) -> Embodiment:
    return load_embodiment(name)


def chunk_for(emb: Embodiment, actions: np.ndarray, start: float, chunk_id: int = 0) -> ActionChunk:
    """An ActionChunk in ``emb``'s layout on its control grid."""
    return ActionChunk(
        np.asarray(actions, dtype=np.float64),
        list(emb.action_names),
        emb.dt,
        start,
        emb.name,
        chunk_id,
    )


def steady_chunk(
    emb: Embodiment,
    position: np.ndarray,
    start: float,
    chunk_id: int = 0,
    horizon: int | None = None,
):
    """A chunk that repeats one action for its whole horizon."""
    return chunk_for(emb, np.tile(position, (horizon or emb.chunk_horizon, 1)), start, chunk_id)


def scalar_chunk(values, start: float, dt: float = 0.02, chunk_id: int = 0) -> ActionChunk:
    """A one-dimensional chunk (for scheduler arithmetic)."""
    return ActionChunk(
        np.asarray(values, dtype=np.float64).reshape(-1, 1), ["a/x"], dt, start, "", chunk_id
    )

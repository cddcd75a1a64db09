"""Normalisation statistics per embodiment: model units in, roughly [-1, 1] out.

All statistics are in *model units* (the training-data convention, see
``Embodiment.actions_to_model``): rad for joints, normalised gripper, m and m/s
for bases. Two modes:

* ``quantile`` (default, as in pi0): the 1st and 99th percentiles map to -1 and +1.
* ``mean_std``: zero mean, unit standard deviation.

A dimension whose spread is (nearly) zero is only centred, never divided by ~0.
Statistics travel with a checkpoint as JSON, one entry per embodiment name.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from .errors import CheckpointError, ModelInputError

if TYPE_CHECKING:
    from ..embodiment import Embodiment

NormMode = Literal["quantile", "mean_std"]
NORM_MODES: tuple[str, ...] = ("quantile", "mean_std")

#: Spreads below this are treated as constant dimensions (centred, not scaled).
_MIN_SPREAD = 1e-8


def _as_matrix(values: np.ndarray, what: str) -> np.ndarray:
    """(..., D) finite floats flattened to (N, D)."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim < 2 or array.shape[0] == 0:
        raise ModelInputError(
            f"{what}: need an array of shape (N, ..., D) with N > 0, got {array.shape}"
        )
    if not np.isfinite(array).all():
        raise ModelInputError(
            f"{what}: contains NaN or inf; clean the data before computing statistics"
        )
    return array.reshape(-1, array.shape[-1])


@dataclass(frozen=True)
class VectorStats:
    """Statistics of one vector quantity (actions or state), each (D,), model units."""

    mean: np.ndarray
    std: np.ndarray
    q01: np.ndarray
    q99: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @classmethod
    def from_array(cls, values: np.ndarray, what: str = "values") -> VectorStats:
        """Statistics over every leading axis of ``values`` (..., D)."""
        matrix = _as_matrix(values, what)
        return cls(
            mean=matrix.mean(axis=0),
            std=matrix.std(axis=0),
            q01=np.quantile(matrix, 0.01, axis=0),
            q99=np.quantile(matrix, 0.99, axis=0),
        )

    def _center_scale(self, mode: str) -> tuple[np.ndarray, np.ndarray]:
        if mode == "quantile":
            center, spread = (self.q01 + self.q99) / 2.0, (self.q99 - self.q01) / 2.0
        else:
            center, spread = self.mean, self.std
        return center, np.where(spread > _MIN_SPREAD, spread, 1.0)

    def normalize(self, values: np.ndarray, mode: str) -> np.ndarray:
        center, scale = self._center_scale(mode)
        return (np.asarray(values, dtype=np.float64) - center) / scale

    def unnormalize(self, values: np.ndarray, mode: str) -> np.ndarray:
        center, scale = self._center_scale(mode)
        return np.asarray(values, dtype=np.float64) * scale + center

    def to_dict(self) -> dict[str, list[float]]:
        return {key: getattr(self, key).tolist() for key in ("mean", "std", "q01", "q99")}

    @classmethod
    def from_dict(cls, data: dict, what: str) -> VectorStats:
        try:
            arrays = {
                key: np.asarray(data[key], dtype=np.float64)
                for key in ("mean", "std", "q01", "q99")
            }
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f"{what}: needs numeric lists mean, std, q01, q99 ({error})"
            ) from error
        lengths = {key: a.shape for key, a in arrays.items()}
        if len(set(lengths.values())) != 1 or arrays["mean"].ndim != 1:
            raise ValueError(
                f"{what}: mean, std, q01, q99 must be equal-length vectors, got {lengths}"
            )
        if not all(np.isfinite(a).all() for a in arrays.values()):
            raise ValueError(f"{what}: statistics contain NaN or inf")
        return cls(**arrays)


@dataclass(frozen=True)
class NormStats:
    """State and action statistics of one embodiment, in model units.

    Attributes:
        action: statistics of the action vector (action_dim,).
        state: statistics of the state vector (state_dim == action_dim,).
        mode: ``quantile`` (q01/q99 -> -1/+1) or ``mean_std``.
        source: ``data`` when computed from demonstrations, ``limits`` for the
            placeholder made by :meth:`from_limits`, ``home`` for :meth:`near_home`
            (untrained demo policies only).
    """

    action: VectorStats
    state: VectorStats
    mode: NormMode = "quantile"
    source: str = "data"

    def __post_init__(self) -> None:
        if self.mode not in NORM_MODES:
            raise ValueError(f"normalisation mode {self.mode!r} is not one of {NORM_MODES}")
        if self.action.dim != self.state.dim:
            raise ValueError(
                f"action statistics have {self.action.dim} dims but state statistics "
                f"{self.state.dim}; state and action share one layout"
            )

    @property
    def dim(self) -> int:
        return self.action.dim

    @classmethod
    def from_arrays(
        cls, actions: np.ndarray, states: np.ndarray, mode: NormMode = "quantile"
    ) -> NormStats:
        """From demonstrations: actions (N, [H,] D) and states (N, D), model units."""
        return cls(
            action=VectorStats.from_array(actions, "actions"),
            state=VectorStats.from_array(states, "states"),
            mode=mode,
        )

    @classmethod
    def from_limits(cls, embodiment: Embodiment, mode: NormMode = "quantile") -> NormStats:
        """Placeholder statistics from the embodiment's position limits (no data seen).

        For untrained demo policies only: the limits become q01/q99 (and mean +- 2 std),
        so outputs near [-1, 1] land inside the rig's range. Limits are rig units and
        are converted to model units first (a sign flip swaps min and max).
        """
        ends = embodiment.actions_to_model(
            np.stack([embodiment.position_min, embodiment.position_max])
        )
        low, high = ends.min(axis=0), ends.max(axis=0)
        limits = VectorStats(mean=(low + high) / 2, std=(high - low) / 4, q01=low, q99=high)
        return cls(action=limits, state=limits, mode=mode, source="limits")

    @classmethod
    def near_home(
        cls, embodiment: Embodiment, spread_fraction: float = 0.01, mode: NormMode = "quantile"
    ) -> NormStats:
        """Placeholder statistics centred on the home pose (no data seen).

        For the untrained demo policy: its outputs are noise of about +-3 in normalised
        units, which these stats map to a few percent of each joint's range around home.
        So the untrained robot stirs near its start pose instead of leaping across its
        range, and the chunk publisher's discontinuity check lets its chunks through.
        """
        ends = embodiment.actions_to_model(np.stack([embodiment.position_min, embodiment.position_max]))
        low, high = ends.min(axis=0), ends.max(axis=0)
        home = np.clip(embodiment.actions_to_model(embodiment.home_position), low, high)
        half = np.maximum((high - low) * spread_fraction, 1e-3)
        stats = VectorStats(mean=home, std=half / 2, q01=home - half, q99=home + half)
        return cls(action=stats, state=stats, mode=mode, source="home")

    def normalize_actions(self, actions: np.ndarray) -> np.ndarray:
        return self.action.normalize(actions, self.mode)

    def unnormalize_actions(self, actions: np.ndarray) -> np.ndarray:
        return self.action.unnormalize(actions, self.mode)

    def normalize_state(self, state: np.ndarray) -> np.ndarray:
        return self.state.normalize(state, self.mode)

    def to_dict(self) -> dict:
        return {
            "mode": self.mode,
            "source": self.source,
            "action": self.action.to_dict(),
            "state": self.state.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict, what: str = "stats") -> NormStats:
        if not isinstance(data, dict) or "action" not in data or "state" not in data:
            raise ValueError(f"{what}: expected a mapping with 'action' and 'state' statistics")
        return cls(
            action=VectorStats.from_dict(data["action"], f"{what}.action"),
            state=VectorStats.from_dict(data["state"], f"{what}.state"),
            mode=data.get("mode", "quantile"),
            source=data.get("source", "data"),
        )


def save_norm_stats(path: str | Path, stats: dict[str, NormStats]) -> None:
    """Write ``{embodiment name: NormStats}`` as JSON."""
    payload = {name: entry.to_dict() for name, entry in sorted(stats.items())}
    Path(path).write_text(json.dumps(payload, indent=1, allow_nan=False))


def load_norm_stats(path: str | Path) -> dict[str, NormStats]:
    """Read the JSON written by :func:`save_norm_stats`; a missing file means no statistics."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        payload = json.loads(path.read_text(), parse_constant=lambda c: math.nan)
        if not isinstance(payload, dict):
            raise ValueError("top level must map embodiment names to statistics")
        return {name: NormStats.from_dict(entry, f"{name}") for name, entry in payload.items()}
    except (json.JSONDecodeError, ValueError) as error:
        raise CheckpointError(f"{path}: invalid normalisation statistics: {error}") from error

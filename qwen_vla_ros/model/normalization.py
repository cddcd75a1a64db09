"""Normalisation statistics per embodiment: model units in, roughly [-1, 1] out.

All statistics are in *model units* (the training-data convention, see
``Embodiment.actions_to_model``): rad for joints, normalised gripper, m and m/s
for bases. Two modes:

* ``quantile`` (default, as in pi0): the 1st and 99th percentiles map to -1 and +1.
* ``mean_std``: zero mean, unit standard deviation.

A dimension whose spread is (nearly) zero is only centred, never divided by ~0.
Statistics travel with a checkpoint as JSON, one entry per embodiment name.

**Relative actions** (optional, per embodiment; openpi's ``DeltaActions`` for ALOHA): the
decoder's targets for the arm joints are each chunk step's position *minus the state the
chunk starts from*, normalised with statistics of those differences; grippers and base
motions stay as they are. A robot that should stay still is then a target of zero, and the
step sizes the demonstrations take are what the normalisation spreads over [-1, 1], not the
whole workspace (docs/training.md, "Stage 6"). :meth:`NormStats.normalize_chunk` and
:meth:`NormStats.unnormalize_chunk` take the start state and do the right thing either way.
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
    relative_action: VectorStats | None = None
    relative_dims: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in NORM_MODES:
            raise ValueError(f"normalisation mode {self.mode!r} is not one of {NORM_MODES}")
        if self.action.dim != self.state.dim:
            raise ValueError(
                f"action statistics have {self.action.dim} dims but state statistics "
                f"{self.state.dim}; state and action share one layout"
            )
        if (self.relative_action is None) != (not self.relative_dims):
            raise ValueError("relative actions need both their statistics and their dimensions")
        if self.relative_action is not None:
            if self.relative_action.dim != self.action.dim:
                raise ValueError(
                    f"relative action statistics have {self.relative_action.dim} dims, actions {self.action.dim}"
                )
            if not all(0 <= d < self.action.dim for d in self.relative_dims):
                raise ValueError(f"relative dimensions {self.relative_dims} outside 0..{self.action.dim - 1}")

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
        """Absolute actions (key poses, and chunks of a policy without relative actions)."""
        return self.action.normalize(actions, self.mode)

    def unnormalize_actions(self, actions: np.ndarray) -> np.ndarray:
        return self.action.unnormalize(actions, self.mode)

    @property
    def relative(self) -> bool:
        """Whether chunks are relative to their start state on :attr:`relative_dims`."""
        return self.relative_action is not None

    def with_relative_actions(self, motions: VectorStats, dims: tuple[int, ...]) -> NormStats:
        """These statistics, chunks made relative on ``dims``.

        ``motions``: statistics of chunk step minus start state on ``dims`` only (len(dims),);
        every other dimension keeps the plain action statistics.
        """
        dims = tuple(int(d) for d in dims)
        if motions.dim != len(dims):
            raise ValueError(f"relative statistics have {motions.dim} dims for the {len(dims)} dimensions {dims}")
        if not all(0 <= d < self.action.dim for d in dims):
            raise ValueError(f"relative dimensions {dims} outside 0..{self.action.dim - 1}")
        merged = {}
        for name in ("mean", "std", "q01", "q99"):
            values = getattr(self.action, name).copy()
            values[list(dims)] = getattr(motions, name)
            merged[name] = values
        return NormStats(self.action, self.state, self.mode, self.source, VectorStats(**merged), dims)

    @property
    def motions(self) -> VectorStats | None:
        """The motion statistics on :attr:`relative_dims` only (what :meth:`with_relative_actions` takes)."""
        if not self.relative:
            return None
        dims = list(self.relative_dims)
        return VectorStats(**{k: getattr(self.relative_action, k)[dims] for k in ("mean", "std", "q01", "q99")})

    def absolute(self) -> NormStats:
        """These statistics without relative actions."""
        return NormStats(self.action, self.state, self.mode, self.source)

    def _start_offset(self, state: np.ndarray) -> np.ndarray:
        """(..., 1, D): the start state on the relative dimensions, 0 elsewhere."""
        offset = np.zeros_like(np.asarray(state, dtype=np.float64))
        dims = list(self.relative_dims)
        offset[..., dims] = np.asarray(state, dtype=np.float64)[..., dims]
        return offset[..., None, :]

    def normalize_chunk(self, actions: np.ndarray, state: np.ndarray) -> np.ndarray:
        """A chunk (..., H, D) starting from ``state`` (..., D), model units -> normalised."""
        if not self.relative:
            return self.normalize_actions(actions)
        shifted = np.asarray(actions, dtype=np.float64) - self._start_offset(state)
        return self.relative_action.normalize(shifted, self.mode)

    def unnormalize_chunk(self, actions: np.ndarray, state: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`normalize_chunk`: normalised (..., H, D) -> model units."""
        if not self.relative:
            return self.unnormalize_actions(actions)
        return self.relative_action.unnormalize(actions, self.mode) + self._start_offset(state)

    def normalize_state(self, state: np.ndarray) -> np.ndarray:
        return self.state.normalize(state, self.mode)

    def to_dict(self) -> dict:
        payload = {
            "mode": self.mode,
            "source": self.source,
            "action": self.action.to_dict(),
            "state": self.state.to_dict(),
        }
        if self.relative:
            payload["relative_action"] = self.relative_action.to_dict()
            payload["relative_dims"] = list(self.relative_dims)
        return payload

    @classmethod
    def from_dict(cls, data: dict, what: str = "stats") -> NormStats:
        if not isinstance(data, dict) or "action" not in data or "state" not in data:
            raise ValueError(f"{what}: expected a mapping with 'action' and 'state' statistics")
        relative = data.get("relative_action")
        try:
            dims = tuple(int(d) for d in data.get("relative_dims", ()))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{what}.relative_dims: a list of dimension indices ({error})") from error
        return cls(
            action=VectorStats.from_dict(data["action"], f"{what}.action"),
            state=VectorStats.from_dict(data["state"], f"{what}.state"),
            mode=data.get("mode", "quantile"),
            source=data.get("source", "data"),
            relative_action=None if relative is None else VectorStats.from_dict(relative, f"{what}.relative_action"),
            relative_dims=dims,
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

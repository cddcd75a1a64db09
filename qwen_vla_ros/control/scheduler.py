"""Chunk scheduling: which action applies at time ``t``, given the chunks received (pure core).

Time grid
    Action ``k`` of a chunk applies during ``[grid_start + k*dt, grid_start + (k+1)*dt)``, where
    ``grid_start`` is the chunk's ``start_time`` (the time its first action applies, s). The step
    for time ``t`` is ``floor((t - grid_start)/dt + eps)``. Steps whose time has passed are
    skipped: that is the latency compensation (a chunk stamped at its observation time and
    delivered 80 ms later starts at step 4 at 50 Hz). ``eps`` (in steps) absorbs float rounding,
    so a ``t`` exactly on a grid point maps to that point's step.

Playing a chunk
    A chunk plays ``steps = min(horizon, actions_per_chunk)`` actions, from its *take-over* time
    ``max(start_time, arrival)`` (synchronous: also not before the previous chunk's end) until
    its ``end = grid_start + steps*dt``. The chunk in play at ``t`` is the newest chunk (in order
    of arrival) that has taken over. ``action_at(t)`` is None when no chunk has taken over or when
    that chunk has run out: older chunks are never replayed.

Strategies (``strategy`` parameter)
    synchronous        the chunk in play runs to its end (or ``actions_per_chunk``) before the
                       next one takes over: openpi's ActionChunkBroker, with timestamps.
    temporal_ensemble  ACT: average every stored prediction for ``t`` with weights
                       ``exp(-m*i)``, ``i = 0`` the oldest (``ensemble_decay`` = m, default 0.01).
    async              replanning: the newest chunk takes over at once; for its first
                       ``blend_steps`` steps it is cross-faded with what the previous schedule
                       would have played, new weight ``(k+1)/(blend_steps+1)`` at step ``k`` after
                       take-over (``blend_steps = 0``: newest only, no blending).

Real-time chunking: the inference node inpaints the actions of its own last chunk that run
during inference (``nodes/inference_node._frozen_prefix``, ``model/flow.euler_sample``).
``frozen_prefix(now, d)`` gives the same from the *blended* schedule: the seam for a guided RTC
variant that would run beside this scheduler (not used by the nodes today).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..types import ActionChunk

STRATEGIES = ("synchronous", "temporal_ensemble", "async")

#: Tolerance on step positions, in steps (1e-6 of a 20 ms step is 20 ns).
DEFAULT_EPS = 1e-6


def step_index(t: float, grid_start: float, dt: float, eps: float = DEFAULT_EPS) -> int:
    """The step that applies at time ``t`` (s) on a grid starting at ``grid_start`` with period ``dt``.

    May be negative (not started) or past the chunk's end; callers clamp.
    """
    return math.floor((t - grid_start) / dt + eps)


@dataclass(frozen=True)
class ScheduledChunk:
    """A chunk as the scheduler stores it.

    Attributes:
        chunk: the chunk as received (actions in rig units).
        arrival: time it was added, s.
        takeover: earliest time it may be played, s.
        grid_start: time at which ``actions[0]`` applies, s.
        steps: number of actions it may play (at most its horizon).
    """

    chunk: ActionChunk
    arrival: float
    takeover: float
    grid_start: float
    steps: int

    @property
    def dt(self) -> float:
        return self.chunk.dt

    @property
    def end(self) -> float:
        """First time at which the chunk no longer applies, s."""
        return self.grid_start + self.steps * self.chunk.dt

    def index_at(self, t: float, eps: float = DEFAULT_EPS) -> int:
        return step_index(t, self.grid_start, self.chunk.dt, eps)

    def has_taken_over(self, t: float, eps: float = DEFAULT_EPS) -> bool:
        return t >= self.takeover - eps * self.chunk.dt

    def has_ended(self, t: float, eps: float = DEFAULT_EPS) -> bool:
        return self.index_at(t, eps) >= self.steps

    def covers(self, t: float, eps: float = DEFAULT_EPS) -> bool:
        return self.has_taken_over(t, eps) and not self.has_ended(t, eps)

    def value_at(self, t: float, eps: float = DEFAULT_EPS, interpolate: bool = False) -> np.ndarray:
        """The action for time ``t``; linear between grid points if ``interpolate``.

        May be a read-only view of the chunk's row: copy before changing it.
        """
        actions = self.chunk.actions
        position = (t - self.grid_start) / self.chunk.dt
        index = min(max(math.floor(position + eps), 0), self.steps - 1)
        fraction = position - index
        if not interpolate or index >= self.steps - 1 or fraction <= eps:
            return actions[index]
        low = np.asarray(actions[index], dtype=np.float64)
        return low + fraction * (np.asarray(actions[index + 1], dtype=np.float64) - low)


@dataclass(frozen=True)
class ScheduleStatus:
    """What the schedule holds at one instant.

    Attributes:
        state: 'active' (an action exists), 'pending' (a chunk waits for its take-over time),
            'ran_out' (the newest chunk that played has run out) or 'empty' (never any chunk).
        ran_out_at: time at which the newest finished chunk ran out, s (None: none finished).
        next_takeover: earliest take-over time of a waiting chunk, s (None: none waiting).
    """

    state: str
    ran_out_at: float | None
    next_takeover: float | None


class ChunkScheduler:
    """Stores action chunks and says which action applies at any time (see the module docstring)."""

    def __init__(
        self,
        strategy: str = "async",
        *,
        actions_per_chunk: int | None = None,
        ensemble_decay: float = 0.01,
        blend_steps: int = 5,
        interpolate: bool = False,
        latency_compensation: bool = True,
        eps: float = DEFAULT_EPS,
        max_chunks: int = 256,
    ):
        """
        Args:
            strategy: one of ``STRATEGIES``.
            actions_per_chunk: most actions played per chunk (None: the whole horizon).
            ensemble_decay: m of the temporal-ensemble weights exp(-m*i), 1/prediction.
            blend_steps: async cross-fade length, control steps (0: newest chunk only).
            interpolate: linear interpolation between grid points instead of zero-order hold.
            latency_compensation: skip the steps whose time has passed. False re-anchors each
                chunk's first action at its take-over time (openpi's broker behaviour).
            eps: tolerance on step positions, steps.
            max_chunks: most chunks kept (oldest dropped first).
        """
        if strategy not in STRATEGIES:
            raise ValueError(
                f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}"
            )
        if actions_per_chunk is not None and actions_per_chunk < 1:
            raise ValueError(f"actions_per_chunk must be at least 1, got {actions_per_chunk}")
        if not (ensemble_decay >= 0 and math.isfinite(ensemble_decay)):
            raise ValueError(f"ensemble_decay must be a finite number >= 0, got {ensemble_decay}")
        if blend_steps < 0:
            raise ValueError(f"blend_steps must be >= 0, got {blend_steps}")
        if not 0 <= eps < 0.5:
            raise ValueError(f"eps must be in [0, 0.5) steps, got {eps}")
        if max_chunks < 2:
            raise ValueError(f"max_chunks must be at least 2, got {max_chunks}")
        self.strategy = strategy
        self.actions_per_chunk = actions_per_chunk
        self.ensemble_decay = float(ensemble_decay)
        self.blend_steps = int(blend_steps)
        self.interpolate = interpolate
        self.latency_compensation = latency_compensation
        self.eps = eps
        self.max_chunks = max_chunks
        self._entries: list[ScheduledChunk] = []
        self._last_end: float | None = None

    # -- storing ------------------------------------------------------------------
    @property
    def chunks(self) -> tuple[ScheduledChunk, ...]:
        """Stored chunks, oldest arrival first."""
        return tuple(self._entries)

    def add(self, chunk: ActionChunk, now: float) -> ScheduledChunk | None:
        """Store ``chunk`` received at ``now`` (s); None if it would never play (already stale)."""
        if not (chunk.dt > 0 and math.isfinite(chunk.dt)):
            raise ValueError(f"chunk dt must be a positive number of seconds, got {chunk.dt}")
        if chunk.horizon < 1:
            raise ValueError("chunk has no actions")
        steps = chunk.horizon
        if self.actions_per_chunk is not None:
            steps = min(steps, self.actions_per_chunk)
        takeover = max(chunk.start_time, now)
        if self.strategy == "synchronous" and self._entries:
            # The chunk in play runs to its end first.
            takeover = max(takeover, self._entries[-1].end)
        grid_start = chunk.start_time if self.latency_compensation else takeover
        entry = ScheduledChunk(chunk, now, takeover, grid_start, steps)
        if entry.has_ended(takeover, self.eps):
            return None
        self._entries.append(entry)
        if len(self._entries) > self.max_chunks:
            del self._entries[: len(self._entries) - self.max_chunks]
        return entry

    def prune(self, now: float) -> None:
        """Drop chunks that ran out by ``now``, and every older chunk with them."""
        ended = [i for i, e in enumerate(self._entries) if e.has_ended(now, self.eps)]
        if not ended:
            return
        dropped = self._entries[: ended[-1] + 1]
        del self._entries[: ended[-1] + 1]
        last_end = max(e.end for e in dropped if e.has_ended(now, self.eps))
        self._last_end = last_end if self._last_end is None else max(self._last_end, last_end)

    def clear(self, now: float | None = None) -> None:
        """Drop every chunk (e-stop, fault, stop); chunks still playing count as run out at
        ``now`` (s), so holds after it report the right cause."""
        if self._entries and now is not None:
            self._last_end = now if self._last_end is None else max(self._last_end, now)
        self._entries.clear()

    def reset(self) -> None:
        """Forget everything, including when the last chunk ran out (clock jumped back)."""
        self._entries.clear()
        self._last_end = None

    # -- querying -----------------------------------------------------------------
    def _active_index(self, t: float) -> int | None:
        for i in range(len(self._entries) - 1, -1, -1):
            entry = self._entries[i]
            if entry.has_taken_over(t, self.eps):
                return None if entry.has_ended(t, self.eps) else i
        return None

    def active(self, t: float) -> ScheduledChunk | None:
        """The chunk in play at ``t`` (s), or None."""
        index = self._active_index(t)
        return None if index is None else self._entries[index]

    def action_at(self, t: float) -> np.ndarray | None:
        """The action (rig units) for time ``t`` (s), or None when no valid action exists."""
        index = self._active_index(t)
        if index is None:
            return None
        if self.strategy == "temporal_ensemble":
            action = self._ensemble(t, index)
        elif self.strategy == "async":
            action = self._blend(t, index)
        else:
            action = self._entries[index].value_at(t, self.eps, self.interpolate)
        return np.array(action, dtype=np.float64)  # a fresh array the caller may keep

    def _ensemble(self, t: float, index: int) -> np.ndarray:
        predictions = [
            e.value_at(t, self.eps, self.interpolate)
            for e in self._entries[: index + 1]
            if e.covers(t, self.eps)
        ]
        weights = np.exp(-self.ensemble_decay * np.arange(len(predictions)))  # [0] = oldest
        return weights @ np.stack(predictions) / weights.sum()

    def takeover_weight(self, entry: ScheduledChunk, t: float) -> float:
        """Async cross-fade weight of ``entry`` at ``t``: (k+1)/(blend_steps+1), at most 1."""
        if self.blend_steps == 0:
            return 1.0
        k = step_index(t, entry.takeover, entry.dt, self.eps)
        return min(1.0, (k + 1) / (self.blend_steps + 1))

    def _blend(self, t: float, index: int) -> np.ndarray:
        # Walk back from the chunk in play until a chunk is fully faded in, then fold forward:
        # each chunk blends with what the schedule before it would have played.
        chain: list[tuple[ScheduledChunk, float]] = []
        for entry in reversed(self._entries[: index + 1]):
            if not entry.covers(t, self.eps):
                continue
            weight = self.takeover_weight(entry, t)
            chain.append((entry, weight))
            if weight >= 1.0:
                break
        value = chain[-1][0].value_at(t, self.eps, self.interpolate)
        for entry, weight in reversed(chain[:-1]):
            value = (1.0 - weight) * value + weight * entry.value_at(t, self.eps, self.interpolate)
        return value

    def status(self, now: float) -> ScheduleStatus:
        """Whether an action exists at ``now`` (s), and since when the schedule ran dry."""
        ends = [e.end for e in self._entries if e.has_ended(now, self.eps)]
        if self._last_end is not None:
            ends.append(self._last_end)
        ran_out_at = max(ends) if ends else None
        waiting = [e.takeover for e in self._entries if not e.has_taken_over(now, self.eps)]
        next_takeover = min(waiting) if waiting else None
        if self._active_index(now) is not None:
            state = "active"
        elif next_takeover is not None:
            state = "pending"
        elif ran_out_at is not None:
            state = "ran_out"
        else:
            state = "empty"
        return ScheduleStatus(state, ran_out_at, next_takeover)

    # -- real-time chunking seam ----------------------------------------------------
    def scheduled_actions(self, now: float, max_steps: int) -> np.ndarray | None:
        """Up to ``max_steps`` actions the schedule plays at ``now, now + dt, ...``.

        Shape (n, action_dim), n <= max_steps (stops where the schedule runs out); None when
        nothing is in play at ``now``.
        """
        active = self.active(now)
        if active is None:
            return None
        rows = []
        for k in range(max(0, max_steps)):
            action = self.action_at(now + k * active.dt)
            if action is None:
                break
            rows.append(action)
        if not rows:
            return np.zeros((0, active.chunk.actions.shape[1]))
        return np.stack(rows)

    def frozen_prefix(self, now: float, delay_steps: int) -> np.ndarray | None:
        """The ``delay_steps`` actions executed anyway while the next inference runs.

        Real-time chunking freezes the next chunk's first ``d = ceil(latency/dt)`` actions to
        these and inpaints the rest. Shape (n, action_dim), n <= delay_steps; None if idle.
        """
        return self.scheduled_actions(now, delay_steps)

    def remaining_actions(self, now: float) -> np.ndarray | None:
        """Everything the schedule still plays from ``now`` (RTC's guidance target)."""
        active = self.active(now)
        if active is None:
            return None
        last_end = max(e.end for e in self._entries)
        return self.scheduled_actions(now, math.ceil((last_end - now) / active.dt) + 1)

"""Gaps in recorded sources: which control ticks are bridged, which are invalid (pure core).

A tick is *stale* for a source when the newest message at or before it is older than the
source's ``max_age_s``. Each stale tick lies in a gap between two messages (the one before
it, the one after it). With a :class:`GapPolicy`:

* gaps no longer than ``bridge_s`` are **bridged**: joint states are interpolated linearly
  between the messages on either side, camera frames hold the last frame (a late or lost
  sample on a busy machine, not missing data);
* ticks inside longer gaps are **masked** (invalid) and left out of the dataset: the episode
  is cut into its valid stretches, each written as an episode of its own, and stretches
  shorter than ``min_segment_s`` are dropped;
* ``strict`` keeps the all-or-nothing behaviour: the first stale tick is an error.

Times are s on the episode's time base (receive time or header stamps).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Default longest gap bridged, s: 0.3 s is 15 ticks at 50 Hz, three times the shipped joint
#: state ``max_age_s``; longer than any executor stall seen on a loaded 2-core machine (0.2 s),
#: short enough that a held or interpolated arm pose is still what the arm did.
BRIDGE_S = 0.3
#: Default shortest valid stretch kept as an episode, s.
MIN_SEGMENT_S = 1.0


#: A message up to this much after a tick counts as at the tick, s. Stamps are whole ns and
#: ticks are float sums (start + k * dt): a sample stamped exactly on a tick could otherwise
#: compare as one ulp later and be taken one tick late.
TICK_TOLERANCE_S = 1e-6


def latest_indices(times: np.ndarray, ticks: np.ndarray) -> np.ndarray:
    """Index of the newest message at or before each tick (-1 where none); ``times`` sorted, s."""
    return np.searchsorted(times, np.asarray(ticks) + TICK_TOLERANCE_S, side="right") - 1


@dataclass(frozen=True)
class GapPolicy:
    """How conversion treats gaps (see the module docstring); times in s."""

    bridge_s: float = BRIDGE_S
    min_segment_s: float = MIN_SEGMENT_S
    strict: bool = False


@dataclass
class SourceGaps:
    """Per tick of one source: stale, bridged, and the neighbouring message indices."""

    stale: np.ndarray  # bool (T,): the newest message is older than max_age_s
    bridged: np.ndarray  # bool (T,): inside a gap no longer than bridge_s (interpolated)
    before: np.ndarray  # int (T,): newest message at or before the tick (-1: none)
    after: np.ndarray  # int (T,): the next message after it (len(times): none)
    gaps: list[tuple[float, float, bool]] = field(default_factory=list)  # (from, to, bridged)

    @property
    def masked(self) -> np.ndarray:
        return self.stale & ~self.bridged


def source_gaps(times: np.ndarray, ticks: np.ndarray, max_age_s: float, bridge_s: float) -> SourceGaps:
    """Classify the ticks of one source (``times`` sorted, s) as fresh, bridged or masked."""
    before = latest_indices(times, ticks)
    previous = np.where(before >= 0, times[np.maximum(before, 0)], -np.inf)
    stale = ticks - previous > max_age_s + 1e-9
    after = before + 1
    following = np.where(after < len(times), times[np.minimum(after, len(times) - 1)], np.inf)
    interval = following - previous
    # every tick between two messages further apart than max_age_s is in a gap: a bridged gap
    # is interpolated over its whole length, a longer one masks the ticks that are stale
    bridged = (interval > max_age_s + 1e-9) & (interval <= bridge_s + 1e-9)
    gaps = []
    for k in np.nonzero(bridged | stale)[0]:
        span = (float(previous[k]), float(following[k]), bool(bridged[k]))
        if not gaps or gaps[-1] != span:
            gaps.append(span)
    return SourceGaps(stale, bridged, before, after, gaps)


def valid_segments(valid: np.ndarray, min_ticks: int) -> list[slice]:
    """Maximal runs of valid ticks, at least ``min_ticks`` long."""
    segments = []
    start = None
    for k, ok in enumerate(list(valid) + [False]):
        if ok and start is None:
            start = k
        elif not ok and start is not None:
            if k - start >= min_ticks:
                segments.append(slice(start, k))
            start = None
    return segments


def interpolation_weights(
    times: np.ndarray, ticks: np.ndarray, gaps: SourceGaps
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row before, row after, weight of the row after) per tick; weight 0 where not bridged."""
    weight = np.zeros(len(ticks))
    bridged = np.nonzero(gaps.bridged)[0]
    if len(bridged):
        t0, t1 = times[gaps.before[bridged]], times[gaps.after[bridged]]
        weight[bridged] = (ticks[bridged] - t0) / np.maximum(t1 - t0, 1e-12)
    after = np.where(gaps.bridged, gaps.after, gaps.before)
    return gaps.before, after, weight

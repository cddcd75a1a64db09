"""When the inference node should ask for the next chunk (pure core).

The inference node knows the chunk it last published (start time, horizon), whether an inference
is running, and how long inferences take. ``InferenceTrigger.decide`` turns that into "request
now?" per strategy:

    synchronous        when the chunk's playable part has run out (the robot pauses meanwhile,
                       as in openpi's broker).
    temporal_ensemble  every ``ensemble_period_steps`` control steps (ACT queries every step).
    async              when at most ``replan_threshold`` of the chunk remains, or when the time
                       left is within one inference latency plus one step, so the next chunk lands
                       before this one runs out (LeRobot's async queue threshold, 0.5 to 0.7).

All strategies request when there is no chunk yet or the last one ran out, and never while an
inference is in flight (one request at a time).

Also here: the inference delay in steps (``TriggerDecision.delay_steps``: how many actions the
inference node freezes into the next chunk, real-time chunking by inpainting) and the soft
guidance mask of guided real-time chunking (Black et al. 2025), a seam for a future guided
decoder (only its tests use ``rtc_soft_mask`` today).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .scheduler import STRATEGIES


@dataclass(frozen=True)
class TriggerDecision:
    """Whether to request a chunk now, why, and the expected delay in control steps."""

    request: bool
    reason: str
    delay_steps: int


def inference_delay_steps(latency_s: float, dt: float) -> int:
    """Control steps that pass during one inference: ceil(latency / dt), at least 0."""
    if not (dt > 0 and math.isfinite(dt)):
        raise ValueError(f"dt must be a positive number of seconds, got {dt}")
    if not (latency_s >= 0 and math.isfinite(latency_s)):
        raise ValueError(f"latency_s must be a finite number >= 0, got {latency_s}")
    return max(0, math.ceil(latency_s / dt - 1e-9))


def chunk_play_end(
    start_time: float, horizon: int, dt: float, actions_per_chunk: int | None = None
) -> float:
    """Time (s) at which a chunk starting at ``start_time`` stops applying."""
    steps = horizon if actions_per_chunk is None else min(horizon, actions_per_chunk)
    return start_time + steps * dt


def rtc_soft_mask(horizon: int, delay_steps: int, executed_steps: int) -> np.ndarray:
    """Real-time chunking guidance weights over the next chunk's ``horizon`` steps.

    1 for the first ``d`` (frozen) steps; ``c * (e^c - 1) / (e - 1)`` with
    ``c = (H - s - i) / (H - s - d + 1)`` for ``d <= i < H - s``; 0 from ``H - s`` on, where the
    previous chunk has no prediction. ``s`` = steps executed since the previous inference.
    """
    d, s = int(delay_steps), int(executed_steps)
    if horizon < 1 or d < 0 or s < 0 or d > horizon - s:
        raise ValueError(
            f"need horizon >= 1 and 0 <= delay_steps <= horizon - executed_steps, got "
            f"horizon={horizon}, delay_steps={d}, executed_steps={s}"
        )
    i = np.arange(horizon, dtype=np.float64)
    c = (horizon - s - i) / (horizon - s - d + 1)
    weights = c * np.expm1(c) / math.expm1(1.0)
    weights[:d] = 1.0
    weights[horizon - s :] = 0.0
    return weights


@dataclass(frozen=True)
class InferenceTrigger:
    """Decides when the inference node asks for the next chunk (see the module docstring).

    Attributes:
        strategy: one of ``STRATEGIES``, the same as the control loop's.
        dt: control period, s.
        replan_threshold: async: request when at most this fraction of the chunk remains.
        ensemble_period_steps: temporal ensemble: request every this many control steps.
    """

    strategy: str
    dt: float
    replan_threshold: float = 0.5
    ensemble_period_steps: int = 1

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}"
            )
        if not (self.dt > 0 and math.isfinite(self.dt)):
            raise ValueError(f"dt must be a positive number of seconds, got {self.dt}")
        if not 0.0 <= self.replan_threshold <= 1.0:
            raise ValueError(f"replan_threshold must be in [0, 1], got {self.replan_threshold}")
        if self.ensemble_period_steps < 1:
            raise ValueError(
                f"ensemble_period_steps must be >= 1, got {self.ensemble_period_steps}"
            )

    def decide(
        self,
        now: float,
        *,
        last_start: float | None,
        last_end: float | None,
        in_flight: bool = False,
        latency_s: float = 0.0,
    ) -> TriggerDecision:
        """Whether to request the next chunk at ``now`` (s).

        Args:
            last_start: start time of the last chunk published, s (None: none yet).
            last_end: time it stops applying, s (see ``chunk_play_end``).
            in_flight: an inference is running.
            latency_s: measured inference latency (e.g. a running median), s.
        """
        delay = inference_delay_steps(latency_s, self.dt)
        if in_flight:
            return TriggerDecision(False, "inference in flight", delay)
        if last_start is None or last_end is None:
            return TriggerDecision(True, "no chunk yet", delay)
        if now >= last_end:
            return TriggerDecision(True, "last chunk ran out", delay)
        remaining = last_end - now
        if self.strategy == "synchronous":
            return TriggerDecision(
                False, f"synchronous: {remaining:.3f} s of the chunk left", delay
            )
        if self.strategy == "temporal_ensemble":
            period = self.ensemble_period_steps * self.dt
            due = now - last_start >= period - 1e-9
            return TriggerDecision(due, f"temporal ensemble: query every {period:.3f} s", delay)
        duration = max(last_end - last_start, self.dt)
        if remaining <= self.replan_threshold * duration:
            return TriggerDecision(
                True, f"async: {remaining / duration:.0%} of the chunk left", delay
            )
        if remaining <= latency_s + self.dt:
            return TriggerDecision(
                True, f"async: {remaining:.3f} s left, latency {latency_s:.3f} s", delay
            )
        return TriggerDecision(False, f"async: {remaining:.3f} s of the chunk left", delay)

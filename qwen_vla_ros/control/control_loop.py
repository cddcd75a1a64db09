"""What the action-chunk publisher decides at every control tick (pure core, no ROS).

The ROS node calls::

    loop = ControlLoop(embodiment, strategy="async")
    problems = loop.add_chunk(chunk, now)      # per received chunk; [] = accepted, else logged
    result = loop.tick(now, measured_state, estop)   # at embodiment.control_rate_hz
    publish(result.commands)                   # OutputCommand -> messages
    publish(loop.hold_commands())              # once, on shutdown
    loop.stop()                                # policy stopped: hold until the next chunk
    loop.release()                             # someone else moves the robot: command nothing
    loop.statistics()                          # counters + last mode/reason, for diagnostics

Run or hold: the rule
    A tick *runs* (mode 'run') when the scheduler has an action for ``now``: the action goes
    through the safety layer (ramping from the previous command) and the command mapping.
    Otherwise it *holds* (mode 'hold'); ``TickResult.cause`` says why, first match wins:

    shutdown      hold_commands() was called: every later tick holds.
    estop         ``estop`` is True (latched by the caller); every chunk is dropped.
    released      release() was called (the robot is moved by someone else): nothing is
                  commanded until a chunk is accepted.
    stopped       stop() was called (e.g. an empty chunk); holds until a chunk is accepted.
    clock         time went backwards (simulation reset); every chunk is dropped.
    fault         the scheduled action or tracker twist was NaN/inf; every chunk is dropped.
    no_reference  neither a previous command nor a measured state to ramp from.
    starved       the newest chunk ran out at most ``chunk_timeout_s`` ago (or the next one
                  has not started yet): a planned pause, e.g. synchronous chunking waiting on
                  inference.
    watchdog      the newest chunk ran out more than ``chunk_timeout_s`` ago: fires on the
                  first tick with ``now - ran_out_at > chunk_timeout_s``, so within one control
                  period of the timeout.
    no_chunk      no chunk has played yet.
    stale_state,  the caller's ``hold_for=(cause, reason)``, checked when an action would run:
    inference_lost  a state source is older than its ``max_age_s``, or the inference process
                  stopped sending heartbeats. Chunks are kept: when the cause clears, the tick
                  resumes at the chunk's "now", ramping from the hold within the step limits.

Hold targets
    'starved' is a soft hold: joints and grippers stay at the last command, base velocities
    decelerate to zero within their acceleration limits. Every other cause is a hard hold, per
    group ``hold_mode``: measured_position (the measured state when the hold began, else the
    last command), last_command (else the measured state), zero_velocity (bases: zero twist at
    once; joints: the last command). The target is latched when the hold begins, because
    re-reading the measured state every tick lets an arm sag under gravity; it is re-latched
    once if a soft hold turns hard. With ``home_fallback=True`` the home pose fills what is
    still unknown; by default such groups are not commanded at all (driving blind to home is
    unsafe). Joint targets are approached within the step limits.

Resume
    When actions return, the safety layer ramps from the last command (the hold position)
    within the step limits, so the resume is smooth.

Base waypoints follow the chunk in play (chunks are in different robot frames, so they are not
blended), tracked into a twist by ``WaypointTracker``; see ``base_tracking``.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..embodiment import Embodiment
from ..types import ActionChunk
from .base_tracking import BaseTracking
from .command_mapping import CommandMapper, OutputCommand
from .safety import ClipReport, SafetyLimiter, UnsafeCommandError
from .scheduler import ChunkScheduler

SOFT_CAUSES = ("starved",)


@dataclass
class TickResult:
    """What one tick decided.

    Attributes:
        commands: messages to publish now (outputs with no known target are left out).
        mode: 'run' (executing chunk actions) or 'hold'.
        reason: readable explanation, for logs and diagnostics.
        clipped: what the safety layer clipped this tick (None when nothing was filtered).
        cause: 'run' or the hold cause (see the module docstring).
        command: the command vector sent, rig units (NaN where nothing was commanded).
        chunk_id: id of the chunk in play, when running.
    """

    commands: list[OutputCommand]
    mode: str
    reason: str
    clipped: ClipReport | None
    cause: str = "run"
    command: np.ndarray | None = None
    chunk_id: int | None = None


@dataclass
class LoopStats:
    """Counters for diagnostics."""

    ticks: int = 0
    run_ticks: int = 0
    clipped_ticks: int = 0  # run ticks on which the safety layer changed the command
    hold_ticks: int = 0
    holds_by_cause: Counter = field(default_factory=Counter)
    chunks_accepted: int = 0
    chunks_rejected: int = 0
    faults: int = 0


class ControlLoop:
    """The control core the chunk publisher node calls every tick (see the module docstring)."""

    def __init__(
        self,
        embodiment: Embodiment,
        strategy: str = "async",
        *,
        actions_per_chunk: int | None = None,
        ensemble_decay: float = 0.01,
        blend_steps: int = 5,
        interpolate: bool = False,
        latency_compensation: bool = True,
        discontinuity_steps: float = 10.0,
        home_fallback: bool = False,
        max_dt_factor: float = 2.0,
        lookahead_s: float = 0.3,
    ):
        """
        Args:
            embodiment: the robot.
            strategy, actions_per_chunk, ensemble_decay, blend_steps, interpolate,
                latency_compensation: see ``ChunkScheduler``.
            discontinuity_steps: reject a chunk whose first action is further than this many
                step limits from the current command.
            home_fallback: hold at home where neither measured state nor command is known.
            max_dt_factor: a late tick is rate-limited as if at most this many periods passed.
            lookahead_s: waypoint tracker look-ahead, s.
        """
        self.embodiment = embodiment
        self.scheduler = ChunkScheduler(
            strategy,
            actions_per_chunk=actions_per_chunk,
            ensemble_decay=ensemble_decay,
            blend_steps=blend_steps,
            interpolate=interpolate,
            latency_compensation=latency_compensation,
        )
        # Interpolation resamples any chunk dt onto the control grid; otherwise dt must match.
        self.limiter = SafetyLimiter(
            embodiment,
            discontinuity_steps=discontinuity_steps,
            dt_tolerance=None if interpolate else 1e-3,
        )
        self.mapper = CommandMapper(embodiment)
        self.home_fallback = home_fallback
        self.max_dt = max_dt_factor * embodiment.dt
        self.stats = LoopStats()
        self._masks()
        self.base = BaseTracking(embodiment, self.limiter, lookahead_s)
        self.reset()

    def _masks(self) -> None:
        kinds, dim = self.embodiment.dims_of_kind, self.embodiment.action_dim
        none = np.zeros(dim, dtype=bool)
        self._positional = kinds.get("joint_position", none) | kinds.get("gripper", none)
        self._base = kinds.get("base_velocity", none) | kinds.get("base_waypoints", none)
        self._base_velocity = kinds.get("base_velocity", none)
        measured_first = [
            g.hold_mode == "measured_position"
            for g in self.embodiment.action_groups
            for _ in g.joints
        ]
        self._measured_first = np.array(measured_first) & self._positional

    def reset(self) -> None:
        """Forget chunks, commands, measurements and holds (a fresh start)."""
        dim = self.embodiment.action_dim
        self.scheduler.reset()
        self.base.reset()
        self._last_command = np.full(dim, np.nan)
        self._measured = np.full(dim, np.nan)
        self._hold_target: np.ndarray | None = None
        self._hold_tier: str | None = None
        self._last_tick: float | None = None
        self._shutdown = False
        self._stopped = False
        self._released = False
        self._estop = False  # as of the last tick: chunks arriving meanwhile are refused
        self.last_result: TickResult | None = None

    @property
    def strategy(self) -> str:
        return self.scheduler.strategy

    @property
    def last_command(self) -> np.ndarray:
        """The last command vector sent, rig units (NaN where never commanded)."""
        return self._last_command.copy()

    # -- chunks ------------------------------------------------------------------------
    def add_chunk(self, chunk: ActionChunk, now: float) -> list[str]:
        """Validate and schedule ``chunk`` received at ``now`` (s). Returns problems; [] = accepted.

        A chunk with problems is never executed.
        """
        if self._shutdown:
            problems = ["the control loop is shut down"]
        elif self._estop:
            problems = ["e-stop engaged: chunk dropped"]
        else:
            current = np.where(np.isfinite(self._last_command), self._last_command, self._measured)
            problems = self.limiter.check_chunk(chunk, current, now)
        if not problems and self.scheduler.add(chunk, now) is not None:
            self._stopped = self._released = False
        elif not problems:
            problems = [
                f"chunk {chunk.chunk_id} ran out before it could play (start {chunk.start_time:.3f} s, "
                f"received {now:.3f} s): inference slower than the chunk is long?"
            ]
        if problems:
            self.stats.chunks_rejected += 1
        else:
            self.stats.chunks_accepted += 1
        return problems

    # -- the tick ------------------------------------------------------------------------
    def tick(
        self,
        now: float,
        measured_state: np.ndarray | None = None,
        estop: bool = False,
        base_pose: np.ndarray | None = None,
        hold_for: tuple[str, str] | None = None,
    ) -> TickResult:
        """Decide this tick's commands.

        Args:
            now: current time, s (ROS time, may be simulated).
            measured_state: (action_dim,) measured values in rig units, the action layout
                (grippers normalised, as ``Observation.state``); NaN entries mean unknown.
            estop: the caller's latched emergency stop.
            base_pose: odometry pose (x m, y m, yaw rad) for waypoint tracking; None: dead
                reckoning of the commanded twist.
            hold_for: (cause, reason) of a hard hold the caller detected (a stale state
                source, lost inference); None: nothing to hold for.
        """
        self.stats.ticks += 1
        self.last_result = self._decide(now, measured_state, estop, base_pose, hold_for)
        return self.last_result

    def stop(self) -> None:
        """Drop every chunk and hold (hard) until the next accepted chunk."""
        self.scheduler.clear(self._last_tick)
        self._stopped = True

    def release(self) -> None:
        """Stand aside while something else moves the robot (a simulation reset, an operator
        putting the arms back): drop every chunk and command nothing until the next accepted
        chunk, which then ramps from the measured state (tick cause 'released').

        The controllers keep their last goal meanwhile (position controllers hold it; a base
        controller stops on its command timeout). A hold would fight the move: the latched
        position is where the robot *was*, and the next chunk would ramp from that stale
        command. An e-stop still commands a hold; a shutdown still sends the final hold.
        """
        self.scheduler.clear(self._last_tick)
        self.base.reset()
        self._released = True
        self._stopped = False
        self._last_command[:] = np.nan
        self._measured[:] = np.nan  # readings from before the move must not be ramped from
        self._hold_target = self._hold_tier = None

    def _decide(
        self,
        now: float,
        measured_state: np.ndarray | None,
        estop: bool,
        base_pose: np.ndarray | None,
        hold_for: tuple[str, str] | None = None,
    ) -> TickResult:
        dt, clock_jumped = self._advance_clock(now)
        self._update_measured(measured_state)
        self.base.update_pose(now, base_pose)
        if self._shutdown:
            return self._hold(dt, "shutdown", "shut down: holding")
        self._estop = estop
        if estop:
            self.scheduler.clear(now)
            return self._hold(dt, "estop", "e-stop: holding, chunks dropped")
        if self._released:
            return self._silent("released", "released: commanding nothing until the next chunk")
        if self._stopped:
            return self._hold(dt, "stopped", "stopped: holding until the next chunk")
        if clock_jumped:
            return self._hold(
                dt, "clock", "time went backwards (simulation reset?): chunks dropped"
            )
        self.scheduler.prune(now)
        action = self.scheduler.action_at(now)
        if action is None:
            return self._hold(dt, *self._idle_cause(now))
        if hold_for is not None:
            return self._hold(dt, *hold_for)
        return self._run(now, dt, action)

    def _run(self, now: float, dt: float, action: np.ndarray) -> TickResult:
        previous = self._run_reference()
        if previous is None:
            return self._hold(
                dt, "no_reference", "no previous command or measured state to ramp from"
            )
        try:
            safe, report = self.limiter.filter(action, previous, dt)
            twists, report = self.base.run(now, dt, self.scheduler.active(now), report)
        except UnsafeCommandError as exc:
            self.scheduler.clear(now)
            self.stats.faults += 1
            return self._hold(dt, "fault", f"{exc}: holding, chunks dropped")
        commands = self.mapper.map(safe, twists)
        self._remember(safe, twists)
        self._hold_tier = self._hold_target = None
        self.stats.run_ticks += 1
        self.stats.clipped_ticks += int(report.any())
        active = self.scheduler.active(now)
        step = active.index_at(now, self.scheduler.eps)
        return TickResult(
            commands,
            "run",
            f"chunk {active.chunk.chunk_id} step {step}",
            report,
            "run",
            safe,
            active.chunk.chunk_id,
        )

    def _idle_cause(self, now: float) -> tuple[str, str]:
        status = self.scheduler.status(now)
        timeout = self.embodiment.chunk_timeout_s
        waiting = (
            ""
            if status.next_takeover is None
            else f"; next chunk starts in {status.next_takeover - now:.3f} s"
        )
        if status.ran_out_at is None:
            return "no_chunk", "no chunk has played yet" + waiting
        idle = now - status.ran_out_at
        if idle <= timeout:
            return "starved", f"starved: newest chunk ran out {idle:.3f} s ago{waiting}"
        return (
            "watchdog",
            f"watchdog: newest chunk ran out {idle:.3f} s ago (> {timeout:g} s){waiting}",
        )

    def _advance_clock(self, now: float) -> tuple[float, bool]:
        if not math.isfinite(now):
            raise ValueError(f"now must be a finite time in seconds, got {now}")
        last, self._last_tick = self._last_tick, now
        if last is None:
            return self.embodiment.dt, False
        if now < last:
            self.scheduler.reset()
            self.base.reset()
            return self.embodiment.dt, True
        return min(now - last, self.max_dt), False

    def _update_measured(self, measured_state: np.ndarray | None) -> None:
        if measured_state is None:
            return
        measured = np.asarray(measured_state, dtype=np.float64)
        if measured.shape != self._measured.shape:
            raise ValueError(
                f"measured_state has shape {measured.shape}; expected {self._measured.shape}"
            )
        known = np.isfinite(measured)
        self._measured[known] = measured[known]

    def _run_reference(self) -> np.ndarray | None:
        """The command the next one ramps from: last command, else measured; bases from rest."""
        previous = np.where(np.isfinite(self._last_command), self._last_command, self._measured)
        previous[self._base & ~np.isfinite(previous)] = 0.0
        return previous if np.isfinite(previous).all() else None

    def _remember(self, command: np.ndarray, twists: dict[str, np.ndarray]) -> None:
        known = np.isfinite(command)
        self._last_command[known] = command[known]
        self.base.remember(twists)

    # -- holding ---------------------------------------------------------------------------
    def _silent(self, cause: str, reason: str) -> TickResult:
        self.stats.hold_ticks += 1
        self.stats.holds_by_cause[cause] += 1
        nothing = np.full(self.embodiment.action_dim, np.nan)
        return TickResult([], "hold", reason, None, cause, nothing)

    def _hold(self, dt: float, cause: str, reason: str) -> TickResult:
        tier = "soft" if cause in SOFT_CAUSES else "hard"
        if self._hold_tier is None or (self._hold_tier == "soft" and tier == "hard"):
            self._hold_target, self._hold_tier = self._latch_target(tier), tier
        elif not np.all(np.isfinite(self._hold_target[self._positional])):
            # a hold that began before anything was measured latches each joint once it is known
            fresh = self._latch_target(self._hold_tier)
            self._hold_target = np.where(np.isfinite(self._hold_target), self._hold_target, fresh)
        vector, report = self._approach(self._hold_target, dt, self._hold_tier)
        twists = self.base.hold(dt, soft=self._hold_tier == "soft")
        commands = self.mapper.map(vector, twists, skip_non_finite=True)
        self._remember(vector, twists)
        self.stats.hold_ticks += 1
        self.stats.holds_by_cause[cause] += 1
        if len(commands) < len(self.mapper.plans):
            sent = {c.topic for c in commands}
            silent = [t for t in self.mapper.topics if t not in sent]
            reason += f"; not commanded (no known position): {', '.join(silent)}"
        return TickResult(commands, "hold", reason, report, cause, vector)

    def _latch_target(self, tier: str) -> np.ndarray:
        last, measured = self._last_command, self._measured
        last_first = np.where(np.isfinite(last), last, measured)
        if tier == "soft":
            position = last_first
        else:
            measured_first = np.where(np.isfinite(measured), measured, last)
            position = np.where(self._measured_first, measured_first, last_first)
        if self.home_fallback:
            position = np.where(np.isfinite(position), position, self.embodiment.home_position)
        target = np.where(self._positional, position, 0.0)
        return np.clip(target, self.limiter.lower, self.limiter.upper)

    def _approach(self, target: np.ndarray, dt: float, tier: str) -> tuple[np.ndarray, ClipReport]:
        """Move toward the hold target within the limits; NaN where the target is unknown."""
        known = np.isfinite(target)
        command = np.where(known, target, 0.0)
        previous = np.where(np.isfinite(self._last_command), self._last_command, command)
        vector, report = self.limiter.filter(command, previous, dt)
        if tier == "hard":
            vector[self._base_velocity] = 0.0  # a stop is immediate
        vector[~known] = np.nan
        for mask in (report.position, report.step, report.velocity, report.acceleration):
            mask &= known
        return vector, report

    def hold_commands(self, measured_state: np.ndarray | None = None) -> list[OutputCommand]:
        """Shutdown: the final hold commands (per hold_mode, at once); later ticks keep holding."""
        self._shutdown = True
        self._update_measured(measured_state)
        self._hold_target, self._hold_tier = self._latch_target("hard"), "hard"
        vector = self._hold_target.copy()
        twists = self.base.hold(0.0, soft=False)
        self._remember(vector, twists)
        return self.mapper.map(vector, twists, skip_non_finite=True)

    def statistics(self) -> dict[str, Any]:
        """``diagnostics()`` plus the last tick's mode, cause and reason."""
        last = self.last_result
        values: dict[str, Any] = {
            "mode": last.mode if last else "hold",
            "cause": last.cause if last else "no_tick",
            "reason": last.reason if last else "no tick yet",
        }
        values.update(self.diagnostics())
        return values

    def diagnostics(self) -> dict[str, Any]:
        """Flat key/value counters (e.g. for diagnostic_msgs)."""
        values: dict[str, Any] = {
            "strategy": self.strategy,
            "ticks": self.stats.ticks,
            "run_ticks": self.stats.run_ticks,
            "clipped_ticks": self.stats.clipped_ticks,
            "hold_ticks": self.stats.hold_ticks,
            "chunks_accepted": self.stats.chunks_accepted,
            "chunks_rejected": self.stats.chunks_rejected,
            "faults": self.stats.faults,
        }
        values.update({f"holds_{cause}": n for cause, n in self.stats.holds_by_cause.items()})
        values.update(
            {f"clipped_{reason}": int(t.sum()) for reason, t in self.limiter.totals.items()}
        )
        return values

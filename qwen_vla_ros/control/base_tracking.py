"""The control loop's base_waypoints bookkeeping: pose history, trackers, last twists (pure core).

Waypoint groups follow the chunk in play (chunks are in different robot frames, so they are not
blended). Each tick the base pose is updated (odometry when given, else dead reckoning of the
last twist), the tracker turns the chunk into a twist, and the safety layer limits it.
"""

from __future__ import annotations

import numpy as np

from ..embodiment import Embodiment
from .safety import ClipReport, SafetyLimiter
from .scheduler import ScheduledChunk
from .waypoint_tracker import PoseHistory, WaypointTracker


class BaseTracking:
    """Twists for every base_waypoints group of an embodiment (none: every method is a no-op)."""

    def __init__(self, embodiment: Embodiment, limiter: SafetyLimiter, lookahead_s: float = 0.3):
        self.embodiment = embodiment
        self.limiter = limiter
        groups = [g for g in embodiment.action_groups if g.kind == "base_waypoints"]
        self.trackers = {
            g.name: WaypointTracker(
                max_linear=next(j.max_velocity for j in g.joints if j.name == "x"),
                max_angular=next(j.max_velocity for j in g.joints if j.name == "yaw"),
                lookahead_s=lookahead_s,
            )
            for g in groups
        }
        self.poses = PoseHistory()
        self.reset()

    def reset(self) -> None:
        self.poses.clear()
        self.twists = {group: np.zeros(2) for group in self.trackers}

    def update_pose(self, now: float, base_pose: np.ndarray | None) -> None:
        """Record the odometry pose (x m, y m, yaw rad), or dead-reckon the last twist to ``now``."""
        if not self.trackers:
            return
        if base_pose is not None:
            self.poses.record(now, base_pose)
        else:
            self.poses.advance(now, tuple(next(iter(self.twists.values()))))

    def run(
        self, now: float, dt: float, entry: ScheduledChunk, report: ClipReport
    ) -> tuple[dict[str, np.ndarray], ClipReport]:
        """Limited twists following ``entry``; twist clipping is added to ``report``.

        Raises ``UnsafeCommandError`` if a twist is not finite.
        """
        twists: dict[str, np.ndarray] = {}
        for group, tracker in self.trackers.items():
            columns = self.embodiment.group_slices[group]
            lower, upper = self.limiter.lower[columns], self.limiter.upper[columns]
            waypoints = np.clip(entry.chunk.actions[: entry.steps, columns], lower, upper)
            pose = self.poses.relative(entry.chunk.start_time, now)
            wanted = tracker.command(now, waypoints, entry.grid_start, entry.dt, pose)
            twist, too_fast, too_sudden = self.limiter.limit_twist(
                group, wanted, self.twists[group], dt
            )
            twists[group] = twist
            report = report.merge(self._twist_report(columns, too_fast, too_sudden))
        return twists, report

    def _twist_report(
        self, columns: slice, too_fast: np.ndarray, too_sudden: np.ndarray
    ) -> ClipReport:
        """Twist clipping shown on the group's x (linear) and yaw (angular) dimensions."""
        report = self.limiter.empty_report()
        x, yaw = columns.start, columns.start + 2
        report.velocity[[x, yaw]] = too_fast
        report.acceleration[[x, yaw]] = too_sudden
        self.limiter.record(report)
        return report

    def hold(self, dt: float, soft: bool) -> dict[str, np.ndarray]:
        """Zero twists: at once (hard hold), or within the acceleration limits (soft)."""
        if not soft:
            return {group: np.zeros(2) for group in self.trackers}
        return {
            group: self.limiter.limit_twist(group, (0.0, 0.0), self.twists[group], dt)[0]
            for group in self.trackers
        }

    def remember(self, twists: dict[str, np.ndarray]) -> None:
        self.twists.update(twists)

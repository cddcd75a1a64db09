"""Control core of the action-chunk publisher (pure: numpy only, no ROS).

``ControlLoop`` is what the node calls every control tick; it combines the chunk scheduler
(``scheduler``), the safety layer (``safety``), the command mapping (``command_mapping``) and
the base waypoint tracker (``waypoint_tracker``). ``InferenceTrigger`` tells the inference node
when to ask for the next chunk; ``chunk_points`` converts chunks to and from JointTrajectory-style
points.
"""

from .chunk_points import ChunkFormatError, chunk_from_points, points_from_chunk
from .command_mapping import CommandMapper, CommandMappingError, OutputCommand
from .control_loop import ControlLoop, LoopStats, TickResult
from .inference_trigger import (
    InferenceTrigger,
    TriggerDecision,
    chunk_play_end,
    inference_delay_steps,
    rtc_soft_mask,
)
from .safety import ClipReport, SafetyLimiter, UnsafeCommandError
from .scheduler import STRATEGIES, ChunkScheduler, ScheduledChunk, ScheduleStatus, step_index
from .waypoint_tracker import PoseHistory, WaypointTracker, relative_pose, wrap_angle

__all__ = [
    "STRATEGIES",
    "ChunkFormatError",
    "ChunkScheduler",
    "ClipReport",
    "CommandMapper",
    "CommandMappingError",
    "ControlLoop",
    "InferenceTrigger",
    "LoopStats",
    "OutputCommand",
    "PoseHistory",
    "SafetyLimiter",
    "ScheduleStatus",
    "ScheduledChunk",
    "TickResult",
    "TriggerDecision",
    "UnsafeCommandError",
    "WaypointTracker",
    "chunk_from_points",
    "chunk_play_end",
    "inference_delay_steps",
    "points_from_chunk",
    "relative_pose",
    "rtc_soft_mask",
    "step_index",
    "wrap_angle",
]

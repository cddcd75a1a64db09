"""Message helpers: ROS messages <-> the core's plain types. No rclpy: testable without spinning.

Conventions:
* An action chunk travels as trajectory_msgs/JointTrajectory: ``header.stamp`` is the time
  of the first action, ``joint_names`` the embodiment's action names, one point per step
  with ``positions`` (rig units) and ``time_from_start``.
* Times are float seconds (ROS time) inside the core.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
from builtin_interfaces.msg import Duration, Time
from nav_msgs.msg import Odometry
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from ..control.chunk_points import ChunkFormatError, chunk_from_points, points_from_chunk
from ..embodiment import StateSource
from ..types import ActionChunk


class MessageConversionError(ValueError):
    """A message that cannot be converted; the text says which field is wrong."""


# -- time -----------------------------------------------------------------------------------
def to_seconds(stamp: Time | Duration) -> float:
    nanosec = stamp.nanosec
    whole = stamp.sec
    return whole + nanosec * 1e-9


def to_time(seconds: float) -> Time:
    whole = int(np.floor(seconds))
    return Time(sec=whole, nanosec=min(int(round((seconds - whole) * 1e9)), 999_999_999))


def to_duration(seconds: float) -> Duration:
    whole = int(np.floor(seconds))
    return Duration(sec=whole, nanosec=min(int(round((seconds - whole) * 1e9)), 999_999_999))


# -- action chunks ----------------------------------------------------------------------------
def chunk_to_msg(chunk: ActionChunk) -> JointTrajectory:
    names, positions, times, stamp = points_from_chunk(chunk)
    msg = JointTrajectory(joint_names=names)
    msg.header.stamp = to_time(stamp)
    msg.header.frame_id = f"{chunk.embodiment}#{chunk.chunk_id}"
    msg.points = [
        JointTrajectoryPoint(positions=row, time_from_start=to_duration(t))
        for row, t in zip(positions, times, strict=True)
    ]
    return msg


def msg_to_chunk(msg: JointTrajectory, expected_names: list[str], dt: float) -> ActionChunk:
    """Parse a chunk for an embodiment with control period ``dt`` (s).

    Raises MessageConversionError on wrong names, ragged points or irregular timing.
    """
    names = list(msg.joint_names)
    if names != list(expected_names):
        raise MessageConversionError(
            f"chunk joint names {names[:4]}... ({len(names)}) do not match the embodiment's "
            f"action layout {list(expected_names)[:4]}... ({len(expected_names)})"
        )
    widths = {len(p.positions) for p in msg.points}
    if widths - {len(names)}:
        raise MessageConversionError(f"chunk points have {sorted(widths)} values, expected {len(names)}")
    source, _, chunk_id = msg.header.frame_id.partition("#")
    try:
        return chunk_from_points(
            names,
            [list(p.positions) for p in msg.points],
            [to_seconds(p.time_from_start) for p in msg.points],
            to_seconds(msg.header.stamp),
            embodiment=source,
            chunk_id=int(chunk_id) if chunk_id.isdigit() else 0,
            default_dt=dt,
        )
    except ChunkFormatError as exc:
        raise MessageConversionError(f"chunk: {exc}") from None


# -- state ------------------------------------------------------------------------------------
def joint_state_values(msg: Any) -> dict[str, float]:
    """sensor_msgs/JointState -> {name: position}; raises on length mismatch.

    The message's contract: every array has one entry per name, or is empty. A message
    whose velocity or effort breaks it is refused whole, positions included: its sender
    is broken, so its positions cannot be trusted either (a fuzzed state with ragged
    velocities and all-zero positions once set the chunk publisher's hold 1 rad away).
    """
    if len(msg.name) != len(msg.position):
        raise MessageConversionError(
            f"JointState has {len(msg.name)} names but {len(msg.position)} positions"
        )
    for field in ("velocity", "effort"):
        values = getattr(msg, field)
        if len(values) not in (0, len(msg.name)):
            raise MessageConversionError(
                f"JointState has {len(msg.name)} names but {len(values)} {field} values "
                "(one per name, or none)"
            )
    return {name: float(value) for name, value in zip(msg.name, msg.position, strict=True)}


def odometry_values(msg: Any) -> dict[str, float]:
    """nav_msgs/Odometry -> measured base velocity {linear_x m/s, angular_z rad/s}."""
    twist = msg.twist.twist
    return {"linear_x": float(twist.linear.x), "angular_z": float(twist.angular.z)}


def state_message_class(source: StateSource) -> type:
    """The message class of an embodiment state source (JointState or Odometry)."""
    return Odometry if source.type.endswith("Odometry") else JointState


def state_values(msg: Any) -> dict[str, float]:
    """Named readings of a state message: JointState positions, or odometry linear_x/angular_z."""
    return odometry_values(msg) if isinstance(msg, Odometry) else joint_state_values(msg)


def odometry_pose(msg: Any) -> np.ndarray:
    """nav_msgs/Odometry -> planar pose (x m, y m, yaw rad) in the odometry frame."""
    p, q = msg.pose.pose.position, msg.pose.pose.orientation
    yaw = np.arctan2(2.0 * (q.w * q.z + q.x * q.y), 1.0 - 2.0 * (q.y * q.y + q.z * q.z))
    return np.array([p.x, p.y, yaw], dtype=np.float64)


# -- message types by name --------------------------------------------------------------------
def message_class(type_name: str) -> type:
    """Import ``pkg/msg/Type`` at run time, as `ros2 topic pub` does.

    Lets an embodiment file name rig-specific types (interbotix_xs_msgs) that are not a
    dependency of this package; a missing package is a clear error.
    """
    try:
        package, kind, name = type_name.split("/")
        if kind != "msg":
            raise ValueError
    except ValueError:
        raise MessageConversionError(f"'{type_name}' is not a message type name (pkg/msg/Type)") from None
    try:
        module = importlib.import_module(f"{package}.msg")
        return getattr(module, name)
    except (ImportError, AttributeError):
        raise MessageConversionError(
            f"message type {type_name} is not installed (is its package built and sourced?)"
        ) from None


def fill_fields(msg: Any, fields: dict[str, Any]) -> Any:
    """Set (possibly dotted) fields on a message, converting lists to the field's type."""
    for path, value in fields.items():
        target = msg
        *parents, leaf = path.split(".")
        for part in parents:
            target = getattr(target, part)
        if not hasattr(target, leaf):
            raise MessageConversionError(f"{type(msg).__name__} has no field '{path}'")
        current = getattr(target, leaf)
        if isinstance(value, (list, tuple, np.ndarray)):
            # rclpy array fields accept lists of Python scalars (not numpy arrays)
            value = [v if isinstance(v, str) else float(v) for v in np.asarray(value).tolist()]
        elif isinstance(current, float):
            value = float(value)
        try:
            setattr(target, leaf, value)
        except (TypeError, ValueError, AssertionError) as exc:
            raise MessageConversionError(f"cannot set {type(msg).__name__}.{path}: {exc}") from None
    return msg

"""Recorded command messages back to action vectors (pure core).

The embodiment's ``outputs`` say which topic carries which action groups. Each
recorded command becomes timed samples of those groups' values in rig units
(grippers back from the joint command to the normalised opening):

* ``trajectory_msgs/JointTrajectory``: every point is the action of the tick one control
  period before it is due (the trajectory start, header.stamp or the receive time when
  zero, plus its time_from_start), but never before the trajectory was sent; a newer
  trajectory replaces the rest of an older one from its own start. A command streamed
  as one point reached in one period (the chunk publisher, the sim's expert) is thus the
  action of the tick it was sent at, as a gripper command on a Float64MultiArray is, and
  as the direct path of ``qwen-vla collect`` stores it (action t: sent at t, reached at
  t + dt). Placing such a point at its due time instead made each message remove the
  previous one's point (due when the next message starts) from the samples.
* ``std_msgs/Float64MultiArray``: ``data`` in group order, at the receive time.
* ``sensor_msgs/JointState``: positions by joint name.
* ``geometry_msgs/Twist``: linear.x and angular.z.
* other types: through the output's ``fields`` placeholders (``$positions``,
  ``$position``, ``$linear_x``, ``$angular_z``); literal fields must match, so a
  topic shared by several joints (Interbotix ``JointSingleCommand``) is filtered by name.

At each tick the newest sample at or before it is the action (zero-order hold, as
the controller holds the last command). Groups without any recorded command, and
ticks before a group's first command, take the measured state at the next tick.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..embodiment import ActionGroup, CommandOutput, Embodiment
from .errors import DatasetError
from .gaps import latest_indices
from .layout import ACTION_KEY
from .mcap_io import Recording, TopicSeries, uses_header_stamps

NEXT_STATE = "measured state at the next tick (no command recorded)"


def _joint_names(embodiment: Embodiment, output: CommandOutput) -> list[str]:
    if output.joint_names is not None:
        return list(output.joint_names)
    return [j.name for name in output.groups for j in embodiment.group(name).joints]


def _stamp_s(message: Any, fallback_s: float) -> float:
    header = getattr(message, "header", None)
    if header is None:
        return fallback_s
    seconds = header.stamp.sec + header.stamp.nanosec * 1e-9
    return seconds if seconds > 0 else fallback_s


def _by_name(names: list[str], values: list[float], wanted: list[str], where: str) -> list[float]:
    missing = [n for n in wanted if n not in names]
    if missing:
        raise ValueError(f"{where} lacks joint(s) {missing} (has {names})")
    if len(values) < len(names):
        raise ValueError(f"{where} has {len(values)} values for {len(names)} joint names")
    return [float(values[names.index(n)]) for n in wanted]


def _placeholder(message: Any, fields: dict[str, Any], marker: str) -> Any:
    for name, value in fields.items():
        if value == marker:
            return getattr(message, name)
    return None


def _custom_values(message: Any, output: CommandOutput, width: int) -> list[float] | None:
    """Values of a message through the ``fields`` mapping, or None when literals do not match."""
    fields = output.fields or {}
    for name, value in fields.items():
        if (
            not (isinstance(value, str) and value.startswith("$"))
            and getattr(message, name, None) != value
        ):
            return None
    positions = _placeholder(message, fields, "$positions")
    if positions is not None:
        return [float(v) for v in positions]
    single = _placeholder(message, fields, "$position")
    if single is not None:
        return [float(single)]
    twist = [_placeholder(message, fields, m) for m in ("$linear_x", "$angular_z")]
    if all(v is not None for v in twist):
        return [float(v) for v in twist]
    raise ValueError(f"fields {fields} give no $positions, $position or $linear_x/$angular_z")


def output_samples(
    embodiment: Embodiment, output: CommandOutput, series: TopicSeries, stamp: bool | str
) -> tuple[np.ndarray, np.ndarray]:
    """(times s (N,), values (N, width)) of one output topic, in the groups' joint order.

    ``stamp``: the time base (``receive``, ``header``, ``auto``; see :mod:`.alignment`).
    """
    width = sum(len(embodiment.group(g).joints) for g in output.groups)
    wanted = _joint_names(embodiment, output)
    times: list[float] = []
    rows: list[list[float]] = []
    times_s = series.times_s(stamp=uses_header_stamps(series, stamp))
    for received, message in zip(times_s, series.messages, strict=True):
        where = f"{output.type} on {output.topic} at t={received:.3f} s"
        if output.type == "trajectory_msgs/msg/JointTrajectory":
            start = _stamp_s(message, float(received))
            while times and times[-1] >= start:  # the new trajectory replaces the old one's rest
                times.pop()
                rows.pop()
            for point in message.points:
                offset = point.time_from_start.sec + point.time_from_start.nanosec * 1e-9
                times.append(start + max(0.0, offset - embodiment.dt))
                rows.append(
                    _by_name(list(message.joint_names), list(point.positions), wanted, where)
                )
            continue
        if output.type == "std_msgs/msg/Float64MultiArray":
            values = [float(v) for v in message.data]
        elif output.type == "sensor_msgs/msg/JointState":
            values = _by_name(list(message.name), list(message.position), wanted, where)
        elif output.type == "geometry_msgs/msg/Twist":
            values = [float(message.linear.x), float(message.angular.z)]
        else:
            values = _custom_values(message, output, width)
            if values is None:
                continue
        if len(values) != width:
            raise ValueError(
                f"{where} carries {len(values)} values, the groups {list(output.groups)} need {width}"
            )
        times.append(float(received))
        rows.append(values)
    return np.asarray(times, dtype=np.float64), np.asarray(rows, dtype=np.float64).reshape(
        -1, width
    )


def _to_normalised(embodiment: Embodiment, group: ActionGroup, values: np.ndarray) -> np.ndarray:
    """Joint commands back to action units: the gripper command (rad) to its 0..1 opening."""
    if group.kind != "gripper":
        return values
    return embodiment.gripper_command_to_normalised(group, values)


def command_actions(
    embodiment: Embodiment,
    recording: Recording,
    ticks: np.ndarray,
    next_state: np.ndarray,
    stamp: bool | str,
    label: str,
) -> tuple[np.ndarray, dict[str, str]]:
    """(T, D) actions at the ticks and, per group, where they came from."""
    action = np.array(next_state, dtype=np.float64)
    sources = {g.name: NEXT_STATE for g in embodiment.action_groups}
    for output in embodiment.outputs:
        if all(embodiment.group(g).kind == "base_waypoints" for g in output.groups):
            continue  # a tracker's Twist, not the waypoint action (the odometry motion: alignment)
        series = recording.topic(output.topic)
        if series is None or len(series) == 0:
            continue
        try:
            times, values = output_samples(embodiment, output, series, stamp)
        except (ValueError, AttributeError) as exc:
            group = output.groups[0]
            raise DatasetError(
                f"wrong dimension or content: {exc}", episode=label, field=f"{ACTION_KEY}/{group}"
            ) from exc
        order = np.argsort(times, kind="stable")
        times, values = times[order], values[order]
        indices = latest_indices(times, ticks)
        covered = indices >= 0
        column = 0
        for name in output.groups:
            group = embodiment.group(name)
            block = embodiment.group_slices[name]
            width = block.stop - block.start
            if group.kind == "base_waypoints":
                column += width
                continue  # waypoint actions come from odometry (see alignment)
            held = _to_normalised(
                embodiment, group, values[indices[covered], column : column + width]
            )
            action[np.nonzero(covered)[0], block] = held
            sources[name] = f"commands on {output.topic}" + (
                ""
                if covered.all()
                else f" ({int((~covered).sum())} early ticks from the next state)"
            )
            column += width
    return action, sources

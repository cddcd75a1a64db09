"""Put one recorded episode on the control grid of an embodiment (pure core).

Ticks are ``start + k * dt`` (dt = the embodiment's control period, s). At each tick:

* state: the newest message of every state source at or before the tick, mapped to the
  embodiment's state vector (JointState by joint name, finger position normalised for
  grippers; Odometry twist for base_velocity groups; zero for waypoint groups).
* images: the newest frame of each camera at or before the tick (a 30 Hz camera repeats
  frames on a 50 Hz grid), decoded to RGB and resized to the camera's image_size.
* action (see :mod:`.commands`): the newest command sent on the group's output topic;
  where no command was recorded for a group (or before its first command), the
  measured state at the next tick. Waypoint groups store the odometry motion to the
  next tick.

The grid starts once every required source has spoken and stops at the episode end
(or when a source stops). A source silent for longer than its ``max_age_s`` inside
that span is handled by the :class:`.gaps.GapPolicy`: short gaps bridged (states
interpolated, frames held), ticks in longer gaps marked invalid (``AlignedEpisode.valid``),
or, with ``strict``, a :class:`DatasetError` naming the episode and field.

Time base (``stamp``): ``"receive"`` (when the recorder got each message), ``"header"``
(the recorded ``header.stamp``, MCAP publish time) or ``"auto"`` (default): per topic, the
header stamps where they are on the recorder's clock (set, in order, and within
[-0.1, 1] s of the receive times), else the receive times. Stamps are immune to a
recorder that ran late under load, receive times are all a topic without a header has.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..embodiment import CameraSpec, Embodiment, StateSource
from .chunks import pose_steps
from .commands import command_actions
from .errors import DatasetError
from .gaps import GapPolicy, SourceGaps, interpolation_weights, latest_indices, source_gaps
from .images import ImageConversionError, compressed_to_rgb, image_to_rgb, resize_rgb
from .layout import ACTION_KEY, STATE_KEY, image_key
from .mcap_io import EpisodeMark, Recording, TopicSeries, uses_header_stamps


@dataclass
class AlignedEpisode:
    """One episode on the control grid (rig units). ``action_sources``: group -> how it was made."""

    label: str
    task: str
    times: np.ndarray
    state: np.ndarray
    action: np.ndarray
    images: dict[str, list[np.ndarray]]
    action_sources: dict[str, str] = field(default_factory=dict)
    valid: np.ndarray | None = None  # bool (T,): False inside gaps longer than the bridge
    gap_notes: list[str] = field(default_factory=list)  # what was bridged or masked, and where

    def __post_init__(self) -> None:
        if self.valid is None:
            self.valid = np.ones(len(self.times), dtype=bool)


def series_times(series: TopicSeries, stamp: bool | str) -> np.ndarray:
    """Message times, s, on the time base ``stamp`` (see the module docstring)."""
    return series.times_s(stamp=uses_header_stamps(series, stamp))


def _series(
    recording: Recording, topic: str, label: str, field_name: str, what: str
) -> TopicSeries:
    series = recording.topic(topic)
    if series is None or len(series) == 0:
        raise DatasetError(f"{what}: no messages on {topic}", episode=label, field=field_name)
    return series


def _check_fresh(times, indices, ticks, max_age_s, label, field_name, topic) -> None:
    ages = ticks - np.where(indices >= 0, times[np.maximum(indices, 0)], -np.inf)
    stale = np.nonzero(ages > max_age_s + 1e-9)[0]
    if len(stale):
        k = int(stale[0])
        raise DatasetError(
            f"stale source {topic}: at t={ticks[k]:.3f} s the newest message is "
            f"{ages[k]:.3f} s old (max_age_s {max_age_s})",
            episode=label,
            field=field_name,
        )


def _gaps(times, ticks, max_age_s, policy: GapPolicy, label, field_name, topic, notes) -> SourceGaps:
    """The source's gaps under ``policy``; strict: the old error at the first stale tick."""
    gaps = source_gaps(times, ticks, max_age_s, policy.bridge_s)
    if policy.strict:
        _check_fresh(times, gaps.before, ticks, max_age_s, label, field_name, topic)
    for start, end, bridged in gaps.gaps:
        how = "bridged" if bridged else f"masked (longer than {policy.bridge_s} s)"
        notes.append(f"{topic}: {end - start:.3f} s without a message after t={start:.3f} s, {how}")
    return gaps


def tick_grid(
    embodiment: Embodiment,
    recording: Recording,
    mark: EpisodeMark,
    cameras: list[CameraSpec],
    stamp: bool | str,
    label: str,
    notes: list[str] | None = None,
) -> np.ndarray:
    """Control ticks, s, where every state source and camera has a recent message.

    ``notes`` gets a line for each end of the episode cut by more than a source's ``max_age_s``
    (a source that started late or stopped early), naming the source.
    """
    starts, ends = [mark.start_ns * 1e-9], [mark.end_ns * 1e-9]
    names, ages = ["the episode mark"], [2 * embodiment.dt]
    sources = [
        (s.topic, s.max_age_s, f"{STATE_KEY} ({s.name})", "state") for s in embodiment.state_sources
    ]
    sources += [(c.topic, c.max_age_s, image_key(c.name), "missing camera") for c in cameras]
    for topic, max_age, field_name, what in sources:
        times = series_times(_series(recording, topic, label, field_name, what), stamp)
        inside = times[(times >= starts[0]) & (times <= ends[0])]
        if len(inside) == 0:
            raise DatasetError(
                f"{what}: no messages on {topic} during the episode",
                episode=label,
                field=field_name,
            )
        starts.append(float(inside[0]))
        ends.append(float(times[times <= ends[0]][-1]) + max_age)
        names.append(topic)
        ages.append(max_age)
    start, end = max(starts), min(ends)
    late, early = int(np.argmax(starts)), int(np.argmin(ends))
    if notes is not None and start - starts[0] > max(ages[late], 2 * embodiment.dt):
        notes.append(f"first {start - starts[0]:.3f} s trimmed: no message on {names[late]} before")
    if notes is not None and ends[0] - end > max(ages[early], 2 * embodiment.dt):
        notes.append(f"last {ends[0] - end:.3f} s trimmed: {names[early]} stopped")
    count = int(np.floor((end - start) / embodiment.dt + 1e-9)) + 1 if end >= start else 0
    if count < 2:
        raise DatasetError(
            f"shorter than two control ticks ({max(0.0, end - start):.3f} s with every source present)",
            episode=label,
            field="episode",
        )
    return start + embodiment.dt * np.arange(count)


def _yaw(orientation) -> float:
    """Heading of a quaternion, rad."""
    w, x, y, z = orientation.w, orientation.x, orientation.y, orientation.z
    return float(np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z)))


def _joint_values(
    source: StateSource, message, wanted: list[str], label: str, fields: list[str]
) -> list[float]:
    names = list(message.name)
    positions = list(message.position)
    values = []
    for joint, field_name in zip(wanted, fields, strict=True):
        if joint not in names:
            raise DatasetError(
                f"joint '{joint}' is not in the JointState names {names} on {source.topic}",
                episode=label,
                field=field_name,
            )
        at = names.index(joint)
        if at >= len(positions):
            raise DatasetError(
                f"JointState on {source.topic} has {len(positions)} positions for {len(names)} names",
                episode=label,
                field=field_name,
            )
        values.append(float(positions[at]))
    return values


def state_matrix(
    embodiment: Embodiment,
    recording: Recording,
    ticks: np.ndarray,
    stamp: bool | str,
    label: str,
    policy: GapPolicy | None = None,
    valid: np.ndarray | None = None,
    notes: list[str] | None = None,
) -> np.ndarray:
    """(T, D) measured state at each tick, rig units (grippers normalised).

    Ticks in gaps longer than the policy's bridge are cleared in ``valid``; shorter gaps are
    interpolated linearly between the messages on either side.
    """
    policy = policy or GapPolicy(strict=True)
    notes = notes if notes is not None else []
    state = np.zeros((len(ticks), embodiment.action_dim))
    names = embodiment.action_names
    for source in embodiment.state_sources:
        field_name = f"{STATE_KEY} ({source.name})"
        series = _series(recording, source.topic, label, field_name, "state")
        times = series_times(series, stamp)
        gaps = _gaps(times, ticks, source.max_age_s, policy, label, field_name, source.topic, notes)
        if valid is not None:
            valid &= ~gaps.masked
        before, after, weight = interpolation_weights(times, ticks, gaps)
        indices = np.maximum(np.concatenate([before, after]), 0)
        dims = [
            (d, group, joint)
            for group in embodiment.action_groups
            for d, joint in zip(
                range(
                    embodiment.group_slices[group.name].start,
                    embodiment.group_slices[group.name].stop,
                ),
                group.joints,
                strict=True,
            )
            if joint.state is not None and joint.state.source == source.name
        ]
        if not dims:
            continue
        fields = [f"{STATE_KEY}/{names[d]}" for d, _, _ in dims]
        # one row of values per distinct message, then one gather: linear in episode length
        uniques, tick_rows = np.unique(indices, return_inverse=True)
        table = np.zeros((len(uniques), len(dims)))
        for row, unique in enumerate(uniques):
            message = series.messages[unique]
            if source.type.endswith("Odometry"):
                twist = message.twist.twist
                values = [
                    twist.linear.x if j.state.joint == "linear_x" else twist.angular.z
                    for _, _, j in dims
                ]
            else:
                values = _joint_values(
                    source, message, [j.state.joint for _, _, j in dims], label, fields
                )
            for column, ((_, group, _), value) in enumerate(zip(dims, values, strict=True)):
                if group.kind == "gripper":
                    value = embodiment.gripper_state_to_normalised(group, value)
                table[row, column] = value
        rows_before, rows_after = np.split(tick_rows, 2)
        w = weight[:, None]
        state[:, [d for d, _, _ in dims]] = (1 - w) * table[rows_before] + w * table[rows_after]
    return state


def odometry_poses(
    embodiment: Embodiment, recording: Recording, ticks: np.ndarray, stamp: bool | str, label: str
) -> np.ndarray:
    """(T, 3) odometry pose (x m, y m, yaw rad) at each tick, from the first Odometry source."""
    source = next((s for s in embodiment.state_sources if s.type.endswith("Odometry")), None)
    if source is None:
        raise DatasetError(
            "waypoint actions need an Odometry state source", episode=label, field=ACTION_KEY
        )
    series = _series(recording, source.topic, label, f"{STATE_KEY} ({source.name})", "state")
    indices = np.maximum(latest_indices(series_times(series, stamp), ticks), 0)
    uniques, tick_rows = np.unique(indices, return_inverse=True)
    table = np.zeros((len(uniques), 3))
    for row, unique in enumerate(uniques):
        pose = series.messages[unique].pose.pose
        table[row] = (pose.position.x, pose.position.y, _yaw(pose.orientation))
    return table[tick_rows]


def decode_frame_message(message: Any, camera: CameraSpec, label: str, time_s: float) -> np.ndarray:
    """An Image or CompressedImage message to RGB at the camera's image_size."""
    try:
        if hasattr(message, "format"):  # sensor_msgs/CompressedImage
            rgb = compressed_to_rgb(message.format, message.data)
        else:
            rgb = image_to_rgb(
                message.height,
                message.width,
                message.encoding,
                message.step,
                message.is_bigendian,
                message.data,
            )
    except ImageConversionError as exc:
        raise DatasetError(
            f"frame at t={time_s:.3f} s on {camera.topic}: {exc}",
            episode=label,
            field=image_key(camera.name),
        ) from exc
    return resize_rgb(rgb, camera.image_size)


def frame_decoder(camera: CameraSpec, label: str) -> Callable[[Any, int], np.ndarray]:
    """A ``read_recording`` transform that decodes frames while the file is read."""
    return lambda message, time_ns: decode_frame_message(message, camera, label, time_ns * 1e-9)


def _frame(series: TopicSeries, index: int, camera: CameraSpec, label: str) -> np.ndarray:
    message = series.messages[index]
    if isinstance(message, np.ndarray):  # decoded while reading (frame_decoder)
        return message
    return decode_frame_message(message, camera, label, float(series.log_times[index]) * 1e-9)


def camera_frames(
    camera: CameraSpec,
    recording: Recording,
    ticks: np.ndarray,
    stamp: bool | str,
    label: str,
    policy: GapPolicy | None = None,
    valid: np.ndarray | None = None,
    notes: list[str] | None = None,
) -> list[np.ndarray]:
    """The frame shown at each tick, RGB uint8 at the camera's image_size (repeats shared).

    Bridged gaps hold the last frame; ticks in longer gaps are cleared in ``valid``.
    """
    policy = policy or GapPolicy(strict=True)
    field_name = image_key(camera.name)
    series = _series(recording, camera.topic, label, field_name, "missing camera")
    times = series_times(series, stamp)
    gaps = _gaps(
        times, ticks, camera.max_age_s, policy, label, field_name, camera.topic,
        notes if notes is not None else [],
    )  # fmt: skip
    if valid is not None:
        valid &= ~gaps.masked
    indices = np.maximum(gaps.before, 0)
    decoded: dict[int, np.ndarray] = {}
    frames = []
    for index in indices:
        if index not in decoded:
            decoded[int(index)] = _frame(series, int(index), camera, label)
        frames.append(decoded[int(index)])
    return frames


def align_episode(
    embodiment: Embodiment,
    recording: Recording,
    mark: EpisodeMark,
    cameras: list[CameraSpec],
    *,
    label: str,
    task: str,
    stamp: bool | str = "auto",
    policy: GapPolicy | None = None,
) -> AlignedEpisode:
    """State, actions and images of one episode on the embodiment's control grid.

    ``policy`` defaults to strict (any stale tick is an error); with a lenient policy the
    result's ``valid`` marks the ticks that are usable and ``gap_notes`` says why others are not.
    """
    policy = policy or GapPolicy(strict=True)
    notes: list[str] = []
    ticks = tick_grid(embodiment, recording, mark, cameras, stamp, label, notes)
    valid = np.ones(len(ticks), dtype=bool)
    state = state_matrix(embodiment, recording, ticks, stamp, label, policy, valid, notes)
    next_state = np.concatenate([state[1:], state[-1:]])
    action, sources = command_actions(embodiment, recording, ticks, next_state, stamp, label)
    waypoint_groups = [g for g in embodiment.action_groups if g.kind == "base_waypoints"]
    if waypoint_groups:
        poses = odometry_poses(embodiment, recording, ticks, stamp, label)
        steps = np.concatenate([pose_steps(poses), np.zeros((1, 3))])
        for group in waypoint_groups:
            action[:, embodiment.group_slices[group.name]] = steps
            sources[group.name] = "odometry motion to the next tick"
    images = {
        c.name: camera_frames(c, recording, ticks, stamp, label, policy, valid, notes)
        for c in cameras
    }
    return AlignedEpisode(label, task, ticks, state, action, images, sources, valid, notes)

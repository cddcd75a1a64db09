"""Synthetic ROS 2 recordings of a small ALOHA rig for the data tests.

Recordings are made like the recorder node makes them: real message classes,
``rclpy.serialization.serialize_message``, and McapEpisodeWriter. Rates are the
rig's: cameras 30 Hz, joint states 100 Hz, commands 50 Hz.
"""

from __future__ import annotations

import array
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qwen_vla_ros.data.images import rgb_to_compressed, rgb_to_image_fields
from qwen_vla_ros.data.mcap_io import McapEpisodeWriter

IMAGE_HW = (48, 64)
CAMERA_HZ, STATE_HZ, COMMAND_HZ = 30.0, 100.0, 50.0
ARM_JOINTS = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate"]

SMALL_ALOHA_YAML = """
extends: aloha_sim.yaml
name: small_aloha
cameras:
  - {name: cam_high, topic: /cam_high/image_raw, encoding: rgb8, image_size: [48, 64], max_age_s: 0.2}
  - {name: cam_left_wrist, topic: /cam_left_wrist/image_raw, encoding: bgr8, image_size: [48, 64], max_age_s: 0.2}
  - {name: cam_right_wrist, topic: /cam_right_wrist/image_raw/compressed, compressed: true, image_size: [48, 64], max_age_s: 0.2}
"""


def joint_positions(t: float, arm: int) -> np.ndarray:
    """Smooth arm motion, rad."""
    phases = np.arange(6) * 0.7 + arm
    return 0.3 * np.sin(2.0 * t + phases)


def gripper_opening(t: float, arm: int) -> float:
    """Normalised opening in [0.1, 0.9]."""
    return 0.5 + 0.4 * np.sin(3.0 * t + arm)


def camera_colour(frame_number: int) -> tuple[int, int, int]:
    """A colour that identifies a camera frame (distinct for neighbouring frames)."""
    value = 20 + 6 * (frame_number % 36)
    return value, 255 - value, 128


@dataclass
class RecordingSpec:
    """What to put in a synthetic recording (times in s from its start)."""

    episodes: list[tuple[str, float, float]] = field(
        default_factory=lambda: [("pick up the cube", 0.1, 1.3), ("put it down", 1.6, 2.8)]
    )
    duration: float = 3.0
    commands: bool = True
    command_lead: float = 0.04  # commands run ahead of the measured state, s
    cameras: tuple[str, ...] = ("cam_high", "cam_left_wrist", "cam_right_wrist")
    bad_gripper_width: bool = False  # a gripper command with two values
    nan_command_at: float | None = None  # a NaN in the left arm command from this time
    camera_gap: tuple[float, float] | None = None  # cam_high sends nothing in this span, s
    right_joints: tuple[str, ...] | None = None  # other joint names on the right arm
    state_gap: tuple[float, float] | None = None  # the left arm's joint states silent here, s
    chunk_size: int = 1 << 20  # MCAP chunk size, bytes (small: many chunks)
    compression: str = "zstd"
    failed: tuple[str, ...] = ()  # tasks whose episodes the operator judged failed
    time_from_start: float = 0.0  # of each arm command's one trajectory point, s
    receive_lag: float = 0.0  # the recorder got every message this late (stamps unchanged), s


def _header(msg, t: float) -> None:
    msg.header.stamp.sec = int(t)
    msg.header.stamp.nanosec = int(round((t - int(t)) * 1e9))


def _ns(t: float) -> int:
    return int(round(t * 1e9))


def write_recording(path: Path, embodiment, spec: RecordingSpec | None = None) -> Path:
    """Write a recording of the small ALOHA rig; returns its path."""
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import CompressedImage, Image, JointState
    from std_msgs.msg import Float64MultiArray
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    spec = spec or RecordingSpec()
    gripper = embodiment.group("left_gripper")
    messages = []  # (time s, topic, type, message)
    for n in range(int(spec.duration * STATE_HZ)):
        t = n / STATE_HZ
        for arm, side in enumerate(("left", "right")):
            if side == "left" and spec.state_gap and spec.state_gap[0] <= t < spec.state_gap[1]:
                continue
            msg = JointState()
            _header(msg, t)
            msg.name = ARM_JOINTS + ["left_finger", "right_finger"]
            if side == "right" and spec.right_joints is not None:
                msg.name = list(spec.right_joints)
            cal = gripper.gripper
            finger = cal.state_closed + gripper_opening(t, arm) * (
                cal.state_open - cal.state_closed
            )
            msg.position = [*joint_positions(t, arm).tolist(), finger, -finger]
            messages.append(
                (t, f"/follower_{side}/joint_states", "sensor_msgs/msg/JointState", msg)
            )
    for n in range(int(spec.duration * CAMERA_HZ)):
        t = n / CAMERA_HZ + 0.003  # cameras are not in phase with the control grid
        rgb = np.empty((*IMAGE_HW, 3), np.uint8)
        rgb[:] = camera_colour(n)
        in_gap = spec.camera_gap is not None and spec.camera_gap[0] <= t < spec.camera_gap[1]
        for camera in embodiment.cameras:
            if camera.name in spec.cameras and not (in_gap and camera.name == "cam_high"):
                messages.append(
                    (t, camera.topic, *_image_message(camera, rgb, t, Image, CompressedImage))
                )
    if spec.commands:
        for n in range(int(spec.duration * COMMAND_HZ)):
            t = n / COMMAND_HZ + 0.001
            for arm, side in enumerate(("left", "right")):
                trajectory = JointTrajectory()
                trajectory.joint_names = [f"{side}_{j}" for j in ARM_JOINTS]
                point = JointTrajectoryPoint()
                positions = joint_positions(t + spec.command_lead, arm)
                if side == "left" and spec.nan_command_at is not None and t >= spec.nan_command_at:
                    positions[2] = np.nan
                point.positions = positions.tolist()
                point.time_from_start.nanosec = _ns(spec.time_from_start)
                trajectory.points = [point]
                messages.append(
                    (
                        t,
                        f"/follower_{side}/arm_controller/joint_trajectory",
                        "trajectory_msgs/msg/JointTrajectory",
                        trajectory,
                    )
                )
                command = Float64MultiArray()
                value = embodiment.gripper_normalised_to_command(
                    gripper, gripper_opening(t + spec.command_lead, arm)
                )
                command.data = [value, value] if spec.bad_gripper_width else [value]
                messages.append(
                    (
                        t,
                        f"/follower_{side}/gripper_controller/commands",
                        "std_msgs/msg/Float64MultiArray",
                        command,
                    )
                )
    messages.sort(key=lambda m: m[0])
    with McapEpisodeWriter(path, chunk_size=spec.chunk_size, compression=spec.compression) as writer:
        marks = sorted(
            [(s, "start", task) for task, s, _ in spec.episodes]
            + [(e, "end", task) for task, _, e in spec.episodes]
        )
        for t, topic, type_name, msg in messages:
            while marks and marks[0][0] <= t:
                mark_t, kind, task = marks.pop(0)
                if kind == "start":
                    writer.start_episode(task, _ns(mark_t), embodiment=embodiment.name)
                else:
                    writer.end_episode(_ns(mark_t), success=task not in spec.failed)
            writer.write(topic, type_name, serialize_message(msg), _ns(t + spec.receive_lag), _ns(t))
    return path


def _image_message(camera, rgb, t, Image, CompressedImage):
    if camera.compressed:
        msg = CompressedImage()
        _header(msg, t)
        msg.format, data = rgb_to_compressed(rgb, "jpeg", quality=95)
        msg.data = array.array("B", data)
        return "sensor_msgs/msg/CompressedImage", msg
    msg = Image()
    _header(msg, t)
    fields = rgb_to_image_fields(rgb, camera.encoding)
    if camera.encoding == "bgr8":  # pad each row by 8 bytes, as some drivers do
        rows = np.frombuffer(fields["data"], np.uint8).reshape(fields["height"], -1)
        padded = np.concatenate([rows, np.zeros((rows.shape[0], 8), np.uint8)], axis=1)
        fields["data"], fields["step"] = padded.tobytes(), padded.shape[1]
    msg.height, msg.width, msg.encoding = fields["height"], fields["width"], fields["encoding"]
    msg.is_bigendian, msg.step = fields["is_bigendian"], fields["step"]
    msg.data = array.array("B", fields["data"])
    return "sensor_msgs/msg/Image", msg

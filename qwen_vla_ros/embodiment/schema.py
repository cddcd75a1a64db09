"""Typed schema of an embodiment file (``config/embodiments/*.yaml``).

An embodiment file tells one set of Qwen-VLA weights which robot it drives:
the natural-language prompt that conditions the model, the cameras and state
topics to read, the action layout with its safety limits, per-rig calibration,
and the controller topics the actions are published to.

Units, everywhere in this schema:
    joint positions rad, gripper normalised (0 = closed, 1 = open),
    base velocity m/s and rad/s, waypoints m and rad (robot frame at chunk start),
    rates Hz, ages and times s.

Every model forbids unknown keys so a typo (``max_velocty``) is an error, never
a silently ignored limit.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ActionKind = Literal["joint_position", "gripper", "base_velocity", "base_waypoints"]
HoldMode = Literal["measured_position", "last_command", "zero_velocity"]

#: Component names a group of each kind must have, in order (base kinds only).
BASE_COMPONENTS: dict[str, tuple[str, ...]] = {
    "base_velocity": ("linear_x", "angular_z"),
    "base_waypoints": ("x", "y", "yaw"),
}

#: Built-in command message types; any other type needs a ``fields`` mapping.
BUILTIN_OUTPUT_TYPES = (
    "trajectory_msgs/msg/JointTrajectory",
    "std_msgs/msg/Float64MultiArray",
    "sensor_msgs/msg/JointState",
    "geometry_msgs/msg/Twist",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ControlSpec(_Strict):
    """Timing of the action stream."""

    rate_hz: float = Field(gt=0, le=1000, description="control (command) rate, Hz")
    chunk_horizon: int = Field(gt=0, le=256, description="actions per chunk, steps")
    chunk_timeout_s: float = Field(
        0.5, gt=0, description="watchdog: hold when the newest chunk has run out this long, s"
    )


class CameraSpec(_Strict):
    """One camera the model sees."""

    name: str = Field(min_length=1)
    topic: str = Field(min_length=1)
    encoding: str = Field("rgb8", description="encoding the driver publishes (raw images)")
    compressed: bool = Field(False, description="sensor_msgs/CompressedImage instead of Image")
    image_size: tuple[int, int] = Field(description="[height, width] fed to the model, px")
    required: bool = True
    max_age_s: float = Field(0.2, gt=0, description="older frames are stale, s")
    sim_fovy_deg: float | None = Field(
        None, gt=0, lt=180, description="simulator only: vertical field of view of the simulated camera, deg "
        "(None: the scene's own); a real rig ignores it"
    )

    @field_validator("image_size")
    @classmethod
    def _positive_size(cls, size: tuple[int, int]) -> tuple[int, int]:
        if min(size) < 8 or max(size) > 2048:
            raise ValueError(f"image_size {list(size)} must be between 8 and 2048 px per side")
        return size


class StateSource(_Strict):
    """A topic that measures part of the robot's state."""

    name: str = Field(min_length=1)
    topic: str = Field(min_length=1)
    type: Literal["sensor_msgs/msg/JointState", "nav_msgs/msg/Odometry"] = (
        "sensor_msgs/msg/JointState"
    )
    joints: tuple[str, ...] = Field(
        (), description="JointState names to read, in order; empty for Odometry"
    )
    max_age_s: float = Field(0.2, gt=0, description="older state is stale, s")


class StateRef(_Strict):
    """Where the measured value of one action dimension comes from."""

    source: str
    joint: str = Field(description="JointState name, or 'linear_x' / 'angular_z' for Odometry")


#: The normalised gripper action (rig units of every gripper group): fully closed, fully open.
GRIPPER_CLOSED, GRIPPER_OPEN = 0.0, 1.0


class GripperCalibration(_Strict):
    """Maps the normalised gripper action (0 closed, 1 open) to and from the rig.

    Defaults are the Interbotix ``aloha/constants.py`` values.
    """

    command_closed: float = Field(0.6197, description="gripper joint command when closed, rad")
    command_open: float = Field(1.6214, description="gripper joint command when open, rad")
    state_closed: float = Field(0.0440, description="finger position when closed, m")
    state_open: float = Field(0.0579, description="finger position when open, m")

    @model_validator(mode="after")
    def _distinct(self) -> GripperCalibration:
        if self.command_open == self.command_closed or self.state_open == self.state_closed:
            raise ValueError("open and closed gripper constants must differ")
        return self


class JointSpec(_Strict):
    """One dimension of the action vector and its safety limits.

    Limits are in rig units: rad for arm joints, normalised for grippers,
    m/s or rad/s for base velocity, m or rad for waypoints.
    """

    name: str = Field(min_length=1)
    min: float
    max: float
    max_velocity: float = Field(gt=0, description="largest speed, units/s")
    max_step: float | None = Field(
        None, gt=0, description="largest change per control step, units/step"
    )
    max_acceleration: float | None = Field(None, gt=0, description="units/s^2 (base)")
    state: StateRef | None = None
    sign: Literal[-1, 1] = Field(1, description="rig = sign * model + offset")
    offset: float = 0.0
    home: float | None = Field(None, description="start pose, rig units")

    @model_validator(mode="after")
    def _ordered(self) -> JointSpec:
        if self.min > self.max:
            raise ValueError(f"limit min {self.min} is above max {self.max}")
        return self


class ActionGroup(_Strict):
    """A named, contiguous block of the action vector."""

    name: str = Field(min_length=1)
    kind: ActionKind
    joints: tuple[JointSpec, ...] = Field(min_length=1)
    gripper: GripperCalibration | None = None
    hold: HoldMode | None = Field(
        None, description="what a fault does; default by kind (arms hold, base stops)"
    )

    @model_validator(mode="after")
    def _kind_rules(self) -> ActionGroup:
        names = tuple(j.name for j in self.joints)
        if self.kind in BASE_COMPONENTS and names != BASE_COMPONENTS[self.kind]:
            raise ValueError(
                f"{self.kind} joints must be named {list(BASE_COMPONENTS[self.kind])}, got {list(names)}"
            )
        if self.kind == "gripper" and len(self.joints) != 1:
            raise ValueError("a gripper group has exactly one joint")
        if self.kind == "base_velocity" and self.hold not in (None, "zero_velocity"):
            raise ValueError("a base_velocity group can only hold by zero_velocity")
        return self

    @property
    def hold_mode(self) -> HoldMode:
        if self.hold is not None:
            return self.hold
        return "zero_velocity" if self.kind.startswith("base_") else "measured_position"


class CommandOutput(_Strict):
    """A controller topic fed from one or more action groups.

    ``fields`` maps message fields to literals or to placeholders:
    ``$positions`` (list), ``$position`` (first value), ``$joint_names``,
    ``$linear_x``, ``$angular_z``. Needed for non-built-in types such as
    ``interbotix_xs_msgs/msg/JointGroupCommand``.
    """

    topic: str = Field(min_length=1)
    type: str = Field(pattern=r"^[A-Za-z0-9_]+/msg/[A-Za-z0-9_]+$")
    groups: tuple[str, ...] = Field(min_length=1)
    joint_names: tuple[str, ...] | None = Field(
        None, description="names sent to the controller; default: the groups' joint names"
    )
    fields: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _fields_for_custom_types(self) -> CommandOutput:
        if self.type not in BUILTIN_OUTPUT_TYPES and not self.fields:
            raise ValueError(
                f"type {self.type} is not built in ({', '.join(BUILTIN_OUTPUT_TYPES)}); "
                "give a 'fields' mapping"
            )
        return self


class DatasetNames(_Strict):
    """How datasets recorded elsewhere (LeRobot's recorders) name this robot's features.

    Only needed where the reader's own matching fails (see docs/embodiment.md): a dataset
    dimension matches ``group/joint`` when its name is ``group/joint`` or, for a joint
    name used once in the file, ``joint`` or ``joint.pos``; a camera matches
    ``observation.images.<camera>``.
    """

    joints: dict[str, str] = Field(
        default_factory=dict,
        description="action dimension 'group/joint' -> its name in the dataset's state/action names",
    )
    cameras: dict[str, str] = Field(
        default_factory=dict,
        description="camera name -> dataset camera ('top' for observation.images.top, or a full key)",
    )

    @model_validator(mode="after")
    def _one_to_one(self) -> DatasetNames:
        for what, mapping in (("joints", self.joints), ("cameras", self.cameras)):
            values = list(mapping.values())
            twice = sorted({v for v in values if values.count(v) > 1})
            if twice:
                raise ValueError(f"{what}: dataset name(s) {twice} are given to more than one entry")
        return self


class EmbodimentFile(_Strict):
    """The whole file, as written."""

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    description: str = ""
    prompt: str = Field(min_length=20, description="natural-language embodiment prompt")
    control: ControlSpec
    cameras: tuple[CameraSpec, ...] = ()
    state: tuple[StateSource, ...] = Field(min_length=1)
    action: tuple[ActionGroup, ...] = Field(min_length=1)
    outputs: tuple[CommandOutput, ...] = Field(min_length=1)
    dataset_names: DatasetNames = Field(default_factory=DatasetNames)

    @model_validator(mode="after")
    def _dataset_names_known(self) -> EmbodimentFile:
        dims = {f"{g.name}/{j.name}" for g in self.action for j in g.joints}
        unknown = sorted(set(self.dataset_names.joints) - dims)
        if unknown:
            raise ValueError(f"dataset_names.joints: {unknown} are not action dimensions (group/joint)")
        unknown = sorted(set(self.dataset_names.cameras) - {c.name for c in self.cameras})
        if unknown:
            raise ValueError(f"dataset_names.cameras: {unknown} are not cameras of this file")
        return self

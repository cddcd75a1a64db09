"""Command mapping: a safe action vector (rig units) onto the embodiment's controller topics (pure core).

Per ``CommandOutput`` of the embodiment, ``CommandMapper.map`` yields one ``OutputCommand``:
topic, message type, joint names and values in controller units, plus the resolved ``fields``
for message types that are not built in. The ROS node only copies these into messages:

    trajectory_msgs/msg/JointTrajectory  joint_names; one point: positions = values,
                                         time_from_start = time_from_start_s
    std_msgs/msg/Float64MultiArray       data = values
    sensor_msgs/msg/JointState           name = joint_names, position = values
    geometry_msgs/msg/Twist              linear.x = values[0], angular.z = values[1]
    anything else                        set each field of ``fields``

Units: joint positions rad (unchanged); grippers from normalised (0 closed, 1 open) to the
gripper command with ``Embodiment.gripper_normalised_to_command``; base_velocity groups give
(linear_x m/s, angular_z rad/s); base_waypoints groups give the waypoint tracker's twist.

Joint names: the output's ``joint_names`` if given, else each joint's name in the file (what a
ros2_control controller expects, e.g. ``fr3_joint1``); when two groups of one output share a
joint name (``gripper``), that output uses ``group_joint`` for all its joints. Base groups are
named ``linear_x``, ``angular_z``.

``fields`` placeholders: ``$positions`` (list of values), ``$position`` (first value),
``$joint_names`` (list), ``$linear_x`` and ``$angular_z`` (base outputs only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..embodiment import ActionGroup, CommandOutput, Embodiment

PLACEHOLDERS = ("$positions", "$position", "$joint_names", "$linear_x", "$angular_z")
TWIST_TYPE = "geometry_msgs/msg/Twist"
TWIST_NAMES = ("linear_x", "angular_z")


class CommandMappingError(ValueError):
    """An output cannot be built from the action vector (bad placeholder, missing twist ...)."""


@dataclass(frozen=True)
class OutputCommand:
    """One message's worth of command, in controller units.

    Attributes:
        topic: controller topic.
        msg_type: ROS message type, e.g. ``trajectory_msgs/msg/JointTrajectory``.
        joint_names: names of ``values`` (``linear_x``, ``angular_z`` for a base).
        values: positions (rad, gripper command units) or base twist (m/s, rad/s).
        fields: message fields with placeholders resolved (non-built-in types), else None.
        groups: the action groups this output carries.
        time_from_start_s: time_from_start of a streamed trajectory point (one period), s.
    """

    topic: str
    msg_type: str
    joint_names: tuple[str, ...]
    values: tuple[float, ...]
    fields: dict[str, Any] | None = None
    groups: tuple[str, ...] = ()
    time_from_start_s: float = 0.0

    @property
    def linear_x(self) -> float:
        """Forward speed of a base output, m/s."""
        return self.values[self.joint_names.index("linear_x")]

    @property
    def angular_z(self) -> float:
        """Turn rate of a base output, rad/s."""
        return self.values[self.joint_names.index("angular_z")]


def _placeholders_in(template: Any) -> set[str]:
    if isinstance(template, str):
        return {template} if template.startswith("$") else set()
    if isinstance(template, dict):
        return set().union(*(_placeholders_in(v) for v in template.values()))
    if isinstance(template, (list, tuple)):
        return set().union(*(_placeholders_in(v) for v in template))
    return set()


def _resolve(template: Any, values: dict[str, Any]) -> Any:
    if isinstance(template, str) and template.startswith("$"):
        return values[template]
    if isinstance(template, dict):
        return {key: _resolve(value, values) for key, value in template.items()}
    if isinstance(template, (list, tuple)):
        return [_resolve(value, values) for value in template]
    return template


@dataclass(frozen=True)
class _Part:
    group: ActionGroup
    columns: slice


class _OutputPlan:
    """How one output is assembled, decided once at start-up."""

    def __init__(self, embodiment: Embodiment, output: CommandOutput):
        self.output = output
        self.parts = [_Part(embodiment.group(n), embodiment.group_slices[n]) for n in output.groups]
        self.is_base = any(p.group.kind.startswith("base_") for p in self.parts)
        if output.type == TWIST_TYPE and (len(self.parts) != 1 or not self.is_base):
            raise CommandMappingError(
                f"output {output.topic}: a Twist carries exactly one base group, got {list(output.groups)}"
            )
        self.joint_names = self._names()
        used = _placeholders_in(output.fields or {})
        unknown = sorted(used - set(PLACEHOLDERS))
        if unknown:
            raise CommandMappingError(
                f"output {output.topic}: unknown placeholder(s) {unknown}; known: {', '.join(PLACEHOLDERS)}"
            )
        if used & {"$linear_x", "$angular_z"} and not (len(self.parts) == 1 and self.is_base):
            raise CommandMappingError(
                f"output {output.topic}: $linear_x/$angular_z need one base group"
            )

    def _names(self) -> tuple[str, ...]:
        own = [
            TWIST_NAMES
            if p.group.kind.startswith("base_")
            else tuple(j.name for j in p.group.joints)
            for p in self.parts
        ]
        width = sum(len(names) for names in own)
        if self.output.joint_names is not None:
            if len(self.output.joint_names) != width:
                raise CommandMappingError(
                    f"output {self.output.topic}: {len(self.output.joint_names)} joint_names for {width} values"
                )
            return tuple(self.output.joint_names)
        flat = [name for names in own for name in names]
        if len(set(flat)) == len(flat):
            return tuple(flat)
        return tuple(
            f"{p.group.name}_{name}"
            for p, names in zip(self.parts, own, strict=True)
            for name in names
        )


class CommandMapper:
    """Maps safe action vectors onto ``OutputCommand``s (see the module docstring)."""

    def __init__(self, embodiment: Embodiment):
        self.embodiment = embodiment
        self.plans = [_OutputPlan(embodiment, output) for output in embodiment.outputs]

    @property
    def topics(self) -> list[str]:
        return [plan.output.topic for plan in self.plans]

    def group_values(
        self,
        part_group: ActionGroup,
        columns: slice,
        command: np.ndarray,
        twists: dict[str, tuple[float, float]],
    ) -> list[float]:
        """One group's values in controller units."""
        if part_group.kind == "base_waypoints":
            if part_group.name not in twists:
                raise CommandMappingError(f"group {part_group.name}: no tracker twist given")
            return [float(v) for v in twists[part_group.name]]
        values = command[columns].tolist()
        if part_group.kind == "gripper":
            return [self.embodiment.gripper_normalised_to_command(part_group, v) for v in values]
        return values

    def map(
        self,
        command: np.ndarray,
        twists: dict[str, tuple[float, float]] | None = None,
        *,
        skip_non_finite: bool = False,
    ) -> list[OutputCommand]:
        """Commands for every output, from ``command`` (rig units, action layout).

        Args:
            command: the safe action vector.
            twists: (linear_x m/s, angular_z rad/s) per base_waypoints group.
            skip_non_finite: leave out outputs with a NaN value (a hold with no known target)
                instead of raising ``CommandMappingError``.
        """
        command = np.asarray(command, dtype=np.float64)
        if command.shape != (self.embodiment.action_dim,):
            raise CommandMappingError(
                f"command has shape {command.shape}; expected ({self.embodiment.action_dim},)"
            )
        twists = twists or {}
        commands = []
        for plan in self.plans:
            values = [
                v
                for part in plan.parts
                for v in self.group_values(part.group, part.columns, command, twists)
            ]
            if not all(map(math.isfinite, values)):
                if skip_non_finite:
                    continue
                raise CommandMappingError(
                    f"output {plan.output.topic}: non-finite value in {values}"
                )
            commands.append(self._command(plan, values))
        return commands

    def _command(self, plan: _OutputPlan, values: list[float]) -> OutputCommand:
        fields = None
        if plan.output.fields:
            lookup: dict[str, Any] = {
                "$positions": list(values),
                "$position": values[0],
                "$joint_names": list(plan.joint_names),
            }
            if plan.is_base:
                lookup["$linear_x"], lookup["$angular_z"] = values[0], values[1]
            fields = _resolve(plan.output.fields, lookup)
        return OutputCommand(
            topic=plan.output.topic,
            msg_type=plan.output.type,
            joint_names=plan.joint_names,
            values=tuple(values),
            fields=fields,
            groups=tuple(plan.output.groups),
            time_from_start_s=self.embodiment.dt,
        )

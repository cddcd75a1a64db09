"""The loaded, validated embodiment: the one object the rest of the package reads.

Conventions the rest of the package relies on:

* The *action vector* is the concatenation of the action groups, in file
  order; ``action_names`` names each dimension as ``group/joint``.
* The *state vector* has the same layout as the action vector: each dimension
  holds the measured value of the quantity that action dimension commands
  (zero where no state is configured, e.g. base waypoints).
* *Rig units* are what the robot's topics use after the gripper is
  normalised; *model units* are the training-data convention. They differ by
  the per-joint ``sign`` and ``offset`` (``rig = sign * model + offset``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .schema import ActionGroup, CameraSpec, CommandOutput, EmbodimentFile, JointSpec, StateSource


@dataclass(frozen=True)
class Embodiment:
    """A validated embodiment, with the flat arrays control code needs."""

    spec: EmbodimentFile
    source_path: str = field(default="<memory>")

    # -- identity and prompt ------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def prompt(self) -> str:
        """Natural-language description of morphology, action layout and control."""
        return " ".join(self.spec.prompt.split())

    # -- timing ----------------------------------------------------------------
    @property
    def control_rate_hz(self) -> float:
        return self.spec.control.rate_hz

    @property
    def dt(self) -> float:
        """Control period, s."""
        return 1.0 / self.spec.control.rate_hz

    @property
    def chunk_horizon(self) -> int:
        return self.spec.control.chunk_horizon

    @property
    def chunk_timeout_s(self) -> float:
        return self.spec.control.chunk_timeout_s

    # -- sensors ---------------------------------------------------------------
    @property
    def cameras(self) -> tuple[CameraSpec, ...]:
        return self.spec.cameras

    @property
    def camera_names(self) -> list[str]:
        return [c.name for c in self.spec.cameras]

    @property
    def state_sources(self) -> tuple[StateSource, ...]:
        return self.spec.state

    def state_source(self, name: str) -> StateSource:
        return next(s for s in self.spec.state if s.name == name)

    # -- action layout -----------------------------------------------------------
    @property
    def action_groups(self) -> tuple[ActionGroup, ...]:
        return self.spec.action

    @property
    def outputs(self) -> tuple[CommandOutput, ...]:
        return self.spec.outputs

    @cached_property
    def joints(self) -> tuple[JointSpec, ...]:
        """Every action dimension's spec, in vector order."""
        return tuple(j for g in self.spec.action for j in g.joints)

    @cached_property
    def action_names(self) -> list[str]:
        return [f"{g.name}/{j.name}" for g in self.spec.action for j in g.joints]

    @property
    def action_dim(self) -> int:
        return len(self.joints)

    @property
    def state_dim(self) -> int:
        return self.action_dim

    @cached_property
    def group_slices(self) -> dict[str, slice]:
        """Where each group sits in the action vector."""
        slices, start = {}, 0
        for group in self.spec.action:
            slices[group.name] = slice(start, start + len(group.joints))
            start += len(group.joints)
        return slices

    def group(self, name: str) -> ActionGroup:
        return next(g for g in self.spec.action if g.name == name)

    # -- limits, rig units ---------------------------------------------------------
    @cached_property
    def position_min(self) -> np.ndarray:
        return np.array([j.min for j in self.joints], dtype=np.float64)

    @cached_property
    def position_max(self) -> np.ndarray:
        return np.array([j.max for j in self.joints], dtype=np.float64)

    @cached_property
    def velocity_limits(self) -> np.ndarray:
        """Largest speed per dimension, units/s."""
        return np.array([j.max_velocity for j in self.joints], dtype=np.float64)

    @cached_property
    def step_limits(self) -> np.ndarray:
        """Largest change per control step, units/step: the tighter of max_step and v*dt."""
        from_velocity = self.velocity_limits * self.dt
        explicit = np.array(
            [j.max_step if j.max_step is not None else np.inf for j in self.joints]
        )
        return np.minimum(from_velocity, explicit)

    @cached_property
    def acceleration_limits(self) -> np.ndarray:
        """units/s^2; inf where none is configured."""
        return np.array(
            [j.max_acceleration if j.max_acceleration is not None else np.inf for j in self.joints]
        )

    @cached_property
    def home_position(self) -> np.ndarray:
        """Start pose in rig units; mid-range where no home is configured (0 for bases)."""
        home = []
        for group in self.spec.action:
            for j in group.joints:
                if j.home is not None:
                    home.append(j.home)
                elif group.kind.startswith("base_"):
                    home.append(0.0)
                else:
                    home.append(float(np.clip(0.0, j.min, j.max)))
        return np.array(home, dtype=np.float64)

    @cached_property
    def dims_of_kind(self) -> dict[str, np.ndarray]:
        """Boolean masks over the action vector, one per action kind."""
        kinds = [g.kind for g in self.spec.action for _ in g.joints]
        return {k: np.array([x == k for x in kinds]) for k in set(kinds)}

    # -- calibration -------------------------------------------------------------
    @cached_property
    def _sign(self) -> np.ndarray:
        return np.array([j.sign for j in self.joints], dtype=np.float64)

    @cached_property
    def _offset(self) -> np.ndarray:
        return np.array([j.offset for j in self.joints], dtype=np.float64)

    def actions_to_rig(self, actions: np.ndarray) -> np.ndarray:
        """Model-convention actions (..., action_dim) to rig units."""
        return self._sign * np.asarray(actions, dtype=np.float64) + self._offset

    def actions_to_model(self, actions: np.ndarray) -> np.ndarray:
        """Rig-unit actions or states (..., action_dim) to the model convention."""
        return (np.asarray(actions, dtype=np.float64) - self._offset) * self._sign

    def gripper_state_to_normalised(self, group: ActionGroup, finger_position: float) -> float:
        """Finger position (m) to the normalised opening (0 closed, 1 open)."""
        cal = group.gripper
        if cal is None:
            return float(finger_position)
        return (finger_position - cal.state_closed) / (cal.state_open - cal.state_closed)

    def gripper_normalised_to_command(self, group: ActionGroup, value: float) -> float:
        """Normalised opening to the gripper joint command, rad."""
        cal = group.gripper
        if cal is None:
            return float(value)
        return value * (cal.command_open - cal.command_closed) + cal.command_closed

    def gripper_command_to_normalised(self, group: ActionGroup, command):
        """Gripper joint command (rad; a float or an array) back to the normalised opening."""
        cal = group.gripper
        if cal is None:
            return command
        return (command - cal.command_closed) / (cal.command_open - cal.command_closed)

    def summary(self) -> str:
        """A human-readable table of the action layout and topics."""
        from .report import format_summary

        return format_summary(self)

"""Unit conventions between the gym-aloha MuJoCo model and the Interbotix rig.

The simulated ViperX arm has no gripper joint: each finger is a slide joint
(``left_finger`` in m, ``right_finger`` its negative) driven by a position
actuator. The real rig commands a *gripper joint angle* (rad) and reports
finger positions (m) in its own range. Both sides meet at the *normalised
opening* ``n`` (0 closed, 1 open):

* sim finger (m):      ``n = (q - 0.01844) / (0.05800 - 0.01844)``, gym-aloha's
  ``PUPPET_GRIPPER_POSITION_CLOSE/OPEN``, the normalisation of gym-aloha's
  ``agent_pos`` and of the LeRobot ``aloha_sim_*`` datasets;
* rig gripper command (rad): ``c = 0.6197 + n * (1.6214 - 0.6197)``;
* rig finger (m):      ``f = 0.0440 + n * (0.0579 - 0.0440)``.

So the normalised opening the rest of the stack computes from the simulated
``/follower_{side}/joint_states`` equals gym-aloha's ``agent_pos`` gripper value.
The sim finger can only travel 0.021 .. 0.057 m (its joint range), i.e.
``n`` from about 0.066 (closed on nothing) to about 0.975 (fully open).
"""

from __future__ import annotations

from dataclasses import dataclass

from gym_aloha.constants import PUPPET_GRIPPER_POSITION_CLOSE, PUPPET_GRIPPER_POSITION_OPEN

from .errors import SimInputError

#: Arm joints in the order of the Interbotix JointGroupCommand and JointState.
ARM_JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")
#: Names of /follower_{side}/joint_states on the real rig, in its order.
INTERBOTIX_JOINT_STATE_NAMES = (*ARM_JOINTS, "gripper", "left_finger", "right_finger")
#: Interbotix start pose per arm, rad (also gym-aloha's START_ARM_POSE arm joints).
START_ARM_POSE = (0.0, -0.96, 1.16, 0.0, -0.3, 0.0)
#: gym-aloha's start finger position (m, sim units): nearly closed, n ~ 0.10.
START_SIM_FINGER = 0.02239
SIDES = ("left", "right")


@dataclass(frozen=True)
class GripperConversion:
    """Maps between rig gripper units and the sim's finger slide joint.

    Rig defaults are the Interbotix ``aloha/constants.py`` values (the same as
    the embodiment schema's ``GripperCalibration`` defaults).
    """

    command_closed: float = 0.6197  # rig gripper joint command, rad
    command_open: float = 1.6214
    finger_closed: float = 0.0440  # rig finger position, m
    finger_open: float = 0.0579
    sim_closed: float = PUPPET_GRIPPER_POSITION_CLOSE  # sim left_finger qpos, m
    sim_open: float = PUPPET_GRIPPER_POSITION_OPEN

    @classmethod
    def from_calibration(cls, calibration) -> GripperConversion:
        """From an embodiment ``GripperCalibration`` (command_* rad, state_* m)."""
        return cls(
            command_closed=calibration.command_closed,
            command_open=calibration.command_open,
            finger_closed=calibration.state_closed,
            finger_open=calibration.state_open,
        )

    # -- commands -----------------------------------------------------------------
    def command_to_opening(self, command_rad: float) -> float:
        """Rig gripper joint command (rad) to normalised opening."""
        return (command_rad - self.command_closed) / (self.command_open - self.command_closed)

    def opening_to_command(self, opening: float) -> float:
        """Normalised opening to rig gripper joint command (rad)."""
        return self.command_closed + opening * (self.command_open - self.command_closed)

    def opening_to_sim_finger(self, opening: float) -> float:
        """Normalised opening to the sim left_finger position target, m."""
        return self.sim_closed + opening * (self.sim_open - self.sim_closed)

    # -- measurements ---------------------------------------------------------------
    def sim_finger_to_opening(self, sim_finger_m: float) -> float:
        """Sim left_finger position (m) to normalised opening."""
        return (sim_finger_m - self.sim_closed) / (self.sim_open - self.sim_closed)

    def sim_finger_to_rig_finger(self, sim_finger_m: float) -> float:
        """Sim left_finger position to the rig's left_finger reading, m."""
        opening = self.sim_finger_to_opening(sim_finger_m)
        return self.finger_closed + opening * (self.finger_open - self.finger_closed)

    @property
    def finger_velocity_scale(self) -> float:
        """Rig finger speed per sim finger speed (m/s per m/s)."""
        return (self.finger_open - self.finger_closed) / (self.sim_open - self.sim_closed)

    @property
    def gripper_velocity_scale(self) -> float:
        """Rig gripper joint speed per sim finger speed (rad/s per m/s)."""
        return (self.command_open - self.command_closed) / (self.sim_open - self.sim_closed)

    def command_range(self) -> tuple[float, float]:
        """Smallest and largest valid gripper command, rad."""
        return min(self.command_closed, self.command_open), max(
            self.command_closed, self.command_open
        )


def check_side(side: str) -> str:
    """Return ``side`` if it is 'left' or 'right', else raise SimInputError."""
    if side not in SIDES:
        raise SimInputError(f"side must be one of {SIDES}, got {side!r}")
    return side

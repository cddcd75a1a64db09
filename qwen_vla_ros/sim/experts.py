"""Scripted experts for the simulated ALOHA tasks, from the simulator's ground truth (pure core).

Each expert plans end-effector waypoints for both arms from the objects' poses at the
start of the episode (approach above, descend, close, lift, meet, ...), as ACT's scripted
policies do for gym-aloha's end-effector scenes; between waypoints the tool centre point
and the gripper opening are interpolated linearly, and every control step the pose is
turned into arm joint targets by :class:`~.arm_ik.ArmIK`. The result is a joint-space
trajectory in the rig's conventions: 14 values per step, per arm waist .. wrist_rotate
(rad) then the gripper opening (0 closed, 1 open), left arm first (ALOHA's order).

Waypoint times and offsets for ``transfer_cube`` and ``insertion`` are those of ACT's
``PickAndTransferPolicy`` and ``InsertionPolicy`` (steps of 20 ms).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..embodiment.schema import GRIPPER_CLOSED, GRIPPER_OPEN
from .aloha_conventions import SIDES
from .aloha_tasks import cube_body
from .arm_ik import ArmIK, axis_angle_quat, normalized

#: Action names of the expert's 14-value vector (ALOHA's order, as in the aloha embodiments).
ACTION_NAMES = tuple(
    f"{side}_{group}/{joint}"
    for side in SIDES
    for group, joints in (("arm", ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")),
                          ("gripper", ("gripper",)))
    for joint in joints
)
OPEN, CLOSED = GRIPPER_OPEN, GRIPPER_CLOSED
#: TCP orientations (w, x, y, z): grippers pitched down 60 degrees toward the table.
PICK_RIGHT = axis_angle_quat([0, 1, 0], -60)
PICK_LEFT = axis_angle_quat([0, 1, 0], 60)
#: Left gripper rolled 90 degrees about its axis, to take the cube from the right gripper.
MEET_LEFT = axis_angle_quat([1, 0, 0], 90)
LEVEL = np.array([1.0, 0.0, 0.0, 0.0])


@dataclass(frozen=True)
class Waypoint:
    """Where one arm's TCP should be at a control step: position m, quaternion, opening."""

    step: int
    xyz: np.ndarray
    quat: np.ndarray
    gripper: float


def interpolate(waypoints: list[Waypoint], step: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Pose and opening at ``step``, linear between waypoints, held after the last."""
    if step >= waypoints[-1].step:
        last = waypoints[-1]
        return last.xyz, last.quat, last.gripper
    for current, following in zip(waypoints, waypoints[1:], strict=False):
        if current.step <= step < following.step:
            fraction = (step - current.step) / (following.step - current.step)
            xyz = current.xyz + (following.xyz - current.xyz) * fraction
            quat = normalized(current.quat + (following.quat - current.quat) * fraction)
            gripper = current.gripper + (following.gripper - current.gripper) * fraction
            return xyz, quat, gripper
    first = waypoints[0]
    return first.xyz, first.quat, first.gripper


class ScriptedExpert:
    """Base class: plan waypoints at reset, then one 14-value action per control step."""

    task = ""
    episode_steps = 400

    def __init__(self) -> None:
        self._plans: dict[str, list[Waypoint]] = {}
        self._iks: dict[str, ArmIK] = {}
        self._joints: dict[str, np.ndarray] = {}
        self._step = 0

    def reset(self, sim) -> None:
        """Plan from the objects' poses of the episode just reset (an :class:`AlohaSim`)."""
        if sim.task_name != self.task:
            raise ValueError(f"{type(self).__name__} scripts task {self.task!r}, the sim runs {sim.task_name!r}")
        self._iks = {side: ArmIK(sim.model, side) for side in SIDES}
        self._joints = {side: sim.arm_positions(side) for side in SIDES}
        start = {}
        for side in SIDES:
            xyz, quat = self._iks[side].tcp_pose(self._joints[side])
            start[side] = Waypoint(0, xyz, quat, sim.gripper_opening(side))
        self._plans = self.plan(start, sim.object_poses(), sim.goal)
        self._step = 0

    def plan(self, start: dict[str, Waypoint], objects: dict[str, np.ndarray], goal: str | None) -> dict[str, list[Waypoint]]:
        raise NotImplementedError

    def grasp_step(self) -> int:
        """The control step at which the first gripper starts to close (after :meth:`reset`):
        until then the objects lie where they were placed."""
        starts = [
            earlier.step
            for plan in self._plans.values()
            for earlier, later in zip(plan, plan[1:], strict=False)
            if later.gripper < earlier.gripper
        ]
        return min(starts, default=self.episode_steps)

    def action(self) -> np.ndarray:
        """The next step's 14 targets (rad, opening), then advance one control step."""
        values = []
        for side in SIDES:
            xyz, quat, gripper = interpolate(self._plans[side], self._step)
            self._joints[side] = self._iks[side].solve(xyz, quat, self._joints[side])
            values.extend([*self._joints[side], float(np.clip(gripper, 0.0, 1.0))])
        self._step += 1
        return np.asarray(values, dtype=np.float64)


def _at(step: int, xyz, quat, gripper: float) -> Waypoint:
    return Waypoint(step, np.asarray(xyz, dtype=np.float64), np.asarray(quat, dtype=np.float64), gripper)


class TransferCubeExpert(ScriptedExpert):
    """Right arm picks the cube, meets the left arm in the middle, hands it over."""

    task = "transfer_cube"
    episode_steps = 400

    def plan(self, start, objects, goal):
        box = objects["box"][:3]
        meet = np.array([0.0, 0.5, 0.25])
        left = [
            start["left"],
            _at(100, meet + [-0.1, 0, -0.02], MEET_LEFT, OPEN),
            _at(260, meet + [0.02, 0, -0.02], MEET_LEFT, OPEN),
            _at(310, meet + [0.02, 0, -0.02], MEET_LEFT, CLOSED),
            _at(360, meet + [-0.1, 0, -0.02], LEVEL, CLOSED),
            _at(400, meet + [-0.1, 0, -0.02], LEVEL, CLOSED),
        ]
        right = [
            start["right"],
            _at(90, box + [0, 0, 0.08], PICK_RIGHT, OPEN),
            _at(130, box + [0, 0, -0.015], PICK_RIGHT, OPEN),
            _at(170, box + [0, 0, -0.015], PICK_RIGHT, CLOSED),
            _at(200, meet + [0.05, 0, 0], PICK_RIGHT, CLOSED),
            _at(220, meet, PICK_RIGHT, CLOSED),
            _at(310, meet, PICK_RIGHT, OPEN),
            _at(360, meet + [0.1, 0, 0], PICK_RIGHT, OPEN),
            _at(400, meet + [0.1, 0, 0], PICK_RIGHT, OPEN),
        ]
        return {"left": left, "right": right}


class InsertionExpert(ScriptedExpert):
    """Left arm picks the socket, right arm the peg; they meet and the peg goes in."""

    task = "insertion"
    episode_steps = 400

    def plan(self, start, objects, goal):
        peg, socket = objects["peg"][:3], objects["socket"][:3]
        meet = np.array([0.0, 0.5, 0.15])
        # The peg rests 1 cm lower in the right gripper than the socket in the left one
        # (grasped 3 cm below the sampled height; they rest at 0.01 and 0.022 m): lift it
        # by that much so it slides into the socket, and push 2 cm deeper than ACT's
        # script so the peg reaches the pin.
        lift_right, depth = 0.012, 0.03
        left = [
            start["left"],
            _at(120, socket + [0, 0, 0.08], PICK_LEFT, OPEN),
            _at(170, socket + [0, 0, -0.03], PICK_LEFT, OPEN),
            _at(220, socket + [0, 0, -0.03], PICK_LEFT, CLOSED),
            _at(285, meet + [-0.1, 0, 0], PICK_LEFT, CLOSED),
            _at(340, meet + [-depth, 0, 0], PICK_LEFT, CLOSED),
            _at(400, meet + [-depth, 0, 0], PICK_LEFT, CLOSED),
        ]
        right = [
            start["right"],
            _at(120, peg + [0, 0, 0.08], PICK_RIGHT, OPEN),
            _at(170, peg + [0, 0, -0.03], PICK_RIGHT, OPEN),
            _at(220, peg + [0, 0, -0.03], PICK_RIGHT, CLOSED),
            _at(285, meet + [0.1, 0, lift_right], PICK_RIGHT, CLOSED),
            _at(340, meet + [depth, 0, lift_right], PICK_RIGHT, CLOSED),
            _at(400, meet + [depth, 0, lift_right], PICK_RIGHT, CLOSED),
        ]
        return {"left": left, "right": right}


class PickColorExpert(ScriptedExpert):
    """The arm on the named cube's side picks it up and lifts it; the other arm stays."""

    task = "pick_color"
    episode_steps = 300

    def plan(self, start, objects, goal):
        cube = objects[cube_body(goal)][:3]
        side = "right" if cube[0] >= 0.0 else "left"
        quat = PICK_RIGHT if side == "right" else PICK_LEFT
        above = cube + [0, 0, 0.08]
        picking = [
            start[side],
            _at(90, above, quat, OPEN),
            _at(130, cube + [0, 0, -0.015], quat, OPEN),
            _at(170, cube + [0, 0, -0.015], quat, CLOSED),
            _at(230, cube + [0, 0, 0.15], quat, CLOSED),
            _at(300, cube + [0, 0, 0.15], quat, CLOSED),
        ]
        resting = [start[other] for other in SIDES if other != side]
        return {side: picking, **{other: resting for other in SIDES if other != side}}


EXPERTS = {expert.task: expert for expert in (TransferCubeExpert, InsertionExpert, PickColorExpert)}


def expert_for(task: str) -> ScriptedExpert:
    if task not in EXPERTS:
        raise ValueError(f"no scripted expert for task {task!r}; there are {sorted(EXPERTS)}")
    return EXPERTS[task]()


__all__ = ["ACTION_NAMES", "EXPERTS", "ScriptedExpert", "Waypoint", "expert_for"]


class DriveToColorExpert:
    """Drives the base to the named box of ``drive_to_color`` (a :class:`MobileBaseSim`).

    A unicycle controller on the ground truth: turn toward a stop point in front of the box's
    near side, drive while roughly facing it, slow down on arrival and stop there. Returns
    (forward m/s, turn rad/s) per control step, as sent on ``cmd_vel``.
    """

    task = "drive_to_color"
    episode_steps = 120  # at 10 Hz: 12 s

    #: gap between base and box side at which the expert stops, m (success needs <= 0.25).
    STOP_GAP_M = 0.1

    def reset(self, world) -> None:
        if world.task != self.task:
            raise ValueError(f"{type(self).__name__} scripts task {self.task!r}, the world runs {world.task!r}")
        self._world = world
        box = world.box(world.goal)
        x0, y0, _ = world.pose
        direction = np.array([box.x - x0, box.y - y0])
        direction /= np.linalg.norm(direction)
        # The base centre stops where its disc is STOP_GAP_M short of the box's near side.
        reach = box.half_size + 0.25 + self.STOP_GAP_M
        self._stop = np.array([box.x, box.y]) - direction * reach

    def velocity(self) -> tuple[float, float]:
        x, y, yaw = self._world.pose
        dx, dy = self._stop[0] - x, self._stop[1] - y
        distance = float(np.hypot(dx, dy))
        if distance < 0.03:
            return 0.0, 0.0
        heading_error = float(np.arctan2(np.sin(np.arctan2(dy, dx) - yaw), np.cos(np.arctan2(dy, dx) - yaw)))
        turn = float(np.clip(2.0 * heading_error, -1.0, 1.0))
        forward = float(np.clip(0.8 * distance, 0.0, 0.5) * max(0.0, np.cos(heading_error)) ** 2)
        return forward, turn

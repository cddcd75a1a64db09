"""A simulated bimanual ALOHA (gym-aloha's MuJoCo model) seen through the real rig's conventions.

The ROS sim bridge wraps this class: it forwards arm and gripper commands,
advances physics on *simulated* time (this class never sleeps and never reads
the wall clock), publishes ``/clock`` from :attr:`AlohaSim.sim_time_ns`, and
publishes :meth:`AlohaSim.joint_states` and :meth:`AlohaSim.render` output on
the rig's topics.

Start pose: gym-aloha's ``START_ARM_POSE``, whose arm joints are the Interbotix
start pose ``[0, -0.96, 1.16, 0, -0.3, 0]`` rad and whose fingers sit at
0.02239 m (sim), a nearly closed gripper (normalised opening about 0.10).
Object placement uses gym-aloha's samplers, so ``reset(seed=s)`` places the
cube (or peg and socket) exactly where ``AlohaEnv.reset(seed=s)`` would.

Gripper units: see :mod:`qwen_vla_ros.sim.aloha_conventions`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import mujoco
import numpy as np

from .aloha_conventions import (
    ARM_JOINTS,
    INTERBOTIX_JOINT_STATE_NAMES,
    SIDES,
    START_ARM_POSE,
    START_SIM_FINGER,
    GripperConversion,
    check_side,
)
from .aloha_tasks import (
    contact_pairs,
    cube_body,
    geom_names,
    get_task,
    nearest_approached,
    wrong_object,
)
from .errors import SimConfigError, SimInputError
from .goals import goal_from_instruction
from .renderer import OffscreenCameras, SimCamera

#: Embodiment camera name -> MuJoCo camera of the gym-aloha scene (both ALOHA naming schemes).
CAMERA_STAND_INS = {
    "cam_high": "top",
    "cam_low": "angle",
    "cam_left_wrist": "left_wrist",
    "cam_right_wrist": "right_wrist",
    "camera_high": "top",
    "camera_low": "angle",
    "camera_wrist_left": "left_wrist",
    "camera_wrist_right": "right_wrist",
}
DEFAULT_CAMERAS = {
    name: SimCamera(CAMERA_STAND_INS[name])
    for name in ("cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist")
}
#: MuJoCo warnings after which it has reset the state itself: the episode is lost.
_UNSTABLE = (
    mujoco.mjtWarning.mjWARN_BADQACC,
    mujoco.mjtWarning.mjWARN_BADQVEL,
    mujoco.mjtWarning.mjWARN_BADQPOS,
)
_LIMIT_TOLERANCE = 1e-6  # rad: room for float32 round trips of limit values


class _ArmIndex:
    """Where one arm's joints and actuators sit in qpos, qvel and ctrl."""

    def __init__(self, model: mujoco.MjModel, side: str) -> None:
        def joint(name: str) -> int:
            return mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, f"vx300s_{side}/{name}")

        def actuator(joint_id: int) -> int:
            return int(np.flatnonzero(model.actuator_trnid[:, 0] == joint_id)[0])

        arm = [joint(n) for n in ARM_JOINTS]
        fingers = [joint("left_finger"), joint("right_finger")]
        self.arm_qpos = model.jnt_qposadr[arm]
        self.arm_dof = model.jnt_dofadr[arm]
        self.arm_ctrl = np.array([actuator(j) for j in arm])
        self.arm_ctrl_range = model.actuator_ctrlrange[self.arm_ctrl]
        self.finger_qpos = model.jnt_qposadr[fingers]
        self.finger_dof = model.jnt_dofadr[fingers]
        self.finger_ctrl = np.array([actuator(j) for j in fingers])


class AlohaSim:
    """Two ViperX arms in gym-aloha's MuJoCo scene, commanded and read in rig units.

    Args:
        task: ``"transfer_cube"`` or ``"insertion"``.
        cameras: embodiment camera name -> :class:`SimCamera` (or a
            ``(mujoco_camera, height, width)`` tuple); default: cam_high, cam_low
            and both wrist cameras at 224x224.
        seed: seeds the object placement of episodes reset without a seed.
        render_quality: ``"fast"`` (no shadows or multisampling) or ``"full"``.
        gripper: rig gripper constants; default Interbotix.
    """

    def __init__(
        self,
        task: str = "transfer_cube",
        cameras: Mapping[str, SimCamera | tuple[str, int, int]] | None = None,
        seed: int | None = 0,
        render_quality: str = "fast",
        gripper: GripperConversion | None = None,
    ) -> None:
        self._task = get_task(task)
        self._model = self._task.load_model()
        self._data = mujoco.MjData(self._model)
        self._gripper = gripper or GripperConversion()
        self._cameras = OffscreenCameras(
            self._model, DEFAULT_CAMERAS if cameras is None else cameras, render_quality
        )
        self._geom_names = geom_names(self._model)
        self._arms = {side: _ArmIndex(self._model, side) for side in SIDES}
        self._finger_geoms = [
            self._model.geom(f"vx300s_{side}/10_{finger}_gripper_finger").id
            for side in SIDES for finger in ("left", "right")
        ]
        self.closest_approach_m: dict[str, float] = {}
        # pick_color's cube bodies, looked up once (the approach is tracked every step)
        self._cube_bodies = {
            color: self._model.body(cube_body(color)).id for color in self._task.goals
        } if self._task.name == "pick_color" else {}
        self._seed_rng = np.random.default_rng(seed)
        self._sim_time_ns = 0
        self._pending_s = 0.0  # simulated time asked for but not yet stepped (< one timestep)
        self.episode_seed = 0
        self.goal: str | None = None
        self.last_warning: str | None = None
        self.instability_count = 0
        self.reset()

    @classmethod
    def from_embodiment(
        cls, embodiment, task: str = "transfer_cube", render_size: tuple[int, int] | None = None, **kwargs
    ) -> AlohaSim:
        """Cameras (names and image sizes) and gripper constants from an ALOHA embodiment.

        ``render_size`` (height, width px) renders every camera at that size instead of the
        model's image size, e.g. the rig's 4:3 frame, which the observation node then resizes.
        """
        cameras = {}
        for camera in embodiment.cameras:
            if camera.name not in CAMERA_STAND_INS:
                raise SimConfigError(
                    f"embodiment camera {camera.name!r} has no sim camera; known: "
                    f"{sorted(CAMERA_STAND_INS)}"
                )
            cameras[camera.name] = SimCamera(CAMERA_STAND_INS[camera.name], *(render_size or camera.image_size),
                                             fovy_deg=camera.sim_fovy_deg)
        grippers = [g.gripper for g in embodiment.action_groups if g.kind == "gripper" and g.gripper]
        gripper = GripperConversion.from_calibration(grippers[0]) if grippers else None
        return cls(task=task, cameras=cameras, gripper=gripper, **kwargs)

    # -- episode ----------------------------------------------------------------------
    def reset(self, seed: int | None = None, goal: str | None = None) -> None:
        """Start a new episode: start pose, objects placed from ``seed``.

        Without a seed, one is drawn from the constructor's seed, so a run of
        resets is reproducible too. Simulated time keeps running (``/clock``
        must never jump back); :attr:`episode_time` restarts at 0. ``goal``: what a
        language-conditioned task must achieve (e.g. the cube colour of ``pick_color``);
        default the seed's own goal.
        """
        if seed is None:
            seed = int(self._seed_rng.integers(0, 2**31 - 1))
        self.episode_seed = int(seed)
        self.last_warning = None
        self._reseat(self.episode_seed)
        if goal is not None:
            self.set_goal(goal)

    @property
    def goals(self) -> tuple[str, ...]:
        """Goals an instruction can name in this task (empty: the task has one goal)."""
        return self._task.goals

    def set_goal(self, goal: str) -> None:
        """Score the episode against ``goal`` (one of :attr:`goals`)."""
        if goal not in self._task.goals:
            raise SimInputError(f"task {self._task.name!r} has goals {self._task.goals}, not {goal!r}")
        self.goal = goal

    def set_instruction(self, text: str) -> str | None:
        """Score against the goal the instruction names, if it names exactly one; returns it."""
        goal = goal_from_instruction(text, self._task.goals)
        if goal is not None:
            self.goal = goal
        return goal

    def _reseat(self, seed: int) -> None:
        model, data = self._model, self._data
        mujoco.mj_resetData(model, data)
        for arm in self._arms.values():
            data.qpos[arm.arm_qpos] = START_ARM_POSE
            data.ctrl[arm.arm_ctrl] = START_ARM_POSE
            data.qpos[arm.finger_qpos] = (START_SIM_FINGER, -START_SIM_FINGER)
            data.ctrl[arm.finger_ctrl] = (START_SIM_FINGER, -START_SIM_FINGER)
        object_poses, self.goal = self._task.sample(seed)
        data.qpos[model.nq - len(object_poses):] = object_poses
        self._placed = self._task.object_poses(model, data)
        mujoco.mj_forward(model, data)
        self._pending_s = 0.0
        self.closest_approach_m = dict.fromkeys(self._cube_bodies, math.inf)
        self._track_approach()

    def _track_approach(self) -> None:
        """pick_color: the closest either gripper has come to each cube this episode, m."""
        if not self.closest_approach_m:
            return
        # The point between each gripper's two fingers (their geom frames, at the finger bases).
        grips = self._data.geom_xpos[self._finger_geoms].reshape(len(SIDES), 2, 3).mean(axis=1)
        for color, closest in self.closest_approach_m.items():
            centre = self._data.xpos[self._cube_bodies[color]]
            distance = float(np.min(np.linalg.norm(grips - centre, axis=1)))
            self.closest_approach_m[color] = min(closest, distance)

    # -- commands ---------------------------------------------------------------------
    def set_arm_targets(self, side: str, joint_positions_rad) -> None:
        """Position targets (rad) for waist .. wrist_rotate of one arm, within joint limits."""
        arm = self._arms[check_side(side)]
        targets = np.asarray(joint_positions_rad, dtype=np.float64)
        if targets.shape != (6,) or not np.all(np.isfinite(targets)):
            raise SimInputError(f"{side} arm targets must be 6 finite values (rad), got {targets!r}")
        low, high = arm.arm_ctrl_range[:, 0], arm.arm_ctrl_range[:, 1]
        outside = (targets < low - _LIMIT_TOLERANCE) | (targets > high + _LIMIT_TOLERANCE)
        if outside.any():
            bad = [f"{ARM_JOINTS[i]}={targets[i]:.4f} not in [{low[i]}, {high[i]}]"
                   for i in np.flatnonzero(outside)]
            raise SimInputError(f"{side} arm target outside joint limits: {', '.join(bad)}")
        self._data.ctrl[arm.arm_ctrl] = np.clip(targets, low, high)

    def set_gripper_target(self, side: str, gripper_joint_command_rad: float) -> None:
        """Gripper joint command in the Interbotix convention (0.6197 closed .. 1.6214 open, rad)."""
        low, high = self._gripper.command_range()
        command = float(gripper_joint_command_rad)
        if not np.isfinite(command) or not low - _LIMIT_TOLERANCE <= command <= high + _LIMIT_TOLERANCE:
            raise SimInputError(
                f"{side} gripper command {command} rad is outside [{low}, {high}] rad"
            )
        self.set_gripper_opening(side, float(np.clip(self._gripper.command_to_opening(command), 0, 1)))

    def set_gripper_opening(self, side: str, opening: float) -> None:
        """Gripper target as a normalised opening (0 closed, 1 open)."""
        arm = self._arms[check_side(side)]
        opening = float(opening)
        if not np.isfinite(opening) or not 0.0 <= opening <= 1.0:
            raise SimInputError(f"{side} gripper opening {opening} must be within [0, 1]")
        finger = self._gripper.opening_to_sim_finger(opening)
        # MuJoCo clamps to the finger actuator range (0.021 .. 0.057 m), as gym-aloha does.
        self._data.ctrl[arm.finger_ctrl] = (finger, -finger)

    def place_arm(self, side: str, joint_positions_rad, opening: float) -> None:
        """Put one arm at a pose at once, targets too (no physics step): for rendering what
        the cameras see with the arm there (grounding scenes), not for control."""
        self.set_arm_targets(side, joint_positions_rad)
        self.set_gripper_opening(side, opening)
        arm = self._arms[check_side(side)]
        self._data.qpos[arm.arm_qpos] = self._data.ctrl[arm.arm_ctrl]
        self._data.qpos[arm.finger_qpos] = self._data.ctrl[arm.finger_ctrl]
        self._data.qvel[arm.arm_dof] = 0.0
        mujoco.mj_forward(self._model, self._data)

    def arm_targets(self, side: str) -> np.ndarray:
        """The arm position targets in force now, rad (6,)."""
        return self._data.ctrl[self._arms[check_side(side)].arm_ctrl].copy()

    # -- time -------------------------------------------------------------------------
    def step(self, dt: float) -> None:
        """Advance physics by ``dt`` seconds of simulated time (in 2 ms substeps).

        A remainder shorter than one substep carries over to the next call, so
        the physics never drifts from :attr:`sim_time`. If the physics blows up
        the episode restarts from its start state and :attr:`last_warning` says so.
        """
        dt = float(dt)
        if not np.isfinite(dt) or dt <= 0.0:
            raise SimInputError(f"step dt must be a positive number of seconds, got {dt}")
        timestep = self._model.opt.timestep
        self._pending_s += dt
        substeps = int(self._pending_s / timestep + 1e-9)
        if substeps:
            mujoco.mj_step(self._model, self._data, nstep=substeps)
            # mj_step leaves body poses and contacts at the start of its last substep;
            # refresh them so render() and reward() see the state just reached.
            mujoco.mj_forward(self._model, self._data)
            self._pending_s -= substeps * timestep
        self._sim_time_ns += round(dt * 1e9)
        self._recover_if_unstable()
        self._track_approach()

    def _recover_if_unstable(self) -> None:
        warnings = [w.name for w in _UNSTABLE if self._data.warning[w].number > 0]
        if not warnings and np.all(np.isfinite(self._data.qpos)):
            return
        self.instability_count += 1
        self.last_warning = (
            f"physics unstable ({', '.join(warnings) or 'non-finite state'}) at sim time "
            f"{self.sim_time:.3f} s; episode {self.episode_seed} restarted from its start state"
        )
        self._reseat(self.episode_seed)

    @property
    def sim_time_ns(self) -> int:
        """Simulated time since construction, ns (monotonic across resets; for /clock)."""
        return self._sim_time_ns

    @property
    def sim_time(self) -> float:
        """Simulated time since construction, s."""
        return self._sim_time_ns * 1e-9

    @property
    def episode_time(self) -> float:
        """Simulated time since the last reset, s (physics time, 2 ms resolution)."""
        return float(self._data.time)

    @property
    def physics_timestep(self) -> float:
        """Physics substep, s."""
        return float(self._model.opt.timestep)

    # -- observation ------------------------------------------------------------------
    @property
    def camera_names(self) -> list[str]:
        return self._cameras.names

    def camera(self, name: str) -> SimCamera:
        return self._cameras.spec(name)

    def render(self, camera_name: str) -> np.ndarray:
        """Image of one configured camera: (height, width, 3) uint8 RGB."""
        return self._cameras.render(self._data, camera_name)

    def image_point(self, camera_name: str, world_xyz) -> tuple[float, float]:
        """Where a world point (m) appears in a camera's image now, normalised (0 left/top ..
        1 right/bottom; see :meth:`OffscreenCameras.image_point`)."""
        return self._cameras.image_point(self._data, camera_name, world_xyz)

    def joint_states(self, side: str) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
        """(names, positions, velocities) as the rig publishes on /follower_{side}/joint_states.

        Arm joints rad and rad/s; ``gripper`` the gripper joint angle that
        commands the present opening, rad; ``left_finger``/``right_finger`` in
        rig metres (right is the negative of left), converted from the sim's
        finger positions through the normalised opening.
        """
        arm = self._arms[check_side(side)]
        qpos, qvel = self._data.qpos, self._data.qvel
        sim_left, sim_right = qpos[arm.finger_qpos]
        vel_left, vel_right = qvel[arm.finger_dof]
        g = self._gripper
        positions = np.concatenate([
            qpos[arm.arm_qpos],
            [g.opening_to_command(g.sim_finger_to_opening(sim_left)),
             g.sim_finger_to_rig_finger(sim_left),
             -g.sim_finger_to_rig_finger(-sim_right)],
        ])
        velocities = np.concatenate([
            qvel[arm.arm_dof],
            [vel_left * g.gripper_velocity_scale,
             vel_left * g.finger_velocity_scale,
             vel_right * g.finger_velocity_scale],
        ])
        return INTERBOTIX_JOINT_STATE_NAMES, positions, velocities

    def gripper_opening(self, side: str) -> float:
        """Measured normalised opening of one gripper (0 closed, 1 open)."""
        sim_left = self._data.qpos[self._arms[check_side(side)].finger_qpos[0]]
        return float(self._gripper.sim_finger_to_opening(sim_left))

    def env_state(self) -> np.ndarray:
        """Free-joint poses of the task objects (7 per object: xyz m, quat wxyz)."""
        return self._data.qpos[self._arms["right"].finger_qpos[1] + 1:].copy()

    def arm_positions(self, side: str) -> np.ndarray:
        """Measured arm joint positions, waist .. wrist_rotate, rad (6,)."""
        return self._data.qpos[self._arms[check_side(side)].arm_qpos].copy()

    @property
    def model(self) -> mujoco.MjModel:
        """The MuJoCo model (read it, e.g. for kinematics; never step it from outside)."""
        return self._model

    def object_poses(self) -> dict[str, np.ndarray]:
        """Task object name -> free-joint pose now (xyz m, quat wxyz), the ground truth."""
        return self._task.object_poses(self._model, self._data)

    # -- task -------------------------------------------------------------------------
    @property
    def task_name(self) -> str:
        return self._task.name

    @property
    def max_reward(self) -> int:
        return self._task.max_reward

    def reward(self) -> int:
        """The staged task reward now, 0 .. max_reward (gym-aloha's for its tasks)."""
        return self._task.reward(self.contacts(), self.goal, self.object_poses())

    def contacts(self) -> set[frozenset[str]]:
        """Geom-name pairs in contact now."""
        return contact_pairs(self._data, self._geom_names)

    def wrong_object(self) -> bool:
        """Language-conditioned tasks: an object other than the named one was moved or touched."""
        if self._task.name != "pick_color":
            return False
        return wrong_object(self.contacts(), self.goal, self.object_poses(), self._placed)

    def approached(self) -> str | None:
        """pick_color: the cube a gripper came closest to this episode, once within
        :data:`.aloha_tasks.APPROACH_M`; None before that and in the other tasks. What the
        robot reached for, whether or not it grasped it (the paired test's finer measure)."""
        return nearest_approached(self.closest_approach_m)

    def success(self) -> bool:
        return self.reward() >= self._task.max_reward

    def close(self) -> None:
        """Free the rendering contexts."""
        self._cameras.close()

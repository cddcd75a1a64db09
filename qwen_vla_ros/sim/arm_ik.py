"""Inverse kinematics of one simulated ViperX arm for its tool centre point (pure core).

The tool centre point (TCP) sits between the finger tips, 0.1347 m along the gripper
link's x axis: where gym-aloha's end-effector scenes weld their mocap bodies (the weld's
``relpose``), so end-effector waypoints written for those scenes (ACT's scripted
policies) mean the same here. Orientation targets are given for the TCP frame, whose
identity is the left gripper pointing along +x with its fingers horizontal; the right arm's
TCP frame is turned 180 degrees about z (its gripper link faces the other way).

IK is damped least squares on MuJoCo's Jacobians over the six arm joints, warm-started from
the previous solution, on a scratch ``MjData`` so the simulation itself is never touched.
"""

from __future__ import annotations

import mujoco
import numpy as np

from .aloha_conventions import ARM_JOINTS

#: TCP position in the gripper link frame, m (from the weld relpose of the EE scenes).
TCP_OFFSET_M = np.array([0.1347, 0.0, -0.002])
#: Pull (per iteration) of forearm roll and wrist rotate toward 0 rad in the null space. Near
#: the wrist singularity (wrist angle 0: roll and rotate axes aligned) damped least squares
#: drifted into the flipped twin solution (roll and rotate both near +-pi): 8 of 24 pick_color,
#: 3 of 8 transfer_cube and 2 of 6 insertion demonstrations did, the rest kept roll within
#: +-0.9 rad, so neighbouring cube positions got joint paths 3 rad apart, which the demo policy
#: could not fit (it averaged them and hovered over the cube). With this pull: none flipped,
#: and every expert still solved the same seeds.
NULL_SPACE_GAIN = 1.0
#: Gripper-link orientation relative to the TCP frame, per side (w, x, y, z).
TCP_TO_LINK_QUAT = {"left": np.array([1.0, 0.0, 0.0, 0.0]), "right": np.array([0.0, 0.0, 0.0, 1.0])}


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros(4)
    mujoco.mju_mulQuat(out, np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    return out


def axis_angle_quat(axis, degrees: float) -> np.ndarray:
    """Quaternion (w, x, y, z) of a rotation by ``degrees`` about ``axis``."""
    out = np.zeros(4)
    mujoco.mju_axisAngle2Quat(out, np.asarray(axis, dtype=np.float64), np.deg2rad(degrees))
    return out


def normalized(quat: np.ndarray) -> np.ndarray:
    quat = np.asarray(quat, dtype=np.float64)
    return quat / np.linalg.norm(quat)


class ArmIK:
    """Joint angles (rad) that put one arm's TCP at a pose in the world frame."""

    def __init__(self, model: mujoco.MjModel, side: str, damping: float = 0.02, posture_weight: float = 0.01,
                 null_space_gain: float = NULL_SPACE_GAIN):
        """``posture_weight``: pull of forearm roll and wrist rotate toward 0 rad, traded against
        the pose error; ``null_space_gain``: the same pull where the pose leaves the joints free
        (see NULL_SPACE_GAIN); it keeps the wrist out of its flipped twin solution."""
        self.model, self.side, self.damping = model, side, damping
        self.twist_mask = np.array([0.0, 0.0, 0.0, 1.0, 0.0, 1.0])  # forearm roll, wrist rotate
        self.posture = np.diag(posture_weight * self.twist_mask)
        self.null_space_gain = null_space_gain
        self.data = mujoco.MjData(model)
        self.body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, f"vx300s_{side}/gripper_link")
        joints = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, f"vx300s_{side}/{n}") for n in ARM_JOINTS]
        self.qpos_index = model.jnt_qposadr[joints]
        self.dof_index = model.jnt_dofadr[joints]
        self.low, self.high = model.jnt_range[joints, 0], model.jnt_range[joints, 1]
        self._link_quat = TCP_TO_LINK_QUAT[side]

    def _set(self, joints: np.ndarray) -> None:
        self.data.qpos[self.qpos_index] = joints
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)

    def tcp_pose(self, joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position m, TCP quaternion) for the given arm joints, rad."""
        self._set(np.asarray(joints, dtype=np.float64))
        return self._tcp_now()

    def _tcp_now(self) -> tuple[np.ndarray, np.ndarray]:
        link_pos, link_quat = self.data.xpos[self.body], self.data.xquat[self.body]
        rotation = self.data.xmat[self.body].reshape(3, 3)
        conj = self._link_quat * np.array([1.0, -1.0, -1.0, -1.0])
        return link_pos + rotation @ TCP_OFFSET_M, quat_multiply(link_quat, conj)

    def solve(self, position, quat, initial: np.ndarray, iterations: int = 40, tolerance: float = 1e-4) -> np.ndarray:
        """Arm joints, rad, within joint limits, reaching the TCP pose as closely as possible."""
        target_pos = np.asarray(position, dtype=np.float64)
        target_link_quat = quat_multiply(normalized(quat), self._link_quat)
        joints = np.clip(np.asarray(initial, dtype=np.float64).copy(), self.low, self.high)
        jacp, jacr = np.zeros((3, self.model.nv)), np.zeros((3, self.model.nv))
        for _ in range(iterations):
            self._set(joints)
            tcp_pos, _ = self._tcp_now()
            error = np.zeros(6)
            error[:3] = target_pos - tcp_pos
            local = np.zeros(3)  # rotation still to go, in the link frame; the Jacobian is in the world's
            mujoco.mju_subQuat(local, target_link_quat, self.data.xquat[self.body])
            error[3:] = self.data.xmat[self.body].reshape(3, 3) @ local
            if np.linalg.norm(error[:3]) < tolerance and np.linalg.norm(error[3:]) < 10 * tolerance:
                break
            mujoco.mj_jac(self.model, self.data, jacp, jacr, tcp_pos, self.body)
            jac = np.vstack([jacp[:, self.dof_index], jacr[:, self.dof_index]])
            # Damped least squares with a posture term: min |J dq - e|^2 + |P (q + dq)|^2 + d^2 |dq|^2,
            # plus a pull of the twist joints toward 0 in the directions the task leaves free
            # (the null space, which opens up only near the wrist singularity).
            normal = jac.T @ jac + self.posture.T @ self.posture + self.damping**2 * np.eye(6)
            step = np.linalg.solve(normal, jac.T @ error - self.posture.T @ self.posture @ joints)
            if self.null_space_gain:
                free = np.eye(6) - np.linalg.solve(normal, jac.T @ jac)
                step += free @ (-self.null_space_gain * self.twist_mask * joints)
            joints = np.clip(joints + step, self.low, self.high)
        return joints

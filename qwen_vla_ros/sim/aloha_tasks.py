"""The two gym-aloha tasks: model file, object placement and staged reward.

Rewards follow gym-aloha's ``TransferCubeTask`` / ``InsertionTask`` (0 .. 4,
success at 4) with one deliberate difference: contact pairs are matched in
either order (MuJoCo does not promise which geom comes first), where gym-aloha
matches one order only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import mujoco
import numpy as np
from gym_aloha.constants import ASSETS_DIR
from gym_aloha.utils import sample_box_pose, sample_insertion_pose

from .errors import SimConfigError

LEFT_FINGER_GEOM = "vx300s_left/10_left_gripper_finger"
RIGHT_FINGER_GEOM = "vx300s_right/10_right_gripper_finger"
SOCKET_GEOMS = ("socket-1", "socket-2", "socket-3", "socket-4")

Contacts = set[frozenset[str]]


def _touch(contacts: Contacts, a: str, b: str) -> bool:
    return frozenset((a, b)) in contacts


def _touch_any(contacts: Contacts, group: tuple[str, ...], b: str) -> bool:
    return any(_touch(contacts, a, b) for a in group)


def transfer_cube_reward(contacts: Contacts) -> int:
    """1 right finger touches the cube, 2 lifted, 3 left touches, 4 handed over (lifted)."""
    touch_left = _touch(contacts, "red_box", LEFT_FINGER_GEOM)
    touch_right = _touch(contacts, "red_box", RIGHT_FINGER_GEOM)
    on_table = _touch(contacts, "red_box", "table")
    reward = 0
    if touch_right:
        reward = 1
    if touch_right and not on_table:
        reward = 2
    if touch_left:
        reward = 3
    if touch_left and not on_table:
        reward = 4
    return reward


def insertion_reward(contacts: Contacts) -> int:
    """1 both grippers touch, 2 both lifted, 3 peg touches socket in the air, 4 peg touches pin."""
    touch_left = _touch_any(contacts, SOCKET_GEOMS, LEFT_FINGER_GEOM)
    touch_right = _touch(contacts, "red_peg", RIGHT_FINGER_GEOM)
    peg_on_table = _touch(contacts, "red_peg", "table")
    socket_on_table = _touch_any(contacts, SOCKET_GEOMS, "table")
    peg_in_socket = _touch_any(contacts, SOCKET_GEOMS, "red_peg")
    lifted = not peg_on_table and not socket_on_table
    reward = 0
    if touch_left and touch_right:
        reward = 1
    if touch_left and touch_right and lifted:
        reward = 2
    if peg_in_socket and lifted:
        reward = 3
    if _touch(contacts, "red_peg", "pin"):
        reward = 4
    return reward


def _insertion_poses(seed: int | None) -> np.ndarray:
    return np.concatenate(sample_insertion_pose(seed))


@dataclass(frozen=True)
class AlohaTask:
    """A gym-aloha task: its MJCF file, how objects are placed and how it is scored."""

    name: str
    model_file: str
    #: seed -> free-joint poses of the objects, (7 * n_objects,): xyz m, quat wxyz.
    sample_object_poses: Callable[[int | None], np.ndarray]
    reward: Callable[[Contacts], int]
    max_reward: int = 4

    def load_model(self) -> mujoco.MjModel:
        return mujoco.MjModel.from_xml_path(str(ASSETS_DIR / self.model_file))


TASKS = {
    "transfer_cube": AlohaTask(
        "transfer_cube", "bimanual_viperx_transfer_cube.xml", sample_box_pose, transfer_cube_reward
    ),
    "insertion": AlohaTask(
        "insertion", "bimanual_viperx_insertion.xml", _insertion_poses, insertion_reward
    ),
}


def get_task(name: str) -> AlohaTask:
    if name not in TASKS:
        raise SimConfigError(f"unknown ALOHA task {name!r}; choose one of {sorted(TASKS)}")
    return TASKS[name]


def geom_names(model: mujoco.MjModel) -> list[str]:
    return [model.geom(i).name for i in range(model.ngeom)]


def contact_pairs(data: mujoco.MjData, names: list[str]) -> Contacts:
    """Names of the geom pairs in contact now, each as an unordered pair."""
    contacts = data.contact
    return {frozenset((names[a], names[b])) for a, b in zip(contacts.geom1, contacts.geom2, strict=True)}

"""The ALOHA tasks: model, object placement and staged reward.

``transfer_cube`` and ``insertion`` are gym-aloha's: rewards follow its
``TransferCubeTask`` / ``InsertionTask`` (0 .. 4, success at 4) with one deliberate
difference: contact pairs are matched in either order (MuJoCo does not promise which
geom comes first), where gym-aloha matches one order only.

``pick_color`` is language-conditioned: three cubes (red, green, blue) at random places
on gym-aloha's table; the instruction names one (the task's *goal*). Reward 1 when a
finger touches the named cube, 2 when it is lifted off the table while the other cubes
stay on it (success). Lifting or moving another cube is a wrong-object episode.
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


# -- pick_color ------------------------------------------------------------------------------
CUBE_COLORS = ("red", "green", "blue")
_CUBE_RGBA = {"red": (0.9, 0.1, 0.1, 1.0), "green": (0.1, 0.75, 0.15, 1.0), "blue": (0.1, 0.25, 0.95, 1.0)}
#: Where pick_color cubes are placed (m, table frame of gym-aloha) and how far apart at least.
PICK_COLOR_X_RANGE = (-0.16, 0.16)
PICK_COLOR_Y_RANGE = (0.42, 0.6)
PICK_COLOR_MIN_SPACING_M = 0.12


def cube_geom(color: str) -> str:
    """Geom name of a pick_color cube (the red one keeps gym-aloha's name)."""
    return f"{color}_box"


def sample_pick_color(seed: int | None) -> tuple[np.ndarray, str]:
    """Free-joint poses of the three cubes (red, green, blue order) and the goal colour."""
    rng = np.random.RandomState(seed)
    while True:
        xy = np.column_stack([rng.uniform(*PICK_COLOR_X_RANGE, 3), rng.uniform(*PICK_COLOR_Y_RANGE, 3)])
        gaps = [np.linalg.norm(xy[i] - xy[j]) for i in range(3) for j in range(i + 1, 3)]
        if min(gaps) >= PICK_COLOR_MIN_SPACING_M:
            break
    goal = CUBE_COLORS[int(rng.randint(len(CUBE_COLORS)))]
    poses = [np.concatenate([p, [0.05], [1.0, 0.0, 0.0, 0.0]]) for p in xy]
    return np.concatenate(poses), goal


def _pick_color_model() -> mujoco.MjModel:
    """gym-aloha's transfer-cube scene with a green and a blue cube beside the red one."""
    spec = mujoco.MjSpec.from_file(str(ASSETS_DIR / "bimanual_viperx_transfer_cube.xml"))
    red = spec.body("box")
    template = red.geoms[0]
    for color in CUBE_COLORS[1:]:
        body = spec.worldbody.add_body(name=f"box_{color}", pos=[0.0, 0.5, 0.05])
        body.mass, body.inertia, body.explicitinertial = red.mass, red.inertia, True
        body.ipos, body.iquat = [0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]  # centre of mass at the centre
        # The same dry friction on the free joint as the red cube's: it keeps gym-aloha's
        # stiff, bouncy box contacts (solimp 2 1 0.01) from making a cube hop off the table.
        joint = body.add_freejoint(name=f"{color}_box_joint")
        joint.frictionloss = red.joints[0].frictionloss
        body.add_geom(
            name=cube_geom(color), type=mujoco.mjtGeom.mjGEOM_BOX, size=template.size,
            condim=template.condim, solimp=template.solimp, solref=template.solref,
            friction=template.friction, rgba=_CUBE_RGBA[color],
        )
    template.rgba = _CUBE_RGBA["red"]
    for key in list(spec.keys):  # the file's keyframe has one cube's qpos only
        spec.delete(key)
    return spec.compile()


#: A cube counts as moved when it is this far (m) from where it was placed, or as lifted when
#: its centre is this high, m (cubes are placed 0.05 m up and settle at 0.02 m).
MOVED_M, LIFTED_Z_M = 0.03, 0.07


def pick_color_reward(contacts: Contacts, goal: str, poses: dict[str, np.ndarray]) -> int:
    """1 a finger touches the named cube; 2 it is lifted -- a finger on it and its centre at
    least :data:`LIFTED_Z_M` high -- and every other cube is on the table.

    ``poses``: cube body name -> pose now (xyz m first). Lifted is judged by height, not by
    the lost table contact of gym-aloha's tasks: a finger squeezing a cube at rest breaks its
    table contact for a step (the scripted expert's first touch on seed 0 did, the cube's
    centre at 0.0200 m), and that counted as lifted until 2026-12-01.
    """
    fingers = (LEFT_FINGER_GEOM, RIGHT_FINGER_GEOM)
    touched = _touch_any(contacts, fingers, cube_geom(goal))
    others_down = all(_touch(contacts, cube_geom(c), "table") for c in CUBE_COLORS if c != goal)
    lifted = touched and poses[cube_body(goal)][2] >= LIFTED_Z_M
    if lifted and others_down:
        return 2
    return 1 if touched else 0


def wrong_object(contacts: Contacts, goal: str, poses: dict[str, np.ndarray], placed: dict[str, np.ndarray]) -> bool:
    """A cube other than the named one is touched by a finger, pushed or lifted.

    ``poses``/``placed``: cube body name -> pose now / as placed at reset (xyz m first).
    """
    fingers = (LEFT_FINGER_GEOM, RIGHT_FINGER_GEOM)
    for color in CUBE_COLORS:
        if color == goal:
            continue
        body = cube_body(color)
        moved = np.linalg.norm(poses[body][:2] - placed[body][:2]) > MOVED_M or poses[body][2] > LIFTED_Z_M
        if moved or _touch_any(contacts, fingers, cube_geom(color)):
            return True
    return False


#: A cube counts as approached when a gripper's grasp point (between its two fingers' geom
#: frames, at the finger bases) came this close to the cube's centre, m: reached for, grasped
#: or not. The experts' grasps put it 0.055-0.058 m from the cube (seeds 4, 5, 9); the other
#: cubes stayed 0.13 m or more away.
APPROACH_M = 0.08


def nearest_approached(closest_m: dict[str, float], within_m: float = APPROACH_M) -> str | None:
    """The goal whose object a gripper came closest to, if within ``within_m`` (m), else None.

    ``closest_m``: goal -> the smallest gripper-to-object distance this episode, m.
    """
    if not closest_m:
        return None
    goal, distance = min(closest_m.items(), key=lambda item: item[1])
    return goal if distance <= within_m else None


def cube_body(color: str) -> str:
    """Body name of a pick_color cube (the red one keeps gym-aloha's ``box``)."""
    return "box" if color == "red" else f"box_{color}"


@dataclass(frozen=True)
class AlohaTask:
    """An ALOHA task: its MuJoCo model, how objects are placed and how it is scored.

    Attributes:
        objects: names of the free-joint bodies, in qpos order.
        sample: seed -> (free-joint poses (7 * n_objects,): xyz m, quat wxyz; goal or None).
        reward: (contacts, goal, object poses) -> staged reward 0 .. max_reward.
        goals: what an instruction may name (language-conditioned tasks); empty otherwise.
    """

    name: str
    build_model: Callable[[], mujoco.MjModel]
    objects: tuple[str, ...]
    sample: Callable[[int | None], tuple[np.ndarray, str | None]]
    reward: Callable[[Contacts, str | None, dict[str, np.ndarray]], int]
    max_reward: int = 4
    goals: tuple[str, ...] = ()

    def load_model(self) -> mujoco.MjModel:
        return self.build_model()

    def object_poses(self, model: mujoco.MjModel, data: mujoco.MjData) -> dict[str, np.ndarray]:
        """Body name -> its free-joint pose now (xyz m, quat wxyz)."""
        poses = {}
        for name in self.objects:
            joint = model.body(name).jntadr[0]
            start = model.jnt_qposadr[joint]
            poses[name] = data.qpos[start : start + 7].copy()
        return poses


def _gym_aloha_model(file_name: str) -> Callable[[], mujoco.MjModel]:
    return lambda: mujoco.MjModel.from_xml_path(str(ASSETS_DIR / file_name))


TASKS = {
    "transfer_cube": AlohaTask(
        "transfer_cube", _gym_aloha_model("bimanual_viperx_transfer_cube.xml"), ("box",),
        lambda seed: (sample_box_pose(seed), None), lambda contacts, _goal, _poses: transfer_cube_reward(contacts),
    ),
    "insertion": AlohaTask(
        "insertion", _gym_aloha_model("bimanual_viperx_insertion.xml"), ("peg", "socket"),
        lambda seed: (_insertion_poses(seed), None), lambda contacts, _goal, _poses: insertion_reward(contacts),
    ),
    "pick_color": AlohaTask(
        "pick_color", _pick_color_model, ("box", "box_green", "box_blue"),
        sample_pick_color, pick_color_reward, max_reward=2, goals=CUBE_COLORS,
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

"""A tiny navigation world for the ``mobile_base`` embodiment.

A checkered floor, a few coloured boxes and a green goal disc, built from an
MJCF string; the robot is a mocap body carrying the ``front`` camera and is
moved by a :class:`KinematicBase` (no dynamics: the base passes through boxes,
and :meth:`MobileBaseSim.in_collision` reports when its footprint overlaps one).

Two tasks:

* ``goal_disc``: reach the green disc (fixed boxes, fixed goal).
* ``drive_to_color``: language-conditioned. Each episode seed places the red, blue and
  yellow boxes ahead of the robot (1.4 to 2.6 m away, inside the camera's view) and picks
  the goal colour; the instruction names a box ("drive to the red box"). Success: the
  base stops within ``REACH_MARGIN_M`` of the named box's side without ever touching a box.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import mujoco
import numpy as np

from .errors import SimConfigError
from .goals import goal_from_instruction
from .kinematic_base import BaseLimits, KinematicBase
from .renderer import OffscreenCameras, SimCamera

BASE_RADIUS_M = 0.25
FRONT_CAMERA_TILT_RAD = 0.2  # looks slightly down, so the floor ahead is in view
NAV_TASKS = ("drive_to_color", "goal_disc")
BOX_COLORS = ("red", "blue", "yellow")
#: drive_to_color: success when the gap between base and named box is at most this, m.
REACH_MARGIN_M = 0.25
#: Below this forward speed the base counts as stopped (m/s).
STOPPED_M_S = 0.05
#: drive_to_color placement: distance (m) and bearing (rad) of the boxes from the start pose.
BOX_DISTANCE_RANGE_M = (1.4, 2.6)
BOX_BEARING_RANGE_RAD = (-0.55, 0.55)
MIN_BEARING_GAP_RAD = 0.42


@dataclass(frozen=True)
class Obstacle:
    """A box standing on the floor: centre (m), half side (m), colour RGBA (0..1)."""

    name: str
    x: float
    y: float
    half_size: float = 0.2
    rgba: tuple[float, float, float, float] = (0.8, 0.1, 0.1, 1.0)


DEFAULT_OBSTACLES = (
    Obstacle("red_box", 1.4, 0.8, 0.2, (0.85, 0.15, 0.1, 1.0)),
    Obstacle("blue_box", 1.8, -0.9, 0.25, (0.1, 0.3, 0.85, 1.0)),
    Obstacle("yellow_box", 3.6, 0.4, 0.3, (0.9, 0.8, 0.1, 1.0)),
)


def sample_box_layout(
    seed: int, count: int = len(BOX_COLORS), start_pose: tuple[float, float, float] = (0.0, 0.0, 0.0)
) -> tuple[list[tuple[float, float]], str]:
    """drive_to_color: box centres (x, y m, odom frame) ahead of the start pose, and the goal."""
    rng = np.random.RandomState(seed)
    while True:
        bearings = rng.uniform(*BOX_BEARING_RANGE_RAD, count)
        if np.diff(np.sort(bearings)).min() >= MIN_BEARING_GAP_RAD:
            break
    distances = rng.uniform(*BOX_DISTANCE_RANGE_M, count)
    x0, y0, yaw0 = start_pose
    centres = [(x0 + d * math.cos(yaw0 + b), y0 + d * math.sin(yaw0 + b)) for b, d in zip(bearings, distances, strict=True)]
    return centres, BOX_COLORS[int(rng.randint(len(BOX_COLORS)))]


def scene_mjcf(goal_xy: tuple[float, float], goal_radius: float,
               obstacles: Sequence[Obstacle]) -> str:
    """MJCF text of the navigation world."""
    boxes = "\n".join(
        f'<geom name="{o.name}" type="box" pos="{o.x} {o.y} {o.half_size}" '
        f'size="{o.half_size} {o.half_size} {o.half_size}" rgba="{" ".join(map(str, o.rgba))}"/>'
        for o in obstacles
    )
    tilt = FRONT_CAMERA_TILT_RAD
    return f"""
<mujoco model="mobile_base_scene">
  <visual>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.4 0.4 0.4"/>
    <quality shadowsize="0" offsamples="0"/>
  </visual>
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1="0.3 0.3 0.33" rgb2="0.55 0.55 0.58"
             width="256" height="256"/>
    <material name="floor" texture="grid" texrepeat="10 10"/>
    <texture name="sky" type="skybox" builtin="gradient" rgb1="0.6 0.75 0.9" rgb2="0.95 0.95 1"
             width="64" height="64"/>
  </asset>
  <worldbody>
    <light directional="true" pos="0 0 5" dir="0.3 0.2 -1" diffuse="0.5 0.5 0.5"/>
    <geom name="floor" type="plane" size="10 10 0.1" material="floor"/>
    {boxes}
    <geom name="goal" type="cylinder" pos="{goal_xy[0]} {goal_xy[1]} 0.003"
          size="{goal_radius} 0.003" rgba="0.1 0.8 0.2 1" contype="0" conaffinity="0"/>
    <body name="base" mocap="true">
      <geom type="cylinder" size="{BASE_RADIUS_M} 0.1" pos="0 0 0.12" rgba="0.15 0.15 0.15 1"
            contype="0" conaffinity="0"/>
      <camera name="front" pos="0.2 0 0.5" fovy="70"
              xyaxes="0 -1 0 {math.sin(tilt):.6f} 0 {math.cos(tilt):.6f}"/>
    </body>
  </worldbody>
</mujoco>
"""


class MobileBaseSim:
    """A kinematic base in a small world with a front camera and a goal region.

    Args:
        goal_xy: goal centre in the odom frame, m; ``goal_radius`` m.
        obstacles: boxes to place; default three coloured boxes.
        cameras: embodiment camera name -> :class:`SimCamera`; the scene has one
            MuJoCo camera, ``front``, mounted 0.5 m up, looking forward.
        limits, command_timeout_s: see :class:`KinematicBase`.
        start_pose: (x m, y m, yaw rad) after each reset.
    """

    def __init__(
        self,
        goal_xy: tuple[float, float] = (3.0, 0.0),
        goal_radius: float = 0.3,
        obstacles: Sequence[Obstacle] = DEFAULT_OBSTACLES,
        cameras: Mapping[str, SimCamera | tuple[str, int, int]] | None = None,
        limits: BaseLimits | None = None,
        start_pose: tuple[float, float, float] = (0.0, 0.0, 0.0),
        command_timeout_s: float | None = 0.5,
        render_quality: str = "fast",
        task: str = "goal_disc",
    ) -> None:
        if not goal_radius > 0:
            raise SimConfigError(f"goal_radius must be positive, got {goal_radius} m")
        if task not in NAV_TASKS:
            raise SimConfigError(f"unknown navigation task {task!r}; choose one of {NAV_TASKS}")
        self.task = task
        self.goal_xy = (float(goal_xy[0]), float(goal_xy[1]))
        self.goal_radius = float(goal_radius)
        self.obstacles = tuple(obstacles)
        self._model = mujoco.MjModel.from_xml_string(
            scene_mjcf(self.goal_xy, self.goal_radius, self.obstacles)
        )
        self._data = mujoco.MjData(self._model)
        self._cameras = OffscreenCameras(
            self._model, {"front": SimCamera("front")} if cameras is None else cameras,
            render_quality,
        )
        self._start_pose = start_pose
        self.base = KinematicBase(limits, start_pose, command_timeout_s)
        self.goal: str | None = None
        self.collided = False
        self.stopped_at: str | None = None
        self.episode_seed = 0
        if task == "drive_to_color":
            self._model.geom("goal").rgba[3] = 0.0  # the disc is not part of this task
            self.place_boxes(0)

    @classmethod
    def from_embodiment(cls, embodiment, render_size: tuple[int, int] | None = None, **kwargs) -> MobileBaseSim:
        """Camera sizes and base limits from an embodiment (its cameras all view ``front``);
        ``render_size`` (height, width px) overrides the model's image size."""
        cameras = {c.name: SimCamera("front", *(render_size or c.image_size)) for c in embodiment.cameras}
        return cls(cameras=cameras, limits=BaseLimits.from_embodiment(embodiment), **kwargs)

    def reset(self, pose: tuple[float, float, float] | None = None, seed: int | None = None) -> None:
        """Put the base back at rest at ``pose`` (default: the start pose); with a ``seed``,
        ``drive_to_color`` places its boxes and picks its goal from it."""
        self.base.reset(self._start_pose if pose is None else pose)
        self.collided = False
        self.stopped_at = None  # colour of the box the base last stopped beside
        self._note_stop()
        if seed is not None and self.task == "drive_to_color":
            self.place_boxes(seed)

    def place_boxes(self, seed: int) -> None:
        """Seeded box places and goal colour of ``drive_to_color``."""
        layout, self.goal = sample_box_layout(seed, len(self.obstacles), self._start_pose)
        moved = []
        for box, (x, y) in zip(self.obstacles, layout, strict=True):
            self._model.geom(box.name).pos[:2] = (x, y)
            moved.append(Obstacle(box.name, x, y, box.half_size, box.rgba))
        self.obstacles = tuple(moved)
        self.episode_seed = int(seed)

    @property
    def goals(self) -> tuple[str, ...]:
        return BOX_COLORS if self.task == "drive_to_color" else ()

    def set_goal(self, goal: str) -> None:
        if goal not in self.goals:
            raise SimConfigError(f"task {self.task!r} has goals {self.goals}, not {goal!r}")
        self.goal = goal

    def set_instruction(self, text: str) -> str | None:
        """Score against the box colour the instruction names (if exactly one); returns it."""
        goal = goal_from_instruction(text, self.goals)
        if goal is not None:
            self.goal = goal
        return goal

    def box(self, color: str) -> Obstacle:
        return next(b for b in self.obstacles if b.name == f"{color}_box")

    def gap_to(self, box: Obstacle) -> float:
        """Distance between the base footprint and a box's footprint, m (negative: overlap)."""
        x, y, _ = self.base.pose
        dx = max(abs(x - box.x) - box.half_size, 0.0)
        dy = max(abs(y - box.y) - box.half_size, 0.0)
        return math.hypot(dx, dy) - BASE_RADIUS_M

    def set_cmd_vel(self, linear: float, angular: float) -> None:
        """Forward m/s and turn rad/s, as on cmd_vel."""
        self.base.set_cmd_vel(linear, angular)

    def step(self, dt: float) -> None:
        """Advance ``dt`` seconds of simulated time (a touch of any box is remembered)."""
        self.base.step(dt)
        self.collided = self.collided or self.in_collision()
        self._note_stop()

    def _note_stop(self) -> None:
        """Remember the box the base is stopped beside (below STOPPED_M_S, within REACH_MARGIN_M)."""
        box = self._box_within_reach()
        if box is not None and abs(self.base.twist[0]) < STOPPED_M_S:
            self.stopped_at = box

    @property
    def sim_time(self) -> float:
        return self.base.sim_time

    @property
    def pose(self) -> tuple[float, float, float]:
        return self.base.pose

    @property
    def twist(self) -> tuple[float, float]:
        return self.base.twist

    @property
    def camera_names(self) -> list[str]:
        return self._cameras.names

    def render(self, camera_name: str = "front") -> np.ndarray:
        """The camera's view from the current base pose: (height, width, 3) uint8 RGB."""
        self._place_camera()
        return self._cameras.render(self._data, camera_name)

    def image_point(self, camera_name: str, world_xyz) -> tuple[float, float]:
        """Where a world point (m) appears in the camera's image from the current base pose,
        normalised (0 left/top .. 1 right/bottom; see :meth:`OffscreenCameras.image_point`)."""
        self._place_camera()
        return self._cameras.image_point(self._data, camera_name, world_xyz)

    def box_centre(self, color: str) -> tuple[float, float, float]:
        """Centre of the ``color`` box in the odom frame (x, y, z m; it stands on the floor)."""
        box = self.box(color)
        return box.x, box.y, box.half_size

    def _place_camera(self) -> None:
        """Move the camera's body to the base pose (the base is kinematic, MuJoCo only renders)."""
        x, y, yaw = self.base.pose
        self._data.mocap_pos[0] = (x, y, 0.0)
        self._data.mocap_quat[0] = (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))
        mujoco.mj_kinematics(self._model, self._data)
        mujoco.mj_camlight(self._model, self._data)

    def distance_to_goal(self) -> float:
        """Distance from the base centre to the goal (disc centre, or named box's side), m."""
        if self.task == "drive_to_color":
            return max(self.gap_to(self.box(self.goal)), 0.0)
        x, y, _ = self.base.pose
        return math.hypot(x - self.goal_xy[0], y - self.goal_xy[1])

    def success(self) -> bool:
        """goal_disc: the base centre is inside the disc. drive_to_color: the base is within
        REACH_MARGIN_M of the named box and has touched no box this episode."""
        if self.task == "drive_to_color":
            return not self.collided and self.gap_to(self.box(self.goal)) <= REACH_MARGIN_M
        return self.distance_to_goal() <= self.goal_radius

    def wrong_object(self) -> bool:
        """drive_to_color: the base has stopped (below STOPPED_M_S) within REACH_MARGIN_M of a box
        it was not sent to, away from the named one (passing a box on the way is fine)."""
        if self.task != "drive_to_color" or abs(self.base.twist[0]) >= STOPPED_M_S:
            return False
        at_goal = self.gap_to(self.box(self.goal)) <= REACH_MARGIN_M
        return not at_goal and any(
            self.gap_to(b) <= REACH_MARGIN_M for b in self.obstacles if b.name != f"{self.goal}_box"
        )

    def approached(self) -> str | None:
        """drive_to_color: the colour of the box the base last stopped beside this episode
        (below STOPPED_M_S within REACH_MARGIN_M of it), else None: the box it went to, even
        if it drove on afterwards (passing a box does not count)."""
        return self.stopped_at if self.task == "drive_to_color" else None

    def _box_within_reach(self) -> str | None:
        """Colour of the nearest box within REACH_MARGIN_M of the base, else None."""
        if self.task != "drive_to_color":
            return None
        gap, name = min((self.gap_to(b), b.name) for b in self.obstacles)
        return name.removesuffix("_box") if gap <= REACH_MARGIN_M else None

    def in_collision(self) -> bool:
        """True if the base footprint (a 0.25 m disc) overlaps an obstacle's footprint."""
        return any(self.gap_to(box) < 0.0 for box in self.obstacles)

    def close(self) -> None:
        self._cameras.close()

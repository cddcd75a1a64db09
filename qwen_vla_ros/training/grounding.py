"""Grounding scenes: simulated views with the image position of the object the instruction names.

Why: the demo policy learnt to ignore its images. The key-pose head regressed the grasp
joints from the scene and stayed at chance on which arm to use, and so did every probe that
regressed the named cube's place through a soft-argmax over image tokens (docs/training.md,
"Stage 5"). Asked instead *which image token* holds the named cube (cross-entropy over the
7x7 overhead tokens), the same randomly initialised vision tower found it in 94 % of held-out
scenes after 100 steps. This module makes that target from the simulator's ground truth, as
much of it as training wants: a scene renders in milliseconds, a demonstration takes seconds.

:class:`GroundingScenes` resets a simulated ALOHA task (seeds below the evaluation seeds),
puts the arms where the task's scripted expert has them at a random step before its first
grasp (the objects have not moved yet), renders every camera as the policy sees it, and
projects the named object into one camera's image. :class:`BaseGroundingScenes` does the same
for the mobile base's ``drive_to_color``: the base where the expert has driven it at a random
step before it stops, the named box in the front camera, and as key pose the place where the
expert stops. :func:`grounding_scenes` picks the class by task. :func:`scene_grounding_loss`
is a stage-``cpt`` ``image_text`` hook (training/hooks.py): cross-entropy of the decoder's grounding pointer
(``DiTConfig.grounding``, model/dit.py KeyPoseHead) on the token that holds that point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..data.chunks import pose_steps, waypoint_slices
from ..data.keyframes import gripper_slices, key_pose, keyframes
from ..demonstrations import EVAL_SEED_START, drive_expert_episode, instruction_for
from ..embodiment import Embodiment, load_embodiment
from ..model.losses import key_pose_loss
from ..model.token_grid import nearest_image_tokens
from ..sim.aloha_conventions import SIDES
from ..sim.aloha_tasks import cube_body
from ..types import Observation
from .errors import TrainingError
from .sim_env import AlohaSimEnv

#: ALOHA tasks whose instruction names one object, and that object's body (by the episode's goal).
NAMED_OBJECTS = {
    "pick_color": cube_body,
    "transfer_cube": lambda goal: "box",
}
#: Mobile-base tasks whose instruction names one object (a box, by the episode's goal colour).
BASE_NAMED_OBJECTS = ("drive_to_color",)
#: The camera each robot's scenes point in by default: the one that sees every object.
SCENE_CAMERAS = {"pick_color": "cam_high", "transfer_cube": "cam_high", "drive_to_color": "front"}
#: Seeds of grounding scenes: apart from the demonstrations' first thousand and the evaluation's.
SCENE_SEEDS = (1_000, EVAL_SEED_START)
#: Expert steps past the first grasp's start within which its gripper has closed.
GRASP_CLOSING_STEPS = 60


@dataclass(frozen=True)
class GroundingScene:
    """One view and where the named object is in it.

    Attributes:
        observation: what the policy gets (every camera of the embodiment, state, instruction).
        camera: the embodiment camera the point refers to.
        image_xy: the object's centre in that image, normalised (0 left/top .. 1 right/bottom).
        goal: what the instruction names (the cube's or box's colour; None: the task's one object).
        seed: the scene's seed (object placement, goal, phrasing).
        frame: the expert's control step the robot is at (0: the start pose).
        key_pose: the key pose a demonstration has at this frame (rig units, the embodiment's
            layout): ALOHA, the action at the expert's first grasp; the base, where it stops
            (x, y m, yaw rad in the robot frame at this frame); None unless asked for.
    """

    observation: Observation
    camera: str
    image_xy: tuple[float, float]
    goal: str | None
    seed: int
    frame: int = 0
    key_pose: np.ndarray | None = None


class _ScenePool:
    """What every source of grounding scenes shares: settings, seeds and the scene pool.

    Args:
        embodiment: the embodiment whose cameras are rendered (``aloha_sim``, ``mobile_base``).
        task: the task, one that names one object (see :func:`grounding_scenes`).
        camera: the embodiment camera to point in (default :data:`SCENE_CAMERAS`: the one
            that sees every object).
        approach_fraction: share of scenes with the robot on its way (the arms to the first
            grasp, the base to its stop); the rest at the start pose, where an episode begins.
        seed: seeds the choice of scene seeds and poses.
        seeds: [low, high) of the scenes' seeds; default apart from demonstrations and
            evaluation (use ``(EVAL_SEED_START, ...)`` for held-out scenes).
        key_poses: also give each scene its key pose (ALOHA: costs the expert's IK up to its
            grasp, about 0.3 s a scene on one core, against 25 ms to render one).
        pool_size: 0 = every scene is new; N > 0 = the first N scenes are kept and, once there
            are N, batches draw from them at random (a run of thousands of steps then pays
            for N scenes' IK, not for four per step).
    """

    tasks: tuple[str, ...] = ()

    def __init__(self, embodiment: Embodiment, task: str, camera: str | None = None,
                 approach_fraction: float = 0.5, seed: int = 0, seeds: tuple[int, int] = SCENE_SEEDS,
                 key_poses: bool = False, pool_size: int = 0):
        if pool_size < 0:
            raise TrainingError(f"pool_size must be >= 0, got {pool_size}")
        if task not in self.tasks:
            raise TrainingError(f"{type(self).__name__} need a task that names one object: "
                                f"{sorted(self.tasks)}, not {task!r}")
        camera = camera or SCENE_CAMERAS[task]
        if camera not in embodiment.camera_names:
            raise TrainingError(f"camera {camera!r} is not one of {embodiment.name}'s: {embodiment.camera_names}")
        self.embodiment, self.task, self.camera = embodiment, task, camera
        self.approach_fraction = float(approach_fraction)
        self._rng = np.random.default_rng(seed)
        self.seeds = (int(seeds[0]), int(seeds[1]))
        self.key_poses = bool(key_poses)
        self.pool_size, self._pool = int(pool_size), []

    def sample(self) -> GroundingScene:
        raise NotImplementedError

    def batch(self, size: int) -> list[GroundingScene]:
        """``size`` scenes: new ones, or from the pool once it is full (see ``pool_size``)."""
        return [self._next() for _ in range(size)]

    def _next(self) -> GroundingScene:
        if not self.pool_size:
            return self.sample()
        if len(self._pool) < self.pool_size:
            self._pool.append(self.sample())
            return self._pool[-1]
        return self._pool[int(self._rng.integers(len(self._pool)))]


class GroundingScenes(_ScenePool):
    """Random views of a simulated ALOHA task with the named object's image position
    (arguments: :class:`_ScenePool`; ``task`` a key of :data:`NAMED_OBJECTS`)."""

    tasks = tuple(NAMED_OBJECTS)

    def __init__(self, embodiment: Embodiment, task: str = "pick_color", camera: str | None = None, **settings):
        from ..sim.experts import expert_for  # MuJoCo only where scenes are wanted

        super().__init__(embodiment, task, camera, **settings)
        self.env = AlohaSimEnv(embodiment, task, instruction="")
        self.expert = expert_for(task)

    def sample(self) -> GroundingScene:
        seed = int(self._rng.integers(*self.seeds))
        self.env.reset(seed)
        sim = self.env.sim
        self.expert.reset(sim)
        grasp = self.expert.grasp_step()
        frame = int(self._rng.integers(1, grasp + 1)) if self._rng.random() < self.approach_fraction else 0
        # The expert's commands up to its first grasp closing: the arms' pose at `frame` and the
        # key pose (data/keyframes.py) a demonstration of this scene would have there.
        steps = max(frame, grasp + GRASP_CLOSING_STEPS) if self.key_poses else frame
        actions = np.array([self.expert.action() for _ in range(steps)])
        if frame:
            for side, command in zip(SIDES, np.split(actions[frame - 1], len(SIDES)), strict=True):
                sim.place_arm(side, command[:6], float(command[6]))  # 6 joints (rad), opening
        body = NAMED_OBJECTS[self.task](sim.goal)
        observation = self.env.observe()
        observation.instruction = instruction_for(self.task, sim.goal, seed)
        point = sim.image_point(self.camera, sim.object_poses()[body][:3])
        return GroundingScene(observation, self.camera, point, sim.goal, seed, frame, self._key_pose(actions, frame))

    def _key_pose(self, actions: np.ndarray, frame: int) -> np.ndarray | None:
        if not self.key_poses:
            return None
        frames = keyframes(actions, gripper_slices(self.embodiment))
        frames = frames[frames < len(actions) - 1]  # the window's end is not the episode's
        if not len(frames) or frames[-1] < frame:
            raise TrainingError(f"{self.task}: no grasp within {len(actions)} expert steps")
        return key_pose(actions, frame, frames)

    def close(self) -> None:
        """Free the simulator's rendering contexts."""
        self.env.close()


class BaseGroundingScenes(_ScenePool):
    """Random views of the mobile base's ``drive_to_color`` with the named box's image position
    (arguments: :class:`_ScenePool`). The base stands where the scripted expert has driven it
    at a random step before it stops, with the named box in view; the key pose is where the
    expert stops, in the robot frame of that step, as a demonstration's frame has it."""

    tasks = BASE_NAMED_OBJECTS

    def __init__(self, embodiment: Embodiment, task: str = "drive_to_color", camera: str | None = None, **settings):
        from ..sim.rig import RIG_FRAME_SIZE, SimRig  # MuJoCo only where scenes are wanted

        super().__init__(embodiment, task, camera, **settings)
        self.rig = SimRig(embodiment, task=task, render_size=RIG_FRAME_SIZE)  # rendered as collect does
        self._waypoints = waypoint_slices(embodiment)
        if not self._waypoints:
            raise TrainingError(f"{task} scenes need a waypoint base embodiment, {embodiment.name} is not one")

    def sample(self) -> GroundingScene:
        seed = int(self._rng.integers(*self.seeds))
        poses, world = self._expert_drive(seed), self.rig.world
        centre = world.box_centre(world.goal)
        frame = 0
        if self._rng.random() < self.approach_fraction:
            moving = int(np.flatnonzero(np.abs(np.diff(poses, axis=0)).sum(axis=1) > 1e-9).max(initial=0))
            frame = int(self._rng.integers(1, moving + 1)) if moving else 0
        world.reset(pose=tuple(poses[frame]))  # the boxes stay where the seed placed them
        point = world.image_point(self.camera, centre)
        if not all(0.0 <= v <= 1.0 for v in point):  # too close to see its centre: the start view
            frame = 0
            world.reset(pose=tuple(poses[0]))
            point = world.image_point(self.camera, centre)
        observation = Observation(
            images={c: self.rig.camera_view(c) for c in self.embodiment.camera_names},
            state=np.zeros(self.embodiment.state_dim),  # waypoint groups have no measured state
            instruction=instruction_for(self.task, world.goal, seed), stamp=0.0,
        )
        steps = pose_steps(poses)
        pose = key_pose(steps, frame, keyframes(steps, ()), self._waypoints) if self.key_poses else None
        return GroundingScene(observation, self.camera, point, world.goal, seed, frame, pose)

    def _expert_drive(self, seed: int) -> np.ndarray:
        """The base's poses (T + 1, 3: x, y m, yaw rad) over the expert's whole episode of ``seed``."""
        return drive_expert_episode(self.rig, seed)[0]

    def close(self) -> None:
        self.rig.close()


def grounding_scenes(embodiment: Embodiment, task: str, **settings) -> _ScenePool:
    """The scene source of ``task``: :class:`GroundingScenes` for the ALOHA tasks of
    :data:`NAMED_OBJECTS`, :class:`BaseGroundingScenes` for :data:`BASE_NAMED_OBJECTS`."""
    if task in BASE_NAMED_OBJECTS:
        return BaseGroundingScenes(embodiment, task, **settings)
    return GroundingScenes(embodiment, task, **settings)


def _point(policy, scenes: list[GroundingScene], embodiment: Embodiment):
    """Prepared inputs, backbone features, pointer logits (B, L) and target tokens (B,)."""
    prepared = policy.prepare_observations([s.observation for s in scenes], embodiment)
    features = policy.backbone(prepared.inputs)
    logits = policy.decoder.point(features.features, features.mask, features.token_grid)
    cameras = torch.tensor([embodiment.camera_names.index(s.camera) for s in scenes])
    points = torch.tensor([s.image_xy for s in scenes], dtype=torch.float32)
    return prepared, features, logits, nearest_image_tokens(features.token_grid, cameras, points)


def grounding_loss(policy, scenes: list[GroundingScene], embodiment: Embodiment, key_pose_weight: float = 1.0) -> torch.Tensor:
    """Cross-entropy of the decoder's grounding pointer on the token holding each scene's point,
    plus ``key_pose_weight`` times the key-pose loss (model/losses.py) where scenes have key poses."""
    prepared, features, logits, targets = _point(policy, scenes, embodiment)
    loss = F.cross_entropy(logits.float(), targets.to(logits.device))
    if key_pose_weight > 0 and all(s.key_pose is not None for s in scenes):
        _, _, predicted = policy.decoder.condition(features.features, features.mask, prepared.dim_mask,
                                                   features.token_grid)
        batch = {"subgoal": np.stack([s.key_pose for s in scenes])}
        loss = loss + key_pose_weight * key_pose_loss(policy, predicted, batch, [embodiment] * len(scenes),
                                                      prepared.dim_mask)
    return loss


def pointer_accuracy(policy, scenes: list[GroundingScene], embodiment: Embodiment) -> dict[str, float]:
    """Share of scenes whose pointer peaks on the named object's token (``hit``) or on a
    token next to it (``near``: same camera, at most one patch away in each direction)."""
    with torch.inference_mode():
        _, features, logits, targets = _point(policy, scenes, embodiment)
    peaks, grid = logits.argmax(dim=-1), features.token_grid
    near = [_adjacent(grid[row], int(target), int(peak)) for row, (target, peak) in enumerate(zip(targets, peaks, strict=True))]
    return {"hit": float((peaks == targets).float().mean()), "near": float(np.mean(near))}


def _adjacent(grid: torch.Tensor, target: int, peak: int) -> bool:
    """Token ``peak`` is ``target`` or one patch from it in the same image (grid: (L, F))."""
    if grid[peak, 0] <= 0 or not torch.equal(grid[peak, 3:], grid[target, 3:]):
        return False
    of_camera = (grid[:, 0] > 0) & (grid[:, 3:] == grid[target, 3:]).all(dim=-1)
    patch = [float(torch.unique(grid[of_camera, axis]).diff().min()) for axis in (1, 2)]  # patch spacing
    offset = (grid[target, 1:3] - grid[peak, 1:3]).abs().tolist()
    return all(o <= 1.01 * d for o, d in zip(offset, patch, strict=True))


_SCENES: dict[tuple, list[_ScenePool]] = {}


def _scene_sources(options: dict) -> list[_ScenePool]:
    settings = {
        "camera": options.get("camera"),
        "approach_fraction": float(options.get("approach_fraction", 0.5)),
        "key_poses": float(options.get("key_pose_weight", 0.0)) > 0,
        "pool_size": int(options.get("pool_size", 0)),
    }
    robots = {"arms": options.get("embodiment", "aloha_sim"), "base": options.get("base_embodiment", "mobile_base")}
    tasks, seed = tuple(options.get("tasks", ["pick_color"])), int(options.get("seed", 0))
    key = (*robots.values(), tasks, seed, *settings.values())
    if key not in _SCENES:
        _SCENES[key] = [
            grounding_scenes(load_embodiment(robots["base" if task in BASE_NAMED_OBJECTS else "arms"]), task,
                             seed=seed + i, **settings)
            for i, task in enumerate(tasks)
        ]
    return _SCENES[key]


def scene_grounding_loss(policy, step: int, options: dict) -> torch.Tensor:
    """``image_text`` hook: the grounding loss on ``batch_size`` (default 8) fresh scenes of
    the ``tasks`` in turn (default pick_color), ALOHA tasks on ``embodiment`` (default
    aloha_sim), ``drive_to_color`` on ``base_embodiment`` (default mobile_base); ``camera``
    (default: each task's :data:`SCENE_CAMERAS`); ``key_pose_weight`` > 0 (default 0) also
    trains the key pose on them; ``pool_size`` > 0 reuses that many scenes per task."""
    source = _scene_sources(options)[step % len(options.get("tasks", ["pick_color"]))]
    scenes = source.batch(int(options.get("batch_size", 8)))
    return grounding_loss(policy, scenes, source.embodiment, float(options.get("key_pose_weight", 0.0)))


def _add_pointer(policy, options: dict) -> None:
    policy.add_grounding_pointer()


def _close_scenes() -> None:
    """Free every scene source's simulator and renderers; later calls make new ones."""
    for sources in _SCENES.values():
        for source in sources:
            source.close()
    _SCENES.clear()


#: Called by the trainer before it builds the optimizer, so the pointer's weights train.
scene_grounding_loss.prepare = _add_pointer
#: Called by the trainer when training ends.
scene_grounding_loss.close = _close_scenes

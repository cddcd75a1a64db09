"""Grounding scenes: simulated views with the image position of the object the instruction names.

Why: the demo policy learnt to ignore its images. The key-pose head regressed the grasp
joints from the scene and stayed at chance on which arm to use, and so did every probe that
regressed the named cube's place through a soft-argmax over image tokens (docs/training.md,
"Stage 5"). Asked instead *which image token* holds the named cube (cross-entropy over the
7x7 overhead tokens), the same randomly initialised vision tower found it in 94 % of held-out
scenes after 100 steps. This module makes that target from the simulator's ground truth, as
much of it as training wants: a scene renders in milliseconds, a demonstration takes seconds.

:class:`GroundingScenes` resets a simulated task (seeds below the evaluation seeds), puts the
arms where the task's scripted expert has them at a random step before its first grasp (the
objects have not moved yet), renders every camera as the policy sees it, and projects the
named object into one camera's image. :func:`scene_grounding_loss` is a stage-``cpt``
``image_text`` hook (training/hooks.py): cross-entropy of the decoder's grounding pointer
(``DiTConfig.grounding``, model/dit.py KeyPoseHead) on the token that holds that point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..demonstrations import EVAL_SEED_START, instruction_for
from ..embodiment import Embodiment, load_embodiment
from ..model.token_grid import nearest_image_tokens
from ..types import Observation
from .errors import TrainingError
from .sim_env import AlohaSimEnv

#: Tasks whose instruction names one object, and that object's body (by the episode's goal).
NAMED_OBJECTS = {
    "pick_color": lambda goal: {"red": "box"}.get(goal, f"box_{goal}"),
    "transfer_cube": lambda goal: "box",
}
#: Seeds of grounding scenes: apart from the demonstrations' first thousand and the evaluation's.
SCENE_SEEDS = (1_000, EVAL_SEED_START)


@dataclass(frozen=True)
class GroundingScene:
    """One view and where the named object is in it.

    Attributes:
        observation: what the policy gets (every camera of the embodiment, state, instruction).
        camera: the embodiment camera the point refers to.
        image_xy: the object's centre in that image, normalised (0 left/top .. 1 right/bottom).
        goal: what the instruction names (pick_color: the cube's colour; None: the task's one object).
        seed: the scene's seed (object placement, goal, phrasing).
    """

    observation: Observation
    camera: str
    image_xy: tuple[float, float]
    goal: str | None
    seed: int


class GroundingScenes:
    """Random views of a simulated ALOHA task with the named object's image position.

    Args:
        embodiment: the ALOHA embodiment whose cameras are rendered (``aloha_sim``).
        task: a key of :data:`NAMED_OBJECTS`.
        camera: the embodiment camera to point in (the overhead one sees every object).
        approach_fraction: share of scenes with the arms on their way to the first grasp
            (the rest at the start pose, where an episode begins).
        seed: seeds the choice of scene seeds and arm poses.
        seeds: [low, high) of the scenes' seeds; default apart from demonstrations and
            evaluation (use ``(EVAL_SEED_START, ...)`` for held-out scenes).
    """

    def __init__(self, embodiment: Embodiment, task: str = "pick_color", camera: str = "cam_high",
                 approach_fraction: float = 0.5, seed: int = 0, seeds: tuple[int, int] = SCENE_SEEDS):
        from ..sim.experts import expert_for  # MuJoCo only where scenes are wanted

        if task not in NAMED_OBJECTS:
            raise TrainingError(f"grounding scenes need a task that names one object: {sorted(NAMED_OBJECTS)}, not {task!r}")
        if camera not in embodiment.camera_names:
            raise TrainingError(f"camera {camera!r} is not one of {embodiment.name}'s: {embodiment.camera_names}")
        self.embodiment, self.task, self.camera = embodiment, task, camera
        self.approach_fraction = float(approach_fraction)
        self.env = AlohaSimEnv(embodiment, task, instruction="")
        self.expert = expert_for(task)
        self._rng = np.random.default_rng(seed)
        self.seeds = (int(seeds[0]), int(seeds[1]))

    def sample(self) -> GroundingScene:
        seed = int(self._rng.integers(*self.seeds))
        self.env.reset(seed)
        sim = self.env.sim
        if self._rng.random() < self.approach_fraction:
            self._approach(int(self._rng.integers(1, self.expert_grasp_step(sim) + 1)))
        body = NAMED_OBJECTS[self.task](sim.goal)
        observation = self.env.observe()
        observation.instruction = instruction_for(self.task, sim.goal, seed)
        point = sim.image_point(self.camera, sim.object_poses()[body][:3])
        return GroundingScene(observation, self.camera, point, sim.goal, seed)

    def batch(self, size: int) -> list[GroundingScene]:
        return [self.sample() for _ in range(size)]

    def expert_grasp_step(self, sim) -> int:
        self.expert.reset(sim)
        return self.expert.grasp_step()

    def _approach(self, steps: int) -> None:
        """Arms where the expert has them ``steps`` control steps in (objects untouched)."""
        sim = self.env.sim
        self.expert.reset(sim)
        for _ in range(steps):
            action = self.expert.action()
        for index, side in enumerate(("left", "right")):
            sim.place_arm(side, action[7 * index : 7 * index + 6], float(action[7 * index + 6]))


def grounding_loss(policy, scenes: list[GroundingScene], embodiment: Embodiment) -> torch.Tensor:
    """Cross-entropy of the decoder's grounding pointer on the token holding each scene's point."""
    prepared = policy.prepare_observations([s.observation for s in scenes], embodiment)
    features = policy.backbone(prepared.inputs)
    logits = policy.decoder.point(features.features, features.mask, features.token_grid)
    cameras = torch.tensor([embodiment.camera_names.index(s.camera) for s in scenes])
    points = torch.tensor([s.image_xy for s in scenes], dtype=torch.float32)
    targets = nearest_image_tokens(features.token_grid, cameras, points)
    return F.cross_entropy(logits.float(), targets.to(logits.device))


def pointer_accuracy(policy, scenes: list[GroundingScene], embodiment: Embodiment) -> dict[str, float]:
    """Share of scenes whose pointer peaks on the named object's token (``hit``) or on a
    token next to it (``near``: same camera, at most one patch away in each direction)."""
    with torch.inference_mode():
        prepared = policy.prepare_observations([s.observation for s in scenes], embodiment)
        features = policy.backbone(prepared.inputs)
        peaks = policy.decoder.point(features.features, features.mask, features.token_grid).argmax(dim=-1)
        cameras = torch.tensor([embodiment.camera_names.index(s.camera) for s in scenes])
        targets = nearest_image_tokens(features.token_grid, cameras, torch.tensor([s.image_xy for s in scenes]))
        grid = features.token_grid
        near = []
        for row, (target, peak) in enumerate(zip(targets.tolist(), peaks.tolist(), strict=True)):
            same_camera = bool((grid[row, target, 3:] == grid[row, peak, 3:]).all() and grid[row, peak, 0] > 0)
            of_camera = (grid[row, :, 0] > 0) & (grid[row, :, 3:] == grid[row, target, 3:]).all(dim=-1)
            spacing = [float(torch.unique(grid[row, of_camera, axis]).diff().min()) for axis in (1, 2)]
            offset = (grid[row, target, 1:3] - grid[row, peak, 1:3]).abs().tolist()
            near.append(same_camera and all(o <= 1.01 * d for o, d in zip(offset, spacing, strict=True)))
    return {"hit": float((peaks == targets).float().mean()), "near": float(np.mean(near))}


_SCENES: dict[tuple, list[GroundingScenes]] = {}


def _scene_sources(options: dict) -> tuple[Embodiment, list[GroundingScenes]]:
    embodiment = load_embodiment(options.get("embodiment", "aloha_sim"))
    tasks = tuple(options.get("tasks", ["pick_color"]))
    key = (embodiment.name, tasks, options.get("camera", "cam_high"), options.get("seed", 0))
    if key not in _SCENES:
        _SCENES[key] = [
            GroundingScenes(embodiment, task, key[2], float(options.get("approach_fraction", 0.5)), key[3] + i)
            for i, task in enumerate(tasks)
        ]
    return embodiment, _SCENES[key]


def scene_grounding_loss(policy, step: int, options: dict) -> torch.Tensor:
    """``image_text`` hook: the grounding loss on ``batch_size`` (default 8) fresh scenes of
    the ``tasks`` in turn (default pick_color) for ``embodiment`` (default aloha_sim)."""
    embodiment, sources = _scene_sources(options)
    scenes = sources[step % len(sources)].batch(int(options.get("batch_size", 8)))
    return grounding_loss(policy, scenes, embodiment)


def _add_pointer(policy, options: dict) -> None:
    policy.add_grounding_pointer()


#: Called by the trainer before it builds the optimizer, so the pointer's weights train.
scene_grounding_loss.prepare = _add_pointer

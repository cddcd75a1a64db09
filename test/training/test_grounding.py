"""Grounding scenes: simulated views that say where the named object is, and the hook that
trains the decoder's pointer on them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qwen_vla_ros.demonstrations import EVAL_SEED_START
from qwen_vla_ros.embodiment import load_embodiment
from qwen_vla_ros.model import NormStats, QwenVLAPolicy, tiny_backbone
from qwen_vla_ros.sim import GL_BACKEND
from qwen_vla_ros.sim.aloha_tasks import sample_pick_color
from qwen_vla_ros.sim.base_scene import BOX_COLORS
from qwen_vla_ros.sim.goals import goal_from_instruction
from qwen_vla_ros.training.errors import TrainingError
from qwen_vla_ros.training.grounding import (
    BaseGroundingScenes,
    GroundingScenes,
    grounding_loss,
    grounding_scenes,
    pointer_accuracy,
)

pytestmark = pytest.mark.skipif(GL_BACKEND is None, reason="no offscreen OpenGL backend for MuJoCo")

#: Which channel dominates each cube's colour in the rendered image.
CHANNEL = {"red": 0, "green": 1, "blue": 2}


@pytest.fixture(scope="module")
def aloha():
    return load_embodiment("aloha_sim")


@pytest.fixture(scope="module")
def home_scenes(aloha):
    scenes = GroundingScenes(aloha, "pick_color", approach_fraction=0.0, seed=3)
    yield scenes
    scenes.close()


def test_each_scene_points_at_the_cube_its_instruction_names(home_scenes):
    for scene in home_scenes.batch(6):
        assert goal_from_instruction(scene.observation.instruction, ("red", "green", "blue")) == scene.goal
        assert 1_000 <= scene.seed < EVAL_SEED_START
        image = scene.observation.images["cam_high"].astype(int)
        height, width = image.shape[:2]
        pixel = image[int(scene.image_xy[1] * height), int(scene.image_xy[0] * width)]
        assert pixel.argmax() == CHANNEL[scene.goal] and pixel.max() - pixel.min() > 60, (scene.goal, pixel)
        arms = [*range(6), *range(7, 13)]  # the start pose's grippers differ from the home position's
        np.testing.assert_allclose(scene.observation.state[arms], home_scenes.embodiment.home_position[arms], atol=0.01)


def test_approach_scenes_move_the_arms_and_leave_the_cubes_where_they_were_placed(aloha):
    scenes = GroundingScenes(aloha, "pick_color", approach_fraction=1.0, seed=5)
    try:
        moved = []
        for _ in range(3):
            scene = scenes.sample()
            placed, _ = sample_pick_color(scene.seed)
            now = np.concatenate([scenes.env.sim.object_poses()[b] for b in ("box", "box_green", "box_blue")])
            np.testing.assert_allclose(now, placed)
            moved.append(np.abs(scene.observation.state - aloha.home_position).max())
        assert max(moved) > 0.1, moved
    finally:
        scenes.close()


def test_held_out_scenes_take_evaluation_seeds_and_unknown_tasks_are_refused(aloha):
    held_out = GroundingScenes(aloha, "transfer_cube", approach_fraction=0.0, seeds=(EVAL_SEED_START, 2 * EVAL_SEED_START))
    try:
        scene = held_out.sample()
        assert scene.seed >= EVAL_SEED_START and scene.goal is None
    finally:
        held_out.close()
    with pytest.raises(TrainingError, match="names one object"):
        GroundingScenes(aloha, "insertion")
    with pytest.raises(TrainingError, match="camera"):
        GroundingScenes(aloha, "pick_color", camera="cam_side")


def test_a_scene_pool_renders_its_scenes_once_then_draws_from_them(aloha):
    pooled = GroundingScenes(aloha, "pick_color", approach_fraction=0.0, seed=7, pool_size=3)
    try:
        first = pooled.batch(3)
        again = pooled.batch(12)
        assert len({s.seed for s in first}) == 3
        assert {s.seed for s in again} <= {s.seed for s in first}
        assert all(any(s is f for f in first) for s in again)  # the same scenes, not re-rendered
    finally:
        pooled.close()
    with pytest.raises(TrainingError, match="pool_size"):
        GroundingScenes(aloha, "pick_color", pool_size=-1)


def fit_pointer(source, seed: int) -> tuple[list[float], dict[str, float]]:
    """A tiny policy's pointer trained 30 steps on 4 scenes of ``source``: losses, accuracy."""
    embodiment = source.embodiment
    policy = QwenVLAPolicy.from_backbone(tiny_backbone("qwen3_5", seed=seed), "tiny", seed=seed)
    policy.set_normalization(embodiment.name, NormStats.from_limits(embodiment))
    torch.manual_seed(seed)  # the pointer's fresh weights, whichever tests ran before in this process
    policy.add_grounding_pointer()
    try:
        scenes = source.batch(4)
    finally:
        source.close()
    optimizer = torch.optim.Adam(policy.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = grounding_loss(policy.train(), scenes, embodiment)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses, pointer_accuracy(policy.eval(), scenes, embodiment)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_pointer_learns_where_the_named_cubes_are(aloha, seed):
    losses, accuracy = fit_pointer(GroundingScenes(aloha, "pick_color", approach_fraction=0.0, seed=seed), seed)
    assert losses[-1] < 0.2 * losses[0], losses[::5]
    assert accuracy == {"hit": 1.0, "near": 1.0}


def test_a_stage_with_the_grounding_hook_trains_the_pointer_and_saves_it(tmp_path, small_config, embodiment_files):
    from qwen_vla_ros.training.grounding import _SCENES
    from qwen_vla_ros.training.trainer import Trainer

    hook = {"enabled": True, "hook": "qwen_vla_ros.training.grounding:scene_grounding_loss", "weight": 1.0,
            "options": {"embodiment": embodiment_files["aloha_small"], "batch_size": 2, "approach_fraction": 0.0}}
    trainer = Trainer(small_config("cpt", subgoal_weight=1.0, image_text=hook), "tiny", tmp_path, progress=False)
    pointer = trainer.policy.decoder.key_pose.point_key
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert pointer is not None and all(id(p) in optimised for p in pointer.parameters())
    before = pointer.weight.detach().clone()
    summary = trainer.run()
    assert summary.step == 2 and not torch.equal(before, pointer.weight)
    assert QwenVLAPolicy.from_pretrained(tmp_path / "final").config.decoder.grounding
    assert not _SCENES  # the run's end closed its scene sources (simulators, renderers)


@pytest.mark.parametrize("task", ["pick_color", "transfer_cube"])
def test_a_scene_key_pose_is_the_one_a_whole_demonstration_has_at_that_frame(aloha, task):
    from qwen_vla_ros.data.keyframes import gripper_slices, key_pose, keyframes
    from qwen_vla_ros.sim.experts import expert_for

    scenes = GroundingScenes(aloha, task, approach_fraction=0.5, seed=11, key_poses=True)
    try:
        for _ in range(3):
            scene = scenes.sample()
            scenes.env.reset(scene.seed)
            expert = expert_for(task)
            expert.reset(scenes.env.sim)
            whole = np.array([expert.action() for _ in range(expert.episode_steps)])
            if scene.frame:  # the arms where the demonstration has them at that frame
                np.testing.assert_allclose(scene.observation.state[:6], whole[scene.frame - 1, :6], atol=1e-3)
            expected = key_pose(whole, scene.frame, keyframes(whole, gripper_slices(aloha)))
            np.testing.assert_allclose(scene.key_pose, expected, atol=1e-9)
    finally:
        scenes.close()


#: Which channel dominates each box's colour in the rendered image (yellow: red and green).
BOX_CHANNELS = {"red": (0,), "blue": (2,), "yellow": (0, 1)}


@pytest.fixture(scope="module")
def base():
    return load_embodiment("mobile_base")


def test_base_scenes_point_at_the_box_the_instruction_names(base):
    scenes = grounding_scenes(base, "drive_to_color", approach_fraction=0.5, seed=4)
    try:
        assert isinstance(scenes, BaseGroundingScenes) and scenes.camera == "front"
        frames = []
        for _ in range(8):
            scene = scenes.sample()
            frames.append(scene.frame)
            assert goal_from_instruction(scene.observation.instruction, BOX_COLORS) == scene.goal
            assert scene.observation.state.shape == (base.state_dim,) and not scene.observation.state.any()
            image = scene.observation.images["front"].astype(int)
            height, width = image.shape[:2]
            pixel = image[int(scene.image_xy[1] * height), int(scene.image_xy[0] * width)]
            others = [c for c in range(3) if c not in BOX_CHANNELS[scene.goal]]
            assert min(pixel[list(BOX_CHANNELS[scene.goal])]) > max(pixel[others]) + 40, (scene.goal, pixel)
        assert 0 in frames and max(frames) > 0, frames  # start views and views on the way
    finally:
        scenes.close()
    with pytest.raises(TrainingError, match="names one object"):
        BaseGroundingScenes(base, "goal_disc")


def test_a_base_scene_key_pose_is_the_one_its_demonstration_has(tmp_path, base):
    from qwen_vla_ros.data.dataset import LeRobotV3Dataset
    from qwen_vla_ros.demonstrations import collect

    scenes = BaseGroundingScenes(base, approach_fraction=1.0, seed=2, seeds=(30, 31), key_poses=True)
    try:
        scene = scenes.sample()
    finally:
        scenes.close()
    collect("drive_to_color", tmp_path / "demo", 1, first_seed=30)
    demo = LeRobotV3Dataset(tmp_path / "demo", base)
    sample = demo[scene.frame]
    np.testing.assert_allclose(scene.key_pose, sample["subgoal"].numpy(), atol=1e-5)
    # the same view (the dataset's frames went through the video codec)
    stored = sample["images"]["front"].numpy().astype(int)
    assert np.abs(scene.observation.images["front"].astype(int) - stored).mean() < 6


def test_the_pointer_learns_where_the_named_boxes_are(base):
    losses, accuracy = fit_pointer(BaseGroundingScenes(base, approach_fraction=0.5, seed=1), 0)
    assert losses[-1] < 0.2 * losses[0], losses[::5]
    assert accuracy["hit"] == 1.0


def test_the_hook_takes_each_task_on_its_own_robot(aloha, base):
    from qwen_vla_ros.training.grounding import _SCENES, _scene_sources, scene_grounding_loss

    policy = QwenVLAPolicy.from_backbone(tiny_backbone("qwen3_5", seed=0), "tiny", seed=0)
    for embodiment in (aloha, base):
        policy.set_normalization(embodiment.name, NormStats.from_limits(embodiment))
    policy.add_grounding_pointer()
    options = {"tasks": ["pick_color", "drive_to_color"], "batch_size": 2, "key_pose_weight": 1.0, "seed": 9}
    losses = [scene_grounding_loss(policy, step, options) for step in (0, 1)]
    assert all(torch.isfinite(loss) and loss > 0 for loss in losses)
    sources = _scene_sources(options)
    assert [(s.embodiment.name, s.camera) for s in sources] == [("aloha_sim", "cam_high"), ("mobile_base", "front")]
    scene_grounding_loss.close()  # what the trainer calls at the end of a run
    assert not _SCENES

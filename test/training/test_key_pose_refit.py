"""Key-pose head refit (training/key_pose_refit.py, `qwen-vla refit-key-pose`): cache, train, save."""

from __future__ import annotations

import argparse
import copy
import json

import numpy as np
import pytest
import torch

from qwen_vla_ros.embodiment import load_embodiment
from qwen_vla_ros.model import NormStats, QwenVLAPolicy, tiny_backbone
from qwen_vla_ros.model.token_grid import nearest_image_tokens
from qwen_vla_ros.sim import GL_BACKEND
from qwen_vla_ros.training import key_pose_refit as refit
from qwen_vla_ros.training.errors import TrainingConfigError, TrainingError
from qwen_vla_ros.training.grounding import GroundingScenes
from qwen_vla_ros.training.key_pose_refit_cli import RefitConfig, RefitTask, _jobs
from qwen_vla_ros.training.key_pose_refit_cli import run as run_cli

pytestmark = pytest.mark.skipif(GL_BACKEND is None, reason="no offscreen OpenGL backend for MuJoCo")
TRAIN_SEEDS = (1_000, 100_000)


def _tiny_policy() -> QwenVLAPolicy:
    """The tiny policy with a key-pose head and grounding pointer, normalised for both robots."""
    policy = QwenVLAPolicy.from_backbone(tiny_backbone("qwen3_5", seed=0), "tiny", seed=0)
    for name in ("aloha_sim", "mobile_base"):
        policy.set_normalization(name, NormStats.from_limits(load_embodiment(name)))
    torch.manual_seed(0)
    policy.add_grounding_pointer()
    return policy.eval()


@pytest.fixture(scope="module")
def caches():
    policy = _tiny_policy()
    pick = refit.cache_scenes(policy, load_embodiment("aloha_sim"), "pick_color", 5, seeds=TRAIN_SEEDS, batch_size=2)
    drive = refit.cache_scenes(policy, load_embodiment("mobile_base"), "drive_to_color", 5, seeds=TRAIN_SEEDS,
                               approach_fraction=0.5)
    return policy, pick, drive


def test_each_scene_is_cached_once_with_the_frozen_backbones_features(caches):
    policy, pick, _ = caches
    assert len(pick) == 5 and len(set(pick.seeds.tolist())) == 5
    assert all(TRAIN_SEEDS[0] <= s < TRAIN_SEEDS[1] for s in pick.seeds)
    assert pick.features.dtype == torch.float16 and pick.key_pose.shape == (5, 14) and pick.state.shape == (5, 14)
    # the same scene rendered again: the cached row is the backbone's features of it
    seed = int(pick.seeds[3])
    aloha = load_embodiment("aloha_sim")
    again = GroundingScenes(aloha, "pick_color", approach_fraction=0.0, seeds=(seed, seed + 1), key_poses=True)
    try:
        scene = again.sample()
    finally:
        again.close()
    with torch.inference_mode():
        fresh = policy.backbone(policy.prepare_observations([scene.observation], aloha).inputs)
    real = int(pick.mask[3].sum())
    assert real == int(fresh.mask[0].sum())
    torch.testing.assert_close(pick.features[3, :real].float(), fresh.features[0, :real].half().float())
    np.testing.assert_allclose(pick.key_pose[3], scene.key_pose)
    # the pointer's target: the token whose patch holds the named cube's centre in that image
    camera = torch.tensor([aloha.camera_names.index(scene.camera)])
    expected = nearest_image_tokens(fresh.token_grid, camera, torch.tensor([scene.image_xy], dtype=torch.float32))
    assert int(pick.pointer_target[3]) == int(expected[0]) and bool(pick.mask[3, int(expected[0])])


def test_too_few_seeds_for_the_scenes_is_refused():
    with pytest.raises(TrainingError, match="need more than"):
        refit.cache_scenes(_tiny_policy(), load_embodiment("aloha_sim"), "pick_color", 10, seeds=(1000, 1010))


def test_every_task_starts_at_weight_one_whatever_the_scale_of_its_key_pose(caches):
    policy, pick, drive = caches
    rows, target = refit.merge([pick, drive]), refit.targets(policy, [pick, drive])
    assert rows["features"].shape[1] == max(pick.features.shape[1], drive.features.shape[1])  # padded
    weights = refit._task_weights(policy, [pick, drive], rows, target)
    errors = torch.nn.functional.mse_loss(refit.predict_all(policy, rows), target, reduction="none")
    per_row = (errors * rows["dim_mask"]).sum(1) / rows["dim_mask"].sum(1)
    assert float((per_row[:5] * weights[:5]).mean()) == pytest.approx(1.0, rel=1e-4)
    assert float((per_row[5:] * weights[5:]).mean()) == pytest.approx(1.0, rel=1e-4)


def test_the_refit_lowers_the_loss_and_trains_only_the_heads_reading_of_the_scene(caches):
    base, pick, drive = caches
    policy = copy.deepcopy(base)
    before = {name: p.detach().clone() for name, p in policy.named_parameters()}
    loss_before = refit.validation_loss(policy, [pick])
    history = refit.refit_key_pose_head(policy, [pick, drive], 60, lr=3e-3, batch_size=8)
    assert refit.validation_loss(policy, [pick]) < 0.5 * loss_before  # the training scenes: it learns them
    assert history[-1]["step"] == 60 and not policy.training
    refit_prefixes = tuple(f"decoder.key_pose.{part}." for part in refit.REFIT_PARTS)
    for name, p in policy.named_parameters():
        changed = not torch.equal(p, before[name])
        assert changed == name.startswith(refit_prefixes), name  # pointer, token, backbone, blocks kept
        assert not p.requires_grad


def test_with_a_pointer_weight_the_pointer_trains_too_and_learns_where_the_named_object_is(caches):
    base, pick, drive = caches
    policy = copy.deepcopy(base)
    before = {name: p.detach().clone() for name, p in policy.named_parameters()}
    rows, pointed = refit.merge([pick, drive]), torch.cat([pick.pointer_target, drive.pointer_target])
    with torch.no_grad():
        pointer_before = float(refit.pointer_loss(policy, rows, pointed))
    refit.refit_key_pose_head(policy, [pick, drive], 60, lr=3e-3, batch_size=8, pointer_weight=1.0)
    with torch.no_grad():
        assert float(refit.pointer_loss(policy, rows, pointed)) < 0.5 * pointer_before
    assert refit.pointer_hits(policy, pick) == 1.0 and refit.pointer_hits(policy, drive) == 1.0  # learnt, 10 scenes
    parts = tuple(f"decoder.key_pose.{part}." for part in refit.REFIT_PARTS + refit.POINTER_PARTS)
    for name, p in policy.named_parameters():
        assert (not torch.equal(p, before[name])) == name.startswith(parts), name  # token, backbone, blocks kept
    with pytest.raises(TrainingError, match="pointer_weight"):
        refit.refit_key_pose_head(policy, [pick], 1, pointer_weight=-1.0)


def test_grasp_errors_are_zero_for_the_true_key_pose_and_measured_in_metres(caches):
    policy, pick, drive = caches
    from qwen_vla_ros.training.sim_env import AlohaSimEnv

    env = AlohaSimEnv(load_embodiment("aloha_sim"), "pick_color", instruction="")
    try:
        np.testing.assert_allclose(refit.grasp_errors(pick, pick.key_pose, env.sim.model), 0.0, atol=1e-9)
        assert np.all(refit.grasp_errors(pick, refit.cached_key_poses(policy, pick), env.sim.model) > 0)
    finally:
        env.close()
    moved = drive.key_pose + np.array([0.3, -0.4, 1.0])  # 0.5 m off, and a yaw that is not scored
    np.testing.assert_allclose(refit.grasp_errors(drive, moved), 0.5, atol=1e-9)


def test_the_learning_rate_warms_up_then_decays_to_zero():
    factors = [refit.warmup_cosine(step, 100) for step in range(100)]
    assert factors[0] == pytest.approx(0.2) and max(factors) == pytest.approx(1.0)
    assert factors[-1] < 0.01 and all(a >= b for a, b in zip(factors[5:], factors[6:], strict=False))
    assert refit.warmup_cosine(0, 1) == 1.0  # one step: no division by zero


def test_jobs_split_the_scenes_over_disjoint_seed_ranges():
    jobs = _jobs(RefitTask("pick_color", "aloha_sim", 250), 250, (1000, 100_000), seed=3)
    assert [j[2] for j in jobs] == [84, 83, 83]
    ranges = [j[3] for j in jobs]
    assert ranges[0][0] == 1000 and ranges[-1][1] == 100_000
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))


def test_the_recipes_refit_config_loads_and_bad_ones_are_refused(tmp_path):
    config = RefitConfig.from_yaml("config/training/sim_demo_recipe_key_pose.yaml")
    assert {t.task for t in config.tasks} == {"pick_color", "transfer_cube", "drive_to_color"}
    for text, message in (("tasks: []\n", "no tasks"), ("steps: 3\nbogus: 1\n", "bogus: unknown key"),
                          ("tasks: [{task: insertion, embodiment: aloha_sim, scenes: 3}]\n", "names no object"),
                          ("tasks: [{task: pick_color, embodiment: aloha_sim, scenes: 0}]\n", "scenes >= 1"),
                          # caught before any worker renders a scene
                          ("tasks: [{task: pick_color, embodiment: aloha_sim, scenes: many}]\n", "scenes >= 1"),
                          ("tasks: [{task: pick_color, embodiment: aloha_sim, scenes: 3}]\nsteps: lots\n",
                           "steps: a number"),
                          ("tasks: [{task: pick_color, embodiment: no_such_robot, scenes: 3}]\n", "no_such_robot"),
                          ("tasks: [{task: drive_to_color, embodiment: aloha_sim, scenes: 3}]\n", "no base_waypoints"),
                          ("tasks: [{task: pick_color, embodiment: mobile_base, scenes: 3}]\n", "not a two-armed"),
                          ("tasks: [{task: pick_color, embodiment: aloha_sim, scenes: 3}]\npointer_weight: -1\n",
                           "pointer_weight: must be >= 0")):
        path = tmp_path / "bad.yaml"
        path.write_text(text)
        with pytest.raises(TrainingConfigError, match=message):
            RefitConfig.from_yaml(path)


def test_the_command_refits_a_saved_policy_and_writes_its_summary(tmp_path, capsys):
    init = _tiny_policy().save_pretrained(tmp_path / "init")
    config = tmp_path / "refit.yaml"
    config.write_text("tasks:\n  - {task: pick_color, embodiment: aloha_sim, scenes: 3}\n"
                      "  - {task: drive_to_color, embodiment: mobile_base, scenes: 3, approach_fraction: 0.5}\n"
                      "validation_scenes: 2\nsteps: 4\nbatch_size: 4\nworkers: 1\neval_every: 2\n")
    args = argparse.Namespace(init=str(init), output=tmp_path / "run", config=str(config), steps=None, workers=None,
                              cache=None)
    assert run_cli(args) == 0
    summary = json.loads((tmp_path / "run" / "refit_summary.json").read_text())
    assert summary["scenes"] == {"pick_color": 3, "drive_to_color": 3}
    assert [e["step"] for e in summary["validation_during"]] == [2, 4]
    assert set(summary["validation_before"]["pick_color"]) == {"key_pose_loss", "error_m_median", "error_under_1cm",
                                                               "pointer_hit"}
    refitted = QwenVLAPolicy.from_pretrained(tmp_path / "run" / "final")
    assert refitted.predicts_key_poses
    assert summary["validation_before"]["drive_to_color"]["pointer_hit"] >= 0.0
    args.config = str(tmp_path / "missing.yaml")
    assert run_cli(args) == 2 and "missing.yaml" in capsys.readouterr().err


def test_a_scene_cache_on_disk_is_read_back_only_for_the_same_backbone(caches, tmp_path):
    policy, pick, _ = caches
    aloha = load_embodiment("aloha_sim")
    path = tmp_path / "pick.pt"
    refit.save_scene_cache(pick, path, policy, aloha)
    assert not list(tmp_path.glob("*.partial"))
    again = refit.load_scene_cache(path, policy, aloha)
    torch.testing.assert_close(again.features, pick.features)
    torch.testing.assert_close(again.pointer_target, pick.pointer_target)
    np.testing.assert_array_equal(again.key_pose, pick.key_pose)
    assert (again.task, again.embodiment, again.seeds.tolist()) == (pick.task, pick.embodiment, pick.seeds.tolist())
    other = copy.deepcopy(policy)
    with torch.no_grad():
        next(other.backbone.parameters()).add_(1e-3)  # another backbone: its features differ
    assert refit.load_scene_cache(path, other, aloha) is None
    assert refit.load_scene_cache(path, policy, load_embodiment("mobile_base")) is None


def test_the_command_reads_its_scenes_back_from_the_cache_folder(tmp_path, capsys):
    init = _tiny_policy().save_pretrained(tmp_path / "init")
    config = tmp_path / "refit.yaml"
    config.write_text("tasks:\n  - {task: drive_to_color, embodiment: mobile_base, scenes: 3, approach_fraction: 0.5}\n"
                      "validation_scenes: 2\nsteps: 2\nbatch_size: 4\nworkers: 1\npointer_weight: 1.0\n")
    runs = []
    for name in ("first", "second"):
        args = argparse.Namespace(init=str(init), output=tmp_path / name, config=str(config), steps=None, workers=None,
                                  cache=tmp_path / "scene_cache")
        assert run_cli(args) == 0
        runs.append(json.loads((tmp_path / name / "refit_summary.json").read_text()))
    out = capsys.readouterr().out
    assert len(list((tmp_path / "scene_cache").glob("*.pt"))) == 2  # one job of training, one of validation scenes
    assert out.count("rendered") == 2 and out.count("read from the cache") == 2
    assert runs[0]["validation_before"] == runs[1]["validation_before"]  # the same scenes

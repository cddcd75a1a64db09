"""Each stage trains the tiny policy end to end; the result loads and predicts; resume is exact."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from qwen_vla_ros.embodiment import load_embodiment
from qwen_vla_ros.model.policy import QwenVLAPolicy
from qwen_vla_ros.training import checkpoints as ckpt
from qwen_vla_ros.training.data import norm_stats_from_sources, open_sources
from qwen_vla_ros.training.errors import TrainingError
from qwen_vla_ros.training.trainer import train
from qwen_vla_ros.types import Observation


def _observation(embodiment, instruction="reach the red marker"):
    images = {c.name: np.full((*c.image_size, 3), 90, np.uint8) for c in embodiment.cameras if c.required}
    return Observation(images=images, state=embodiment.home_position, instruction=instruction)


def _check_policy_folder(path, embodiment_file):
    """The final folder loads with QwenVLAPolicy.from_pretrained and predicts a chunk in rig units."""
    policy = QwenVLAPolicy.from_pretrained(path)
    embodiment = load_embodiment(embodiment_file)
    chunk = policy.predict_chunk(_observation(embodiment), embodiment, seed=0)
    assert chunk.actions.shape == (embodiment.chunk_horizon, embodiment.action_dim)
    assert np.all(np.isfinite(chunk.actions))
    return policy


def test_sft_trains_saves_statistics_from_the_data_and_loads(tmp_path, small_config, embodiment_files, datasets,
                                                             capsys):
    config = small_config("sft")
    summary = train(config, "tiny", tmp_path, progress=False)
    assert (summary.start_step, summary.step, summary.processes) == (0, 2, 1)
    # without the progress bar (a log file) the run still says how it goes
    assert re.search(r"^step 2/2: train loss \d+\.\d+, lr .*steps/s$", capsys.readouterr().out, re.MULTILINE)
    assert summary.initial_val_loss is not None and np.isfinite(summary.final_val_loss)
    policy = _check_policy_folder(tmp_path / "final", embodiment_files["aloha_small"])
    sources = open_sources(config.datasets, config.embodiment, text_only=False, val_fraction=0.2, seed=0)
    expected = norm_stats_from_sources(sources)["aloha_small"]
    stored = policy.norm_stats["aloha_small"]
    assert stored.source == "data" and np.allclose(stored.action.q99, expected.action.q99)
    assert (tmp_path / "train_summary.json").is_file()


def test_relative_actions_are_saved_and_kept_by_the_next_stage(tmp_path, small_config, embodiment_files):
    train(small_config("sft", relative_actions=True), "tiny", tmp_path / "a", progress=False)
    first = _check_policy_folder(tmp_path / "a" / "final", embodiment_files["aloha_small"])
    assert first.norm_stats["aloha_small"].relative
    # a stage from it that does not say keeps relative actions, with statistics of its own data
    train(small_config("sft"), str(tmp_path / "a" / "final"), tmp_path / "b", progress=False)
    assert _check_policy_folder(tmp_path / "b" / "final", embodiment_files["aloha_small"]).norm_stats["aloha_small"].relative
    # switching an absolute policy to relative actions while keeping its statistics: the absolute
    # ones (the key poses' scale) stay exactly, the motions' statistics come from the data
    train(small_config("sft"), "tiny", tmp_path / "c", progress=False)
    absolute = QwenVLAPolicy.from_pretrained(tmp_path / "c" / "final").norm_stats["aloha_small"]
    train(small_config("sft", relative_actions=True, norm_stats="keep"), str(tmp_path / "c" / "final"),
          tmp_path / "d", progress=False)
    switched = _check_policy_folder(tmp_path / "d" / "final", embodiment_files["aloha_small"]).norm_stats["aloha_small"]
    assert switched.relative and np.array_equal(switched.action.q99, absolute.action.q99)
    np.testing.assert_allclose(switched.relative_action.q99, first.norm_stats["aloha_small"].relative_action.q99)


def test_t2a_trains_the_decoder_only_without_images(tmp_path, small_config, embodiment_files):
    summary = train(small_config("t2a"), "tiny", tmp_path, progress=False)
    assert summary.step == 2 and summary.parameters["backbone_trainable"] == 0
    _check_policy_folder(tmp_path / "final", embodiment_files["aloha_small"])


def test_cpt_mixes_embodiments_and_runs_the_image_text_hook(tmp_path, small_config, embodiment_files, datasets,
                                                             monkeypatch):
    hook_dir = tmp_path / "hooks"
    hook_dir.mkdir()
    (hook_dir / "caption_hook.py").write_text(
        "from qwen_vla_ros.model.processor import PromptSample\n"
        "CALLS = []\n"
        "def caption_loss(policy, step, options):\n"
        "    CALLS.append(step)\n"
        "    inputs = policy.backbone.prepare([PromptSample('a robot', options['caption'])])\n"
        "    return policy.backbone.model(**inputs, labels=inputs['input_ids']).loss\n"
    )
    monkeypatch.syspath_prepend(str(hook_dir))
    config = small_config(
        "cpt",
        max_steps=3,
        datasets=[{"path": datasets["aloha_small"], "weight": 1.0},
                  {"path": datasets["fr3_small"], "embodiment": embodiment_files["fr3_small"], "weight": 1.0}],
        image_text={"enabled": True, "hook": "caption_hook:caption_loss", "every_steps": 2,
                    "options": {"caption": "a red cube on a table"}},
    )
    summary = train(config, "tiny", tmp_path / "run", progress=False)
    import caption_hook

    assert caption_hook.CALLS == [0, 2]
    assert summary.parameters["backbone_trainable"] > 0
    policy = _check_policy_folder(tmp_path / "run" / "final", embodiment_files["fr3_small"])
    assert set(policy.norm_stats) == {"aloha_small", "fr3_small"}


def test_rl_trains_on_rollouts_of_an_injected_environment(tmp_path, small_config, embodiment_files, reach_env):
    config = small_config("rl", rl={"episodes_per_round": 2, "updates_per_round": 1, "episode_steps": 8,
                                    "execute_steps": 4})
    made = []

    def factory(embodiment, rl_config):
        made.append(reach_env(embodiment))
        return made[-1]

    summary = train(config, "tiny", tmp_path, env_factory=factory, progress=False)
    assert summary.step == 2 and len(summary.rl_rounds) == 2  # a new round before every update
    assert len(made) == 1 and made[0].steps == 2 * 2 * 8
    _check_policy_folder(tmp_path / "final", embodiment_files["aloha_small"])


@pytest.mark.parametrize("rollout_noise_scale", [1.0, None])
def test_rl_rollouts_explore_even_when_the_policy_acts_without_noise(tmp_path, small_config, reach_env,
                                                                    rollout_noise_scale):
    """A deployed policy at noise scale 0 gives the same chunk for the same observation: its
    rollouts of one scene would all be alike, and reward weighting would have nothing to choose
    from. The rollouts sample with ``rollout_noise_scale``; the saved policy keeps 0."""
    config = small_config("rl", noise_scale=0.0, rl={"episodes_per_round": 2, "updates_per_round": 1,
                                                     "episode_steps": 4, "execute_steps": 4,
                                                     "rollout_noise_scale": rollout_noise_scale})

    class SameSceneEnv(reach_env):
        actions: list = []

        def reset(self, seed):
            return super().reset(0)  # every episode starts in the same scene

        def step(self, action):
            self.actions.append(np.array(action))
            return super().step(action)

    train(config, "tiny", tmp_path, env_factory=lambda embodiment, rl: SameSceneEnv(embodiment), progress=False)
    first, second = np.array(SameSceneEnv.actions[:4]), np.array(SameSceneEnv.actions[4:8])
    assert np.allclose(first, second) == (rollout_noise_scale is None)
    assert json.loads((tmp_path / "final" / "policy_config.json").read_text())["noise_scale"] == 0.0


def test_resume_continues_exactly_where_the_run_stopped(tmp_path, small_config):
    config = small_config("sft", max_steps=4, grad_accum_steps=2, checkpoint={"every_steps": 2, "keep_last": 2})
    straight = train(config, "tiny", tmp_path / "straight", progress=False)
    halfway = ckpt.checkpoint_dir(tmp_path / "straight", 2)
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(halfway, ckpt.checkpoint_dir(resumed_dir, 2))  # as if the run had stopped at step 2
    resumed = train(config, "tiny", resumed_dir, resume=True, progress=False)
    assert (resumed.start_step, resumed.step) == (2, 4) and straight.step == 4
    assert resumed.initial_val_loss == straight.initial_val_loss  # kept from before the stop
    for name in ("decoder.safetensors",):
        a, b = load_file(tmp_path / "straight" / "final" / name), load_file(resumed_dir / "final" / name)
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    optimizer_a = torch.load(ckpt.checkpoint_dir(tmp_path / "straight", 4) / "optimizer.bin", weights_only=True)
    optimizer_b = torch.load(ckpt.checkpoint_dir(resumed_dir, 4) / "optimizer.bin", weights_only=True)
    for key, state in optimizer_a["state"].items():
        assert state["step"] == optimizer_b["state"][key]["step"] == 4
        assert torch.allclose(state["exp_avg"], optimizer_b["state"][key]["exp_avg"], atol=1e-6)
    assert resumed.final_val_loss == pytest.approx(straight.final_val_loss, abs=1e-6)


def test_resume_refuses_a_missing_or_foreign_checkpoint(tmp_path, small_config):
    with pytest.raises(TrainingError, match="no complete checkpoint"):
        train(small_config("t2a"), "tiny", tmp_path / "empty", resume=True, progress=False)
    train(small_config("t2a", max_steps=1), "tiny", tmp_path / "t2a", progress=False)
    with pytest.raises(TrainingError, match="stage 't2a'"):
        train(small_config("sft"), "tiny", tmp_path / "t2a", resume=True, progress=False)


def test_training_lowers_the_held_out_loss(tmp_path, small_config):
    config = small_config(
        "sft", max_steps=30, batch_size=8, optimizer={"lr": 2e-3}, ema={"enabled": True, "decay": 0.9},
        eval={"every_steps": 10, "max_batches": 2, "val_fraction": 0.2},
    )
    summary = train(config, "tiny", tmp_path, progress=False)
    state = json.loads((ckpt.latest_checkpoint(tmp_path) / ckpt.STATE_FILE).read_text())
    losses = [e["val_loss"] for e in state["evals"]]
    assert len(losses) >= 3  # measured before training and during it
    assert summary.final_val_loss < 0.8 * summary.initial_val_loss, losses


def test_a_key_pose_weight_gives_the_policy_a_head_that_trains_and_is_saved(tmp_path, small_config, embodiment_files):
    from qwen_vla_ros.training.trainer import Trainer

    trainer = Trainer(small_config("sft", subgoal_weight=1.0), "tiny", tmp_path, progress=False)
    head = trainer.policy.decoder.key_pose
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert head is not None and all(id(p) in optimised for p in head.parameters())
    before = {name: p.detach().clone() for name, p in head.named_parameters()}
    summary = trainer.run()
    assert summary.step == 2
    assert any(not torch.equal(before[name], p) for name, p in head.named_parameters())  # it trained
    assert np.isfinite(trainer.state.evals[-1]["val_subgoal_loss"]) and trainer.state.evals[-1]["val_subgoal_loss"] > 0
    policy = _check_policy_folder(tmp_path / "final", embodiment_files["aloha_small"])
    assert policy.config.decoder.subgoal and policy.config.decoder.token_positions


def test_teacher_forcing_gives_the_decoder_its_key_pose_input_and_the_noise_scale_is_saved(
        tmp_path, small_config, embodiment_files):
    from qwen_vla_ros.training.trainer import Trainer

    config = small_config("sft", subgoal_weight=1.0, key_pose_teacher_forcing=1.0, noise_scale=0.0)
    trainer = Trainer(config, "tiny", tmp_path, progress=False)
    key_pose_in = trainer.policy.decoder.key_pose_in
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert key_pose_in is not None and all(id(p) in optimised for p in key_pose_in.parameters())
    trainer.run()
    policy = _check_policy_folder(tmp_path / "final", embodiment_files["aloha_small"])
    assert policy.config.decoder.key_pose_input and policy.config.noise_scale == 0.0
    with pytest.raises(Exception, match="subgoal_weight"):
        small_config("sft", key_pose_teacher_forcing=0.5)

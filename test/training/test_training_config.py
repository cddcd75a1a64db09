"""Stage configs: the shipped files load, and every kind of bad setting gets a clear error."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from qwen_vla_ros.training import cli
from qwen_vla_ros.training.config import STAGES, load_stage_config, parse_stage_config
from qwen_vla_ros.training.errors import TrainingConfigError


@pytest.mark.parametrize("stage", STAGES)
def test_shipped_stage_loads_with_its_own_name(stage):
    config = load_stage_config(stage)
    assert config.stage == stage
    assert (config.rl is not None) == (stage == "rl")


#: config/training files that `qwen-vla refit-key-pose` reads (training/key_pose_refit_cli.py), not the trainer
REFIT_CONFIGS = ("sim_demo_recipe_key_pose",)


@pytest.mark.parametrize("path", sorted(Path(__file__).parents[2].joinpath("config", "training").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_config_file_loads_and_its_hook_imports(path):
    from qwen_vla_ros.training.hooks import load_image_text_hook
    from qwen_vla_ros.training.key_pose_refit_cli import RefitConfig

    if path.stem in REFIT_CONFIGS:
        assert RefitConfig.from_yaml(path).tasks
        return
    config = load_stage_config(str(path))
    hook = load_image_text_hook(config.image_text)
    assert (hook is not None) == config.image_text.enabled


def test_t2a_is_text_only_and_trains_only_the_decoder():
    config = load_stage_config("t2a")
    assert config.text_only and config.freeze == "all"


def test_unknown_keys_are_named_with_the_allowed_ones():
    with pytest.raises(TrainingConfigError) as caught:
        load_stage_config("sft", {"optimizer": {"lerning_rate": 1.0}, "max_step": 3, "datasets": [{"path": "x", "wieght": 2}]})
    message = str(caught.value)
    assert "optimizer.lerning_rate: unknown key" in message and "lr" in message
    assert "max_step: unknown key" in message and "max_steps" in message
    assert "datasets.0.wieght: unknown key (allowed here: embodiment, path, weight)" in message
    assert len(caught.value.problems) == 3


def test_bad_values_and_stage_rules_are_errors():
    cases = [
        ({"stage": "sft", "batch_size": 0}, "batch_size"),
        ({"stage": "sft", "freeze": "half"}, "freeze"),
        ({"stage": "rl"}, "needs an 'rl' section"),
        ({"stage": "t2a"}, "text_only: true"),
        ({"stage": "sft", "rl": {}}, "only apply to stage rl"),
        ({"stage": "rl", "rl": {"method": "ppo"}}, "rl.method"),
        ({"stage": "cpt", "image_text": {"enabled": True}}, "image_text.hook"),
        ({"stage": "sft", "datasets": [{"path": "a", "embodiment": "aloha"}, {"path": "b", "embodiment": "fr3_arm"}]},
         "one embodiment"),
    ]
    for data, expected in cases:
        with pytest.raises(TrainingConfigError, match=expected):
            parse_stage_config(data)


def test_files_extend_other_stages_and_unknown_stage_names_fail(tmp_path):
    child = tmp_path / "my_sft.yaml"
    child.write_text("extends: sft\noptimizer: {lr: 0.5}\n")
    config = load_stage_config(child)
    assert config.optimizer.lr == 0.5
    assert config.optimizer.betas == load_stage_config("sft").optimizer.betas  # merged, not replaced
    with pytest.raises(TrainingConfigError, match="no shipped stage"):
        load_stage_config("nonexistent_stage")
    broken = tmp_path / "broken.yaml"
    broken.write_text("stage: [sft\n")
    with pytest.raises(TrainingConfigError, match="not valid YAML"):
        load_stage_config(broken)


def test_cli_overrides_and_set_values():
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(
        ["--stage", "sft", "--output", "o", "--dataset", "d1", "--dataset", "d2", "--max-steps", "7",
         "--lr", "0.01", "--set", "eval.every_steps=3", "--set", "optimizer.betas=[0.8, 0.9]"]
    )
    config = load_stage_config(args.stage, cli.build_overrides(args))
    assert [d.path for d in config.datasets] == ["d1", "d2"]
    assert config.max_steps == 7 and config.eval.every_steps == 3
    assert config.optimizer.lr == 0.01 and config.optimizer.betas == (0.8, 0.9)
    with pytest.raises(TrainingConfigError, match="KEY=VALUE"):
        cli.parse_set(["novalue"])


def test_cli_reports_a_bad_key_with_exit_code_2(capsys, tmp_path):
    code = cli.main(["--stage", "sft", "--output", str(tmp_path), "--set", "optimizr.lr=1"])
    assert code == 2
    assert "optimizr: unknown key" in capsys.readouterr().err

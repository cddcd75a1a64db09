"""Embodiment files: every shipped file validates; broken files give the expected messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qwen_vla_ros.embodiment import EmbodimentError, list_shipped_embodiments, load_embodiment

HERE = Path(__file__).parent
BROKEN = HERE / "broken"

# broken file -> (key path fragment, reason fragment) that its problem list must contain
EXPECTED_PROBLEMS = {
    "unknown_key": ("joints[j1].max_velocty", "unknown key"),
    "min_above_max": ("action[arm].joints[j1]", "min 1.5 is above max -1.0"),
    "duplicate_joint": ("action[arm].joints", "duplicate joint name 'j1'"),
    "wrong_dimension": ("outputs[/arm_controller/commands].joint_names", "3 names for 2 action values"),
    "missing_topic": ("cameras[top].topic", "required key is missing"),
    "unknown_state_source": ("joints[j1].state", "unknown state source 'leg'"),
    "custom_type_without_fields": ("outputs[/arm/commands/joint_group]", "give a 'fields' mapping"),
    "wrong_image_size": ("cameras[top].image_size", "at most 2 items"),
    "invalid_yaml": ("", "not valid YAML: line 3"),
    "not_a_mapping": ("", "must be a YAML mapping"),
}


def test_shipped_embodiments_are_the_documented_set():
    assert {"aloha", "aloha_sim", "mobile_aloha", "mobile_base", "fr3_arm"} <= set(
        list_shipped_embodiments()
    )


@pytest.mark.parametrize("name", list_shipped_embodiments())
def test_every_shipped_embodiment_validates(name):
    emb = load_embodiment(name)
    assert emb.action_dim == len(emb.action_names) == emb.position_min.shape[0]
    assert np.all(emb.position_min <= emb.home_position)
    assert np.all(emb.home_position <= emb.position_max)
    assert np.all(emb.step_limits > 0)
    assert len(emb.prompt) > 50


def test_aloha_layout_matches_the_interbotix_rig():
    emb = load_embodiment("aloha")
    assert emb.action_dim == 14 and len(emb.cameras) == 4
    assert emb.action_names[:7] == [
        "left_arm/waist",
        "left_arm/shoulder",
        "left_arm/elbow",
        "left_arm/forearm_roll",
        "left_arm/wrist_angle",
        "left_arm/wrist_rotate",
        "left_gripper/gripper",
    ]
    assert emb.home_position[:6].tolist() == [0.0, -0.96, 1.16, 0.0, -0.3, 0.0]
    assert {o.type for o in emb.outputs} == {
        "interbotix_xs_msgs/msg/JointGroupCommand",
        "interbotix_xs_msgs/msg/JointSingleCommand",
    }
    gripper = emb.group("left_gripper")
    assert emb.gripper_normalised_to_command(gripper, 1.0) == pytest.approx(1.6214)
    assert emb.gripper_state_to_normalised(gripper, 0.0440) == pytest.approx(0.0)


def test_mobile_aloha_appends_base_velocity():
    emb = load_embodiment("mobile_aloha")
    assert emb.action_dim == 16 and len(emb.cameras) == 3
    assert emb.action_names[-2:] == ["base/linear_x", "base/angular_z"]
    assert emb.group("base").hold_mode == "zero_velocity"


def test_extends_replaces_only_the_overridden_sections():
    sim, rig = load_embodiment("aloha_sim"), load_embodiment("aloha")
    assert sim.action_names == rig.action_names
    assert sim.spec.state == rig.spec.state
    assert [o.type for o in sim.outputs] != [o.type for o in rig.outputs]


def test_calibration_round_trip_with_sign_and_offset(tmp_path):
    text = (HERE / "minimal.yaml").read_text().replace(
        "{name: j2, min: -1.0, max: 1.0, max_velocity: 2.0,",
        "{name: j2, min: -1.0, max: 1.0, max_velocity: 2.0, sign: -1, offset: 0.25,",
    )
    path = tmp_path / "flipped.yaml"
    path.write_text(text)
    emb = load_embodiment(path)
    model = np.array([[0.1, 0.2]])
    rig = emb.actions_to_rig(model)
    assert rig.tolist() == [[0.1, pytest.approx(0.05)]]
    np.testing.assert_allclose(emb.actions_to_model(rig), model)


@pytest.mark.parametrize("name", sorted(EXPECTED_PROBLEMS))
def test_broken_file_gives_a_clear_problem(name):
    key, reason = EXPECTED_PROBLEMS[name]
    with pytest.raises(EmbodimentError) as info:
        load_embodiment(BROKEN / f"{name}.yaml")
    problems = info.value.problems
    assert any(key in p.key and reason in p.reason for p in problems), problems
    assert all(p.file.endswith(f"{name}.yaml") for p in problems)


def test_every_broken_file_has_an_expectation():
    assert {p.stem for p in BROKEN.glob("*.yaml")} == set(EXPECTED_PROBLEMS)


def test_unknown_name_lists_shipped_embodiments():
    with pytest.raises(EmbodimentError, match="shipped: aloha"):
        load_embodiment("no_such_robot")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "qwen_vla_ros.cli", "check-embodiment", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_embodiment_cli_prints_the_layout_table():
    result = _cli("mobile_aloha")
    assert result.returncode == 0, result.stderr
    assert "base/angular_z" in result.stdout and "/mobile_base/cmd_vel" in result.stdout


def test_check_embodiment_cli_reports_problems_without_traceback():
    result = _cli(str(BROKEN / "unknown_key.yaml"), str(BROKEN / "invalid_yaml.yaml"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "max_velocty: unknown key" in result.stderr
    assert "0 valid, 2 invalid" in result.stdout


def test_core_imports_without_rclpy():
    """The pure core imports in a Python where rclpy and ROS message packages cannot be imported."""
    blocked = ["rclpy", "std_msgs", "sensor_msgs", "geometry_msgs", "nav_msgs", "trajectory_msgs"]
    core = [
        "embodiment", "types", "observation", "evaluation", "bringup",
        "control", "model", "data", "sim", "training", "training.trainer",
    ]
    code = (
        "import sys\n"
        + "".join(f"sys.modules[{m!r}] = None\n" for m in blocked)
        + "".join(f"import qwen_vla_ros.{m}\n" for m in core)
        + "print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_installed_layout_is_found_by_ament_index():
    """After scripts/setup.sh (or colcon), ament finds share/ with launch/ and config/."""
    ament = pytest.importorskip("ament_index_python.packages")
    try:
        share = Path(ament.get_package_share_directory("qwen_vla_ros"))
    except (LookupError, OSError, ValueError) as exc:
        pytest.skip(f"qwen_vla_ros is not installed in an ament prefix here: {exc}")
    assert (share / "package.xml").is_file()
    assert {"aloha.launch.py", "mobile_aloha.launch.py", "mobile_base.launch.py"} <= {
        p.name for p in (share / "launch").iterdir()
    }
    assert (share / "config" / "embodiments" / "aloha.yaml").is_file()
    prefix = Path(ament.get_package_prefix("qwen_vla_ros"))
    assert (prefix / "lib" / "qwen_vla_ros" / "chunk_publisher").exists()


def test_the_error_crosses_processes_with_its_problems():
    """A worker pool pickles a worker's exception; it must come back as it was (it came back
    with one 'problem' per character of its message)."""
    import pickle

    with pytest.raises(EmbodimentError) as info:
        load_embodiment("no_such_robot")
    again = pickle.loads(pickle.dumps(info.value))
    assert again.problems == info.value.problems and str(again) == str(info.value)

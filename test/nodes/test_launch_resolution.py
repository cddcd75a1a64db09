"""`ros2 launch qwen_vla_ros FILE` finds the launch files the way ros2launch does.

ros2launch resolves a file name by ``os.walk`` of the package's share directory (found with
ament_index), which does not descend into directory links; the setup script's prefix must
therefore hold real directories with per-file links.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
from ament_index_python.packages import get_package_share_directory

REPO = Path(__file__).resolve().parents[2]
LAUNCH_FILES = sorted(p.name for p in (REPO / "launch").glob("*.launch.py"))


def _load_installer():
    spec = importlib.util.spec_from_file_location("install_ament_prefix", REPO / "scripts/install_ament_prefix.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def resolve_like_ros2launch(package: str, file_name: str) -> str | None:
    """ros2launch's get_share_file_path_from_package: the first match of an os.walk."""
    share = get_package_share_directory(package)
    for root, _dirs, files in os.walk(share):  # followlinks=False, as ros2launch
        if file_name in files:
            return os.path.join(root, file_name)
    return None


@pytest.fixture()
def prefix(tmp_path, monkeypatch):
    """A fresh prefix made by the installer, with an older install's directory link in it."""
    installer = _load_installer()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in installer.executables():
        (bin_dir / name).write_text("#!/bin/sh\n")
    share = tmp_path / "share/qwen_vla_ros"
    share.mkdir(parents=True)
    (share / "launch").symlink_to(REPO / "launch")  # what older versions of the script made
    installer.install(tmp_path)
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("file_name", LAUNCH_FILES)
def test_launch_files_resolve_by_package_name(prefix, file_name):
    found = resolve_like_ros2launch("qwen_vla_ros", file_name)
    assert found is not None, f"{file_name} not found under {prefix}/share/qwen_vla_ros by os.walk"
    assert Path(found).resolve() == (REPO / "launch" / file_name).resolve()
    assert not (prefix / "share/qwen_vla_ros/launch").is_symlink()


def test_config_files_are_reachable_through_the_share_directory(prefix):
    share = Path(get_package_share_directory("qwen_vla_ros"))
    shipped = {p.relative_to(REPO / "config") for p in (REPO / "config").rglob("*.yaml")}
    linked = {p.relative_to(share / "config") for p in (share / "config").rglob("*.yaml")}
    assert shipped and shipped <= linked


def test_the_setup_scripts_prefix_resolves_too():
    """The prefix `scripts/setup.sh` made for this checkout (the venv running the tests)."""
    marker = Path(sys.prefix) / "share/ament_index/resource_index/packages/qwen_vla_ros"
    if not marker.exists():
        pytest.skip("this interpreter's prefix has no ament layout (colcon or system install)")
    if os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)[0] != sys.prefix:
        pytest.skip("AMENT_PREFIX_PATH does not start with this prefix (activate the venv)")
    for file_name in LAUNCH_FILES:
        assert resolve_like_ros2launch("qwen_vla_ros", file_name) is not None, file_name

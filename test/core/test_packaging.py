"""The colcon path installs what the package ships: every config folder and launch file is named
in setup.py's data_files (ament finds them under share/qwen_vla_ros after `colcon build`)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_setup_py_installs_every_config_folder_and_the_launch_files():
    setup_text = (REPO / "setup.py").read_text()
    folders = sorted(p.name for p in (REPO / "config").iterdir() if p.is_dir())
    assert folders, "config/ has no folders"
    missing = [f for f in folders if f'glob("config/{f}/*' not in setup_text]
    assert not missing, f"setup.py data_files leave out config/{missing}"
    assert 'glob("launch/*.launch.py")' in setup_text

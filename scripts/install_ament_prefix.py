#!/usr/bin/env python3
"""Make a pip-installed qwen_vla_ros look like a colcon install inside a prefix (a venv).

colcon puts the ament resource marker, package.xml, launch/ and config/ under
``<prefix>/share/qwen_vla_ros`` and the executables under ``<prefix>/lib/qwen_vla_ros``.
An editable pip install does neither, so this links them there, file by file in real
directories (links, so edits in the source tree take effect without reinstalling; per file,
because ros2launch's search does not follow directory links). Run it again after adding a
launch or config file. ``ros2 run``, launch_ros and
``get_package_share_directory`` then find the package once ``AMENT_PREFIX_PATH``
contains the prefix.

Usage: python scripts/install_ament_prefix.py --prefix "$VIRTUAL_ENV"
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib.metadata import distribution
from pathlib import Path

PACKAGE = "qwen_vla_ros"
REPO = Path(__file__).resolve().parents[1]


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.is_file():
        link.unlink()
    link.symlink_to(target)


def _link_tree(source: Path, target: Path) -> None:
    """Link every file of ``source`` into a real directory ``target``, one link per file.

    Not one link for the directory: ros2launch finds ``ros2 launch PKG FILE`` by
    ``os.walk(share)``, which does not descend into directory links.
    """
    if target.is_symlink():
        target.unlink()  # a directory link from an older install
    for path in sorted(source.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            _link(path, target / path.relative_to(source))
    for link in [p for p in target.rglob("*") if p.is_symlink() and not p.exists()]:
        link.unlink()  # a file removed from the source tree


def executables() -> list[str]:
    """Console scripts of the installed distribution (what `pip install -e .` put in bin/)."""
    scripts = distribution(PACKAGE).entry_points.select(group="console_scripts")
    return sorted(entry.name for entry in scripts)


def install(prefix: Path) -> None:
    share = prefix / "share" / PACKAGE
    _link(REPO / "resource" / PACKAGE, prefix / "share/ament_index/resource_index/packages" / PACKAGE)
    _link(REPO / "package.xml", share / "package.xml")
    for folder in ("launch", "config"):
        _link_tree(REPO / folder, share / folder)
    bin_dir = prefix / "bin"
    for name in executables():
        if not (bin_dir / name).exists():
            sys.exit(f"{bin_dir / name} is missing: install the package with pip first")
        _link(bin_dir / name, prefix / "lib" / PACKAGE / name)
    print(f"ament prefix ready: {share} and {prefix / 'lib' / PACKAGE}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", type=Path, default=Path(os.environ.get("VIRTUAL_ENV", sys.prefix)))
    install(parser.parse_args().prefix.resolve())


if __name__ == "__main__":
    main()

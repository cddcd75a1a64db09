#!/usr/bin/env python3
"""Make a pip-installed qwen_vla_ros look like a colcon install inside a prefix (a venv).

colcon puts the ament resource marker, package.xml, launch/ and config/ under
``<prefix>/share/qwen_vla_ros`` and the executables under ``<prefix>/lib/qwen_vla_ros``.
An editable pip install does neither, so this links them there (links, so edits in the
source tree take effect without reinstalling). ``ros2 run``, launch_ros and
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


def executables() -> list[str]:
    """Console scripts of the installed distribution (what `pip install -e .` put in bin/)."""
    scripts = distribution(PACKAGE).entry_points.select(group="console_scripts")
    return sorted(entry.name for entry in scripts)


def install(prefix: Path) -> None:
    share = prefix / "share" / PACKAGE
    _link(REPO / "resource" / PACKAGE, prefix / "share/ament_index/resource_index/packages" / PACKAGE)
    for item in ("package.xml", "launch", "config"):
        _link(REPO / item, share / item)
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

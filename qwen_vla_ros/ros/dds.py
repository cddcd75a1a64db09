"""The DDS settings this package's processes start with (no rclpy here: read before rclpy.init).

Fast DDS, the default middleware of Humble and Jazzy, moves data between processes on one
host through a shared-memory segment owned by the sender, 512 KiB unless configured. A
640x480 RGB frame is 900 KiB: with several cameras the frames overwrite each other before a
reader takes them, and best-effort readers silently lose most of them (measured in
bench/bench_dds.py and docs/dds.md). ``config/dds/fastdds_large_frames.xml`` sizes the
segment for camera frames; every node of this package loads it unless the user chose
otherwise.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, MutableMapping
from pathlib import Path

#: Fast DDS 3 (Kilted and later, and the PyPI wheels) reads the first, Fast DDS 2 the second
#: (and rmw_fastrtps on Fast DDS 3 warns in every node's log when the second is set).
PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
FAST_DDS_2_DISTROS = frozenset({"foxy", "galactic", "humble", "iron", "jazzy"})
PROFILE_NAME = "fastdds_large_frames.xml"
SEGMENT_NAME = re.compile(r"fastdds_[0-9a-f]{16}")


def large_frames_profile() -> Path:
    """The shipped Fast DDS profile (source tree, or share/qwen_vla_ros after installing)."""
    here = Path(__file__).resolve().parents[2] / "config" / "dds" / PROFILE_NAME
    if here.is_file():
        return here
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("qwen_vla_ros")) / "config" / "dds" / PROFILE_NAME
    except Exception:  # noqa: BLE001 - ament index absent or package not installed
        return here


def dds_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The variable to add to ``environ`` so that Fast DDS loads the large-frame profile: the
    one the distribution's Fast DDS reads (ROS_DISTRO; Fast DDS 3 where it is not set).

    Nothing when the user already set either profile variable (to a profile of their own; an
    empty value keeps Fast DDS's defaults and logs one XMLPARSER error), chose another middleware (RMW_IMPLEMENTATION), or the file is missing.
    """
    if any(name in environ for name in PROFILE_VARIABLES):
        return {}
    middleware = environ.get("RMW_IMPLEMENTATION", "")
    if middleware and not middleware.startswith("rmw_fastrtps"):
        return {}
    profile = large_frames_profile()
    if not profile.is_file():
        return {}
    fast_dds_2 = environ.get("ROS_DISTRO", "").lower() in FAST_DDS_2_DISTROS
    return {PROFILE_VARIABLES[1] if fast_dds_2 else PROFILE_VARIABLES[0]: str(profile)}


def use_large_frame_transport(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Add the profile variable to this process's environment (before its first rclpy.init:
    Fast DDS reads them when it creates its first participant). Returns what was added."""
    target = os.environ if environ is None else environ
    added = dds_environment(target)
    target.update(added)
    return added


def remove_orphaned_segments(created_after: float, shm_dir: Path = Path("/dev/shm")) -> int:
    """Delete Fast DDS shared-memory segments whose process died without closing them (SIGKILL),
    created after ``created_after`` (a ``time.time()``); returns how many went.

    A live participant holds an exclusive lock on its segment's ``_el`` file: a lock that can
    be taken means the owner is gone (what ``fastdds shm clean`` checks). Each holds up to the
    profile's 16 MiB of /dev/shm, so a test session that kills node processes cleans up after
    itself with this."""
    import fcntl

    removed = 0
    for lock_file in shm_dir.glob("fastdds_*_el"):
        segment = lock_file.with_name(lock_file.name[: -len("_el")])
        if not SEGMENT_NAME.fullmatch(segment.name):
            continue  # ports (fastdds_port<N>) are shared by every process on the machine
        try:
            if lock_file.stat().st_mtime < created_after or not segment.is_file():
                continue
            fd = os.open(lock_file, os.O_RDWR)
        except OSError:
            continue  # gone meanwhile, or not ours to open
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # held: its participant is alive
        finally:
            os.close(fd)
        for path in (segment, lock_file):
            path.unlink(missing_ok=True)
        removed += 1
    return removed

"""Test session setup: DDS stays on loopback, in a domain of its own for this run."""

from __future__ import annotations

import os
import random

# Before any rclpy import: these are read when a context is initialised.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
if "QWEN_VLA_TEST_DOMAIN_ID" in os.environ:
    os.environ["ROS_DOMAIN_ID"] = os.environ["QWEN_VLA_TEST_DOMAIN_ID"]
else:
    # A random domain per run, so parallel runs on one machine never see each other.
    os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 100))
os.environ.setdefault("OMP_NUM_THREADS", "1")

# The test process's own nodes (synthetic rigs, recorders) send and read camera frames as the
# package's nodes do: with the shared-memory segment sized for them (ros/dds.py).
import time  # noqa: E402

from qwen_vla_ros.ros.dds import remove_orphaned_segments, use_large_frame_transport  # noqa: E402

use_large_frame_transport()
SESSION_START = time.time()


def pytest_sessionfinish(session, exitstatus):
    """Tests kill node processes with SIGKILL: their shared-memory segments (up to 16 MiB each)
    would stay in /dev/shm after the run."""
    remove_orphaned_segments(created_after=SESSION_START - 1.0)

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
from qwen_vla_ros.ros.dds import use_large_frame_transport  # noqa: E402

use_large_frame_transport()

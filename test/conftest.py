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

"""Test session setup: DDS stays on loopback, in a domain of its own for this run (node tests
take one each: test/nodes/conftest.py); a test hung past its timeout ends the run with stacks."""

from __future__ import annotations

import faulthandler
import os
import random

import pytest

#: A test still running this long after pytest-timeout's limit (setup.cfg) is hung where the
#: timeout's signal cannot reach it.
HUNG_AFTER_TIMEOUT_S = 60.0

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
_REAL_STDERR = pytest.StashKey()


def pytest_sessionfinish(session, exitstatus):
    """Tests kill node processes with SIGKILL: their shared-memory segments (up to 16 MiB each)
    would stay in /dev/shm after the run."""
    remove_orphaned_segments(created_after=SESSION_START - 1.0)


def pytest_configure(config):
    """Keep a handle on the real stderr (tests' output is captured): the hang report below
    must reach the CI log."""
    config.stash[_REAL_STDERR] = os.fdopen(os.dup(2), "w")


def pytest_unconfigure(config):
    config.stash[_REAL_STDERR].close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):  # noqa: ARG001 - hook signature
    """End the run, with every thread's stack, when a test outlives its timeout by a minute.

    pytest-timeout raises from a SIGALRM handler, which Python runs only between bytecodes: a
    test blocked inside native code (a middleware call) never sees it, nor does a teardown
    after the timeout fired once. Such a run would otherwise hold CI until its limit and print
    nothing about where it stood (a CI run hung in test_e2e_record_train for 80 minutes).
    """
    asked = item.config.getoption("timeout", default=None)  # --timeout, else setup.cfg's
    timeout_s = float((item.config.getini("timeout") if asked is None else asked) or 0)
    if timeout_s <= 0:  # no timeout asked for (a debugging session): nothing to enforce
        yield
        return
    file = item.config.stash[_REAL_STDERR]
    faulthandler.dump_traceback_later(timeout_s + HUNG_AFTER_TIMEOUT_S, exit=True, file=file)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()

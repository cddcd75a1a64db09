"""Fixtures for node tests: a private rclpy context and an executor spun in the background."""

from __future__ import annotations

import pytest
import rclpy
from node_test_helpers import Spinner


@pytest.fixture(scope="session", autouse=True)
def tiny_policy_cache(tmp_path_factory):
    """One fresh cache for the session: the nodes build the tiny untrained policy into it once,
    as on a new machine, and never touch the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("QWEN_VLA_CACHE", str(tmp_path_factory.mktemp("qwen_vla_cache")))
        yield


@pytest.fixture()
def ros_context():
    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    if context.ok():
        rclpy.shutdown(context=context)


@pytest.fixture()
def spinner(ros_context):
    spin = Spinner(ros_context)
    yield spin
    spin.close()

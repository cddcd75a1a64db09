"""Fixtures for node tests: a private rclpy context and an executor spun in the background."""

from __future__ import annotations

import pytest
import rclpy
from node_test_helpers import Spinner


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

"""Fixtures for the control-core tests (plain pytest, no ROS)."""

from __future__ import annotations

import pytest
from control_testkit import embodiment

from qwen_vla_ros.embodiment import Embodiment


@pytest.fixture
def aloha() -> Embodiment:
    return embodiment("aloha")


@pytest.fixture
def mobile_aloha() -> Embodiment:
    return embodiment("mobile_aloha")


@pytest.fixture
def mobile_base() -> Embodiment:
    return embodiment("mobile_base")

"""Fixtures for node tests: a private rclpy context and an executor spun in the background."""

from __future__ import annotations

import os
import random

import pytest
import rclpy
from node_test_helpers import Spinner

#: DDS domains a node test may take: not 0 (the default a lab's robots talk on), and none whose
#: ports fall in Linux's ephemeral range (the ROS 2 documentation's 1-101 and 215-232).
FREE_DOMAINS = [*range(1, 102), *range(215, 233)]
random.SystemRandom().shuffle(FREE_DOMAINS)


@pytest.fixture(autouse=True)
def dds_domain_of_its_own(monkeypatch):
    """Each node test talks in a DDS domain no earlier test of the session used; the node
    processes it starts inherit it (bringup.child_environment copies this environment).

    The fault tests kill node processes with SIGKILL on purpose, and Fast DDS's shared-memory
    ports of a domain can be left locked or broken by a participant killed mid-send (upstream
    issues eProsima/Fast-DDS #5469, #6484): a later sender to them blocks inside the
    middleware, where no Python timeout reaches. That is the likely, not proven, cause of a CI
    run that hung in the test after the fault tests until its 90 minutes were up (not
    reproduced here). A domain per test keeps what one test breaks out of the next.
    QWEN_VLA_TEST_DOMAIN_ID pins one domain for every test (to watch one with `ros2 topic echo`).
    """
    if "QWEN_VLA_TEST_DOMAIN_ID" in os.environ:
        yield int(os.environ["ROS_DOMAIN_ID"])
        return
    domain = FREE_DOMAINS.pop(0)
    FREE_DOMAINS.append(domain)  # reused only after every other one (more tests than domains)
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
    yield domain


@pytest.fixture(scope="session", autouse=True)
def tiny_policy_cache(tmp_path_factory):
    """One fresh cache for the session: the nodes build the tiny untrained policy into it once,
    as on a new machine, and never touch the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("QWEN_VLA_CACHE", str(tmp_path_factory.mktemp("qwen_vla_cache")))
        yield


@pytest.fixture()
def ros_context(dds_domain_of_its_own):
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=dds_domain_of_its_own)
    yield context
    if context.ok():
        rclpy.shutdown(context=context)


@pytest.fixture()
def spinner(ros_context):
    spin = Spinner(ros_context)
    yield spin
    spin.close()

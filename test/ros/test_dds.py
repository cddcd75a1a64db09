"""Which Fast DDS profile the package's processes start with (ros/dds.py), and the profile itself."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from qwen_vla_ros.bringup import child_environment
from qwen_vla_ros.ros.dds import (
    PROFILE_VARIABLES,
    dds_environment,
    large_frames_profile,
    remove_orphaned_segments,
)

FULL_SIZE_FRAME_BYTES = 640 * 480 * 3


def test_the_profile_sizes_the_shared_memory_segment_for_four_full_size_frames_per_tick():
    root = ET.parse(large_frames_profile()).getroot()
    ns = {"p": "http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles"}
    segment = int(root.find("p:transport_descriptors/p:transport_descriptor[p:type='SHM']/p:segment_size", ns).text)
    assert segment >= 4 * 4 * FULL_SIZE_FRAME_BYTES
    participant = root.find("p:participant", ns)
    assert participant.get("is_default_profile") == "true"  # loaded without naming it in code
    assert participant.find("p:rtps/p:useBuiltinTransports", ns).text == "false"  # else the 512 KiB default stays
    used = [t.text for t in participant.findall("p:rtps/p:userTransports/p:transport_id", ns)]
    declared = {t.find("p:transport_id", ns).text: t.find("p:type", ns).text
                for t in root.findall("p:transport_descriptors/p:transport_descriptor", ns)}
    assert sorted(declared[t] for t in used) == ["SHM", "UDPv4"]  # UDP: discovery and other hosts


@pytest.mark.parametrize(("distro", "variable"), [
    ("", "FASTDDS_DEFAULT_PROFILES_FILE"),  # PyPI wheels: Fast DDS 3
    ("kilted", "FASTDDS_DEFAULT_PROFILES_FILE"),
    ("humble", "FASTRTPS_DEFAULT_PROFILES_FILE"),
    ("jazzy", "FASTRTPS_DEFAULT_PROFILES_FILE"),
])
def test_the_variable_set_is_the_one_the_distributions_fast_dds_reads(distro, variable):
    environ = {"ROS_DISTRO": distro} if distro else {}
    assert dds_environment(environ) == {variable: str(large_frames_profile())}


@pytest.mark.parametrize("environ", [
    {"FASTDDS_DEFAULT_PROFILES_FILE": "/lab/profile.xml"},
    {"FASTRTPS_DEFAULT_PROFILES_FILE": ""},
    {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"},
], ids=["own profile", "empty: Fast DDS defaults", "another middleware"])
def test_a_users_own_choice_is_left_alone(environ):
    assert dds_environment(environ) == {}


def test_node_processes_started_by_bringup_get_the_profile(monkeypatch):
    for name in (*PROFILE_VARIABLES, "ROS_DISTRO", "RMW_IMPLEMENTATION"):
        monkeypatch.delenv(name, raising=False)
    assert child_environment()["FASTDDS_DEFAULT_PROFILES_FILE"] == str(large_frames_profile())


def test_segments_of_killed_processes_are_removed_and_live_ones_kept(tmp_path):
    import fcntl
    import os
    import time

    live, dead, port = "fastdds_00112233445566aa", "fastdds_00112233445566bb", "fastdds_port7411"
    for name in (live, dead, port):
        (tmp_path / name).write_bytes(b"\0" * 64)
        (tmp_path / f"{name}_el").touch()
    held = os.open(tmp_path / f"{live}_el", os.O_RDWR)
    fcntl.flock(held, fcntl.LOCK_EX)  # as a live participant holds its own
    try:
        assert remove_orphaned_segments(created_after=time.time() - 60, shm_dir=tmp_path) == 1
    finally:
        os.close(held)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [live, f"{live}_el", port, f"{port}_el"])
    assert remove_orphaned_segments(created_after=time.time() + 60, shm_dir=tmp_path) == 0  # older: not ours

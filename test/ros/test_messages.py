"""Message helpers, tested without spinning ROS (like nav2_simple_commander's helpers)."""

from __future__ import annotations

import numpy as np
import pytest
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from test_msgs.msg import Arrays

from qwen_vla_ros.ros.messages import (
    MessageConversionError,
    chunk_to_msg,
    fill_fields,
    joint_state_values,
    message_class,
    msg_to_chunk,
    to_seconds,
    to_time,
)
from qwen_vla_ros.types import ActionChunk

NAMES = ["arm/j1", "arm/j2"]


def test_chunk_round_trip_keeps_values_and_timing():
    chunk = ActionChunk(np.arange(10.0).reshape(5, 2), NAMES, dt=0.02, start_time=12.345, embodiment="x", chunk_id=7)
    back = msg_to_chunk(chunk_to_msg(chunk), NAMES, dt=0.02)
    np.testing.assert_array_equal(back.actions, chunk.actions)
    assert back.dt == pytest.approx(0.02) and back.start_time == pytest.approx(12.345)
    assert (back.embodiment, back.chunk_id) == ("x", 7)


def test_chunk_with_wrong_names_or_ragged_points_is_refused():
    msg = chunk_to_msg(ActionChunk(np.zeros((3, 2)), NAMES, dt=0.02))
    with pytest.raises(MessageConversionError, match="do not match"):
        msg_to_chunk(msg, ["arm/j1", "arm/j3"], dt=0.02)
    msg.points[1].positions = [0.0]
    with pytest.raises(MessageConversionError, match="values, expected 2"):
        msg_to_chunk(msg, NAMES, dt=0.02)
    msg.points[1].positions = [0.0, 0.0]
    msg.points[2].time_from_start.nanosec = 90_000_000
    with pytest.raises(MessageConversionError, match="not evenly spaced"):
        msg_to_chunk(msg, NAMES, dt=0.02)


def test_time_conversion_round_trip():
    assert to_seconds(to_time(1234.000000123)) == pytest.approx(1234.000000123, abs=1e-9)


def test_joint_state_length_mismatch_is_an_error():
    with pytest.raises(MessageConversionError, match="2 names but 1 positions"):
        joint_state_values(JointState(name=["a", "b"], position=[1.0]))


def test_joint_state_with_ragged_velocity_or_effort_is_refused_whole():
    # Positions that look valid come from a broken sender: taking them moved a hold 1 rad.
    with pytest.raises(MessageConversionError, match="2 names but 7 velocity"):
        joint_state_values(JointState(name=["a", "b"], position=[0.0, 0.0], velocity=[0.0] * 7))
    with pytest.raises(MessageConversionError, match="2 names but 1 effort"):
        joint_state_values(JointState(name=["a", "b"], position=[0.0, 0.0], effort=[1.0]))
    # Empty velocity and effort arrays are allowed (a driver that measures positions only).
    full = JointState(name=["a", "b"], position=[0.1, 0.2], velocity=[0.0, 0.0], effort=[])
    assert joint_state_values(full) == {"a": 0.1, "b": 0.2}


def test_message_class_by_name_and_missing_package():
    assert message_class("std_msgs/msg/Float64MultiArray") is Float64MultiArray
    with pytest.raises(MessageConversionError, match="not installed"):
        message_class("interbotix_xs_msgs/msg/JointGroupCommand")


def test_fill_fields_sets_typed_arrays_and_strings():
    msg = fill_fields(Arrays(), {"float32_values": np.array([1.5, 2.0, 3.0]), "string_values": ["arm", "x", "y"]})
    assert list(msg.float32_values) == [1.5, 2.0, 3.0]
    with pytest.raises(MessageConversionError, match="no field"):
        fill_fields(Arrays(), {"cmd": [1.0]})

"""Quality-of-service profiles, one place for every node."""

from __future__ import annotations

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

#: Cameras and joint states: best effort, newest only (a late frame is worthless).
SENSOR = qos_profile_sensor_data

#: The instruction: reliable and transient-local, so a node started later still gets the last one.
LATCHED = QoSProfile(
    depth=1,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)

#: Action chunks and controller commands: reliable, shallow (only the newest matters).
COMMAND = QoSProfile(
    depth=2,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

#: Observers that must not miss a message (the episode monitor's record of every tick): a deep
#: queue, so a busy executor catches up later instead of dropping samples.
RECORD_RELIABLE = QoSProfile(
    depth=500,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
RECORD_SENSOR = QoSProfile(
    depth=500,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.BEST_EFFORT,
    durability=DurabilityPolicy.VOLATILE,
)

#: Commands anyone may send (e-stop, instruction) are subscribed twice: LATCHED, so a node
#: started later still gets the last value, and ANY_DURABILITY, which also matches volatile
#: publishers (`ros2 topic pub` since ros2cli 0.22, teleop and joystick drivers).
ANY_DURABILITY = QoSProfile(
    depth=10,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.BEST_EFFORT,
    durability=DurabilityPolicy.VOLATILE,
)

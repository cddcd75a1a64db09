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

#: Commands anyone may send (e-stop, instruction) are subscribed twice: LATCHED_READER, so a
#: node started later still gets the last value, and ANY_DURABILITY, which also matches
#: volatile and best-effort publishers (`ros2 topic pub` since ros2cli 0.22, teleop and
#: joystick drivers). Both keep the same depth, so a transient-local publisher's messages
#: queue identically on both and ``ros/dedup.DuplicateFilter`` pairs the copies in order (a
#: shallower queue would skip values the other one still delivers, late and out of order).
PAIRED_DEPTH = 10
LATCHED_READER = QoSProfile(
    depth=PAIRED_DEPTH,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
ANY_DURABILITY = QoSProfile(
    depth=PAIRED_DEPTH,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.BEST_EFFORT,
    durability=DurabilityPolicy.VOLATILE,
)

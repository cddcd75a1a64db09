"""Quality-of-service profiles, one place for every node."""

from __future__ import annotations

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

#: Cameras and joint states, as read by the control graph: best effort, newest only (a late
#: frame is worthless). Matches best-effort and reliable publishers alike.
SENSOR = qos_profile_sensor_data

#: What the simulated robot publishes its joint states with: reliable, as ros2_control's
#: joint_state_broadcaster does. Best-effort readers (SENSOR) still match; a recorder that
#: matches the publisher (rosbag2 style) gets retransmissions instead of losses on a busy
#: machine. The depth is 4 s at 50 Hz: a loaded reader that far behind still gets every
#: sample (a writer resends only what its history still holds). Camera frames are reliable
#: too (CAMERA_PUBLISHER). A first reliable try starved a test's recorder of joint states; the
#: cause was Fast DDS's default 512 KiB shared-memory segment, which camera frames filled
#: (fixed by config/dds/fastdds_large_frames.xml, docs/dds.md).
JOINT_STATE_PUBLISHER = QoSProfile(
    depth=200,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

#: What the simulated robot publishes camera frames with: reliable, like its joint states, so
#: a recorder that matches the publisher gets a late frame resent instead of losing it. Best
#: effort, whole-suite runs on a loaded 2-core machine lost one stretch of 13-17 frames of all
#: cameras at once in 2 of 5 recordings while no joint state went missing. 30 deep: 3 s at
#: the simulator's 10 Hz. Camera drivers on a rig publish best effort; SENSOR readers (the
#: control graph) match both.
CAMERA_PUBLISHER = QoSProfile(
    depth=30,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

#: The instruction: reliable and transient-local, so a node started later still gets the last one.
LATCHED = QoSProfile(
    depth=1,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)

#: Action chunks and controller commands, as read by the graph: reliable, shallow (only the
#: newest matters to a controller).
COMMAND = QoSProfile(
    depth=2,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

#: What command publishers offer: the same, with a deeper history. A reliable writer resends
#: only what is still in its history, so a depth of 2 let a loaded recorder lose commands;
#: shallow readers (COMMAND) still get only the newest.
COMMAND_PUBLISHER = QoSProfile(
    depth=20,
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

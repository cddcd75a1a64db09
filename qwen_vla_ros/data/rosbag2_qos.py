"""rosbag2's ``offered_qos_profiles`` channel metadata (pure core).

``ros2 bag play`` reads it to offer each topic with the QoS it was recorded from; MCAP's
ros2 profile lists it as required channel metadata.
"""

from __future__ import annotations

from typing import Any

#: rosbag2's spelling of an infinite QoS duration (RMW_DURATION_INFINITE as sec/nsec).
INFINITE_DURATION = {"sec": 2147483647, "nsec": 4294967295}


def qos_duration(nanoseconds: int) -> dict[str, int]:
    """A QoS duration as rosbag2 writes it; 0 (the default) and very long ones are infinite."""
    if nanoseconds <= 0 or nanoseconds >= INFINITE_DURATION["sec"] * 1_000_000_000:
        return dict(INFINITE_DURATION)
    sec, nsec = divmod(int(nanoseconds), 1_000_000_000)
    return {"sec": sec, "nsec": nsec}


def offered_qos_profiles_yaml(profiles: list[dict[str, Any]]) -> str:
    """rosbag2's ``offered_qos_profiles`` channel metadata: a YAML list, one entry per publisher.

    Each profile holds the rmw enum values (``history`` 1 keep-last / 2 keep-all,
    ``reliability`` 1 reliable / 2 best-effort, ``durability`` 1 transient-local / 2 volatile,
    ``liveliness`` 1 automatic / 3 manual-by-topic), ``depth``, and the durations ``deadline``,
    ``lifespan``, ``liveliness_lease_duration`` in ns; written in the integer form rosbag2
    has used since Foxy, which ``ros2 bag play`` reads to offer the same QoS again.
    """
    lines = []
    for p in profiles:
        lines += [
            f"- history: {int(p.get('history', 1))}",
            f"  depth: {int(p.get('depth', 0))}",
            f"  reliability: {int(p['reliability'])}",
            f"  durability: {int(p['durability'])}",
        ]
        for key in ("deadline", "lifespan"):
            d = qos_duration(int(p.get(key, 0)))
            lines += [f"  {key}:", f"    sec: {d['sec']}", f"    nsec: {d['nsec']}"]
        lines.append(f"  liveliness: {int(p.get('liveliness', 1))}")
        d = qos_duration(int(p.get("liveliness_lease_duration", 0)))
        lines += ["  liveliness_lease_duration:", f"    sec: {d['sec']}", f"    nsec: {d['nsec']}"]
        lines.append("  avoid_ros_namespace_conventions: false")
    return "\n".join(lines) + ("\n" if lines else "")


#: What a channel without recorded publishers offers: reliable, volatile, keep last 10 (a
#: reliable publisher matches every subscriber).
DEFAULT_OFFERED_QOS = offered_qos_profiles_yaml([{"depth": 10, "reliability": 1, "durability": 2}])

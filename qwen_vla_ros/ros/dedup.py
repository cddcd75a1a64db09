"""Duplicate filter for a topic subscribed twice (no rclpy: testable without spinning).

The e-stop and the instruction are subscribed with two QoS profiles (``ros/qos.py``): a
transient-local publisher is matched by both subscriptions, so each of its messages arrives
twice; a volatile publisher only by one. Both copies of a message arrive in publication
order on each subscription, so a message is a duplicate when it equals the oldest value the
*other* subscription delivered and this one has not seen yet (within ``window_s``).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable


class DuplicateFilter:
    """Decides per received value whether it is new or the other subscription's copy.

    Args:
        window_s: how long a value waits for its copy, s of wall time (copies of one message
            arrive within milliseconds; a volatile publisher's value has no copy and expires).
        clock: seconds, monotonic (a parameter for tests).
    """

    def __init__(self, window_s: float = 2.0, clock: Callable[[], float] = time.monotonic):
        self.window_s = window_s
        self.clock = clock
        self._pending: dict[int, deque[tuple[Hashable, float]]] = {0: deque(), 1: deque()}

    def accept(self, subscription: int, value: Hashable) -> bool:
        """True when ``value`` from ``subscription`` (0 or 1) is new and should be acted on."""
        now = self.clock()
        for pending in self._pending.values():
            while pending and now - pending[0][1] > self.window_s:
                pending.popleft()
        other = self._pending[1 - subscription]
        for i, (seen, _) in enumerate(other):
            if seen == value:
                # the copy of a message the other subscription delivered: everything the other
                # one delivered before it has no copy coming (a volatile publisher's values)
                for _ in range(i + 1):
                    other.popleft()
                return False
        self._pending[subscription].append((value, now))
        return True

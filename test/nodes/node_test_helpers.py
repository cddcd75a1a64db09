"""Helpers for node tests: a background spinner and a polling wait."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from rclpy.executors import SingleThreadedExecutor


class Spinner:
    """Spins the given nodes on a background thread until closed."""

    def __init__(self, context):
        self.executor = SingleThreadedExecutor(context=context)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)

    def add(self, *nodes) -> None:
        for node in nodes:
            self.executor.add_node(node)

    def start(self) -> Spinner:
        self._thread.start()
        return self

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.02)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.executor.shutdown()


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0, period_s: float = 0.02) -> bool:
    """Poll ``condition`` until true or the timeout passes; returns its last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(period_s)
    return bool(condition())

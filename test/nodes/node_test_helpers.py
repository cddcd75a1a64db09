"""Helpers for node tests: a background spinner and a polling wait."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import contextmanager

from rclpy.executors import SingleThreadedExecutor


class Spinner:
    """Spins the given nodes on a background thread until closed."""

    def __init__(self, context):
        self.executor = SingleThreadedExecutor(context=context)
        self._stop = threading.Event()
        self._resume = threading.Event()
        self._resume.set()
        self._idle = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)

    def add(self, *nodes) -> None:
        for node in nodes:
            self.executor.add_node(node)

    def start(self) -> Spinner:
        self._thread.start()
        return self

    def _spin(self) -> None:
        while not self._stop.is_set():
            if not self._resume.is_set():
                self._idle.set()
                self._resume.wait(timeout=0.1)
                continue
            self._idle.clear()
            self.executor.spin_once(timeout_sec=0.02)

    @contextmanager
    def paused(self):
        """The spin thread waits outside the executor meanwhile. Destroy nodes in here: a node
        destroyed while another thread's wait set holds its entities is torn down in that
        thread, inside the middleware, holding the GIL (a test hung there for minutes)."""
        self._idle.clear()
        self._resume.clear()
        try:
            if self._thread.is_alive():
                assert self._idle.wait(timeout=10), "the spin thread did not come out of spin_once"
            yield
        finally:
            self._resume.set()

    def remove_and_destroy(self, *nodes) -> None:
        """Take ``nodes`` off the executor and destroy them while it is not spinning."""
        with self.paused():
            for node in nodes:
                self.executor.remove_node(node)
                node.destroy_node()

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

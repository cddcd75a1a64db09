"""Loss-free recording: a bounded queue in front of the MCAP writer, with per-topic counters.

The recorder node's callbacks only hand the serialised bytes to :class:`QueuedEpisodeWriter`
(a dict append under a lock, no I/O, no compression); one background thread writes them to
:class:`.mcap_io.McapEpisodeWriter` in arrival order, episode marks included. A callback thread
that is never blocked by disk or zstd keeps the DDS reader queues short, so nothing overflows.

Counters per topic (:class:`TopicCounters`): messages received, written, dropped (the queue
was full, or the middleware reported lost samples), and gaps (an interval between two
messages longer than the topic's expected ``max_age_s``). They are stored in the recording's
``qwen_vla`` metadata record under ``topic_stats`` (JSON) and printed when the file closes.

Pure core: no rclpy.
"""

from __future__ import annotations

import json
import queue
import struct
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .mcap_io import McapEpisodeWriter

#: Most bytes of messages waiting for the writer thread before new ones are dropped (and
#: counted): 1 GiB holds about 20 s of three 640x480 RGB cameras at 30 Hz.
DEFAULT_QUEUE_BYTES = 1 << 30


def header_stamp_ns(data: bytes) -> int | None:
    """``header.stamp`` of a CDR message whose first field is a ``std_msgs/Header``, ns.

    The CDR layout puts the 4-byte encapsulation header first, then ``stamp.sec`` (int32) and
    ``stamp.nanosec`` (uint32). Returns None for a zero stamp (publishers use zero for "now").
    """
    if len(data) < 12:
        return None
    little = data[1] & 1 == 1  # encapsulation kind: CDR_LE = 0x0001, CDR_BE = 0x0000
    sec, nanosec = struct.unpack("<iI" if little else ">iI", data[4:12])
    stamp = sec * 1_000_000_000 + nanosec
    return stamp if stamp > 0 else None


@dataclass
class TopicCounters:
    """What happened to one topic during a recording.

    Attributes:
        received: messages handed to the writer (including dropped ones).
        written: messages written to the file.
        dropped_queue_full: messages dropped because the writer queue was full.
        lost_in_transport: samples the middleware reported lost (best-effort topics).
        gaps: intervals between consecutive messages longer than ``gap_threshold_s``.
        longest_gap_s: the longest interval between consecutive messages, s.
        gap_threshold_s: the interval that counts as a gap (the topic's ``max_age_s``), s;
            None where the topic has no expected rate (then no gaps are counted).
    """

    received: int = 0
    written: int = 0
    dropped_queue_full: int = 0
    lost_in_transport: int = 0
    gaps: int = 0
    longest_gap_s: float = 0.0
    gap_threshold_s: float | None = None
    _last_ns: int | None = None

    @property
    def dropped(self) -> int:
        return self.dropped_queue_full + self.lost_in_transport

    def note_time(self, time_ns: int) -> None:
        if self._last_ns is not None:
            interval = max(0, time_ns - self._last_ns) * 1e-9
            self.longest_gap_s = max(self.longest_gap_s, interval)
            if self.gap_threshold_s is not None and interval > self.gap_threshold_s:
                self.gaps += 1
        self._last_ns = time_ns

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        out["dropped"] = self.dropped
        out["longest_gap_s"] = round(self.longest_gap_s, 6)
        return out


class QueuedEpisodeWriter:
    """Thread-safe front of :class:`McapEpisodeWriter`: callers enqueue, one thread writes.

    Episode bookkeeping (``episode_open``, the returned episode numbers) is answered at once
    from the caller's side, so a callback never waits for the disk.

    Args:
        path: the ``.mcap`` file to create.
        metadata: key/value strings for the ``qwen_vla`` metadata record.
        queue_bytes: most bytes waiting to be written before messages are dropped (counted).
        log: where the end-of-recording summary lines go (default: nowhere).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        metadata: dict[str, str] | None = None,
        queue_bytes: int = DEFAULT_QUEUE_BYTES,
        log: Callable[[str], None] | None = None,
    ):
        self.path = Path(path)
        self._writer = McapEpisodeWriter(self.path, metadata=metadata)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._queue_limit = int(queue_bytes)
        self._queued_bytes = 0
        self._lock = threading.Lock()
        self._counters: dict[str, TopicCounters] = {}
        self._episodes_started = 0
        self._episode_open = False
        self._closed = False
        self._error: BaseException | None = None
        self._log = log or (lambda line: None)
        self._thread = threading.Thread(target=self._drain, name="mcap-writer", daemon=True)
        self._thread.start()

    # -- caller side ------------------------------------------------------------------
    def declare_topic(
        self,
        topic: str,
        type_name: str,
        definition: str | None = None,
        channel_metadata: dict[str, str] | None = None,
        gap_threshold_s: float | None = None,
    ) -> None:
        """Register a topic (schema, channel metadata such as ``offered_qos_profiles``)."""
        with self._lock:
            counters = self._counters.setdefault(topic, TopicCounters())
            counters.gap_threshold_s = gap_threshold_s
            if not self._closed:
                self._queue.put(
                    ("topic", (topic, type_name, definition, channel_metadata), 0)
                )

    def counters(self, topic: str) -> TopicCounters:
        with self._lock:
            return self._counters.setdefault(topic, TopicCounters())

    def write(
        self,
        topic: str,
        type_name: str,
        data: bytes,
        receive_time_ns: int,
        publish_time_ns: int | None = None,
    ) -> bool:
        """Queue one serialised message; False (and counted) when dropped or closed."""
        size = len(data)
        with self._lock:
            if self._closed:
                return False
            counters = self._counters.setdefault(topic, TopicCounters())
            counters.received += 1
            counters.note_time(int(receive_time_ns))
            if self._queued_bytes + size > self._queue_limit:
                counters.dropped_queue_full += 1
                return False
            self._queued_bytes += size
            self._queue.put(
                ("message", (topic, type_name, data, receive_time_ns, publish_time_ns), size)
            )
            return True

    def note_lost(self, topic: str, count: int) -> None:
        """Samples the middleware reports lost on ``topic`` (message-lost event)."""
        with self._lock:
            self._counters.setdefault(topic, TopicCounters()).lost_in_transport += int(count)

    @property
    def episode_open(self) -> bool:
        return self._episode_open

    def start_episode(self, task: str, time_ns: int, **extra: Any) -> int:
        """Queue an episode start (an open one is ended first); returns its number."""
        if not task or not task.strip():
            raise ValueError("an episode needs a task text (the language instruction)")
        with self._lock:
            self._check_open()
            index = self._episodes_started
            self._episodes_started += 1
            self._episode_open = True
            self._queue.put(("start", (task, time_ns, extra), 0))
            return index

    def end_episode(self, time_ns: int, success: bool | None = None, **extra: Any) -> None:
        with self._lock:
            self._check_open()
            if not self._episode_open:
                raise RuntimeError("end_episode() without an open episode")
            self._episode_open = False
            self._queue.put(("end", (time_ns, success, extra), 0))

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self.path} is already closed")

    def stats(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {topic: c.as_dict() for topic, c in sorted(self._counters.items())}

    def close(self) -> dict[str, dict[str, Any]]:
        """Write what is queued, store the counters in the metadata, close; returns the counters."""
        with self._lock:
            if self._closed:
                return {t: c.as_dict() for t, c in sorted(self._counters.items())}
            self._closed = True
            self._queue.put(("stop", None, 0))
        self._thread.join()
        stats = self.stats()
        self._writer.set_metadata("topic_stats", json.dumps(stats))
        self._writer.close()
        for line in summary_lines(stats):
            self._log(line)
        if self._error is not None:
            raise RuntimeError(f"writing {self.path} failed: {self._error}") from self._error
        return stats

    # -- writer thread ----------------------------------------------------------------
    def _drain(self) -> None:
        while True:
            kind, payload, size = self._queue.get()
            if kind == "stop":
                return
            try:
                self._apply(kind, payload)
            except Exception as exc:  # noqa: BLE001 - kept and raised by close()
                if self._error is None:
                    self._error = exc
            finally:
                if size:
                    with self._lock:
                        self._queued_bytes -= size

    def _apply(self, kind: str, payload: Any) -> None:
        if kind == "message":
            topic, type_name, data, receive_ns, publish_ns = payload
            self._writer.write(topic, type_name, data, receive_ns, publish_ns)
            with self._lock:
                self._counters[topic].written += 1
        elif kind == "topic":
            self._writer.add_topic(*payload)
        elif kind == "start":
            task, time_ns, extra = payload
            self._writer.start_episode(task, time_ns, **extra)
        elif kind == "end":
            time_ns, success, extra = payload
            self._writer.end_episode(time_ns, success, **extra)


def summary_lines(stats: dict[str, dict[str, Any]]) -> list[str]:
    """One line per topic: received, written, dropped, gaps (for the end-of-recording log)."""
    lines = []
    for topic, c in stats.items():
        gaps = (
            f", {c['gaps']} gaps > {c['gap_threshold_s']} s"
            if c.get("gap_threshold_s") is not None
            else ""
        )
        lines.append(
            f"{topic}: received {c['received']}, written {c['written']}, dropped {c['dropped']}"
            f" (queue full {c['dropped_queue_full']}, lost in transport {c['lost_in_transport']})"
            f"{gaps}, longest interval {c['longest_gap_s']:.3f} s"
        )
    return lines

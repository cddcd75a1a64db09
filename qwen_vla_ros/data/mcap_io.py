"""Episode recordings in MCAP, the rosbag2 way, and reading them back (pure core, no rclpy).

Writing: :class:`McapEpisodeWriter` takes messages that are *already* CDR-serialised
(``rclpy.serialization.serialize_message(msg)`` in the recorder node) with their
type name; it writes one schema per type (encoding ``ros2msg``, the complete
definition text from :mod:`.msg_definitions`) and one channel per topic
(encoding ``cdr``), the layout rosbag2's MCAP storage plugin writes and reads.

Episode boundaries and the task text are messages on :data:`EPISODE_TOPIC`
(``std_msgs/msg/String`` holding JSON), so they survive ``ros2 bag play`` and any
MCAP tool, and a recorder may equally publish them on that topic itself:

    {"event": "start", "episode": 0, "task": "pick up the cube", "embodiment": "aloha"}
    {"event": "end", "episode": 0, "success": true}

A summary of all episodes is also written as an MCAP metadata record named
:data:`METADATA_NAME` when the file is closed (rosbag2 only reads the record
named ``rosbag2``, so it ignores this one).

Reading: :func:`read_recording` decodes with ``mcap_ros2.decoder`` into per-topic
time series (receive and publish times in ns) plus the episode marks.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from mcap.reader import make_reader
from mcap.well_known import MessageEncoding, SchemaEncoding
from mcap.writer import CompressionType, Writer
from mcap_ros2._dynamic import serialize_dynamic
from mcap_ros2.decoder import DecoderFactory

from .errors import DatasetError
from .msg_definitions import MessageDefinitionError, full_type_name, message_definition
from .rosbag2_qos import DEFAULT_OFFERED_QOS

EPISODE_TOPIC = "/qwen_vla/episode"
EPISODE_TYPE = "std_msgs/msg/String"
METADATA_NAME = "qwen_vla"
PROFILE = "ros2"

_COMPRESSION = {
    "zstd": CompressionType.ZSTD,
    "lz4": CompressionType.LZ4,
    "none": CompressionType.NONE,
}


def _episode_definition() -> str:
    """std_msgs/String's definition; its one field is known, so no install is needed for it."""
    try:
        return message_definition(EPISODE_TYPE)
    except MessageDefinitionError:
        return "string data\n"


class McapEpisodeWriter:
    """Write a ROS 2 MCAP recording with episode marks; thread safe (one lock per file).

    Args:
        path: the ``.mcap`` file to create (parent folders are made).
        compression: chunk compression, ``zstd`` (default), ``lz4`` or ``none``.
        metadata: free key/value strings stored in the :data:`METADATA_NAME` record.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        compression: str = "zstd",
        chunk_size: int = 1 << 20,
        metadata: dict[str, str] | None = None,
    ):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self._writer = Writer(
            self._file, chunk_size=chunk_size, compression=_COMPRESSION[compression.lower()]
        )
        self._writer.start(profile=PROFILE, library="qwen_vla_ros")
        self._lock = threading.Lock()
        self._schemas: dict[str, int] = {}
        self._channels: dict[str, tuple[int, str]] = {}
        self._metadata = dict(metadata or {})
        self._episodes: list[dict[str, Any]] = []
        self._open_episode: dict[str, Any] | None = None
        self._last_time_ns = 0
        self._sequence = 0
        self._closed = False
        self._encode_event = serialize_dynamic(EPISODE_TYPE, _episode_definition())[EPISODE_TYPE]
        self.message_count = 0

    # -- topics and messages -------------------------------------------------------
    def add_topic(
        self,
        topic: str,
        type_name: str,
        definition: str | None = None,
        channel_metadata: dict[str, str] | None = None,
    ) -> None:
        """Declare a topic; ``definition`` defaults to the installed complete .msg text.

        ``channel_metadata`` may carry rosbag2's ``offered_qos_profiles`` YAML; without it
        the channel offers :data:`.rosbag2_qos.DEFAULT_OFFERED_QOS` (reliable, volatile).
        """
        with self._lock:
            self._add_topic_locked(topic, type_name, definition, channel_metadata)

    def _add_topic_locked(self, topic, type_name, definition, channel_metadata) -> int:
        type_name = full_type_name(type_name)
        if topic in self._channels:
            channel_id, known_type = self._channels[topic]
            if known_type != type_name:
                raise ValueError(f"topic {topic} was declared as {known_type}, not {type_name}")
            return channel_id
        if type_name not in self._schemas:
            text = definition if definition is not None else message_definition(type_name)
            self._schemas[type_name] = self._writer.register_schema(
                name=type_name, encoding=SchemaEncoding.ROS2, data=text.encode("utf-8")
            )
        metadata = dict(channel_metadata or {})
        metadata.setdefault("offered_qos_profiles", DEFAULT_OFFERED_QOS)
        channel_id = self._writer.register_channel(
            topic=topic,
            message_encoding=MessageEncoding.CDR,
            schema_id=self._schemas[type_name],
            metadata=metadata,
        )
        self._channels[topic] = (channel_id, type_name)
        return channel_id

    def write(
        self,
        topic: str,
        type_name: str,
        data: bytes,
        receive_time_ns: int,
        publish_time_ns: int | None = None,
        definition: str | None = None,
    ) -> None:
        """Append one CDR-serialised message.

        Args:
            receive_time_ns: when the recorder received it, ns (MCAP log time; rosbag2's
                recv_timestamp). Use the node's clock, so simulated time records as such.
            publish_time_ns: the message's own stamp (header.stamp) where it has one, ns;
                defaults to the receive time.
        """
        with self._lock:
            self._check_open()
            channel_id = self._add_topic_locked(topic, type_name, definition, None)
            self._add(channel_id, bytes(data), int(receive_time_ns), publish_time_ns)

    def _add(self, channel_id: int, data: bytes, log_ns: int, publish_ns: int | None) -> None:
        self._sequence += 1
        self._writer.add_message(
            channel_id=channel_id,
            log_time=log_ns,
            publish_time=log_ns if publish_ns is None else int(publish_ns),
            data=data,
            sequence=self._sequence,
        )
        self._last_time_ns = max(self._last_time_ns, log_ns)
        self.message_count += 1

    # -- episodes ------------------------------------------------------------------
    @property
    def episode_open(self) -> bool:
        return self._open_episode is not None

    def start_episode(self, task: str, time_ns: int, **extra: Any) -> int:
        """Mark the start of an episode with its task text; returns the episode number.

        An episode still open is ended first, at ``time_ns``.
        """
        if not task or not task.strip():
            raise ValueError("an episode needs a task text (the language instruction)")
        with self._lock:
            self._check_open()
            if self._open_episode is not None:
                self._end_locked(time_ns, None, {"reason": "next episode started"})
            event = {"event": "start", "episode": len(self._episodes), "task": task, **extra}
            self._emit(event, time_ns)
            self._open_episode = {"index": event["episode"], "task": task, "start_ns": int(time_ns)}
            return event["episode"]

    def end_episode(self, time_ns: int, success: bool | None = None, **extra: Any) -> None:
        """Mark the end of the open episode (``success`` if the operator judged it)."""
        with self._lock:
            self._check_open()
            if self._open_episode is None:
                raise RuntimeError("end_episode() without an open episode")
            self._end_locked(time_ns, success, extra)

    def _end_locked(self, time_ns: int, success: bool | None, extra: dict[str, Any]) -> None:
        episode = self._open_episode
        assert episode is not None
        self._emit(
            {"event": "end", "episode": episode["index"], "success": success, **extra}, time_ns
        )
        self._episodes.append({**episode, "end_ns": int(time_ns), "success": success})
        self._open_episode = None

    def _emit(self, event: dict[str, Any], time_ns: int) -> None:
        channel_id = self._add_topic_locked(
            EPISODE_TOPIC, EPISODE_TYPE, _episode_definition(), None
        )
        payload = self._encode_event({"data": json.dumps(event)})
        self._add(channel_id, payload, int(time_ns), None)

    # -- closing -------------------------------------------------------------------
    def set_metadata(self, key: str, value: str) -> None:
        """Set one entry of the :data:`METADATA_NAME` record written at close."""
        with self._lock:
            self._metadata[key] = str(value)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self.path} is already closed")

    def close(self) -> None:
        """End an open episode (at the last message time), write the summary, close the file."""
        with self._lock:
            if self._closed:
                return
            if self._open_episode is not None:
                self._end_locked(self._last_time_ns, None, {"reason": "recording closed"})
            record = {k: str(v) for k, v in self._metadata.items()}
            record["episodes"] = json.dumps(self._episodes)
            self._writer.add_metadata(METADATA_NAME, record)
            self._writer.finish()
            self._file.close()
            self._closed = True

    def __enter__(self) -> McapEpisodeWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------
@dataclass
class TopicSeries:
    """All messages of one topic, in receive-time order.

    Attributes:
        log_times: receive times, ns (int64).
        publish_times: stamps given at record time, ns (int64).
        messages: decoded messages (``mcap_ros2`` dynamic objects, attribute access).
    """

    topic: str
    type_name: str
    log_times: np.ndarray
    publish_times: np.ndarray
    messages: list[Any]

    def __len__(self) -> int:
        return len(self.messages)

    def times_s(self, stamp: bool = False) -> np.ndarray:
        """Receive times (or the recorded stamps), s, float64."""
        return (self.publish_times if stamp else self.log_times).astype(np.float64) * 1e-9


#: Range of the median (receive time - header stamp) for stamps to be on the recorder's clock, s.
SAME_CLOCK_OFFSET_S = (-0.1, 1.0)


def uses_header_stamps(series: TopicSeries, stamp: bool | str) -> bool:
    """Whether a topic is aligned on its header stamps under the time base ``stamp``.

    ``"header"``/True: always; ``"receive"``/False: never; ``"auto"``: where the stamps are
    set, in order, and on the recorder's clock (median offset within :data:`SAME_CLOCK_OFFSET_S`).
    """
    if stamp in (True, "header"):
        return True
    if stamp in (False, "receive"):
        return False
    if stamp != "auto":
        raise ValueError(f"time base {stamp!r} is not receive, header or auto")
    published, received = series.publish_times, series.log_times
    if len(published) == 0 or np.array_equal(published, received):
        return False
    if (published <= 0).any() or (np.diff(published) < 0).any():
        return False
    offset = float(np.median(received - published)) * 1e-9
    return SAME_CLOCK_OFFSET_S[0] <= offset <= SAME_CLOCK_OFFSET_S[1]


@dataclass
class EpisodeMark:
    """One episode inside a recording: [start_ns, end_ns] and its task text."""

    index: int
    task: str
    start_ns: int
    end_ns: int
    success: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Recording:
    """A decoded recording: per-topic series, episode marks and metadata records."""

    path: str
    series: dict[str, TopicSeries]
    episodes: list[EpisodeMark]
    metadata: dict[str, dict[str, str]]

    def topic(self, name: str) -> TopicSeries | None:
        return self.series.get(name)


def list_topics(path: str | Path) -> dict[str, str]:
    """Topic -> type name from the file summary, without decoding any message."""
    try:
        with open(path, "rb") as stream:
            summary = make_reader(stream).get_summary()
    except Exception as exc:  # noqa: BLE001 - missing file or not MCAP
        raise DatasetError(f"cannot read MCAP recording: {exc}", field=str(path)) from exc
    if summary is None:
        raise DatasetError("the MCAP file has no summary (not closed?)", field=str(path))
    return {c.topic: summary.schemas[c.schema_id].name for c in summary.channels.values()}


def read_recording(
    path: str | Path,
    topics: list[str] | None = None,
    *,
    start_ns: int | None = None,
    end_ns: int | None = None,
    transforms: dict[str, Callable[[Any, int], Any]] | None = None,
) -> Recording:
    """Decode a recording, or the part of it a caller needs.

    Args:
        topics: only these topics (plus the episode topic); default all.
        start_ns, end_ns: only messages received in [start_ns, end_ns), ns; the episode
            marks then cover only the events inside that window.
        transforms: topic -> ``fn(decoded_message, receive_time_ns)`` applied while reading,
            whose result is stored instead of the message (e.g. decode and shrink images
            at once, so a long recording never holds all its raw frames in memory).
    """
    wanted = None if topics is None else sorted(set(topics) | {EPISODE_TOPIC})
    transforms = transforms or {}
    raw: dict[str, dict[str, Any]] = {}
    try:
        with open(path, "rb") as stream:
            reader = make_reader(stream, decoder_factories=[DecoderFactory()])
            # [start_ns, end_ns): starting_at is inclusive, ending_before exclusive (mcap >= 1.6)
            messages = reader.iter_decoded_messages(
                topics=wanted, starting_at=start_ns, ending_before=end_ns
            )
            for schema, channel, message, decoded in messages:
                entry = raw.setdefault(
                    channel.topic, {"type": schema.name, "log": [], "pub": [], "msgs": []}
                )
                transform = transforms.get(channel.topic)
                entry["log"].append(message.log_time)
                entry["pub"].append(message.publish_time)
                entry["msgs"].append(
                    decoded if transform is None else transform(decoded, message.log_time)
                )
            metadata = {m.name: dict(m.metadata) for m in reader.iter_metadata()}
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad recording
        raise DatasetError(f"cannot read MCAP recording: {exc}", field=str(path)) from exc
    series = {
        topic: _sorted_series(topic, entry["type"], entry["log"], entry["pub"], entry["msgs"])
        for topic, entry in raw.items()
    }
    spans = [(int(s.log_times[0]), int(s.log_times[-1])) for s in series.values() if len(s)]
    first = min((a for a, _ in spans), default=0)
    last = max((b for _, b in spans), default=0)
    marks = _episode_marks(series.get(EPISODE_TOPIC), first, last) if spans else []
    return Recording(str(path), series, marks, metadata)


def read_episode_marks(path: str | Path) -> list[EpisodeMark]:
    """The episodes of a recording without decoding anything else (summary + episode topic)."""
    try:
        with open(path, "rb") as stream:
            reader = make_reader(stream, decoder_factories=[DecoderFactory()])
            statistics = reader.get_summary().statistics
            events = list(reader.iter_decoded_messages(topics=[EPISODE_TOPIC]))
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad recording
        raise DatasetError(f"cannot read MCAP recording: {exc}", field=str(path)) from exc
    if statistics is None or statistics.message_count == 0:
        return []
    series = _sorted_series(
        EPISODE_TOPIC,
        EPISODE_TYPE,
        [m.log_time for _, _, m, _ in events],
        [m.publish_time for _, _, m, _ in events],
        [d for _, _, _, d in events],
    )
    return _episode_marks(series, statistics.message_start_time, statistics.message_end_time)


def _sorted_series(topic, type_name, log, pub, msgs) -> TopicSeries:
    log_times = np.asarray(log, dtype=np.int64)
    order = np.argsort(log_times, kind="stable")
    return TopicSeries(
        topic=topic,
        type_name=type_name,
        log_times=log_times[order],
        publish_times=np.asarray(pub, dtype=np.int64)[order],
        messages=[msgs[i] for i in order],
    )


def _episode_marks(events: TopicSeries | None, first_ns: int, last_ns: int) -> list[EpisodeMark]:
    """Pair start/end events; with no events at all, [first_ns, last_ns] is one episode."""
    if events is None or len(events) == 0:
        return [EpisodeMark(index=0, task="", start_ns=int(first_ns), end_ns=int(last_ns))]
    marks: list[EpisodeMark] = []
    open_mark: EpisodeMark | None = None
    last_ns = int(last_ns)
    for time_ns, message in zip(events.log_times, events.messages, strict=True):
        try:
            event = json.loads(message.data)
        except (ValueError, AttributeError) as exc:
            raise DatasetError(f"episode event is not JSON: {exc}", field=EPISODE_TOPIC) from exc
        kind = event.get("event")
        if kind == "start":
            if open_mark is not None:
                open_mark.end_ns = int(time_ns)
                marks.append(open_mark)
            extra = {k: v for k, v in event.items() if k not in ("event", "episode", "task")}
            open_mark = EpisodeMark(
                len(marks), str(event.get("task", "")), int(time_ns), last_ns, None, extra
            )
        elif kind == "end" and open_mark is not None:
            open_mark.end_ns = int(time_ns)
            open_mark.success = event.get("success")
            marks.append(open_mark)
            open_mark = None
    if open_mark is not None:
        marks.append(open_mark)
    return marks

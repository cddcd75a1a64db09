"""Salvage a recording that was never closed (recorder killed, power lost): pure core.

An MCAP file gets its summary and closing magic only when the writer finishes; a killed
recorder leaves the records written so far and, at the end, a chunk cut in the middle.
:func:`salvage_recording` reads such a file as a stream, record by record, keeps every
complete schema, channel and message, decompresses the cut chunk as far as its bytes go
(zstd and lz4 frames decode incrementally) and keeps the complete messages inside it, then
writes them to a new, properly closed MCAP file that every reader opens. Episode marks are
messages, so each episode whose start mark survived is kept; one cut short is ended at the
last message.

    qwen-vla recover killed.mcap            # writes killed.recovered.mcap
    qwen-vla convert killed.mcap ...        # salvages on the fly, says how much it kept
"""

from __future__ import annotations

import argparse
import io
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

from mcap.data_stream import ReadDataStream
from mcap.records import Channel, Message, Schema
from mcap.writer import CompressionType, Writer

from .errors import DatasetError

MAGIC = b"\x89MCAP0\r\n"
_OP_SCHEMA, _OP_CHANNEL, _OP_MESSAGE, _OP_CHUNK, _OP_DATA_END, _OP_FOOTER = 0x03, 0x04, 0x05, 0x06, 0x0F, 0x02


@dataclass
class SalvageReport:
    """What :func:`salvage_recording` kept; times in ns of the recording's clock."""

    source: Path
    output: Path
    file_bytes: int = 0
    used_bytes: int = 0  # bytes up to the end of the last record read completely
    messages: int = 0
    messages_from_cut_chunk: int = 0
    first_ns: int = 0
    last_ns: int = 0
    closed: bool = False  # the source was a complete file after all
    per_topic: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        span = (self.last_ns - self.first_ns) * 1e-9 if self.messages else 0.0
        how = "complete file" if self.closed else f"cut at byte {self.used_bytes} of {self.file_bytes}"
        return (
            f"recovered {self.messages} messages ({span:.2f} s, {self.messages_from_cut_chunk} from "
            f"the cut chunk) from {self.source.name} ({how}) into {self.output}"
        )


def is_closed_mcap(path: str | Path) -> bool:
    """Whether a file ends with the MCAP closing magic (written only when the writer finished)."""
    path = Path(path)
    size = path.stat().st_size
    if size < 2 * len(MAGIC):
        return False
    with open(path, "rb") as stream:
        stream.seek(size - len(MAGIC))
        return stream.read(len(MAGIC)) == MAGIC


def _decompress_prefix(compression: str, data: bytes) -> bytes:
    """As much of a (possibly cut) compressed chunk as decodes."""
    if compression in ("", "none"):
        return data
    if compression == "zstd":
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data))
        out = bytearray()
        try:
            while block := reader.read(1 << 16):
                out += block
        except zstandard.ZstdError:
            pass  # the frame ends inside the cut: keep what decoded
        return bytes(out)
    if compression == "lz4":
        import lz4.frame

        decompressor = lz4.frame.LZ4FrameDecompressor()
        try:
            return decompressor.decompress(data)
        except RuntimeError:
            return b""
    raise DatasetError(f"unknown chunk compression '{compression}'", field="chunk")


def _chunk_records(content: bytes) -> list[tuple]:
    """Schema/Channel/Message records of a chunk's content (cut: as far as it decodes)."""
    head = 8 + 8 + 8 + 4
    if len(content) < head + 4:
        return []
    (name_len,) = struct.unpack_from("<I", content, head)
    offset = head + 4
    compression = content[offset : offset + name_len].decode("utf-8", "replace")
    offset += name_len
    if len(content) < offset + 8:
        return []
    offset += 8  # records byte length (the cut chunk's is larger than what is there)
    records = _decompress_prefix(compression, content[offset:])
    return list(_records_in(records))


def _records_in(data: bytes):
    """(opcode, record or None, end offset) for every complete record in ``data``."""
    offset = 0
    while offset + 9 <= len(data):
        opcode = data[offset]
        (length,) = struct.unpack_from("<Q", data, offset + 1)
        end = offset + 9 + length
        if end > len(data):
            return
        body = data[offset + 9 : end]
        record = None
        try:
            if opcode == _OP_SCHEMA:
                record = Schema.read(ReadDataStream(io.BytesIO(body)))
            elif opcode == _OP_CHANNEL:
                record = Channel.read(ReadDataStream(io.BytesIO(body)))
            elif opcode == _OP_MESSAGE:
                record = Message.read(ReadDataStream(io.BytesIO(body)), length)
        except Exception:  # noqa: BLE001 - a record garbled by the cut ends the salvage
            return
        yield opcode, record, end
        offset = end


def salvage_recording(source: str | Path, output: str | Path | None = None) -> SalvageReport:
    """Copy every complete message of an unclosed (or closed) MCAP file into a closed one.

    Streams: one record in memory at a time (a chunk at most), the output written as it goes.
    """
    source = Path(source)
    output = Path(output) if output is not None else source.with_suffix(".recovered.mcap")
    report = SalvageReport(
        source, output, file_bytes=source.stat().st_size, closed=is_closed_mcap(source)
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(source, "rb") as stream, open(output, "wb") as out:
        if stream.read(len(MAGIC)) != MAGIC:
            raise DatasetError("not an MCAP file (no leading magic)", field=str(source))
        copy = _Copy(Writer(out, compression=CompressionType.ZSTD), report)
        report.used_bytes = len(MAGIC)
        while True:
            head = stream.read(9)
            if len(head) < 9:
                break  # the cut fell between records (or the file ended cleanly)
            opcode, length = head[0], struct.unpack_from("<Q", head, 1)[0]
            content = stream.read(min(length, report.file_bytes))
            if len(content) < length:  # the torn last record: a chunk gives up what it can
                if opcode == _OP_CHUNK:
                    for inner in _chunk_records(content):
                        copy.take(*inner[:2], cut=True)
                break
            report.used_bytes += 9 + length
            if opcode in (_OP_DATA_END, _OP_FOOTER):
                break
            if opcode == _OP_CHUNK:
                for inner in _chunk_records(content):
                    copy.take(*inner[:2], cut=False)
            else:
                for inner in _records_in(head + content):
                    copy.take(*inner[:2], cut=False)
        copy.finish()
    return report


class _Copy:
    """Writes the salvaged records to a new MCAP file as they are read."""

    def __init__(self, writer: Writer, report: SalvageReport):
        self.writer, self.report = writer, report
        self.schemas: dict[int, int] = {}
        self.channels: dict[int, tuple[int, str]] = {}
        writer.start(profile="ros2", library="qwen_vla_ros salvage")

    def take(self, opcode: int, record, cut: bool) -> None:
        if opcode == _OP_SCHEMA and record.id not in self.schemas:
            self.schemas[record.id] = self.writer.register_schema(
                record.name, record.encoding, record.data
            )
        elif opcode == _OP_CHANNEL and record.id not in self.channels:
            channel_id = self.writer.register_channel(
                record.topic, record.message_encoding, self.schemas.get(record.schema_id, 0),
                dict(record.metadata),
            )  # fmt: skip
            self.channels[record.id] = (channel_id, record.topic)
        elif opcode == _OP_MESSAGE and record.channel_id in self.channels:
            channel_id, topic = self.channels[record.channel_id]
            self.writer.add_message(
                channel_id, record.log_time, record.data, record.publish_time, record.sequence
            )
            report = self.report
            report.per_topic[topic] = report.per_topic.get(topic, 0) + 1
            report.messages += 1
            report.messages_from_cut_chunk += int(cut)
            report.first_ns = min(report.first_ns or record.log_time, record.log_time)
            report.last_ns = max(report.last_ns, record.log_time)

    def finish(self) -> None:
        report = self.report
        self.writer.add_metadata(
            "qwen_vla_salvage",
            {"source": report.source.name, "source_bytes": str(report.file_bytes),
             "used_bytes": str(report.used_bytes), "messages": str(report.messages)},
        )  # fmt: skip
        self.writer.finish()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `qwen-vla recover`."""
    parser.add_argument("recordings", nargs="+", type=Path, help=".mcap files cut off by a crash")
    parser.add_argument("--out-dir", type=Path, default=None, help="folder for the recovered files")


def run(args: argparse.Namespace) -> int:
    status = 0
    for path in args.recordings:
        out = None if args.out_dir is None else args.out_dir / f"{path.stem}.recovered.mcap"
        try:
            print(salvage_recording(path, out))
        except (OSError, DatasetError) as exc:
            print(f"cannot recover {path}: {exc}", file=sys.stderr)
            status = 1
    return status

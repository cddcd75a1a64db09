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
        yield opcode, record, end, body
        offset = end


def salvage_recording(source: str | Path, output: str | Path | None = None) -> SalvageReport:
    """Copy every complete message of an unclosed (or closed) MCAP file into a closed one."""
    source = Path(source)
    output = Path(output) if output is not None else source.with_suffix(".recovered.mcap")
    data = source.read_bytes()
    report = SalvageReport(source, output, file_bytes=len(data), closed=is_closed_mcap(source))
    if not data.startswith(MAGIC):
        raise DatasetError("not an MCAP file (no leading magic)", field=str(source))
    schemas: dict[int, Schema] = {}
    channels: dict[int, Channel] = {}
    kept: list[tuple[Message, bool]] = []
    report.used_bytes = len(MAGIC)
    body = data[len(MAGIC) :]
    stopped = False
    for opcode, record, end, content in _records_in(body):
        report.used_bytes = len(MAGIC) + end
        if opcode in (_OP_DATA_END, _OP_FOOTER):
            stopped = True
            break
        inner = _chunk_records(content) if opcode == _OP_CHUNK else [(opcode, record, 0, b"")]
        for inner_opcode, inner_record, _, _ in inner:
            _keep(inner_opcode, inner_record, schemas, channels, kept, cut=False)
    if not stopped and report.used_bytes < len(data):
        tail = data[report.used_bytes :]
        if len(tail) > 9 and tail[0] == _OP_CHUNK:
            for inner_opcode, inner_record, _, _ in _chunk_records(tail[9:]):
                _keep(inner_opcode, inner_record, schemas, channels, kept, cut=True)
    _write(output, schemas, channels, kept, report)
    return report


def _keep(opcode, record, schemas, channels, kept, cut: bool) -> None:
    if opcode == _OP_SCHEMA:
        schemas[record.id] = record
    elif opcode == _OP_CHANNEL:
        channels[record.id] = record
    elif opcode == _OP_MESSAGE and record.channel_id in channels:
        kept.append((record, cut))


def _write(output: Path, schemas, channels, kept, report: SalvageReport) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "wb") as stream:
        writer = Writer(stream, compression=CompressionType.ZSTD)
        writer.start(profile="ros2", library="qwen_vla_ros salvage")
        schema_ids = {
            sid: writer.register_schema(s.name, s.encoding, s.data) for sid, s in schemas.items()
        }
        channel_ids = {
            cid: writer.register_channel(
                c.topic, c.message_encoding, schema_ids.get(c.schema_id, 0), dict(c.metadata)
            )
            for cid, c in channels.items()
        }
        for message, cut in kept:
            writer.add_message(
                channel_ids[message.channel_id], message.log_time, message.data,
                message.publish_time, message.sequence,
            )  # fmt: skip
            topic = channels[message.channel_id].topic
            report.per_topic[topic] = report.per_topic.get(topic, 0) + 1
            report.messages += 1
            report.messages_from_cut_chunk += int(cut)
        if kept:
            report.first_ns = min(m.log_time for m, _ in kept)
            report.last_ns = max(m.log_time for m, _ in kept)
        writer.add_metadata(
            "qwen_vla_salvage",
            {"source": report.source.name, "source_bytes": str(report.file_bytes),
             "used_bytes": str(report.used_bytes), "messages": str(report.messages)},
        )  # fmt: skip
        writer.finish()


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

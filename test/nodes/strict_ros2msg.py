"""A second, independent ROS 2 MCAP decoder for tests, strict about names as Foxglove's is.

``parse_schema`` splits a ``ros2msg`` schema into its definitions and resolves every field
type by *exactly* the name the field spells (``std_msgs/Header``; a bare ``Type`` in package
``pkg`` is ``pkg/Type``): each must have exactly one ``MSG:`` definition under that name,
else :class:`StrictSchemaError` (Foxglove: "Expected 1 top level type definition for
'std_msgs/Header' but found 0"). ``decode_cdr`` then reads a message with those definitions
(XCDR1, little or big endian, natural alignment), written here without mcap_ros2 or rclpy.
"""

from __future__ import annotations

import re
import struct

DELIMITER = "=" * 80
PRIMITIVES = {
    "bool": ("?", 1), "byte": ("B", 1), "char": ("B", 1), "int8": ("b", 1), "uint8": ("B", 1),
    "int16": ("h", 2), "uint16": ("H", 2), "int32": ("i", 4), "uint32": ("I", 4),
    "int64": ("q", 8), "uint64": ("Q", 8), "float32": ("f", 4), "float64": ("d", 8),
}  # fmt: skip


class StrictSchemaError(ValueError):
    pass


def _fields(text: str) -> list[tuple[str, str, str]]:
    """(base type, array suffix, name) of each field; constants are skipped."""
    out = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        tokens = line.split()
        if len(tokens) < 2 or "=" in tokens[1] or (len(tokens) > 2 and tokens[2].startswith("=")):
            continue  # a constant: TYPE NAME=VALUE
        match = re.fullmatch(r"([\w/]+)(?:<=\d+)?(\[(?:<=)?\d*\])?", tokens[0])
        if match is None:
            raise StrictSchemaError(f"cannot parse field line '{line}'")
        out.append((match.group(1), match.group(2) or "", tokens[1]))
    return out


def parse_schema(schema_name: str, text: str) -> dict[str, list[tuple[str, str, str]]]:
    """Definitions by name, every complex field type resolved to one of them exactly."""
    sections = text.split(DELIMITER)
    package = schema_name.split("/")[0]
    definitions: dict[str, list[tuple[str, str, str]]] = {}
    counts: dict[str, int] = {}
    packages = {"": package}
    definitions[""] = _fields(sections[0])
    for section in sections[1:]:
        body = section.lstrip("\n")
        first, _, rest = body.partition("\n")
        if not first.startswith("MSG: "):
            raise StrictSchemaError(f"a section starts with '{first}', not 'MSG: <type>'")
        name = first[len("MSG: ") :].strip()
        counts[name] = counts.get(name, 0) + 1
        definitions[name] = _fields(rest)
        packages[name] = name.split("/")[0]
    resolved: dict[str, list[tuple[str, str, str]]] = {}
    for owner, fields in definitions.items():
        resolved[owner] = []
        for base, array, field_name in fields:
            if base not in PRIMITIVES and base not in ("string", "wstring"):
                wanted = base if "/" in base else f"{packages[owner]}/{base}"
                if counts.get(wanted, 0) != 1:
                    raise StrictSchemaError(
                        f"Expected 1 top level type definition for '{wanted}' but found "
                        f"{counts.get(wanted, 0)}"
                    )
                base = wanted
            resolved[owner].append((base, array, field_name))
    return resolved


class _Reader:
    def __init__(self, data: bytes):
        if len(data) < 4:
            raise ValueError("no CDR encapsulation header")
        self.endian = "<" if data[1] & 1 else ">"
        self.data, self.offset = data, 4

    def primitive(self, type_name: str):
        code, size = PRIMITIVES[type_name]
        self.offset += (-(self.offset - 4)) % size  # align relative to the encapsulation end
        (value,) = struct.unpack_from(self.endian + code, self.data, self.offset)
        self.offset += size
        return value

    def string(self) -> str:
        length = self.primitive("uint32")
        raw = self.data[self.offset : self.offset + length]
        if len(raw) != length or (length and raw[-1] != 0):
            raise ValueError("string runs past the message or lacks its terminator")
        self.offset += length
        return raw[:-1].decode("utf-8") if length else ""


def _value(reader: _Reader, definitions, base: str):
    if base == "string":
        return reader.string()
    if base in PRIMITIVES:
        return reader.primitive(base)
    return {name: _field(reader, definitions, b, a) for b, a, name in definitions[base]}


def _field(reader: _Reader, definitions, base: str, array: str):
    if not array:
        return _value(reader, definitions, base)
    size = array[1:-1]
    count = int(size) if size and not size.startswith("<=") else reader.primitive("uint32")
    return [_value(reader, definitions, base) for _ in range(count)]


def decode_cdr(definitions, data: bytes) -> dict:
    """Decode one message; raises if it does not end where the definitions say it does."""
    reader = _Reader(data)
    message = {name: _field(reader, definitions, b, a) for b, a, name in definitions[""]}
    if len(data) - reader.offset > 3:  # only alignment padding may follow
        raise ValueError(f"{len(data) - reader.offset} bytes left after the message")
    return message

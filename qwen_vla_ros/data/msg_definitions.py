"""Complete ROS 2 message definitions (``ros2msg`` text) from the installed share folders.

rosbag2 stores, per MCAP schema, the type's ``.msg`` text followed by every nested
type it uses, each after a delimiter line of 80 ``=`` and a ``MSG: pkg/Type`` line
(rosbag2 docs, "Message Definition Encoding"). The nested name is spelled as the
fields spell it, ``std_msgs/Header`` (a bare ``Type`` field of package ``pkg`` is
``pkg/Type``), never ``pkg/msg/Type``: Foxglove's decoder looks each field's type up by
exactly that name and fails on the ``/msg/`` spelling ("Expected 1 top level type
definition for 'std_msgs/Header' but found 0"). The schema's own name stays
``pkg/msg/Type``, as rosbag2 writes it.

The ``.msg`` files are found under ``<prefix>/share/<pkg>/msg/`` for every prefix in
``AMENT_PREFIX_PATH`` and the Python prefix (the ROS PyPI wheels install there).
No rclpy import: pure core.
"""

from __future__ import annotations

import os
import re
import sys
from functools import lru_cache
from pathlib import Path

DELIMITER = "=" * 80

#: Built-in field types of the .msg language (never nested definitions).
PRIMITIVE_TYPES = frozenset(
    {
        "bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16",
        "int32", "uint32", "int64", "uint64", "string", "wstring",
    }
)  # fmt: skip


class MessageDefinitionError(LookupError):
    """A message type whose ``.msg`` file (or a nested one) is not installed."""


def split_type_name(type_name: str) -> tuple[str, str]:
    """``sensor_msgs/msg/Image`` or ``sensor_msgs/Image`` -> (``sensor_msgs``, ``Image``)."""
    parts = [p for p in type_name.strip().split("/") if p]
    if len(parts) == 3 and parts[1] == "msg":
        return parts[0], parts[2]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise MessageDefinitionError(f"'{type_name}' is not a message type name like pkg/msg/Type")


def full_type_name(type_name: str) -> str:
    """The canonical ``pkg/msg/Type`` spelling."""
    package, name = split_type_name(type_name)
    return f"{package}/msg/{name}"


def field_type_name(type_name: str) -> str:
    """The ``pkg/Type`` spelling fields use, which rosbag2 writes after ``MSG:``."""
    package, name = split_type_name(type_name)
    return f"{package}/{name}"


def share_directories() -> list[Path]:
    """Every ``share`` folder that may hold message packages, most specific first."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    prefixes += [sys.prefix, sys.base_prefix]
    seen: list[Path] = []
    for prefix in prefixes:
        share = Path(prefix) / "share"
        if share.is_dir() and share not in seen:
            seen.append(share)
    return seen


_extra_definitions: dict[str, str] = {}


def register_message_definition(type_name: str, msg_text: str) -> None:
    """Teach the lookup a type that is not installed (e.g. ``interbotix_xs_msgs``): its .msg text."""
    _extra_definitions[full_type_name(type_name)] = msg_text
    message_definition.cache_clear()


def find_msg_file(type_name: str) -> Path:
    """Path of the installed ``.msg`` file for a type; raises :class:`MessageDefinitionError`."""
    package, name = split_type_name(type_name)
    for share in share_directories():
        candidate = share / package / "msg" / f"{name}.msg"
        if candidate.is_file():
            return candidate
    searched = ", ".join(str(s) for s in share_directories()) or "(none)"
    raise MessageDefinitionError(
        f"no {package}/msg/{name}.msg under the share folders {searched}; install the message "
        "package, set AMENT_PREFIX_PATH, or pass the definition text explicitly"
    )


def _own_text(type_name: str) -> str:
    full = full_type_name(type_name)
    if full in _extra_definitions:
        return _extra_definitions[full]
    return find_msg_file(full).read_text(encoding="utf-8")


def nested_types(package: str, msg_text: str) -> list[str]:
    """The non-primitive field types a .msg text uses, as ``pkg/msg/Type``, in order of use."""
    found: list[str] = []
    for raw_line in msg_text.splitlines():
        line = raw_line.split("#", 1)[0].strip()
        tokens = line.split()
        if len(tokens) < 2:
            continue
        field_type = re.sub(r"\[.*\]$", "", tokens[0])  # arrays: T[], T[3], T[<=5]
        field_type = field_type.split("<=", 1)[0]  # bounded strings: string<=10
        if field_type in PRIMITIVE_TYPES:
            continue
        if "/" in field_type:
            nested = full_type_name(field_type)
        elif field_type == "Header":  # legacy spelling rosidl still maps to std_msgs
            nested = "std_msgs/msg/Header"
        else:
            nested = f"{package}/msg/{field_type}"
        if nested not in found:
            found.append(nested)
    return found


@lru_cache(maxsize=256)
def message_definition(type_name: str) -> str:
    """The complete ``ros2msg`` definition of a type: its own text, then each nested type once.

    Raises :class:`MessageDefinitionError` naming the first type that is not installed.
    """
    root = full_type_name(type_name)
    sections = [_own_text(root).rstrip("\n")]
    pending = nested_types(split_type_name(root)[0], sections[0])
    done = {root}
    while pending:
        current = pending.pop(0)
        if current in done:
            continue
        done.add(current)
        text = _own_text(current).rstrip("\n")
        sections.append(f"{DELIMITER}\nMSG: {field_type_name(current)}\n{text}")
        pending.extend(t for t in nested_types(split_type_name(current)[0], text) if t not in done)
    return "\n".join(sections) + "\n"

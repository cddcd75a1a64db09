"""Load embodiment files: YAML in, a validated :class:`Embodiment` out, or every problem.

``load_embodiment`` accepts a path or the name of a shipped file
(``aloha``, ``mobile_aloha``, ...). A file may start with ``extends: other.yaml``
(relative to itself, or a shipped name): mappings are merged key by key, lists
and scalars replace the base's. Problems are collected, not raised one at a
time, so a user fixes a file in one pass.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .embodiment import Embodiment
from .schema import EmbodimentFile


@dataclass(frozen=True)
class Problem:
    """One thing wrong in an embodiment file."""

    file: str
    key: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key or '<top>'}: {self.reason}"


class EmbodimentError(ValueError):
    """An embodiment file is unreadable or invalid; ``problems`` lists every issue."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid embodiment ({len(problems)} problem(s)):\n{lines}")

    def __reduce__(self):
        # rebuilt from its problems, not its message: it crosses processes (worker pools)
        return type(self), (self.problems,)


def shipped_embodiment_dir() -> Path:
    """The folder of shipped embodiment files (source tree or installed share/)."""
    here = Path(__file__).resolve().parents[2] / "config" / "embodiments"
    if here.is_dir():
        return here
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("qwen_vla_ros")) / "config" / "embodiments"
    except Exception:  # noqa: BLE001 - ament index absent or package not installed
        return here


def list_shipped_embodiments() -> list[str]:
    return sorted(p.stem for p in shipped_embodiment_dir().glob("*.yaml"))


def resolve_embodiment_path(name_or_path: str | Path) -> Path:
    """A path as given if it exists, else the shipped file of that name."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    shipped = shipped_embodiment_dir() / f"{Path(str(name_or_path)).stem}.yaml"
    if shipped.is_file():
        return shipped
    raise EmbodimentError(
        [
            Problem(
                str(name_or_path),
                "",
                f"no such file, and no shipped embodiment of that name "
                f"(shipped: {', '.join(list_shipped_embodiments())})",
            )
        ]
    )


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path in seen:
        raise EmbodimentError([Problem(str(path), "extends", "circular 'extends'")])
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise EmbodimentError([Problem(str(path), "", f"cannot read file: {exc}")]) from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f"line {where.line + 1}, column {where.column + 1}: " if where else ""
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise EmbodimentError([Problem(str(path), "", f"not valid YAML: {line}{what}")]) from None
    if not isinstance(data, dict):
        raise EmbodimentError([Problem(str(path), "", "the file must be a YAML mapping")])
    parent = data.pop("extends", None)
    if parent is None:
        return data
    parent_path = path.parent / str(parent)
    if not parent_path.is_file():
        parent_path = resolve_embodiment_path(str(parent))
    return _deep_merge(_read_yaml(parent_path, (*seen, path)), data)


def _format_loc(loc: tuple[Any, ...], data: dict[str, Any]) -> str:
    """Turn pydantic's location into a readable key path, naming list items by name."""
    parts: list[str] = []
    node: Any = data
    for item in loc:
        if isinstance(item, int) and isinstance(node, list) and item < len(node):
            node = node[item]
            label = (node.get("name") or node.get("topic")) if isinstance(node, dict) else None
            parts[-1] += f"[{label}]" if label else f"[{item}]"
        elif isinstance(item, int):
            parts[-1] += f"[{item}]" if parts else str(item)
        else:
            parts.append(str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return ".".join(parts)


def _schema_problems(exc: ValidationError, file: str, data: dict[str, Any]) -> list[Problem]:
    errors = exc.errors()
    failing = [tuple(e["loc"]) for e in errors if e["type"] != "too_short"]
    problems = []
    for err in errors:
        loc = tuple(err["loc"])
        # pydantic also calls a list "too short" when its items failed: report the items only.
        if err["type"] == "too_short" and any(f[: len(loc)] == loc and f != loc for f in failing):
            continue
        reason = err["msg"]
        if err["type"] == "extra_forbidden":
            reason = "unknown key (check its spelling against docs/embodiment.md)"
        elif err["type"] == "missing":
            reason = "required key is missing"
        elif reason.startswith("Value error, "):
            reason = reason[len("Value error, ") :]
        problems.append(Problem(file, _format_loc(loc, data), reason))
    return problems


def _cross_checks(spec: EmbodimentFile, file: str) -> list[Problem]:
    """Rules that span several sections: names unique, references resolve."""
    problems: list[Problem] = []

    def duplicates(names: list[str], key: str, what: str) -> None:
        for name, count in Counter(names).items():
            if count > 1:
                problems.append(Problem(file, key, f"duplicate {what} name '{name}'"))

    duplicates([c.name for c in spec.cameras], "cameras", "camera")
    duplicates([s.name for s in spec.state], "state", "state source")
    duplicates([g.name for g in spec.action], "action", "action group")
    for source in spec.state:
        duplicates(list(source.joints), f"state[{source.name}].joints", "joint")
        if source.type.endswith("JointState") and not source.joints:
            problems.append(Problem(file, f"state[{source.name}].joints", "a JointState source lists its joints"))
    duplicates([o.topic for o in spec.outputs], "outputs", "output topic")

    sources = {s.name: s for s in spec.state}
    for group in spec.action:
        duplicates([j.name for j in group.joints], f"action[{group.name}].joints", "joint")
        for joint in group.joints:
            key = f"action[{group.name}].joints[{joint.name}].state"
            ref = joint.state
            if ref is None:
                continue
            if ref.source not in sources:
                problems.append(Problem(file, key, f"unknown state source '{ref.source}'"))
            elif sources[ref.source].type.endswith("JointState") and ref.joint not in sources[ref.source].joints:
                problems.append(
                    Problem(file, key, f"joint '{ref.joint}' is not listed by state source '{ref.source}'")
                )
            elif sources[ref.source].type.endswith("Odometry") and ref.joint not in ("linear_x", "angular_z"):
                problems.append(Problem(file, key, "an Odometry source gives 'linear_x' or 'angular_z'"))
            if joint.home is not None and not joint.min <= joint.home <= joint.max:
                problems.append(Problem(file, key[: -len('.state')] + ".home", "home is outside [min, max]"))

    group_sizes = {g.name: len(g.joints) for g in spec.action}
    used: Counter[str] = Counter()
    for out in spec.outputs:
        key = f"outputs[{out.topic}]"
        for name in out.groups:
            used[name] += 1
            if name not in group_sizes:
                problems.append(Problem(file, key + ".groups", f"unknown action group '{name}'"))
        width = sum(group_sizes.get(n, 0) for n in out.groups)
        if out.joint_names is not None and len(out.joint_names) != width:
            problems.append(
                Problem(file, key + ".joint_names", f"{len(out.joint_names)} names for {width} action values")
            )
    for name in group_sizes:
        if used[name] == 0:
            problems.append(Problem(file, "outputs", f"action group '{name}' is sent to no output"))
    return problems


def load_embodiment(name_or_path: str | Path) -> Embodiment:
    """Load and validate an embodiment file; raise :class:`EmbodimentError` listing every problem."""
    path = resolve_embodiment_path(name_or_path)
    data = _read_yaml(path)
    try:
        spec = EmbodimentFile.model_validate(data)
    except ValidationError as exc:
        raise EmbodimentError(_schema_problems(exc, str(path), data)) from None
    problems = _cross_checks(spec, str(path))
    if problems:
        raise EmbodimentError(problems)
    return Embodiment(spec=spec, source_path=str(path))

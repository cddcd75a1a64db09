"""Readable summaries of an embodiment, for ``qwen-vla check-embodiment``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .embodiment import Embodiment

_UNITS = {
    "joint_position": "rad",
    "gripper": "0..1",
    "base_velocity": "m/s|rad/s",
    "base_waypoints": "m|rad",
}


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def format_summary(emb: Embodiment) -> str:
    out = [
        f"embodiment {emb.name}  ({emb.source_path})",
        f"  control: {emb.control_rate_hz:g} Hz, chunk horizon {emb.chunk_horizon} steps "
        f"({emb.chunk_horizon * emb.dt:.2f} s), watchdog {emb.chunk_timeout_s:g} s",
        f"  action dim {emb.action_dim}",
        "",
        "prompt:",
        f"  {emb.prompt}",
        "",
        "action layout:",
    ]
    rows = [["#", "group/joint", "kind", "units", "min", "max", "max vel/s", "max step", "state", "hold"]]
    index = 0
    for group in emb.action_groups:
        for joint in group.joints:
            state = f"{joint.state.source}/{joint.state.joint}" if joint.state else "-"
            rows.append(
                [
                    str(index),
                    f"{group.name}/{joint.name}",
                    group.kind,
                    _UNITS[group.kind],
                    f"{joint.min:g}",
                    f"{joint.max:g}",
                    f"{joint.max_velocity:g}",
                    f"{emb.step_limits[index]:.4g}",
                    state,
                    group.hold_mode,
                ]
            )
            index += 1
    out += ["  " + line for line in _table(rows)]
    out += ["", "cameras:"]
    if emb.cameras:
        rows = [["name", "topic", "encoding", "size HxW", "required", "max age s"]]
        for cam in emb.cameras:
            rows.append(
                [
                    cam.name,
                    cam.topic + (" (compressed)" if cam.compressed else ""),
                    cam.encoding,
                    f"{cam.image_size[0]}x{cam.image_size[1]}",
                    "yes" if cam.required else "no",
                    f"{cam.max_age_s:g}",
                ]
            )
        out += ["  " + line for line in _table(rows)]
    else:
        out.append("  (none)")
    out += ["", "state sources:"]
    rows = [["name", "topic", "type", "joints"]]
    for src in emb.state_sources:
        rows.append([src.name, src.topic, src.type, ", ".join(src.joints) or "-"])
    out += ["  " + line for line in _table(rows)]
    out += ["", "command outputs:"]
    rows = [["topic", "type", "groups"]]
    for o in emb.outputs:
        rows.append([o.topic, o.type, ", ".join(o.groups)])
    out += ["  " + line for line in _table(rows)]
    return "\n".join(out)

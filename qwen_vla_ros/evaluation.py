"""Episode records and what is reported about them: metrics, JSON, plots, image strips (pure core).

An :class:`EpisodeRecord` is filled by the episode monitor node while the graph runs; the
functions here turn it into the numbers a user reads: inference latency percentiles,
smoothness (largest command change at chunk boundaries against within chunks), commands
clipped by the safety layer, success.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .embodiment import Embodiment


@dataclass
class EpisodeRecord:
    """Time series of one episode, times in s of ROS (simulated) time."""

    embodiment: str
    instruction: str
    command_times: list[float] = field(default_factory=list)
    commands: list[np.ndarray] = field(default_factory=list)  # action layout, rig units
    state_times: list[float] = field(default_factory=list)
    states: list[np.ndarray] = field(default_factory=list)
    chunk_times: list[float] = field(default_factory=list)  # arrival at the monitor
    # (t, linear m/s, angular rad/s) of a waypoint-tracking base, whose Twist is not in the layout
    tracked_twists: list[tuple[float, float, float]] = field(default_factory=list)
    inference_ms: list[float] = field(default_factory=list)
    frames: dict[str, list[tuple[float, np.ndarray]]] = field(default_factory=dict)
    clipped_commands: int = 0
    success: bool = False
    wrong_object: bool = False  # colour tasks: an object the instruction did not name was acted on
    approached: str | None = None  # colour tasks: the object the robot went to (sim_bridge/approached)
    reward: float = 0.0
    start_time: float = 0.0
    end_time: float = 0.0
    # first state measured after the instruction, before the first chunk (action layout, rig units)
    start_state: np.ndarray | None = None
    wall_seconds: float = 0.0


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "n": 0}
    arr = np.asarray(values, dtype=float)
    return {
        "p50": float(np.percentile(arr, 50)),
        "p90": float(np.percentile(arr, 90)),
        "p99": float(np.percentile(arr, 99)),
        "n": int(arr.size),
    }


def smoothness(record: EpisodeRecord, embodiment: Embodiment) -> dict[str, float | None]:
    """Largest per-tick command change (in units of each joint's step limit) at chunk
    boundaries (the first tick after a new chunk arrived) and within chunks."""
    if len(record.commands) < 3:
        return {"boundary_max": None, "within_max": None, "ratio": None}
    cmds = np.stack(record.commands)
    times = np.asarray(record.command_times)
    steps = np.abs(np.diff(cmds, axis=0)) / embodiment.step_limits
    per_tick = steps.max(axis=1)
    arrivals = np.asarray(record.chunk_times)
    after = np.searchsorted(times[1:], arrivals)  # first change at or after each arrival
    boundary = np.zeros(len(per_tick), dtype=bool)
    boundary[after[after < len(per_tick)]] = True
    b = float(per_tick[boundary].max()) if boundary.any() else None
    w = float(per_tick[~boundary].max()) if (~boundary).any() else None
    return {"boundary_max": b, "within_max": w, "ratio": (b / w) if b is not None and w else None}


def _tracked_twist_summary(record: EpisodeRecord) -> dict:
    if not record.tracked_twists:
        return {}
    twists = np.asarray(record.tracked_twists)
    return {"waypoint_tracking_max_speed": {"linear_m_s": float(np.abs(twists[:, 1]).max()),
                                            "angular_rad_s": float(np.abs(twists[:, 2]).max())}}


def summarize(record: EpisodeRecord, embodiment: Embodiment, model_note: str) -> dict:
    duration = record.end_time - record.start_time
    return {
        "embodiment": record.embodiment,
        "instruction": record.instruction,
        "model": model_note,
        "sim_seconds": round(duration, 3),
        "wall_seconds": round(record.wall_seconds, 2),
        "real_time_factor": round(duration / record.wall_seconds, 3) if record.wall_seconds else None,
        "control_steps": max(len(record.commands), len(record.tracked_twists)),
        "chunks": len(record.chunk_times),
        # where the robot was when the instruction was given (action layout, rig units): every
        # episode of a seed should start from the same pose, however the last one ended
        "start_state": None if record.start_state is None else [round(float(v), 4) for v in record.start_state],
        "inference_latency_ms": percentiles(record.inference_ms),
        "commands_clipped_by_safety": record.clipped_commands,
        **_tracked_twist_summary(record),
        "smoothness_in_step_limits": smoothness(record, embodiment),
        "success": bool(record.success),
        "wrong_object": bool(record.wrong_object),
        "approached": record.approached,
        "reward": record.reward,
    }


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate (sensible at 0 and n successes too)."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def rate(flags: list[bool]) -> dict[str, float | int]:
    """Rate of True with its 95% Wilson interval and the count."""
    hits, n = int(sum(bool(f) for f in flags)), len(flags)
    low, high = wilson_interval(hits, n)
    return {"rate": hits / n if n else 0.0, "ci95": [round(low, 3), round(high, 3)], "successes": hits, "episodes": n}


def approach_rates(episodes: list[dict]) -> dict:
    """Colour tasks: how often the robot went to the object its instruction named, and to
    another one (episodes need ``goal`` and ``approached``); empty for tasks without goals.

    Finer than success: it counts an episode that reached for the right cube and failed the
    grasp, which is what tells instruction following apart from manipulation skill."""
    scored = [e for e in episodes if e.get("goal")]
    if not scored:
        return {}
    return {
        "instructed_object_approached": rate([e.get("approached") == e["goal"] for e in scored]),
        "other_object_approached": rate([e.get("approached") not in (None, e["goal"]) for e in scored]),
    }


def task_report(episodes: list[dict]) -> dict:
    """Success (and wrong-object) rates overall and per instruction, from per-episode summaries."""
    by_instruction: dict[str, list[dict]] = {}
    for episode in episodes:
        by_instruction.setdefault(episode["instruction"], []).append(episode)
    return {
        "success": rate([e["success"] for e in episodes]),
        "wrong_object": rate([e.get("wrong_object", False) for e in episodes]),
        **approach_rates(episodes),
        "per_instruction": {
            text: {"success": rate([e["success"] for e in group]), "wrong_object": rate([e.get("wrong_object", False) for e in group])}
            for text, group in sorted(by_instruction.items())
        },
    }


def paired_report(episodes: list[dict]) -> dict:
    """Instruction following from paired episodes (same seed, two goals, in order): how often the
    robot acted on (lifted; went to) the object each instruction named, and did so in both."""
    by_seed: dict[int, list[dict]] = {}
    for episode in episodes:
        by_seed.setdefault(episode["seed"], []).append(episode)
    pairs = [group for group in by_seed.values() if len(group) == 2]
    return {
        "pairs": len(pairs),
        "instructed_object_acted_on": rate([e["success"] for group in pairs for e in group]),
        "both_instructions_followed": rate([all(e["success"] for e in group) for group in pairs]),
        "wrong_object": rate([e.get("wrong_object", False) for group in pairs for e in group]),
        # the finer measure: the robot went to each instruction's object, grasped or not
        **approach_rates([e for group in pairs for e in group]),
        "both_instructed_objects_approached": rate(
            [all(e.get("approached") == e.get("goal") for e in group) for group in pairs]
        ),
    }


def write_video(record: EpisodeRecord, path: Path, height: int = 240) -> int:
    """The episode's camera views side by side as an mp4 (at the first camera's frame times);
    returns the number of frames written (0 when no camera frame was recorded)."""
    import cv2

    from .data.video import VideoFileWriter, choose_codec

    cameras = sorted(c for c, frames in record.frames.items() if frames)
    if not cameras:
        return 0
    times = {c: np.asarray([t for t, _ in record.frames[c]]) for c in cameras}
    clock = record.frames[cameras[0]]
    width = 0
    tiles_at = []
    for t, _ in clock:
        tiles = []
        for camera in cameras:
            k = max(0, int(np.searchsorted(times[camera], t, side="right")) - 1)
            image = record.frames[camera][k][1]
            tiles.append(cv2.resize(image, (2 * round(height * image.shape[1] / image.shape[0] / 2), height)))
        frame = np.concatenate(tiles, axis=1)
        width = frame.shape[1]
        tiles_at.append(frame)
    fps = (len(clock) - 1) / max(clock[-1][0] - clock[0][0], 1e-6) if len(clock) > 1 else 10.0
    writer = VideoFileWriter(path, round(fps, 3), (height, width), choose_codec())
    for frame in tiles_at:
        writer.add(frame)
    writer.close()
    return len(tiles_at)


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def plot_commands(record: EpisodeRecord, embodiment: Embodiment, path: Path) -> None:
    """Commanded versus measured value of every action dimension, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = embodiment.action_dim
    cols = 4 if n > 8 else 2
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.2 * rows), sharex=True, squeeze=False)
    cmds = np.stack(record.commands) if record.commands else np.zeros((0, n))
    states = np.stack(record.states) if record.states else np.zeros((0, n))
    t_cmd = np.asarray(record.command_times) - record.start_time
    t_state = np.asarray(record.state_times) - record.start_time
    for i, name in enumerate(embodiment.action_names):
        ax = axes[i // cols][i % cols]
        ax.plot(t_state, states[:, i], color="0.5", lw=1.5, label="measured")
        ax.plot(t_cmd, cmds[:, i], color="tab:blue", lw=1.0, label="commanded")
        ax.axhline(embodiment.position_min[i], color="tab:red", lw=0.6, ls=":")
        ax.axhline(embodiment.position_max[i], color="tab:red", lw=0.6, ls=":")
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=7)
    for j in range(n, rows * cols):
        axes[j // cols][j % cols].axis("off")
    axes[0][0].legend(fontsize=7)
    fig.supxlabel("time since episode start, s (simulated)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def image_strip(record: EpisodeRecord, path: Path, columns: int = 6) -> None:
    """One row per camera, ``columns`` frames spread over the episode."""
    import cv2

    rows = []
    for camera, frames in sorted(record.frames.items()):
        if not frames:
            continue
        picks = np.linspace(0, len(frames) - 1, min(columns, len(frames))).round().astype(int)
        tiles = []
        for k in picks:
            t, image = frames[k]
            tile = cv2.resize(image, (200, round(200 * image.shape[0] / image.shape[1])))
            cv2.putText(tile, f"{camera} {t - record.start_time:.1f}s", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1)
            tiles.append(tile)
        tiles += [np.zeros_like(tiles[0])] * (columns - len(tiles))
        rows.append(np.concatenate(tiles, axis=1))
    if rows:
        cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR))

"""MCAP recordings -> one LeRobot v3.0 dataset for an embodiment (pure core).

    python -m qwen_vla_ros.data.convert run1.mcap run2.mcap --embodiment aloha --out datasets/cube

Every episode of every recording (see :mod:`.mcap_io` for the episode marks) is put
on the control grid (:mod:`.alignment`) and written with :class:`LeRobotV3Writer`.

One bad stretch never costs the rest (the default): gaps in a source are bridged or
masked per :class:`.gaps.GapPolicy` (an episode with masked ticks is written as its valid
stretches, each an episode of its own), frames with a non-finite state or action are
masked the same way, an episode that cannot be used at all is skipped with a line saying
why, and every other episode is converted; :class:`ConversionReport` lists what was
bridged, masked and skipped. A recording that was never closed (recorder killed) is
salvaged first (:mod:`.salvage`). Episodes the operator judged failed when recording (the
recorder's ``~/finish_episode``) are left out, and said so, unless ``keep_failed``. With
``strict`` the conversion is all or nothing: the first bad episode raises a
:class:`DatasetError` naming the recording, episode and field, and no dataset folder is
left behind.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..embodiment import CameraSpec, Embodiment, load_embodiment
from .alignment import AlignedEpisode, align_episode, frame_decoder
from .chunks import waypoint_slices
from .errors import DatasetError
from .gaps import BRIDGE_S, MIN_SEGMENT_S, GapPolicy, valid_segments
from .layout import image_key
from .lerobot_v3 import EpisodeData, LeRobotV3Writer
from .mcap_io import list_topics, read_episode_marks, read_recording
from .salvage import is_closed_mcap, salvage_recording
from .video import VIDEO_QUALITY, VideoError, choose_codec

#: How far before an episode's start messages are read, ns: the commands and states held
#: at its first tick may have been sent earlier.
LOOKBACK_NS = 2_000_000_000
#: How far after an episode's end messages are read, ns: a recorder that ran behind on a
#: loaded machine receives the episode's last messages after its end mark (its clock runs
#: ahead of a backlog); stamped inside the episode, they belong to it. The grid still ends
#: at the end mark.
LOOKAHEAD_NS = 2_000_000_000


@dataclass
class ConversionReport:
    """What a conversion wrote."""

    root: Path
    episodes: int = 0
    frames: int = 0
    codec: str = ""
    cameras: list[str] = field(default_factory=list)
    action_sources: dict[str, set[str]] = field(default_factory=dict)
    bridged: list[str] = field(default_factory=list)  # "<episode>: <what>" per bridged gap
    masked: list[str] = field(default_factory=list)  # per masked gap / bad frames
    skipped: list[str] = field(default_factory=list)  # "<episode>: <why>" per episode left out
    salvaged: list[str] = field(default_factory=list)  # one line per recovered unclosed file
    trimmed: list[str] = field(default_factory=list)  # episode ends cut (a source late or stopped)
    masked_frames: int = 0

    def __str__(self) -> str:
        lines = [
            f"{self.root}: {self.episodes} episodes, {self.frames} frames, cameras {self.cameras}, codec {self.codec}"
        ]
        lines += [
            f"  action {group}: {'; '.join(sorted(how))}"
            for group, how in self.action_sources.items()
        ]
        lines += [f"  salvaged: {line}" for line in self.salvaged]
        lines.append(
            f"  gaps: {len(self.bridged)} bridged, {len(self.masked)} masked "
            f"({self.masked_frames} frames left out), {len(self.skipped)} episodes skipped, "
            f"{len(self.trimmed)} episode ends trimmed"
        )
        lines += [f"  trimmed {line}" for line in self.trimmed]
        lines += [f"  bridged {line}" for line in self.bridged]
        lines += [f"  masked {line}" for line in self.masked]
        lines += [f"  skipped {line}" for line in self.skipped]
        return "\n".join(lines)


def select_cameras(
    embodiment: Embodiment, recordings: Sequence[Path], skipped: list[str] | None = None
) -> tuple[list[CameraSpec], list[Path]]:
    """Required cameras plus optional ones present in all usable recordings, and those recordings.

    A recording without a required camera is an error, or, given a ``skipped`` list, is
    left out (and said so there).
    """
    topics = {path: list_topics(path) for path in recordings}
    for camera in embodiment.cameras:
        absent = [p for p, found in topics.items() if camera.topic not in found]
        if camera.required and absent:
            error = DatasetError(
                f"missing camera: {camera.topic} is not in the recording",
                episode=f"{absent[0].name} (all episodes)",
                field=image_key(camera.name),
            )
            if skipped is None:
                raise error
            for path in absent:
                skipped.append(f"{path.name} (all episodes): missing camera {camera.topic}")
                topics.pop(path)
    chosen = [c for c in embodiment.cameras if all(c.topic in found for found in topics.values())]
    return chosen, list(topics)


def _needed_topics(embodiment: Embodiment, cameras: list[CameraSpec]) -> list[str]:
    topics = [s.topic for s in embodiment.state_sources] + [c.topic for c in cameras]
    return topics + [o.topic for o in embodiment.outputs]


def convert_recordings(
    recordings: Sequence[str | Path],
    out_root: str | Path,
    embodiment: Embodiment,
    *,
    default_task: str | None = None,
    codec: str | None = None,
    overwrite: bool = False,
    use_stamps: bool | str = "auto",
    progress: bool = True,
    strict: bool = False,
    gaps: GapPolicy | None = None,
    video_quality: str = "lerobot",
    keep_failed: bool = False,
) -> ConversionReport:
    """Convert recordings to one LeRobot v3.0 dataset at ``out_root``.

    Args:
        default_task: instruction for episodes whose marks carry no task text.
        use_stamps: the time base, ``"auto"`` (header stamps where they are on the
            recorder's clock, else receive times), ``"header"``/True or ``"receive"``/False.
        progress: show tqdm progress bars (episodes and frames).
        strict: all or nothing: the first stale source or bad episode raises.
        gaps: how gaps are bridged or masked (default :class:`GapPolicy`, or strict).
        video_quality: a key of :data:`.video.VIDEO_QUALITY` (``lossless`` for small
            simulated cameras; it brings its own codec unless ``codec`` is given).
        keep_failed: also convert episodes marked failed (``success: false``) when recorded.
    """
    if video_quality not in VIDEO_QUALITY:
        raise ValueError(f"video quality {video_quality!r} is not one of {sorted(VIDEO_QUALITY)}")
    video = dict(VIDEO_QUALITY[video_quality])
    quality_codec = video.pop("codec", None)  # the quality's own codec, unless one is given
    codec = codec or quality_codec
    paths = [Path(p) for p in recordings]
    if not paths:
        raise ValueError("no recordings given")
    policy = GapPolicy(strict=True) if strict else (gaps or GapPolicy())
    with tempfile.TemporaryDirectory(prefix="qwen_vla_salvage_") as scratch:
        report = ConversionReport(Path(out_root))
        paths = [_closed_copy(p, Path(scratch), report) for p in paths]
        skipped = None if policy.strict else report.skipped
        cameras, paths = select_cameras(embodiment, paths, skipped)
        if not paths:
            raise DatasetError("no recording holds every required camera", field="cameras")
        _convert_all(
            paths, out_root, embodiment, cameras, report, codec, overwrite,
            default_task, use_stamps, progress, policy, video, keep_failed,
        )  # fmt: skip
    return report


def _closed_copy(path: Path, scratch: Path, report: ConversionReport) -> Path:
    """The recording itself, or for one never closed (recorder killed) a salvaged copy."""
    if not path.is_file() or is_closed_mcap(path):
        return path
    salvage = salvage_recording(path, scratch / path.name)
    report.salvaged.append(str(salvage))
    return salvage.output


def _convert_all(
    paths, out_root, embodiment, cameras, report, codec, overwrite, default_task, use_stamps,
    progress, policy, video, keep_failed,
) -> None:  # fmt: skip
    codec = codec or choose_codec()
    report.codec, report.cameras = codec, [c.name for c in cameras]
    writer = LeRobotV3Writer(
        out_root,
        fps=embodiment.control_rate_hz,
        names=embodiment.action_names,
        cameras={c.name: tuple(c.image_size) for c in cameras},
        robot_type=embodiment.name,
        codec=codec,
        **video,
        overwrite=overwrite,
        horizon=embodiment.chunk_horizon,
        waypoint_slices=waypoint_slices(embodiment),
        extra_info={"qwen_vla": {"embodiment": embodiment.name, "source": [p.name for p in paths]}},
    )
    with writer:
        for path in tqdm(paths, desc="recordings", unit="file", disable=not progress):
            _convert_one(
                path, embodiment, cameras, writer, report, default_task, use_stamps, progress,
                policy, keep_failed,
            )  # fmt: skip
        if report.episodes == 0:
            raise DatasetError(
                "no usable episode: " + "; ".join(report.skipped or ["the recordings are empty"]),
                field="episode",
            )


def _convert_one(
    path, embodiment, cameras, writer, report, default_task, use_stamps, progress, policy,
    keep_failed,
) -> None:  # fmt: skip
    marks = read_episode_marks(path)
    if not marks:
        if not policy.strict:
            report.skipped.append(f"{path.name}: the recording holds no messages")
            return
        raise DatasetError("the recording holds no messages", episode=path.name, field="episode")
    topics = _needed_topics(embodiment, cameras)
    for mark in tqdm(marks, desc=path.name, unit="episode", disable=not progress, leave=False):
        label = f"{path.name}#{mark.index}"
        if mark.success is False and not keep_failed:
            report.skipped.append(f"{label}: judged failed when recorded (--keep-failed converts it)")
            continue
        try:
            aligned = _aligned(path, mark, label, topics, embodiment, cameras, default_task,
                               use_stamps, policy)  # fmt: skip
        except DatasetError as exc:
            if policy.strict:
                raise
            report.skipped.append(f"{label}: {exc}")
            continue
        _write_segments(aligned, writer, report, embodiment, policy, progress)


def _aligned(path, mark, label, topics, embodiment, cameras, default_task, use_stamps, policy):
    task = mark.task or default_task
    if not task:
        raise DatasetError(
            "no task text in the episode marks and no default_task", episode=label, field="task"
        )
    # One episode at a time, frames decoded and shrunk while reading: memory stays
    # bounded by one episode at the model's image size, whatever the recording's length.
    recording = read_recording(
        path,
        topics,
        start_ns=max(0, mark.start_ns - LOOKBACK_NS),
        end_ns=mark.end_ns + LOOKAHEAD_NS,
        transforms={c.topic: frame_decoder(c, label) for c in cameras},
    )
    return align_episode(
        embodiment, recording, mark, cameras, label=label, task=task, stamp=use_stamps,
        policy=policy,
    )  # fmt: skip


def _write_segments(
    aligned: AlignedEpisode, writer, report: ConversionReport, embodiment, policy, progress
) -> None:
    """Write the episode's valid stretches (the whole episode when nothing was masked)."""
    label = aligned.label
    for note in aligned.gap_notes:
        kind = report.bridged if note.endswith("bridged") else report.trimmed if " trimmed" in note else report.masked
        kind.append(f"{label}: {note}")
    valid = aligned.valid.copy()
    if not policy.strict:
        finite = np.isfinite(aligned.state).all(1) & np.isfinite(aligned.action).all(1)
        if not finite.all():
            first = int(np.argmin(finite))
            report.masked.append(
                f"{label}: {int((~finite).sum())} frames with a NaN or infinite state or action "
                f"(first at t={aligned.times[first]:.3f} s)"
            )
        valid &= finite
    min_ticks = max(2, int(np.ceil(policy.min_segment_s / embodiment.dt - 1e-9)))
    segments = [slice(0, len(valid))] if valid.all() else valid_segments(valid, min_ticks)
    if not segments:
        report.skipped.append(
            f"{label}: no valid stretch of {policy.min_segment_s} s ({int(valid.sum())} of "
            f"{len(valid)} frames valid)"
        )
        report.masked_frames += len(valid)
        return
    report.masked_frames += len(valid) - sum(s.stop - s.start for s in segments)
    for number, part in enumerate(segments):
        name = label if len(segments) == 1 else f"{label}.{number}"
        frames = {
            camera: tqdm(images[part], desc=f"{name} {camera}", unit="frame",
                         disable=not progress, leave=False)
            for camera, images in aligned.images.items()
        }  # fmt: skip
        writer.add_episode(
            EpisodeData(aligned.task, aligned.state[part], aligned.action[part], frames, name)
        )
        report.episodes += 1
        report.frames += part.stop - part.start
    for group, how in aligned.action_sources.items():
        report.action_sources.setdefault(group, set()).add(how)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `qwen-vla convert`."""
    parser.add_argument("recordings", nargs="+", type=Path, help=".mcap files")
    parser.add_argument("--embodiment", required=True, help="shipped name or YAML path")
    parser.add_argument("--out", required=True, type=Path, help="dataset folder to create")
    parser.add_argument("--task", default=None, help="instruction for episodes without one")
    parser.add_argument("--codec", default=None, help="PyAV encoder (default: libsvtav1 if usable)")
    parser.add_argument(
        "--video-quality", choices=sorted(VIDEO_QUALITY), default="lerobot",
        help="lerobot: crf 30, 4:2:0 (LeRobot's defaults); lossless: H.264 crf 0, 4:4:4 (small sim cameras)",
    )  # fmt: skip
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument(
        "--time-base", choices=("auto", "header", "receive"), default="auto",
        help="align on header stamps, receive times, or (auto) stamps where on the recorder's clock",
    )  # fmt: skip
    parser.add_argument("--use-stamps", action="store_true", help="same as --time-base header")
    parser.add_argument(
        "--strict", action="store_true",
        help="all or nothing: the first stale source or bad episode fails the conversion",
    )  # fmt: skip
    parser.add_argument(
        "--keep-failed", action="store_true",
        help="also convert episodes judged failed when recorded (left out by default)",
    )  # fmt: skip
    parser.add_argument(
        "--bridge-s", type=float, default=BRIDGE_S,
        help=f"longest gap in a source bridged by interpolation/holding, s (default {BRIDGE_S})",
    )  # fmt: skip
    parser.add_argument(
        "--min-segment-s", type=float, default=MIN_SEGMENT_S,
        help=f"shortest valid stretch kept as an episode, s (default {MIN_SEGMENT_S})",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    try:
        report = convert_recordings(
            args.recordings,
            args.out,
            load_embodiment(args.embodiment),
            default_task=args.task,
            codec=args.codec,
            overwrite=args.overwrite,
            use_stamps="header" if args.use_stamps else args.time_base,
            strict=args.strict,
            gaps=GapPolicy(bridge_s=args.bridge_s, min_segment_s=args.min_segment_s),
            video_quality=args.video_quality,
            keep_failed=args.keep_failed,
        )
    except (DatasetError, VideoError, FileExistsError) as exc:  # a bad codec or odd image size too
        print(f"conversion failed: {exc}", file=sys.stderr)
        return 1
    print(report)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Convert MCAP recordings to a LeRobot v3.0 dataset.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

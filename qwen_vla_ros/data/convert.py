"""MCAP recordings -> one LeRobot v3.0 dataset for an embodiment (pure core).

    python -m qwen_vla_ros.data.convert run1.mcap run2.mcap --embodiment aloha --out datasets/cube

Every episode of every recording (see :mod:`.mcap_io` for the episode marks) is put
on the control grid (:mod:`.alignment`) and written with :class:`LeRobotV3Writer`.
The conversion is all or nothing: the first bad episode raises a
:class:`DatasetError` naming the recording, episode and field, and no dataset
folder is left behind.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..embodiment import CameraSpec, Embodiment, load_embodiment
from .alignment import align_episode, frame_decoder
from .chunks import waypoint_slices
from .errors import DatasetError
from .layout import image_key
from .lerobot_v3 import EpisodeData, LeRobotV3Writer
from .mcap_io import list_topics, read_episode_marks, read_recording
from .video import VideoError, choose_codec

#: How far before an episode's start messages are read, ns: the commands and states held
#: at its first tick may have been sent earlier.
LOOKBACK_NS = 2_000_000_000


@dataclass
class ConversionReport:
    """What a conversion wrote."""

    root: Path
    episodes: int = 0
    frames: int = 0
    codec: str = ""
    cameras: list[str] = field(default_factory=list)
    action_sources: dict[str, set[str]] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [
            f"{self.root}: {self.episodes} episodes, {self.frames} frames, cameras {self.cameras}, codec {self.codec}"
        ]
        lines += [
            f"  action {group}: {'; '.join(sorted(how))}"
            for group, how in self.action_sources.items()
        ]
        return "\n".join(lines)


def select_cameras(embodiment: Embodiment, recordings: Sequence[Path]) -> list[CameraSpec]:
    """Required cameras (each must be in every recording) plus optional ones present in all."""
    topics = {path: list_topics(path) for path in recordings}
    chosen = []
    for camera in embodiment.cameras:
        absent = [p for p, found in topics.items() if camera.topic not in found]
        if camera.required and absent:
            raise DatasetError(
                f"missing camera: {camera.topic} is not in the recording",
                episode=f"{absent[0].name} (all episodes)",
                field=image_key(camera.name),
            )
        if not absent:
            chosen.append(camera)
    return chosen


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
    use_stamps: bool = False,
    progress: bool = True,
) -> ConversionReport:
    """Convert recordings to one LeRobot v3.0 dataset at ``out_root``.

    Args:
        default_task: instruction for episodes whose marks carry no task text.
        use_stamps: align on the stamps recorded with each message (header times)
            instead of the receive times.
        progress: show tqdm progress bars (episodes and frames).
    """
    paths = [Path(p) for p in recordings]
    if not paths:
        raise ValueError("no recordings given")
    cameras = select_cameras(embodiment, paths)
    codec = codec or choose_codec()
    report = ConversionReport(Path(out_root), codec=codec, cameras=[c.name for c in cameras])
    writer = LeRobotV3Writer(
        out_root,
        fps=embodiment.control_rate_hz,
        names=embodiment.action_names,
        cameras={c.name: tuple(c.image_size) for c in cameras},
        robot_type=embodiment.name,
        codec=codec,
        overwrite=overwrite,
        horizon=embodiment.chunk_horizon,
        waypoint_slices=waypoint_slices(embodiment),
        extra_info={"qwen_vla": {"embodiment": embodiment.name, "source": [p.name for p in paths]}},
    )
    with writer:
        for path in tqdm(paths, desc="recordings", unit="file", disable=not progress):
            _convert_one(
                path, embodiment, cameras, writer, report, default_task, use_stamps, progress
            )
    return report


def _convert_one(
    path, embodiment, cameras, writer, report, default_task, use_stamps, progress
) -> None:
    marks = read_episode_marks(path)
    if not marks:
        raise DatasetError("the recording holds no messages", episode=path.name, field="episode")
    topics = _needed_topics(embodiment, cameras)
    for mark in tqdm(marks, desc=path.name, unit="episode", disable=not progress, leave=False):
        label = f"{path.name}#{mark.index}"
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
            end_ns=mark.end_ns + 1,
            transforms={c.topic: frame_decoder(c, label) for c in cameras},
        )
        aligned = align_episode(
            embodiment, recording, mark, cameras, label=label, task=task, stamp=use_stamps
        )
        frames = {
            name: tqdm(
                images, desc=f"{label} {name}", unit="frame", disable=not progress, leave=False
            )
            for name, images in aligned.images.items()
        }
        writer.add_episode(EpisodeData(task, aligned.state, aligned.action, frames, label))
        report.episodes += 1
        report.frames += len(aligned.times)
        for group, how in aligned.action_sources.items():
            report.action_sources.setdefault(group, set()).add(how)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `qwen-vla convert`."""
    parser.add_argument("recordings", nargs="+", type=Path, help=".mcap files")
    parser.add_argument("--embodiment", required=True, help="shipped name or YAML path")
    parser.add_argument("--out", required=True, type=Path, help="dataset folder to create")
    parser.add_argument("--task", default=None, help="instruction for episodes without one")
    parser.add_argument("--codec", default=None, help="PyAV encoder (default: libsvtav1 if usable)")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--use-stamps", action="store_true", help="align on header stamps")


def run(args: argparse.Namespace) -> int:
    try:
        report = convert_recordings(
            args.recordings,
            args.out,
            load_embodiment(args.embodiment),
            default_task=args.task,
            codec=args.codec,
            overwrite=args.overwrite,
            use_stamps=args.use_stamps,
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

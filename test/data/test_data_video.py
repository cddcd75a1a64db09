"""Video round trips: what the writer stores is what the reader returns."""

from __future__ import annotations

import av
import numpy as np
import pytest

from qwen_vla_ros.data.video import VideoError, VideoFileWriter, decode_frames, frame_to_rgb


def _frames() -> np.ndarray:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (12, 96, 96, 3), dtype=np.uint8)
    frames[:, 40:43, 50:53] = [200, 30, 30]  # a 3-pixel red cube
    return frames


def _round_trip(path, frames: np.ndarray, pix_fmt: str) -> np.ndarray:
    """Write ``frames`` losslessly (x264 crf 0) in ``pix_fmt`` and decode them again."""
    writer = VideoFileWriter(path, 50, (96, 96), "libx264", crf=0, pix_fmt=pix_fmt)
    for frame in frames:
        writer.add(frame)
    writer.close()
    return decode_frames(path, 0.0, len(frames), 50, (96, 96))


def test_lossless_444_video_returns_the_frames_it_was_given(tmp_path):
    frames = _frames()
    decoded = _round_trip(tmp_path / "v.mp4", frames, "yuv444p")
    assert np.abs(decoded.astype(int) - frames.astype(int)).max() <= 2
    with av.open(str(tmp_path / "v.mp4")) as container:  # the fast path agrees with swscale's
        for frame in container.decode(video=0):
            fast, reference = frame_to_rgb(frame), frame.to_ndarray(format="rgb24")
            assert frame.format.name == "yuv444p" and np.abs(fast.astype(int) - reference).max() <= 1


def test_420_video_keeps_less_colour_of_a_small_object(tmp_path):
    frames = _frames()
    decoded = _round_trip(tmp_path / "v.mp4", frames, "yuv420p")
    cube = (slice(None), slice(40, 43), slice(50, 53))
    assert np.abs(decoded[cube].astype(int) - frames[cube].astype(int)).max() > 10


def test_unknown_pixel_format_is_refused(tmp_path):
    with pytest.raises(VideoError, match="pixel format"):
        VideoFileWriter(tmp_path / "v.mp4", 50, (96, 96), "libx264", pix_fmt="rgb24")


def test_a_refused_packet_names_its_timestamps_and_the_previous_ones(tmp_path):
    """The muxer's EINVAL (a decode timestamp that does not increase) is raised as a VideoError
    that carries both packets' timestamps: a CI run once failed with only 'returned 22'."""
    writer = VideoFileWriter(tmp_path / "v.mp4", 50, (32, 32), "mpeg4")  # no frame reordering
    packets = []
    for index in range(3):
        frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 40 * index, np.uint8), format="rgb24")
        frame.pts, frame.time_base = index, writer._time_base
        packets += list(writer._stream.encode(frame))
    writer._mux(packets[0])
    writer._mux(packets[1])  # muxing rescales it in place, to the file's time base
    last = packets[1].dts
    packets[2].pts = packets[2].dts = 1  # what a misbehaving encoder would hand over: frame 1 again
    with pytest.raises(VideoError, match=rf"refused packet pts={last} dts={last} .* previous packet pts={last} dts={last}"):
        writer._mux(packets[2])
    writer.abort()

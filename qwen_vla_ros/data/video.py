"""MP4 video writing and reading with PyAV (pure core).

Codecs measured on the project machine (PyAV 18, 224x224, 2 cores): ``libsvtav1``
encodes (about 1,900 frames/s at preset 10) and ``libdav1d`` decodes AV1 (600 to
1,800 frames/s); ``libx264`` encodes and the native ``h264`` decoder decodes
(about 1,700 / 1,600 frames/s). AV1 is LeRobot's default, so it is ours;
:func:`choose_codec` falls back to H.264 and then MPEG-4 Part 2 where a build
lacks an encoder or decoder.

Frame ``i`` of a file has presentation time ``i / fps``; episodes are concatenated
in one file and located by ``from_timestamp`` (LeRobot v3.0).

Encoder settings follow LeRobot's defaults (``VideoEncoderConfig``): a keyframe every
2 frames (``g=2``), ``crf=30``, ``yuv420p``, SVT-AV1 preset 12. A short keyframe
interval makes a random frame cheap to reach (decode at most one frame before it),
which is what a shuffled training loader does; the settings are recorded per video
feature in ``info.json`` as ``video.g``, ``video.crf``, ... (see :func:`encoder_settings`).
"""

from __future__ import annotations

import os
from fractions import Fraction
from functools import cache
from pathlib import Path

import av
import cv2
import numpy as np

from .images import resize_rgb

# SVT-AV1 prints a banner per encoder unless told to log errors only.
os.environ.setdefault("SVT_LOG", "1")

#: Encoder name -> (codec name stored in info.json, decoder names that read it).
CODECS: dict[str, tuple[str, tuple[str, ...]]] = {
    "libsvtav1": ("av1", ("libdav1d", "av1", "libaom-av1")),
    "libaom-av1": ("av1", ("libdav1d", "av1", "libaom-av1")),
    "libx264": ("h264", ("h264",)),
    "h264": ("h264", ("h264",)),
    "mpeg4": ("mpeg4", ("mpeg4",)),
}
PREFERRED_CODECS = ("libsvtav1", "libx264", "mpeg4")
PIX_FMT = "yuv420p"
#: Pixel formats the writer accepts: LeRobot's 4:2:0 default, and full-resolution chroma
#: (4:4:4) for small images where an object is a few pixels wide (4:2:0 halves colour
#: resolution, which smears a 3-pixel cube's colour into its neighbours).
PIX_FMTS = ("yuv420p", "yuv444p")
DEFAULT_GOP = 2  # frames between keyframes (LeRobot's default)
DEFAULT_CRF = 30
#: Speed/quality preset per encoder (SVT-AV1: LeRobot's default; x264: a fast one).
PRESETS: dict[str, int | str] = {"libsvtav1": 12, "libaom-av1": 8, "libx264": "veryfast", "h264": "veryfast"}
#: Named writer settings: LeRobot's defaults, and lossless full-colour H.264 (x264 crf 0, 4:4:4)
#: for small simulated cameras, where every pixel of a small object counts (about 3x the bytes
#: of crf 30 at 96x96: 724 vs 227 per frame, measured on pick_color frames).
VIDEO_QUALITY: dict[str, dict] = {
    "lerobot": {"crf": DEFAULT_CRF, "pix_fmt": "yuv420p"},
    "lossless": {"codec": "libx264", "crf": 0, "pix_fmt": "yuv444p"},
}


class VideoError(ValueError):
    """A video file that is missing, unreadable, or shorter than its metadata says."""


def _has_codec(name: str, mode: str) -> bool:
    try:
        av.codec.Codec(name, mode)
    except Exception:  # noqa: BLE001 - PyAV raises several types for unknown codecs
        return False
    return True


@cache
def codec_works(encoder: str) -> bool:
    """Whether this PyAV build can both encode with ``encoder`` and decode its output."""
    if encoder not in CODECS or not _has_codec(encoder, "w"):
        return False
    return any(_has_codec(d, "r") for d in CODECS[encoder][1])


def choose_codec(preferred: tuple[str, ...] = PREFERRED_CODECS) -> str:
    """The first encoder in ``preferred`` that encodes and decodes here."""
    for name in preferred:
        if codec_works(name):
            return name
    raise VideoError(f"none of the video codecs {list(preferred)} both encodes and decodes here")


def encoder_settings(encoder: str, gop: int = DEFAULT_GOP, crf: int = DEFAULT_CRF, pix_fmt: str = PIX_FMT) -> dict:
    """The encoder settings recorded in info.json, named as LeRobot records them.

    ``video.g`` is the keyframe interval (frames), ``video.crf`` the quality (lower is
    better; ``None`` for MPEG-4 Part 2, which uses a fixed quantiser instead).
    """
    uses_crf = encoder in PRESETS
    return {
        "video.pix_fmt": pix_fmt,
        "video.g": int(gop),
        "video.crf": int(crf) if uses_crf else None,
        "video.preset": PRESETS.get(encoder),
        "video.fast_decode": 0,
        "video.video_backend": "pyav",
        "video.extra_options": {},
    }


def _encoder_options(encoder: str, gop: int, crf: int) -> dict[str, str]:
    options = {"g": str(max(1, int(gop)))}
    if encoder in PRESETS:
        options.update(crf=str(crf), preset=str(PRESETS[encoder]))
    else:
        options["q:v"] = "2"  # MPEG-4 Part 2 has no crf: near-lossless fixed quantiser
    return options


def fps_fraction(fps: float) -> Fraction:
    """Frame rate as an exact fraction (50.0 -> 50/1, 29.97 -> 2997/100)."""
    return Fraction(fps).limit_denominator(1001)


class VideoFileWriter:
    """Append RGB frames of one size to one MP4 file at a fixed rate.

    Args:
        size_hw: (height, width) px; both even (4:2:0 chroma halves each side).
        crf: constant rate factor (lower = better; 30 is LeRobot's default quality).
        gop: frames between keyframes (2, LeRobot's default: fast random access).
        pix_fmt: one of :data:`PIX_FMTS`.
    """

    def __init__(
        self,
        path: str | Path,
        fps: float,
        size_hw: tuple[int, int],
        codec: str,
        crf: int = DEFAULT_CRF,
        gop: int = DEFAULT_GOP,
        pix_fmt: str = PIX_FMT,
    ):
        height, width = int(size_hw[0]), int(size_hw[1])
        if pix_fmt not in PIX_FMTS:
            raise VideoError(f"pixel format {pix_fmt!r} is not one of {PIX_FMTS}")
        if height % 2 or width % 2:
            raise VideoError(f"video size {height}x{width} px must be even on both sides")
        if not codec_works(codec):
            raise VideoError(f"codec '{codec}' cannot encode and decode here; try {choose_codec()}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.size_hw = (height, width)
        self.codec = codec
        self.fps = fps
        self.frames = 0
        self._container = av.open(str(self.path), "w")
        rate = fps_fraction(fps)
        self._stream = self._container.add_stream(
            codec, rate=rate, options=_encoder_options(codec, gop, crf)
        )
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = pix_fmt
        self._time_base = 1 / rate
        self._last_packet: tuple[int | None, int | None] = (None, None)  # (pts, dts) muxed last

    def add(self, rgb: np.ndarray) -> None:
        """Encode one (height, width, 3) uint8 RGB frame."""
        if rgb.shape != (*self.size_hw, 3) or rgb.dtype != np.uint8:
            raise VideoError(f"frame {rgb.shape} {rgb.dtype} is not {(*self.size_hw, 3)} uint8")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.frames
        frame.time_base = self._time_base
        for packet in self._stream.encode(frame):
            self._mux(packet)
        self.frames += 1

    def _mux(self, packet: av.Packet) -> None:
        """Write one encoded packet; a refusal names the packet and the one before it.

        Once in CI (1 run of ~10, not reproduced in about 5,600 files of the same codec, sizes
        and rate under CPU oversubscription) the MP4 muxer refused a packet with EINVAL, which
        it says for a decode timestamp that does not increase; the timestamps in the error
        are what the next occurrence needs to be diagnosed.
        """
        try:
            self._container.mux(packet)
        except av.FFmpegError as exc:
            raise VideoError(
                f"{self.path}: the muxer refused packet pts={packet.pts} dts={packet.dts} "
                f"({packet.size} bytes, frame {self.frames} of the encoder's input; previous packet "
                f"pts={self._last_packet[0]} dts={self._last_packet[1]}): {exc}"
            ) from exc
        self._last_packet = (packet.pts, packet.dts)

    def close(self) -> None:
        """Flush the encoder and finish the file."""
        if self._container is None:
            return
        for packet in self._stream.encode():
            self._mux(packet)
        self._container.close()
        self._container = None

    def abort(self) -> None:
        """Close without caring about the output (used when a conversion fails)."""
        if self._container is not None:
            try:
                self.close()  # flushing first keeps encoders from complaining on teardown
            except Exception:  # noqa: BLE001 - the file is deleted anyway
                self._container = None


#: YUV -> RGB for BT.601 limited range (what swscale writes and assumes when a file does not
#: say otherwise), as a 3x4 matrix for ``cv2.transform`` (the last column is the offset).
_BT601_LIMITED = np.array([[1.164, 0.0, 1.596], [1.164, -0.392, -0.813], [1.164, 2.017, 0.0]], np.float32)
_YUV444_TO_RGB = np.concatenate(
    [_BT601_LIMITED, (-_BT601_LIMITED @ np.array([16, 128, 128], np.float32))[:, None]], axis=1
)
_UNSPECIFIED_OR_BT601 = (2, 5, 6)  # AVColorSpace: unspecified, BT470BG, SMPTE170M
_LIMITED_RANGE = (0, 1)  # AVColorRange: unspecified, MPEG


def frame_to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """A decoded frame as (height, width, 3) uint8 RGB.

    For 4:2:0 frames OpenCV's conversion is used: about 3.5x faster than swscale's
    rgb24 path here and as close to the encoded RGB (mean error 0.75 vs 1.19 levels).
    For 4:4:4 frames a matrix product: 0.13 vs 2.8 ms per 96x96 frame, the same error
    (mean 0.395 levels, at most 1 level from swscale's result).
    """
    if frame.format.name == "yuv420p" and frame.width % 2 == 0 and frame.height % 2 == 0:
        return cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2RGB_I420)
    if (frame.format.name == "yuv444p" and getattr(frame, "colorspace", None) in _UNSPECIFIED_OR_BT601
            and getattr(frame, "color_range", None) in _LIMITED_RANGE):
        yuv = np.ascontiguousarray(frame.to_ndarray().transpose(1, 2, 0), dtype=np.float32)
        return np.clip(cv2.transform(yuv, _YUV444_TO_RGB) + 0.5, 0, 255).astype(np.uint8)
    return frame.to_ndarray(format="rgb24")


def count_frames(path: str | Path) -> int:
    """Frames in the first video stream, by demuxing packets (no decoding)."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            return sum(1 for p in container.demux(stream) if p.size > 0)
    except (av.FFmpegError, IndexError, OSError) as exc:
        raise VideoError(f"cannot read video {path}: {exc}") from exc


def decode_frames(
    path: str | Path,
    start_s: float,
    count: int,
    fps: float,
    size_hw: tuple[int, int] | None = None,
) -> np.ndarray:
    """Decode ``count`` consecutive frames starting at ``start_s`` (s into the file).

    Seeks once to the keyframe before ``start_s`` and decodes forward, so an episode
    costs one pass. Returns (count, height, width, 3) uint8 RGB, resized to ``size_hw``
    when given. Raises :class:`VideoError` when the file ends early.
    """
    first = int(round(start_s * fps))
    out: np.ndarray | None = None
    got = 0  # frames filled; decoding yields presentation order, so a gap shows as a shortfall
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if first > 0:
                container.seek(int(start_s / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                index = int(round(frame.time * fps)) - first
                if index < 0:
                    continue
                if index >= count:
                    break
                image = frame_to_rgb(frame)
                if size_hw is not None:
                    image = resize_rgb(image, size_hw)
                if out is None:
                    out = np.empty((count, *image.shape), dtype=np.uint8)
                out[index] = image
                got += 1
    except av.FFmpegError as exc:
        raise VideoError(f"cannot decode video {path}: {exc}") from exc
    except FileNotFoundError as exc:
        raise VideoError(f"video file {path} is missing") from exc
    if out is None or got < count:
        raise VideoError(
            f"truncated video {path}: {got} of {count} frames from {start_s:.3f} s could be decoded"
        )
    return out


def decode_frame(
    path: str | Path, time_s: float, fps: float, size_hw: tuple[int, int] | None = None
) -> np.ndarray:
    """One frame at ``time_s`` (s into the file): a seek and a short decode per call."""
    return decode_frames(path, time_s, 1, fps, size_hw)[0]

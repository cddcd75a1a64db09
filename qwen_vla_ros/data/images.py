"""Image conversion on plain message fields, without cv_bridge (pure core).

The functions take the fields of ``sensor_msgs/Image`` (height, width, encoding,
step, is_bigendian, data) or ``sensor_msgs/CompressedImage`` (format, data), so
the recorder, the converter and the ROS observation node all share one
conversion and one resize: training and deployment then see identical pixels.
"""

from __future__ import annotations

import cv2
import numpy as np


class ImageConversionError(ValueError):
    """An image message whose fields do not describe a decodable picture."""


def _bayer(pattern: str, legacy: str) -> int:
    """The cv2 code for a Bayer pattern; older OpenCV names patterns by the second row only."""
    return getattr(cv2, f"COLOR_Bayer{pattern}2RGB", getattr(cv2, f"COLOR_Bayer{legacy}2RGB"))


# encoding -> (channels, bytes per channel, cv2 conversion to RGB or None when already RGB)
_RAW_ENCODINGS: dict[str, tuple[int, int, int | None]] = {
    "rgb8": (3, 1, None),
    "bgr8": (3, 1, cv2.COLOR_BGR2RGB),
    "rgba8": (4, 1, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, 1, cv2.COLOR_BGRA2RGB),
    "mono8": (1, 1, cv2.COLOR_GRAY2RGB),
    "8UC1": (1, 1, cv2.COLOR_GRAY2RGB),
    # OpenCV's own 3 and 4 channel types are BGR(A) by convention.
    "8UC3": (3, 1, cv2.COLOR_BGR2RGB),
    "8UC4": (4, 1, cv2.COLOR_BGRA2RGB),
    "rgb16": (3, 2, None),
    "bgr16": (3, 2, cv2.COLOR_BGR2RGB),
    "rgba16": (4, 2, cv2.COLOR_RGBA2RGB),
    "bgra16": (4, 2, cv2.COLOR_BGRA2RGB),
    "mono16": (1, 2, cv2.COLOR_GRAY2RGB),
    "16UC1": (1, 2, cv2.COLOR_GRAY2RGB),
    "bayer_rggb8": (1, 1, _bayer("RGGB", "BG")),
    "bayer_bggr8": (1, 1, _bayer("BGGR", "RG")),
    "bayer_gbrg8": (1, 1, _bayer("GBRG", "GR")),
    "bayer_grbg8": (1, 1, _bayer("GRBG", "GB")),
}
# Packed 4:2:2 encodings: 2 bytes per pixel, converted as a whole.
_YUV_ENCODINGS: dict[str, int] = {
    "yuv422": cv2.COLOR_YUV2RGB_UYVY,
    "uyvy": cv2.COLOR_YUV2RGB_UYVY,
    "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUY2,
    "yuyv": cv2.COLOR_YUV2RGB_YUY2,
}

SUPPORTED_ENCODINGS = tuple(_RAW_ENCODINGS) + tuple(_YUV_ENCODINGS)


def _rows(
    height: int, width: int, step: int, pixel_bytes: int, data: bytes | np.ndarray
) -> np.ndarray:
    """The (height, width * pixel_bytes) uint8 view of the pixel rows, dropping row padding."""
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"image size {height}x{width} px is empty")
    row_bytes = width * pixel_bytes
    if step < row_bytes:
        raise ImageConversionError(f"step {step} B is shorter than a row of {row_bytes} B")
    buffer = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    buffer = buffer.reshape(-1).view(np.uint8)
    needed = step * (height - 1) + row_bytes
    if buffer.size < needed:
        raise ImageConversionError(
            f"data holds {buffer.size} B, a {height}x{width} image with step {step} needs {needed} B"
        )
    if buffer.size < step * height:
        # The last row may legally omit its padding; pad so the reshape stays a view elsewhere.
        buffer = np.concatenate([buffer, np.zeros(step * height - buffer.size, np.uint8)])
    return buffer[: step * height].reshape(height, step)[:, :row_bytes]


def image_to_rgb(
    height: int,
    width: int,
    encoding: str,
    step: int,
    is_bigendian: bool | int,
    data: bytes | np.ndarray,
) -> np.ndarray:
    """Decode ``sensor_msgs/Image`` fields to a (height, width, 3) uint8 RGB array.

    16-bit encodings keep their top 8 bits (value / 256); ``is_bigendian`` picks the byte
    order of 16-bit samples. Raises :class:`ImageConversionError` on unknown encodings or
    inconsistent sizes.
    """
    height, width, step = int(height), int(width), int(step)
    if encoding in _YUV_ENCODINGS:
        packed = _rows(height, width, step, 2, data).reshape(height, width, 2)
        return cv2.cvtColor(np.ascontiguousarray(packed), _YUV_ENCODINGS[encoding])
    if encoding not in _RAW_ENCODINGS:
        raise ImageConversionError(
            f"unsupported image encoding '{encoding}' (supported: {', '.join(SUPPORTED_ENCODINGS)})"
        )
    channels, depth, to_rgb = _RAW_ENCODINGS[encoding]
    rows = _rows(height, width, step, channels * depth, data)
    if depth == 2:
        order = ">" if is_bigendian else "<"
        samples = np.ascontiguousarray(rows).view(f"{order}u2")
        pixels = (samples >> 8).astype(np.uint8)
    else:
        pixels = rows
    pixels = np.ascontiguousarray(pixels).reshape(height, width, channels)
    if to_rgb is None:
        return pixels
    return cv2.cvtColor(pixels[..., 0] if channels == 1 else pixels, to_rgb)


def compressed_to_rgb(format: str, data: bytes | np.ndarray) -> np.ndarray:
    """Decode ``sensor_msgs/CompressedImage`` (jpeg or png) to (height, width, 3) uint8 RGB."""
    buffer = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    if buffer.size == 0:
        raise ImageConversionError(f"compressed image ('{format}') has no data")
    decoded = cv2.imdecode(buffer.reshape(-1).view(np.uint8), cv2.IMREAD_COLOR)
    if decoded is None:
        raise ImageConversionError(
            f"compressed image ('{format}', {buffer.size} B) does not decode"
        )
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def rgb_to_image_fields(rgb: np.ndarray, encoding: str = "rgb8") -> dict:
    """The ``sensor_msgs/Image`` fields for an RGB uint8 array (rgb8, bgr8 or mono8)."""
    rgb = _check_rgb(rgb)
    if encoding == "rgb8":
        pixels = rgb
    elif encoding == "bgr8":
        pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    elif encoding == "mono8":
        pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    else:
        raise ImageConversionError(f"cannot encode to '{encoding}' (use rgb8, bgr8 or mono8)")
    pixels = np.ascontiguousarray(pixels)
    height, width = rgb.shape[:2]
    return {
        "height": height,
        "width": width,
        "encoding": encoding,
        "is_bigendian": 0,
        "step": pixels.strides[0],
        "data": pixels.tobytes(),
    }


def rgb_to_compressed(
    rgb: np.ndarray, format: str = "jpeg", quality: int = 90
) -> tuple[str, bytes]:
    """Encode an RGB uint8 array as jpeg or png; returns (format field, bytes)."""
    bgr = cv2.cvtColor(_check_rgb(rgb), cv2.COLOR_RGB2BGR)
    if format == "jpeg":
        ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    elif format == "png":
        ok, buffer = cv2.imencode(".png", bgr)
    else:
        raise ImageConversionError(f"cannot compress to '{format}' (use jpeg or png)")
    if not ok:
        raise ImageConversionError(f"{format} encoding failed")
    return f"rgb8; {format} compressed bgr8", buffer.tobytes()


def resize_rgb(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Resize to (height, width) px: area averaging when shrinking, bilinear when enlarging."""
    height, width = int(size_hw[0]), int(size_hw[1])
    if image.shape[0] == height and image.shape[1] == width:
        return image
    shrinking = image.shape[0] * image.shape[1] > height * width
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageConversionError(
            f"expected (height, width, 3) uint8, got {rgb.shape} {rgb.dtype}"
        )
    return np.ascontiguousarray(rgb)

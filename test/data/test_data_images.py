"""Image conversion on plain sensor_msgs fields: encodings, row padding, byte order, errors."""

from __future__ import annotations

import numpy as np
import pytest

from qwen_vla_ros.data.images import (
    ImageConversionError,
    compressed_to_rgb,
    image_to_rgb,
    resize_rgb,
    rgb_to_compressed,
    rgb_to_image_fields,
)

RNG = np.random.default_rng(3)
RGB = RNG.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)


def _padded(rows: np.ndarray, pad: int) -> tuple[bytes, int]:
    flat = rows.reshape(rows.shape[0], -1)
    out = np.concatenate([flat, np.full((flat.shape[0], pad), 77, np.uint8)], axis=1)
    return out.tobytes(), out.shape[1]


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
def test_round_trip_through_fields(encoding):
    fields = rgb_to_image_fields(RGB, encoding)
    assert np.array_equal(image_to_rgb(**fields), RGB)


def test_row_padding_is_skipped():
    data, step = _padded(RGB[..., ::-1], pad=5)  # bgr8 rows with 5 padding bytes
    out = image_to_rgb(5, 7, "bgr8", step, 0, data)
    assert np.array_equal(out, RGB)


def test_four_channel_and_mono_encodings():
    rgba = np.concatenate([RGB, np.full((5, 7, 1), 9, np.uint8)], axis=2)
    assert np.array_equal(image_to_rgb(5, 7, "rgba8", 28, 0, rgba.tobytes()), RGB)
    bgra = np.ascontiguousarray(rgba[..., [2, 1, 0, 3]])
    assert np.array_equal(image_to_rgb(5, 7, "bgra8", 28, 0, bgra.tobytes()), RGB)
    grey = RGB[..., 0]
    out = image_to_rgb(5, 7, "mono8", 7, 0, grey.tobytes())
    assert np.array_equal(out, np.repeat(grey[..., None], 3, axis=2))


@pytest.mark.parametrize("bigendian", [False, True])
def test_sixteen_bit_keeps_top_byte_in_the_declared_byte_order(bigendian):
    values = RNG.integers(0, 65536, size=(5, 7), dtype=np.uint16)
    data = values.astype(">u2" if bigendian else "<u2").tobytes()
    out = image_to_rgb(5, 7, "mono16", 14, bigendian, data)
    assert np.array_equal(out[..., 1], (values >> 8).astype(np.uint8))
    rgb16 = RNG.integers(0, 65536, size=(5, 7, 3), dtype=np.uint16)
    data = rgb16.astype(">u2" if bigendian else "<u2").tobytes()
    out = image_to_rgb(5, 7, "rgb16", 42, bigendian, data)
    assert np.array_equal(out, (rgb16 >> 8).astype(np.uint8))


def test_bayer_rggb_red_is_red():
    mosaic = np.zeros((8, 8), np.uint8)
    mosaic[0::2, 0::2] = 255  # the R sites of an RGGB pattern
    out = image_to_rgb(8, 8, "bayer_rggb8", 8, 0, mosaic.tobytes())
    assert out[3, 3, 0] > 200 and out[3, 3, 1] < 50 and out[3, 3, 2] < 50


def test_yuv422_grey_stays_grey():
    # UYVY with U = V = 128 (no colour) and Y = 150 everywhere.
    packed = np.tile(np.array([128, 150], np.uint8), (4, 6, 1))
    out = image_to_rgb(4, 6, "yuv422", 12, 0, packed.tobytes())
    assert out.shape == (4, 6, 3)
    assert np.ptp(out.astype(int)) <= 2 and abs(int(out.mean()) - 150) <= 25


@pytest.mark.parametrize(
    ("height", "width", "encoding", "step", "size", "message"),
    [
        (5, 7, "rgb8", 21, 50, "needs 105 B"),
        (5, 7, "rgb8", 20, 105, "shorter than a row"),
        (5, 7, "32FC1", 28, 140, "unsupported image encoding"),
        (0, 7, "rgb8", 21, 0, "empty"),
    ],
)
def test_bad_fields_raise(height, width, encoding, step, size, message):
    with pytest.raises(ImageConversionError, match=message):
        image_to_rgb(height, width, encoding, step, 0, bytes(size))


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_compressed_round_trip(fmt):
    smooth = np.zeros((32, 40, 3), np.uint8)
    smooth[..., 0] = np.linspace(0, 255, 40).astype(np.uint8)
    smooth[..., 2] = 200
    format_field, data = rgb_to_compressed(smooth, fmt, quality=98)
    assert fmt in format_field
    out = compressed_to_rgb(format_field, data)
    tolerance = 0 if fmt == "png" else 6
    assert np.abs(out.astype(int) - smooth.astype(int)).mean() <= tolerance
    assert out[..., 2].mean() > 190  # channel order kept (blue stays blue)


def test_compressed_garbage_raises():
    with pytest.raises(ImageConversionError, match="does not decode"):
        compressed_to_rgb("jpeg", b"\x00\x01not a jpeg")
    with pytest.raises(ImageConversionError, match="no data"):
        compressed_to_rgb("jpeg", b"")


def test_resize_to_height_width():
    image = np.zeros((48, 64, 3), np.uint8)
    image[:, 32:] = 255
    out = resize_rgb(image, (24, 16))
    assert out.shape == (24, 16, 3)
    assert out[:, :7].max() == 0 and out[:, 9:].min() == 255
    assert resize_rgb(image, (48, 64)) is image

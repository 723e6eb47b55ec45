"""sensor_msgs/Image and CompressedImage <-> numpy, without rclpy or cv_bridge.

Messages are read by field name only (duck typing), so the same code serves the node (rclpy messages),
the offline tools (rosbags messages) and the tests. The PyPI `cv-bridge` cannot be used (docs/ros_environment.md: it
ignores row padding and breaks with numpy 2), and HaMeR only needs 8-bit colour, so this module accepts the
8-bit encodings and refuses the rest with a message saying what to publish instead.

Every accepted image comes out as a contiguous BGR uint8 array of shape (H, W, 3) that owns its memory
(docs/model.md §6.1: HaMeR's preprocessing starts from `cv2.imread`'s BGR uint8).
"""
from __future__ import annotations

import array
import cv2
import numpy as np

from hamer_ros.io.image_header import declared_image_size, image_format

# 3840x2160 (4K UHD): the largest frame the node accepts by default; bigger frames only cost memory and
# time (HaMeR works on 256-px crops) and an 8K frame is far more likely a misconfigured driver.
DEFAULT_MAX_PIXELS = 3840 * 2160

# encoding -> (channels, cv2 conversion to BGR or None). One byte per channel, so the message's
# is_bigendian flag does not change how the bytes are read. 8UCn are OpenCV's unnamed 8-bit types; like
# cv_bridge we read 3/4 channels as BGR/BGRA.
_EIGHT_BIT_ENCODINGS = {
    'bgr8': (3, None),
    'rgb8': (3, cv2.COLOR_RGB2BGR),
    'bgra8': (4, cv2.COLOR_BGRA2BGR),
    'rgba8': (4, cv2.COLOR_RGBA2BGR),
    'mono8': (1, cv2.COLOR_GRAY2BGR),
    '8uc1': (1, cv2.COLOR_GRAY2BGR),
    '8uc3': (3, None),
    '8uc4': (4, cv2.COLOR_BGRA2BGR),
}

_ACCEPTED = 'bgr8, rgb8, bgra8, rgba8 or mono8'


class ImageRefused(ValueError):
    """An image message that cannot be used. `kind` names the problem independently of the numbers in the text
    (e.g. 'data length' for any amount of missing data), so that warnings can be throttled per kind of problem."""

    def __init__(self, kind: str, text: str):
        super().__init__(text)
        self.kind = kind


def _refusal(encoding: str) -> str:
    """Why an encoding is refused and what to publish instead."""
    enc = encoding.lower()
    if enc.startswith('bayer'):
        why = 'is raw Bayer data: debayer it first (e.g. image_proc\'s debayer node, topic image_color)'
    elif enc.startswith(('yuv', 'uyvy', 'yuyv', 'nv12', 'nv21', 'nv24', 'i420')):
        why = 'is a YUV format: set the camera driver to an RGB output or convert it (e.g. image_proc)'
    elif '16' in enc:
        why = 'has 16-bit channels (depth or HDR image?): HaMeR needs an 8-bit colour image'
    elif enc.startswith(('32f', '64f')) or 'fc' in enc:
        why = 'has floating-point channels (depth image?): HaMeR needs an 8-bit colour image'
    elif not enc:
        why = 'is empty: the publisher did not set `encoding`'
    else:
        why = 'is not supported'
    return f'image encoding {encoding!r} {why}; publish {_ACCEPTED}'


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageRefused('zero size', f'image has zero size ({width}x{height}): the publisher sent an empty image')
    if width * height > max_pixels:
        raise ImageRefused(
            'too large', f'image {width}x{height} has {width * height / 1e6:.1f} Mpx, more than the limit of '
            f'{max_pixels / 1e6:.1f} Mpx: lower the camera resolution (or resize with image_proc), '
            f'or raise the limit (node parameter max_image_pixels)')


def _as_uint8_buffer(data) -> np.ndarray:
    """A flat uint8 view of a message's byte field (bytes, bytearray, array.array('B'), list of ints)."""
    if isinstance(data, (bytes, bytearray, memoryview, array.array, np.ndarray)):
        return np.frombuffer(data, dtype=np.uint8)
    return np.asarray(data, dtype=np.uint8)


def image_msg_to_bgr(msg, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Convert a sensor_msgs/Image to a BGR uint8 array (H, W, 3), honouring `step` (row padding).

    Raises ValueError, saying what is wrong and what to do, for unsupported encodings, zero or oversized
    frames, a `step` shorter than a row, and data whose length is not exactly `height * step`.
    """
    encoding = str(msg.encoding)
    layout = _EIGHT_BIT_ENCODINGS.get(encoding.lower())
    if layout is None:
        raise ImageRefused(f'encoding {encoding.lower()}', _refusal(encoding))
    channels, to_bgr = layout
    width, height, step = int(msg.width), int(msg.height), int(msg.step)
    _check_size(width, height, max_pixels)
    row_bytes = width * channels
    if step < row_bytes:
        raise ImageRefused(
            'step', f'image step {step} is shorter than one row of a {width}-px wide {encoding} image '
            f'({row_bytes} bytes): the publisher must set step = bytes per row including padding')
    data = _as_uint8_buffer(msg.data)
    if data.size != height * step:
        raise ImageRefused(
            'data length', f'image data has {data.size} bytes but height x step = {height} x {step} = {height * step}: '
            f'the message is truncated or its width/height/step are wrong')
    # Drop the row padding with a strided view; cv2/copy below makes the result contiguous and owned.
    pixels = data.reshape(height, step)[:, :row_bytes].reshape(height, width, channels)
    if to_bgr is None:
        return np.array(pixels, copy=True, order='C')
    return cv2.cvtColor(np.ascontiguousarray(pixels), to_bgr)


def compressed_msg_to_bgr(msg, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage (JPEG, PNG, ... anything cv2.imdecode reads) to BGR uint8.

    Decompression bombs: a PNG or JPEG is refused on the size its header declares (`image_header`), before any
    decoding, when it exceeds `max_pixels`: an 875 kB PNG can declare 30000 x 30000 pixels, 2.7 GB once decoded.
    Other formats have no header reader here: they are decoded (OpenCV refuses more than 2**30 pixels) and then
    refused when larger than `max_pixels`; publish JPEG or PNG (what compressed_image_transport sends)."""
    fmt = str(getattr(msg, 'format', ''))
    if 'compresseddepth' in fmt.lower().replace(' ', ''):
        raise ImageRefused('depth', f'compressed image format {fmt!r} is a depth image: subscribe to a colour '
                                    'image topic')
    data = _as_uint8_buffer(msg.data)
    if data.size == 0:
        raise ImageRefused('empty', 'compressed image has no data: the publisher sent an empty CompressedImage')
    kind = image_format(data)
    if kind is not None:
        declared = declared_image_size(data)
        if declared is None:
            raise ImageRefused(
                'undecodable', f'compressed image ({data.size} bytes, format {fmt!r}) could not be decoded: its '
                f'{kind.upper()} header is truncated or damaged, or declares no size')
        _check_size(*declared, max_pixels)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise ImageRefused(
            'undecodable', f'compressed image ({data.size} bytes, format {fmt!r}) could not be decoded: the data is '
            f'corrupt or not an image format OpenCV reads (use jpeg or png)')
    _check_size(image.shape[1], image.shape[0], max_pixels)
    return image


def bgr_to_image_msg(image_bgr: np.ndarray, msg, header=None):
    """Fill `msg` (an empty sensor_msgs/Image) with a BGR uint8 image as `bgr8`; returns `msg`."""
    image = np.ascontiguousarray(image_bgr)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'expected a BGR uint8 image (H, W, 3), got {image.dtype} {image.shape}')
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(image.shape[0]), int(image.shape[1])
    msg.encoding = 'bgr8'
    msg.is_bigendian = 0      # one byte per channel: byte order does not apply
    msg.step = int(image.shape[1] * 3)
    msg.data = array.array('B', image.tobytes())
    return msg

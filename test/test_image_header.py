"""declared_image_size: the width and height in PNG and JPEG headers, read without decoding (image_header)."""
import struct
import zlib

import cv2
import numpy as np
import pytest

from hamer_ros.io.image_header import declared_image_size, image_format


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC-32 of type and data (PNG specification, section 5.3)."""
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))


def png_of_zeros(width: int, height: int, bit_depth: int = 8) -> bytes:
    """A valid greyscale PNG of black pixels, built without holding the raw image in memory: each row is a
    filter byte (0) and the row's samples, all zero, deflated at level 9 (~1000:1)."""
    row = 1 + (width * bit_depth + 7) // 8
    compressor = zlib.compressobj(9)
    rows_per_block = max(1, (32 << 20) // row)
    block = bytes(row * rows_per_block)
    parts, left = [], height
    while left > 0:
        count = min(left, rows_per_block)
        parts.append(compressor.compress(block if count == rows_per_block else bytes(row * count)))
        left -= count
    parts.append(compressor.flush())
    header = struct.pack('>IIBBBBB', width, height, bit_depth, 0, 0, 0, 0)    # greyscale, deflate, no interlace
    return (b'\x89PNG\r\n\x1a\n' + png_chunk(b'IHDR', header) + png_chunk(b'IDAT', b''.join(parts))
            + png_chunk(b'IEND', b''))


def jpeg_declaring(width: int, height: int, progressive: bool = False) -> bytes:
    """A small real JPEG (OpenCV's encoder) whose frame header is rewritten to declare width x height."""
    image = np.random.default_rng(0).integers(0, 256, size=(16, 24, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode('.jpg', image, [cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)])
    assert ok
    data = bytearray(encoded.tobytes())
    sof = data.index(b'\xff\xc2' if progressive else b'\xff\xc0')
    assert struct.unpack('>HH', data[sof + 5:sof + 9]) == (16, 24)       # Y (lines), X (samples per line)
    data[sof + 5:sof + 9] = struct.pack('>HH', height, width)
    return bytes(data)


@pytest.mark.parametrize('ext,params', [('.png', []), ('.jpg', []), ('.jpg', [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])])
def test_size_of_real_encoded_images(ext, params):
    image = np.zeros((37, 53, 3), np.uint8)
    ok, encoded = cv2.imencode(ext, image, params)
    assert ok
    assert declared_image_size(encoded.tobytes()) == (53, 37)
    assert declared_image_size(encoded) == (53, 37)                   # a numpy buffer works too
    assert image_format(encoded.tobytes()) == ('png' if ext == '.png' else 'jpeg')


def test_size_of_bombs_without_decoding():
    assert declared_image_size(png_of_zeros(30000, 20000, bit_depth=1)) == (30000, 20000)
    assert declared_image_size(jpeg_declaring(30000, 29000)) == (30000, 29000)
    assert declared_image_size(jpeg_declaring(65535, 4, progressive=True)) == (65535, 4)


def test_jpeg_segments_before_the_frame_header_are_skipped():
    base = jpeg_declaring(24, 16)
    # An APP1 segment that contains bytes looking like a frame header (an Exif thumbnail would), and fill bytes
    # (0xFF) before the next marker: neither may be taken for the image's frame header.
    fake_sof = b'\xff\xc0\x00\x11\x08\x99\x99\x99\x99'
    app1 = b'\xff\xe1' + struct.pack('>H', 2 + len(fake_sof)) + fake_sof
    data = base[:2] + app1 + b'\xff\xff\xff' + base[2:]
    assert declared_image_size(data) == (24, 16)


@pytest.mark.parametrize('data', [
    b'', b'GIF89a\x10\x00\x10\x00', b'BM' + bytes(60), b'not an image',
    b'\x89PNG\r\n\x1a\n' + bytes(8),                                  # truncated before IHDR's size
    b'\x89PNG\r\n\x1a\n' + png_chunk(b'IDAT', bytes(13)),             # IHDR is not the first chunk
    b'\x89PNG\r\n\x1a\n' + png_chunk(b'IHDR', struct.pack('>IIBBBBB', 0, 5, 8, 0, 0, 0, 0)),     # zero width
    b'\xff\xd8\xff\xe0\x00\x10JFIF',                                  # truncated in a segment
    b'\xff\xd8\xff\xda\x00\x08' + bytes(6),                           # a scan before any frame header
    b'\xff\xd8\x00\x00\x00',                                          # no marker where one must be
])
def test_no_size_for_other_formats_and_broken_headers(data):
    assert declared_image_size(data) is None


def test_jpeg_height_given_by_dnl_is_no_size():
    data = bytearray(jpeg_declaring(24, 16))
    sof = data.index(b'\xff\xc0')
    data[sof + 5:sof + 7] = b'\x00\x00'          # Y = 0: number of lines defined later by a DNL marker
    assert declared_image_size(bytes(data)) is None

"""The size an image file declares in its header, read before anything is decoded.

So that a small crafted file (a 1.5 MB PNG declaring 20000x20000 pixels) is refused in microseconds instead of
being decoded into gigabytes. Plain Python, no OpenCV. Layouts relied on:
  PNG   8-byte signature, then the IHDR chunk: width, height as big-endian uint32 at bytes 16 and 20 (PNG spec,
        W3C "Portable Network Graphics", IHDR);
  JPEG  SOI (FFD8), then marker segments FFxx + big-endian uint16 length; a start-of-frame segment (SOF0-3, 5-7,
        9-11, 13-15) holds precision (1 byte), height, width (uint16 each) (ITU-T T.81, B.2.2);
  BMP   'BM', BITMAPINFOHEADER width, height as little-endian int32 at bytes 18 and 22 (height < 0: top-down);
  WebP  RIFF container 'WEBP' with a VP8X (canvas width-1, height-1: 24-bit little endian at 24 and 27), VP8L
        (14-bit width-1, height-1 packed after the 0x2F signature byte at 20) or VP8 (14-bit width, height at 26
        and 28) chunk (Google's WebP container and lossless bitstream specifications);
  PNM   P1-P6: ASCII width and height after the magic, '#' comments allowed (Netpbm).
Other formats (TIFF, ...) return None: the caller checks the decoded size instead.
"""
from __future__ import annotations

import struct
from typing import Optional, Tuple

_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_NO_LENGTH = {0x01, *range(0xD0, 0xD9)}     # TEM, RST0-7, SOI: markers without a length field


def declared_image_size(data: bytes) -> Optional[Tuple[int, int]]:
    """(width, height) an image file's header declares, or None when the format is not one read here or the
    header is cut or malformed."""
    data = memoryview(data)
    try:
        if bytes(data[:8]) == _PNG_SIGNATURE:
            return _png(data)
        if bytes(data[:2]) == b'\xff\xd8':
            return _jpeg(data)
        if bytes(data[:2]) == b'BM':
            width, height = struct.unpack_from('<ii', data, 18)
            return width, abs(height)
        if bytes(data[:4]) == b'RIFF' and bytes(data[8:12]) == b'WEBP':
            return _webp(data)
        if len(data) > 2 and data[0] == ord('P') and chr(data[1]) in '123456':
            return _pnm(bytes(data[:4096]))
    except struct.error:
        return None     # cut inside the header
    return None


def _png(data) -> Optional[Tuple[int, int]]:
    if bytes(data[12:16]) != b'IHDR':
        return None
    return struct.unpack_from('>II', data, 16)


def _jpeg(data) -> Optional[Tuple[int, int]]:
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:          # fill byte
            position += 1
            continue
        if marker in _JPEG_NO_LENGTH:
            position += 2
            continue
        if marker == 0xDA:          # start of scan before any frame header
            return None
        length = struct.unpack_from('>H', data, position + 2)[0]
        if marker in _JPEG_SOF:
            height, width = struct.unpack_from('>HH', data, position + 5)
            return width, height
        position += 2 + length
    return None


def _webp(data) -> Optional[Tuple[int, int]]:
    chunk = bytes(data[12:16])
    if chunk == b'VP8X':
        width = int.from_bytes(bytes(data[24:27]), 'little') + 1
        height = int.from_bytes(bytes(data[27:30]), 'little') + 1
        return width, height
    if chunk == b'VP8L' and data[20] == 0x2F:
        bits = struct.unpack_from('<I', data, 21)[0]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b'VP8 ':
        width, height = struct.unpack_from('<HH', data, 26)
        return width & 0x3FFF, height & 0x3FFF
    return None


def _pnm(head: bytes) -> Optional[Tuple[int, int]]:
    tokens = []
    for line in head[2:].split(b'\n'):
        tokens += line.split(b'#', 1)[0].split()
        if len(tokens) >= 2:
            try:
                return int(tokens[0]), int(tokens[1])
            except ValueError:
                return None
    return None

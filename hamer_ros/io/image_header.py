"""The width and height an image file declares in its header (PNG, JPEG; also BMP, WebP, PNM), read without
decoding a single pixel.

A compressed image can declare a size far beyond what its bytes suggest: a PNG of zeros compresses about 1000:1
(deflate), so an 875 kB PNG declares 30000 x 30000 pixels and decoding it allocates gigabytes. Reading the declared
size first lets a caller refuse such an image before any decoder runs. Plain Python, no imports beyond the standard
library: shared by the node and the offline tools.

Formats (facts relied on):
- PNG (W3C PNG specification, 2nd edition, sections 5.2, 5.3 and 11.2.2): an 8-byte signature
  89 50 4E 47 0D 0A 1A 0A, then chunks of [length: 4 bytes big-endian][type: 4 bytes][data][CRC: 4 bytes]; the first
  chunk must be IHDR, whose data starts with width and height as 4-byte big-endian unsigned integers (zero is not
  allowed, at most 2**31 - 1).
- JPEG (ITU-T T.81, Annex B): a stream of markers, each 0xFF followed by a code byte, optionally preceded by fill
  bytes 0xFF (B.1.1.2); it starts with SOI (FF D8). SOI, EOI (D9), RST0-7 (D0-D7) and TEM (01) stand alone; every
  other marker starts a segment whose first two bytes (big-endian) give its length, those two bytes included
  (B.1.1.4). The frame header (B.2.2) follows a start-of-frame marker SOF0-3, 5-7, 9-11, 13-15 (C0-C3, C5-C7,
  C9-CB, CD-CF; C4, C8 and CC are DHT, JPG and DAC) and reads: length (2), sample precision P (1), number of lines
  Y (2), samples per line X (2), ... Y = 0 means the height is given later by a DNL marker (B.2.5). The frame
  header comes before the first scan (SOS, FF DA), so the search stops there.
- BMP: 'BM', then the BITMAPINFOHEADER's width and height as little-endian int32 at bytes 18 and 22 (a negative
  height means top-down rows).
- WebP (Google's WebP container and lossless bitstream specifications): a RIFF container of type 'WEBP' whose first
  chunk is VP8X (canvas width - 1 and height - 1, 24-bit little-endian at bytes 24 and 27), VP8L (after the 0x2F
  signature byte at 20, 14-bit width - 1 and height - 1) or VP8 (14-bit width and height at 26 and 28).
- PNM (Netpbm): 'P1'..'P6', then width and height in ASCII, '#' comments allowed.
Other formats (TIFF, ...) give None: the caller checks the decoded size instead.
"""
from __future__ import annotations

import struct
from typing import Optional, Tuple

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
JPEG_SOI = b'\xff\xd8'

_JPEG_STANDALONE = {0x01, 0xd8, 0xd9} | set(range(0xd0, 0xd8))
_JPEG_START_OF_FRAME = set(range(0xc0, 0xd0)) - {0xc4, 0xc8, 0xcc}
_JPEG_START_OF_SCAN = 0xda


def image_format(data: bytes) -> Optional[str]:
    """'png', 'jpeg', 'bmp', 'webp' or 'pnm' when `data` starts with that format's signature, else None."""
    head = bytes(data[:12])
    if head[:8] == PNG_SIGNATURE:
        return 'png'
    if head[:2] == JPEG_SOI:
        return 'jpeg'
    if head[:2] == b'BM':
        return 'bmp'
    if head[:4] == b'RIFF' and head[8:12] == b'WEBP':
        return 'webp'
    if len(head) > 2 and head[0] == ord('P') and chr(head[1]) in '123456':
        return 'pnm'
    return None


def declared_image_size(data: bytes) -> Optional[Tuple[int, int]]:
    """(width, height) that the header of `data` declares (module docstring); None when `data` is none of those
    formats, or its header is truncated, damaged or declares no size (zero width or height, JPEG height left to DNL).

    Reads only the header bytes (bytes, bytearray, memoryview or a uint8 numpy array): no pixel is decoded, so the
    answer costs microseconds whatever the declared size."""
    view = memoryview(data).cast('B') if not isinstance(data, memoryview) else data.cast('B')
    kind = image_format(view)
    if kind == 'png':
        return _png_size(view)
    if kind == 'jpeg':
        return _jpeg_size(view)
    try:
        if kind == 'bmp':
            width, height = struct.unpack_from('<ii', view, 18)
            return (width, abs(height)) if width > 0 and height != 0 else None
        if kind == 'webp':
            return _webp_size(view)
        if kind == 'pnm':
            return _pnm_size(bytes(view[:4096]))
    except (struct.error, IndexError):
        return None     # cut inside the header
    return None


def _png_size(data: memoryview) -> Optional[Tuple[int, int]]:
    # signature (8) + IHDR length (4) + 'IHDR' (4) + width (4) + height (4)
    if len(data) < 24 or bytes(data[12:16]) != b'IHDR':
        return None
    width, height = struct.unpack('>II', data[16:24])
    if not (0 < width < 2 ** 31 and 0 < height < 2 ** 31):
        return None
    return width, height


def _jpeg_size(data: memoryview) -> Optional[Tuple[int, int]]:
    position, end = 2, len(data)
    while position < end:
        if data[position] != 0xff:
            return None                     # not at a marker: damaged stream
        while position < end and data[position] == 0xff:
            position += 1                   # the marker's 0xFF and any fill bytes before its code
        if position >= end:
            return None
        code = data[position]
        position += 1
        if code in _JPEG_STANDALONE:
            continue
        if code == _JPEG_START_OF_SCAN or position + 2 > end:
            return None                     # scan data before any frame header, or truncated
        (length,) = struct.unpack('>H', data[position:position + 2])
        if length < 2:
            return None
        if code in _JPEG_START_OF_FRAME:
            if length < 8 or position + 7 > end:
                return None
            height, width = struct.unpack('>HH', data[position + 3:position + 7])
            return (width, height) if width > 0 and height > 0 else None
        position += length
    return None


def _webp_size(data) -> Optional[Tuple[int, int]]:
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


def _pnm_size(head: bytes) -> Optional[Tuple[int, int]]:
    tokens = []
    for line in head[2:].split(b'\n'):
        tokens += line.split(b'#', 1)[0].split()
        if len(tokens) >= 2:
            try:
                width, height = int(tokens[0]), int(tokens[1])
            except ValueError:
                return None
            return (width, height) if width > 0 and height > 0 else None
    return None

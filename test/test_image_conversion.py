"""Image message <-> numpy conversion: layouts, encodings and every kind of malformed message."""
import array
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from hamer_ros.ros.image_conversion import (DEFAULT_MAX_PIXELS, bgr_to_image_msg, compressed_msg_to_bgr,
                                        image_msg_to_bgr)


def _bgr_pattern(height=5, width=7):
    """A BGR image whose every byte is distinct enough to catch swapped channels and shifted rows."""
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _image_msg(pixels, encoding, padding=0, bigendian=0, data_type=bytes):
    """A duck-typed sensor_msgs/Image holding `pixels` (H, W[, C]) with `padding` bytes after each row."""
    height, width = pixels.shape[:2]
    rows = pixels.reshape(height, -1)
    padded = np.concatenate([rows, np.full((height, padding), 0xAB, np.uint8)], axis=1)
    data = padded.tobytes()
    if data_type is array.array:
        data = array.array('B', data)
    elif data_type is list:
        data = list(data)
    return SimpleNamespace(height=height, width=width, encoding=encoding, is_bigendian=bigendian,
                           step=padded.shape[1], data=data)


@pytest.mark.parametrize('encoding,to_message', [
    ('bgr8', lambda bgr: bgr),
    ('8UC3', lambda bgr: bgr),
    ('rgb8', lambda bgr: bgr[..., ::-1]),
    ('bgra8', lambda bgr: np.dstack([bgr, np.full(bgr.shape[:2], 200, np.uint8)])),
    ('rgba8', lambda bgr: np.dstack([bgr[..., ::-1], np.full(bgr.shape[:2], 7, np.uint8)])),
])
@pytest.mark.parametrize('padding', [0, 3, 64])
def test_colour_encodings_with_row_padding(encoding, to_message, padding):
    bgr = _bgr_pattern()
    msg = _image_msg(np.ascontiguousarray(to_message(bgr)), encoding, padding=padding)
    out = image_msg_to_bgr(msg)
    assert out.dtype == np.uint8 and out.shape == bgr.shape and out.flags['C_CONTIGUOUS']
    np.testing.assert_array_equal(out, bgr)


@pytest.mark.parametrize('encoding', ['mono8', '8UC1'])
def test_mono_becomes_grey_bgr(encoding):
    grey = _bgr_pattern()[..., 0]
    out = image_msg_to_bgr(_image_msg(grey, encoding, padding=1))
    np.testing.assert_array_equal(out, np.dstack([grey, grey, grey]))


@pytest.mark.parametrize('data_type', [bytes, array.array, list])
@pytest.mark.parametrize('bigendian', [0, 1])
def test_data_containers_and_byte_order_flag(data_type, bigendian):
    # One byte per channel: is_bigendian must not change the pixels.
    bgr = _bgr_pattern()
    out = image_msg_to_bgr(_image_msg(bgr, 'bgr8', padding=2, bigendian=bigendian, data_type=data_type))
    np.testing.assert_array_equal(out, bgr)


def test_result_owns_its_memory():
    bgr = _bgr_pattern()
    msg = _image_msg(bgr, 'bgr8', data_type=array.array)
    out = image_msg_to_bgr(msg)
    out[:] = 0          # writable and not aliasing the message buffer
    np.testing.assert_array_equal(image_msg_to_bgr(msg), bgr)


@pytest.mark.parametrize('encoding,words', [
    ('mono16', ['16-bit', 'bgr8']),
    ('16UC1', ['16-bit']),
    ('rgb16', ['16-bit']),
    ('32FC1', ['floating-point']),
    ('64FC3', ['floating-point']),
    ('yuv422', ['YUV']),
    ('uyvy', ['YUV']),
    ('nv21', ['YUV']),
    ('bayer_rggb8', ['Bayer', 'debayer']),
    ('jpeg', ['not supported']),
    ('', ['empty']),
])
def test_unsupported_encodings_are_refused_with_advice(encoding, words):
    msg = SimpleNamespace(height=2, width=2, encoding=encoding, is_bigendian=0, step=8, data=bytes(16))
    with pytest.raises(ValueError) as err:
        image_msg_to_bgr(msg)
    assert repr(encoding) in str(err.value)
    for word in words:
        assert word in str(err.value)
    assert 'publish bgr8, rgb8, bgra8, rgba8 or mono8' in str(err.value)


def test_float_image_with_nan_is_refused_not_converted():
    depth = np.full((4, 4), np.nan, np.float32)
    msg = SimpleNamespace(height=4, width=4, encoding='32FC1', is_bigendian=0, step=16, data=depth.tobytes())
    with pytest.raises(ValueError, match='floating-point'):
        image_msg_to_bgr(msg)


@pytest.mark.parametrize('change,words', [
    (dict(width=0), 'zero size'),
    (dict(height=0), 'zero size'),
    (dict(step=20), 'shorter than one row'),             # 7 px * 3 bytes = 21 > 20
    (dict(step=22), 'height x step'),                    # data no longer matches
    (dict(data=bytes(5 * 21 - 1)), 'truncated'),         # one byte short
    (dict(data=bytes(5 * 21 + 21)), '5 x 21 = 105'),     # one row too many
    (dict(height=6), 'height x step'),
])
def test_inconsistent_layouts_are_refused(change, words):
    msg = _image_msg(_bgr_pattern(), 'bgr8')
    for key, value in change.items():
        setattr(msg, key, value)
    with pytest.raises(ValueError, match=words):
        image_msg_to_bgr(msg)


def test_huge_frame_refused_before_reading_data():
    # An 8K frame header with no pixel data: refused on its size alone, naming the parameter to change.
    msg = SimpleNamespace(height=4320, width=7680, encoding='bgr8', is_bigendian=0, step=7680 * 3, data=b'')
    with pytest.raises(ValueError, match='max_image_pixels'):
        image_msg_to_bgr(msg)
    assert 7680 * 4320 > DEFAULT_MAX_PIXELS >= 3840 * 2160
    small = _image_msg(_bgr_pattern(), 'bgr8')
    with pytest.raises(ValueError, match='0.0 Mpx'):
        image_msg_to_bgr(small, max_pixels=34)


@pytest.mark.parametrize('ext', ['.png', '.jpg'])
def test_compressed_image_decodes(ext):
    # A smooth colour gradient (JPEG keeps it within a few grey levels; noise it would not).
    ys, xs = np.mgrid[0:40, 0:60]
    bgr = np.dstack([xs * 4, ys * 6, 255 - xs * 4]).astype(np.uint8)
    ok, encoded = cv2.imencode(ext, bgr)
    assert ok
    out = compressed_msg_to_bgr(SimpleNamespace(format=ext[1:], data=array.array('B', encoded.tobytes())))
    assert out.shape == bgr.shape and out.dtype == np.uint8
    if ext == '.png':
        np.testing.assert_array_equal(out, bgr)
    else:   # lossy: close, not equal
        assert np.abs(out.astype(int) - bgr).mean() < 3


def test_compressed_corrupt_empty_depth_and_huge_are_refused():
    ok, encoded = cv2.imencode('.jpg', _bgr_pattern(40, 60))
    corrupt = encoded.tobytes()[:20] + bytes(200)
    with pytest.raises(ValueError, match='could not be decoded'):
        compressed_msg_to_bgr(SimpleNamespace(format='jpeg', data=corrupt))
    with pytest.raises(ValueError, match='could not be decoded'):
        compressed_msg_to_bgr(SimpleNamespace(format='jpeg', data=b'not an image at all'))
    with pytest.raises(ValueError, match='no data'):
        compressed_msg_to_bgr(SimpleNamespace(format='jpeg', data=b''))
    with pytest.raises(ValueError, match='depth image'):
        compressed_msg_to_bgr(SimpleNamespace(format='16UC1; compressedDepth png', data=encoded.tobytes()))
    with pytest.raises(ValueError, match='max_image_pixels'):
        compressed_msg_to_bgr(SimpleNamespace(format='jpeg', data=encoded.tobytes()), max_pixels=100)


def test_bgr_to_image_msg_round_trip_through_the_real_message_type():
    sensor_msgs = pytest.importorskip('sensor_msgs.msg', reason='sensor_msgs needs the ROS 2 environment')
    std_msgs = pytest.importorskip('std_msgs.msg')
    bgr = _bgr_pattern(6, 9)
    header = std_msgs.Header(frame_id='camera_optical')
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = bgr_to_image_msg(bgr, sensor_msgs.Image(), header)
    assert (msg.encoding, msg.step, msg.height, msg.width, msg.is_bigendian) == ('bgr8', 27, 6, 9, 0)
    assert msg.header.stamp.nanosec == 345 and msg.header.frame_id == 'camera_optical'
    np.testing.assert_array_equal(image_msg_to_bgr(msg), bgr)


def test_bgr_to_image_msg_refuses_non_bgr():
    with pytest.raises(ValueError, match='BGR uint8'):
        bgr_to_image_msg(np.zeros((4, 4), np.uint8), SimpleNamespace())
    with pytest.raises(ValueError, match='BGR uint8'):
        bgr_to_image_msg(np.zeros((4, 4, 3), np.float32), SimpleNamespace())


@pytest.fixture(scope='module')
def png_bomb():
    """An 875 kB greyscale PNG declaring 30000 x 30000 pixels (900 MB of zeros deflated; 2.7 GB as BGR)."""
    from test_image_header import png_of_zeros
    return png_of_zeros(30000, 30000)


def _rss_peak_mb() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0      # Linux: kilobytes


@pytest.mark.parametrize('bomb', ['png', 'jpeg'])
def test_compressed_bombs_are_refused_from_their_header_without_decoding(bomb, png_bomb, monkeypatch):
    import time
    import tracemalloc

    from hamer_ros.ros import image_conversion
    from test_image_header import jpeg_declaring

    data = png_bomb if bomb == 'png' else jpeg_declaring(30000, 30000)
    decoded = []
    real_imdecode = cv2.imdecode

    def spy(buffer, flags):
        # Never decodes the bomb (2.7 GB): the recorded call is the evidence that the decoder was reached.
        is_bomb = len(buffer) == len(data) and bytes(buffer) == data
        decoded.append('bomb' if is_bomb else 'good')
        return None if is_bomb else real_imdecode(buffer, flags)

    monkeypatch.setattr(image_conversion.cv2, 'imdecode', spy)
    msg = SimpleNamespace(format=bomb, data=array.array('B', data))
    rss_before = _rss_peak_mb()
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r'image 30000x30000 has 900\.0 Mpx, more than the limit .*max_image_pixels'):
        compressed_msg_to_bgr(msg)
    seconds = time.perf_counter() - start
    _, python_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f'{bomb} bomb ({len(data) / 1e3:.0f} kB declaring 30000x30000) refused in {seconds * 1e3:.2f} ms, '
          f'Python allocations peak {python_peak / 1e6:.2f} MB')
    assert decoded == [], 'the decoder ran on an image whose header already declared it too large'
    assert python_peak < 100e6 and _rss_peak_mb() - rss_before < 100
    # The next good frame is decoded as usual.
    ok, good = cv2.imencode('.png' if bomb == 'png' else '.jpg', _bgr_pattern(40, 60))
    assert compressed_msg_to_bgr(SimpleNamespace(format=bomb, data=good.tobytes())).shape == (40, 60, 3)
    assert decoded == ['good']


def test_compressed_formats_without_a_header_reader_are_checked_after_decoding():
    ok, encoded = cv2.imencode('.bmp', _bgr_pattern(40, 60))
    assert ok
    assert compressed_msg_to_bgr(SimpleNamespace(format='bmp', data=encoded.tobytes())).shape == (40, 60, 3)
    with pytest.raises(ValueError, match='max_image_pixels'):
        compressed_msg_to_bgr(SimpleNamespace(format='bmp', data=encoded.tobytes()), max_pixels=40 * 60 - 1)
    # A PNG or JPEG whose header cannot be read is not handed to the decoder either.
    with pytest.raises(ValueError, match='PNG header is truncated or damaged'):
        compressed_msg_to_bgr(SimpleNamespace(format='png', data=b'\x89PNG\r\n\x1a\n' + bytes(30)))


def test_refusals_name_their_kind_of_problem_whatever_the_numbers():
    from hamer_ros.ros.image_conversion import ImageRefused

    kinds = set()
    for cut in (1, 7, 100):
        msg = _image_msg(_bgr_pattern(), 'bgr8')
        msg.data = msg.data[:-cut]
        with pytest.raises(ImageRefused) as refused:
            image_msg_to_bgr(msg)
        kinds.add(refused.value.kind)
    assert kinds == {'data length'}
    with pytest.raises(ImageRefused) as refused:
        image_msg_to_bgr(_image_msg(_bgr_pattern(), 'yuv422'))
    assert refused.value.kind == 'encoding yuv422'       # one kind per encoding: each says something else

"""Shared pieces of the offline-tool tests: small frames with real (small-model) hands, message comparison,
and a way to run Python as on a machine without ROS."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from hamer_ros.types import CameraIntrinsics, FrameResult, HandDetection, HandResult

ROOT = Path(__file__).resolve().parents[1]

# Python source run first in a child process: every ROS module import fails there, as on a pip-only machine.
NO_ROS_PRELUDE = '''
import importlib.abc, sys
_ROS = ('rclpy', 'rosidl_runtime_py', 'std_msgs', 'geometry_msgs', 'sensor_msgs', 'visualization_msgs',
        'builtin_interfaces', 'tf2_msgs', 'tf2_ros', 'ament_index_python', 'diagnostic_msgs', 'rcl_interfaces')
class _NoRos(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in _ROS or name == 'hamer_ros.msg' or name.startswith('hamer_ros.msg.'):
            raise ImportError(f'no ROS here: {name}')
sys.meta_path.insert(0, _NoRos())
'''


def demo_module():
    """scripts/demo_sequence.py as a module (its `make_sequence` builds the demo's real sequence)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location('demo_sequence', ROOT / 'scripts' / 'demo_sequence.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_without_ros(code: str, *args: str, timeout: float = 300, package_root: Path = ROOT
                    ) -> subprocess.CompletedProcess:
    """Run `code` in a fresh Python where ROS cannot be imported, with the hamer_ros of `package_root` (default:
    this checkout) first on the path; another `package_root` (a pip install) is the only hamer_ros there."""
    inherited = os.environ.get('PYTHONPATH', '') if package_root == ROOT else ''
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(package_root), inherited]))
    # cwd too: `python -c` puts the working folder first on the path.
    return subprocess.run([sys.executable, '-c', NO_ROS_PRELUDE + code, *args], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=package_root)


def synthetic_image(width: int = 320, height: int = 240, seed: int = 0) -> np.ndarray:
    """A textured BGR image (smooth gradients plus noise), so crops differ from box to box."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], axis=-1)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def small_model():
    from hamer_ros.hamer.model import HamerModel
    return HamerModel.small_random(seed=0)


def two_hand_detections():
    return [HandDetection(np.array([40.0, 60.0, 130.0, 170.0]), 'left', side_score=0.9, score=0.8, track_id=1),
            HandDetection(np.array([180.0, 50.0, 290.0, 180.0]), 'right', side_score=0.95, score=0.7, track_id=2)]


def landmarks_hand(intrinsics: CameraIntrinsics, seed: int = 3) -> HandResult:
    """A landmarks-only hand (no mesh), as the pipeline makes it without weights."""
    rng = np.random.default_rng(seed)
    keypoints = rng.normal(0, 0.03, (21, 3)) + [0.0, 0.0, 0.7]
    pixels = keypoints[:, :2] / keypoints[:, 2:] * [intrinsics.fx, intrinsics.fy] + [intrinsics.cx, intrinsics.cy]
    detection = HandDetection(np.array([100.0, 80.0, 160.0, 150.0]), 'right', 0.7, 0.6, landmarks_2d=pixels,
                              landmarks_world=keypoints - keypoints.mean(0), track_id=5)
    return HandResult(detection, keypoints_camera_mediapipe=keypoints, translation_mediapipe=keypoints.mean(0))


def model_frame(model, image=None, stamp_ns: int = 1_700_000_000_123_456_789) -> FrameResult:
    """A frame with two HaMeR hands (left + right, small model) and one landmarks-only hand."""
    from hamer_ros.pipeline import HandPipeline

    image = synthetic_image() if image is None else image
    frame = HandPipeline(model=model).process(image, stamp_ns, detections=two_hand_detections())
    assert len(frame.hands) == 2, frame.dropped
    frame.hands.append(landmarks_hand(frame.intrinsics))
    return frame


def input_frame(index: int = 0, frame_id: str = 'camera_optical', image=None):
    """The InputFrame a record is written for."""
    from hamer_ros.io.offline import InputFrame
    return InputFrame(index, str(index), f'{index:06d}', 1_700_000_000_123_456_789 + index, image, frame_id=frame_id)


def assert_same_message(a, b, where: str = 'message', rtol: float = 0.0) -> None:
    """Field-by-field equality of two decoded rosbags messages: exact, or floats within `rtol`."""
    if dataclasses.is_dataclass(a):
        assert type(a).__msgtype__ == type(b).__msgtype__, where
        for field in dataclasses.fields(a):
            assert_same_message(getattr(a, field.name), getattr(b, field.name), f'{where}.{field.name}', rtol)
    elif isinstance(a, np.ndarray):
        if rtol and a.dtype.kind == 'f':
            np.testing.assert_allclose(a, b, rtol=rtol, atol=0, err_msg=where)
        else:
            np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_message(x, y, f'{where}[{i}]', rtol)
    elif isinstance(a, float) and rtol:
        assert abs(a - b) <= rtol * abs(b), f'{where}: {a!r} != {b!r}'
    else:
        assert a == b, f'{where}: {a!r} != {b!r}'


def write_camera_bag(path: Path, images, storage: str = 'mcap', compressed: bool = False,
                     topic: str = '/camera/image_raw', camera_info: bool = True, start_ns: int = 1_700_000_000_000_000_000,
                     period_ns: int = 33_333_333, extra_raw: dict = None) -> Path:
    """A rosbag2 bag of camera frames (Image, or CompressedImage on <topic>/compressed as JPEG), CameraInfo on
    /camera/camera_info before each frame, written with rosbags. `extra_raw`: {index: bytes} replaces the
    serialized image of that frame (to make corrupt messages)."""
    import cv2
    from rosbags.rosbag2 import StoragePlugin, Writer

    from hamer_ros.io import bag_io
    from hamer_ros.ros.image_conversion import bgr_to_image_msg

    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    image_type = 'sensor_msgs/msg/CompressedImage' if compressed else 'sensor_msgs/msg/Image'
    image_topic = topic + '/compressed' if compressed else topic
    store = bag_io.typestore()
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        images_conn = writer.add_connection(image_topic, image_type, typestore=store)
        info_conn = writer.add_connection('/camera/camera_info', bag_io.CAMERA_INFO_TYPE, typestore=store) \
            if camera_info else None
        for index, image in enumerate(images):
            stamp = start_ns + index * period_ns
            header = bag_io.stand_in('std_msgs/msg/Header')(
                stamp=bag_io.stand_in('builtin_interfaces/msg/Time')(sec=stamp // 10**9, nanosec=stamp % 10**9),
                frame_id='camera_optical')
            if info_conn is not None:
                height, width = image.shape[:2]
                info = bag_io.stand_in(bag_io.CAMERA_INFO_TYPE)(
                    header=header, width=width, height=height,
                    k=[500.0, 0.0, width / 2, 0.0, 510.0, height / 2, 0.0, 0.0, 1.0])
                writer.write(info_conn, stamp, bag_io.serialize(info))
            if compressed:
                message = bag_io.stand_in(image_type)(header=header, format='jpeg',
                                                      data=cv2.imencode('.jpg', image)[1].reshape(-1))
            else:
                message = bgr_to_image_msg(image, bag_io.stand_in(image_type)(), header)
            raw = (extra_raw or {}).get(index, bag_io.serialize(message))
            writer.write(images_conn, stamp + 1000, raw)
    return path


def write_numbered_video(path: Path, fourcc: str = 'MJPG', frames: int = 60, size=(160, 120), fps: float = 30.0
                         ) -> Path:
    """A video of `frames` textured frames, each with its number drawn on it."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    for i in range(frames):
        image = synthetic_image(*size, seed=i)
        cv2.putText(image, str(i), (10, size[1] // 2), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (255, 255, 255), 3)
        writer.write(image)
    writer.release()
    return path


def damaged_copy(source: Path, target: Path, keep: float = None, garbage: tuple = None) -> Path:
    """A copy of `source` cut after the fraction `keep` of its bytes (truncated), or with the byte range
    `garbage` = (start fraction, length fraction) overwritten by seeded random bytes (a corrupt middle)."""
    data = bytearray(Path(source).read_bytes())
    if keep is not None:
        data = data[:int(len(data) * keep)]
    if garbage is not None:
        start, length = int(len(data) * garbage[0]), int(len(data) * garbage[1])
        data[start:start + length] = np.random.default_rng(0).integers(0, 256, length, dtype=np.uint8).tobytes()
    Path(target).write_bytes(bytes(data))
    return Path(target)


def decoded_frames(path: Path) -> list:
    """Every frame OpenCV decodes from an intact video, in order."""
    import cv2

    capture, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, image = capture.read()
        if not ok:
            return frames
        frames.append(image)


def png_of_zeros(path: Path, width: int, height: int) -> Path:
    """A valid PNG of black pixels, written row by row (a few kB even when it decodes to hundreds of MB)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    packer, row, parts = zlib.compressobj(9), bytes(1 + 3 * width), []
    for _ in range(height):
        parts.append(packer.compress(row))
    parts.append(packer.flush())
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0))
                     + chunk(b'IDAT', b''.join(parts)) + chunk(b'IEND', b''))
    return path

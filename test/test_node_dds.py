"""The real hamer_node executable over real DDS: images and CameraInfo in, meshes, markers, TF out.

Each test starts `<install>/lib/hamer_ros/hamer_node` as its own process in its own namespace (frame prefixes
unique too, since /tf is global), on a ROS domain chosen for this test session, and talks to it from this
process. The node runs the real MediaPipe detector on a real photo (two hands) and the small random HaMeR
(`model: small_random`), or no HaMeR at all (missing weights).
"""
from __future__ import annotations

import array
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import yaml

rclpy = pytest.importorskip('rclpy', reason='needs the colcon-built environment: . scripts/env.sh')

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rcl_interfaces.msg import Parameter as ParameterMsg  # noqa: E402
from rcl_interfaces.msg import ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

from hamer_ros.msg import HandMesh, HandMeshArray  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.mediapipe]

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / 'config' / 'hamer.yaml'
FRAME_ID = 'test_camera_optical_frame'
K = (520.0, 0.0, 198.0, 0.0, 515.0, 203.0, 0.0, 0.0, 1.0)
ANSWER_TIMEOUT_S = 90.0     # a shared 2-core machine: start-up (torch, MediaPipe) can take a while


def _executable() -> Path:
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    try:
        path = Path(get_package_prefix('hamer_ros')) / 'lib' / 'hamer_ros' / 'hamer_node'
    except PackageNotFoundError:
        pytest.skip('hamer_ros is not built: run scripts/setup_env.sh and . scripts/env.sh')
    if not path.exists():
        pytest.skip(f'{path} missing: run scripts/setup_env.sh')
    return path


@pytest.fixture(scope='module')
def ros():
    """This process's ROS context, on a domain of its own (not the shell's, to stay apart from other runs)."""
    taken = os.environ.get('ROS_DOMAIN_ID')
    domain = random.SystemRandom().choice([d for d in range(1, 101) if str(d) != taken])
    context = Context()
    rclpy.init(context=context, domain_id=domain)
    yield SimpleNamespace(context=context, domain=domain)
    rclpy.shutdown(context=context)


@pytest.fixture(scope='module')
def photo(sample_photo):
    """The bus photo with both hands of one man (400x400 BGR), and its stamp counter."""
    return cv2.imread(str(sample_photo('bus_man_both')))


class NodeProcess:
    """hamer_node in a process of its own, parameters from config/hamer.yaml plus `overrides`."""

    def __init__(self, ros, tmp_path: Path, namespace: str, overrides: dict, env: dict = None):
        self.namespace = namespace
        params = tmp_path / f'{namespace}.yaml'
        params.write_text(yaml.safe_dump({'/**': {'ros__parameters': overrides}}))
        self.log_path = tmp_path / f'{namespace}.log'
        env = dict(os.environ, ROS_DOMAIN_ID=str(ros.domain), PYTHONUNBUFFERED='1', **(env or {}))
        with open(self.log_path, 'wb') as log:
            self.process = subprocess.Popen(
                [str(_executable()), '--ros-args', '--params-file', str(CONFIG), '--params-file', str(params),
                 '-r', f'__ns:=/{namespace}'], stdout=log, stderr=subprocess.STDOUT, env=env)

    def log(self) -> str:
        return self.log_path.read_text(errors='replace')

    def stop(self, sig=signal.SIGINT, timeout: float = 15.0):
        """Signal the node; returns (exit code, seconds it took to exit)."""
        if self.process.poll() is not None:
            return self.process.returncode, 0.0
        start = time.monotonic()
        self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            code = None
        return code, time.monotonic() - start


class Probe:
    """The test's side of the graph: publishes camera topics into the node's namespace, collects its outputs."""

    def __init__(self, ros, namespace: str, prefix: str, compressed: bool = False):
        self.node = rclpy.create_node(f'probe_{namespace}', namespace=f'/{namespace}', context=ros.context)
        self.executor = SingleThreadedExecutor(context=ros.context)
        self.executor.add_node(self.node)
        self.prefix = prefix
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
        self.compressed = compressed
        self.image_pub = self.node.create_publisher(CompressedImage if compressed else Image,
                                                    'image/compressed' if compressed else 'image', reliable)
        self.info_pub = self.node.create_publisher(CameraInfo, 'camera_info', reliable)
        self.mano, self.markers, self.tf, self.diagnostics = [], [], [], []
        self.node.create_subscription(HandMeshArray, 'hands/mano', self.mano.append, reliable)
        self.node.create_subscription(MarkerArray, 'hands/markers', self.markers.append, reliable)
        self.node.create_subscription(TFMessage, '/tf', self._on_tf, QoSProfile(depth=100))
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)
        self.camera_info = None      # published at 10 Hz when set, like a camera driver
        self.node.create_timer(0.1, self._publish_camera_info)

    def _on_tf(self, msg):
        self.tf.extend(t for t in msg.transforms if t.child_frame_id.startswith(self.prefix))

    def _on_diagnostics(self, msg):
        mine = f'{self.node.get_namespace()}/hamer_node:'
        self.diagnostics.extend(status for status in msg.status if status.name.startswith(mine))

    def _publish_camera_info(self):
        if self.camera_info is not None:
            self.info_pub.publish(self.camera_info)

    def close(self):
        self.executor.remove_node(self.node)
        self.node.destroy_node()

    def spin_until(self, condition, timeout: float = ANSWER_TIMEOUT_S, what: str = 'an answer', node=None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            if node is not None and node.process.poll() is not None:
                pytest.fail(f'hamer_node exited ({node.process.returncode}) while waiting for {what}:\n{node.log()}')
            self.executor.spin_once(timeout_sec=0.05)
        pytest.fail(f'timed out after {timeout:.0f} s waiting for {what}' +
                    (f'; node log:\n{node.log()}' if node is not None else ''))

    def spin_for(self, seconds: float):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)

    def wait_for_node(self, node: NodeProcess):
        self.spin_until(lambda: self.image_pub.get_subscription_count() > 0 and
                        self.info_pub.get_subscription_count() > 0, what='the node to subscribe', node=node)
        # Our publisher sees the node's reader; the node's best-effort reader drops samples from writers it has
        # not matched yet (no resending), and there is no way to ask. Its discovery finishes within moments.
        self.spin_for(1.0)

    def set_camera_info(self, k=K, width=400, height=400):
        info = CameraInfo(width=width, height=height)
        info.header.frame_id = FRAME_ID
        info.k = [float(v) for v in k]
        self.camera_info = info
        for _ in range(5):           # let a few go out before the image
            self.executor.spin_once(timeout_sec=0.1)

    def publish(self, msg, stamp_ns: int):
        msg.header.frame_id = FRAME_ID
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        self.image_pub.publish(msg)
        return msg.header

    def answer(self, stamp_ns: int, node: NodeProcess, outputs=('mano',)):
        """The node's outputs for the image stamped `stamp_ns` (waits for each kind in `outputs`)."""
        def found(kind):
            if kind == 'tf':
                return [t for t in self.tf if _stamp(t.header) == stamp_ns]
            items = getattr(self, kind)
            return next((m for m in items if _stamp(m.header if kind == 'mano' else m.markers[0].header)
                         == stamp_ns), None)
        self.spin_until(lambda: all(found(kind) for kind in outputs), what=f'{outputs} for stamp {stamp_ns}',
                        node=node)
        return {kind: found(kind) for kind in outputs}

    def diagnostic_value(self, key: str):
        for status in reversed(self.diagnostics):
            for item in status.values:
                if item.key == key:
                    return item.value
        return None


def _stamp(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def image_msg(image_bgr: np.ndarray) -> Image:
    height, width = image_bgr.shape[:2]
    return Image(height=height, width=width, encoding='bgr8', step=width * 3,
                 data=array.array('B', np.ascontiguousarray(image_bgr).tobytes()))


def _unique(name: str) -> str:
    return f'{name}_{os.getpid()}_{random.randint(0, 99999)}'


@pytest.fixture
def start(ros, tmp_path):
    """start(overrides, compressed=False, env=None) -> (NodeProcess, Probe); both stopped after the test.
    `overrides` may be a function of the node's namespace (for parameters naming its topics)."""
    running = []

    def _start(overrides, compressed: bool = False, env: dict = None):
        namespace = _unique('hamer_test')
        prefix = f'{namespace}_'
        if callable(overrides):
            overrides = overrides(namespace)
        node = NodeProcess(ros, tmp_path, namespace, dict(overrides, frame_prefix=prefix), env)
        probe = Probe(ros, namespace, prefix, compressed)
        running.append((node, probe))
        if overrides.get('autostart', True):        # else it subscribes only once activated
            probe.wait_for_node(node)
        return node, probe

    yield _start
    for node, probe in running:
        probe.close()
        code, _ = node.stop()
        assert code == 0, f'hamer_node did not exit cleanly on SIGINT (code {code}):\n{node.log()}'


def _core_frame(image, stamp_ns, model):
    """What the plain-Python core computes for this frame (fresh detector and tracker, like a fresh node)."""
    from hamer_ros.detection import make_hand_detector
    from hamer_ros.pipeline import HandPipeline
    from hamer_ros.detection.tracking import HandTracker
    from hamer_ros.types import CameraIntrinsics

    intrinsics = CameraIntrinsics(K[0], K[4], K[2], K[5])
    with make_hand_detector(running_mode='video') as detector:       # the node's default detector
        return HandPipeline(detector, HandTracker(), model).process(image, stamp_ns, intrinsics)


def _f32(field, columns):
    return np.frombuffer(field, np.float32).reshape(-1, columns)


# --------------------------------------------------------------------------------------------------- tests

@pytest.fixture(scope='module')
def answered(ros, tmp_path_factory, photo):
    """One node (small random HaMeR) answering one photo with CameraInfo: everything it published for it."""
    tmp_path = tmp_path_factory.mktemp('answered')
    namespace = _unique('hamer_answer')
    node = NodeProcess(ros, tmp_path, namespace, {'model': 'small_random', 'frame_prefix': f'{namespace}_'})
    probe = Probe(ros, namespace, f'{namespace}_')
    try:
        probe.wait_for_node(node)
        probe.set_camera_info()
        stamp_ns = 1_700_000_123_456_789_000
        header = probe.publish(image_msg(photo), stamp_ns)
        outputs = probe.answer(stamp_ns, node, outputs=('mano', 'markers', 'tf'))
    finally:
        probe.close()
        code, _ = node.stop()
    assert code == 0, node.log()
    return SimpleNamespace(stamp_ns=stamp_ns, header=header, prefix=f'{namespace}_', **outputs)


def test_every_output_carries_the_input_header(answered):
    mano, markers, transforms = answered.mano, answered.markers, answered.tf
    assert mano.header == answered.header
    assert all(hand.header == answered.header for hand in mano.hands)
    assert all(marker.header == answered.header for marker in markers.markers)
    assert transforms and all(t.header == answered.header for t in transforms)
    assert (mano.image_width, mano.image_height) == (400, 400)
    assert mano.intrinsics_from_camera_info and (mano.fx, mano.fy, mano.cx, mano.cy) == (K[0], K[4], K[2], K[5])


def test_meshes_equal_what_the_core_computes(answered, photo):
    from hamer_ros.hamer.model import HamerModel
    from hamer_ros.pipeline import faces_by_side

    model = HamerModel.small_random(seed=0)
    core = _core_frame(photo, answered.stamp_ns, model)
    faces = faces_by_side(model.faces)
    assert len(core.hands) == 2, 'MediaPipe should find both hands of the bus photo'
    assert len(answered.mano.hands) == len(core.hands)
    for hand_msg, hand in zip(answered.mano.hands, core.hands):
        recon, detection = hand.reconstruction, hand.detection
        assert hand_msg.source == HandMesh.SOURCE_HAMER
        assert hand_msg.side == (HandMesh.SIDE_RIGHT if detection.side == 'right' else HandMesh.SIDE_LEFT)
        assert hand_msg.track_id == detection.track_id
        x0, y0, x1, y1 = detection.box_xyxy
        assert (hand_msg.box.x_offset, hand_msg.box.y_offset) == (int(np.floor(x0)), int(np.floor(y0)))
        np.testing.assert_allclose(_f32(hand_msg.vertices, 3), recon.vertices_camera, atol=2e-5)
        np.testing.assert_allclose(_f32(hand_msg.keypoints_3d, 3), recon.keypoints_camera, atol=2e-5)
        np.testing.assert_allclose(_f32(hand_msg.keypoints_2d, 2), recon.keypoints_2d, atol=1e-2)
        np.testing.assert_allclose(_f32(hand_msg.hand_pose, 9), recon.hand_pose.reshape(15, 9), atol=1e-5)
        np.testing.assert_allclose(_f32(hand_msg.betas, 10)[0], recon.betas, atol=1e-5)
        np.testing.assert_allclose([hand_msg.translation.x, hand_msg.translation.y, hand_msg.translation.z],
                                   recon.cam_t, rtol=1e-5)
        np.testing.assert_array_equal(np.frombuffer(hand_msg.faces, np.uint32).reshape(-1, 3), faces[detection.side])


def test_markers_show_the_message_meshes(answered):
    meshes = [m for m in answered.markers.markers if m.type == Marker.TRIANGLE_LIST]
    assert len(meshes) == len(answered.mano.hands) == 2
    for mesh, hand in zip(meshes, answered.mano.hands):
        assert mesh.id == hand.track_id and mesh.action == Marker.ADD
        vertices = _f32(hand.vertices, 3).astype(np.float64)
        faces = np.frombuffer(hand.faces, np.uint32).reshape(-1, 3)
        corners = np.array([(p.x, p.y, p.z) for p in mesh.points])
        np.testing.assert_array_equal(corners, vertices[faces].reshape(-1, 3))
    joints = [m for m in answered.markers.markers if m.type == Marker.SPHERE_LIST]
    assert [len(m.points) for m in joints] == [21, 21]


def test_default_tf_names_carry_the_namespace_and_wrist_only_mode(ros, tmp_path, photo):
    """Default frame_prefix ({namespace}hand_): two cameras' nodes in two namespaces never share a frame name.
    publish.tf_frames: wrist publishes one frame per hand."""
    namespace = _unique('hamer_tfns')
    node = NodeProcess(ros, tmp_path, namespace, {'model': 'small_random', 'publish.tf_frames': 'wrist'})
    probe = Probe(ros, namespace, f'{namespace}/hand_')
    try:
        probe.wait_for_node(node)
        probe.set_camera_info()
        stamp_ns = 5_000_000_000
        probe.publish(image_msg(photo), stamp_ns)
        outputs = probe.answer(stamp_ns, node, outputs=('mano', 'tf'))
    finally:
        probe.close()
        code, _ = node.stop()
    assert code == 0, node.log()
    sides = ['right' if hand.side == HandMesh.SIDE_RIGHT else 'left' for hand in outputs['mano'].hands]
    assert sorted(t.child_frame_id for t in outputs['tf']) == sorted(f'{namespace}/hand_{side}_wrist'
                                                                    for side in sides)


def test_tf_joints_equal_the_message_joints(answered):
    from hamer_ros.hamer.mano import OPENPOSE_JOINT_NAMES

    by_name = {t.child_frame_id: t for t in answered.tf}
    assert len(by_name) == 42
    for hand in answered.mano.hands:
        side = 'right' if hand.side == HandMesh.SIDE_RIGHT else 'left'
        keypoints = _f32(hand.keypoints_3d, 3)
        for index, joint in enumerate(OPENPOSE_JOINT_NAMES):
            transform = by_name[f'{answered.prefix}{side}_{joint}'].transform
            position = [transform.translation.x, transform.translation.y, transform.translation.z]
            np.testing.assert_allclose(position, keypoints[index], atol=1e-6)
            q = transform.rotation
            assert abs(np.linalg.norm([q.x, q.y, q.z, q.w]) - 1.0) < 1e-6
        # The wrist frame turns with the hand: MANO's global orientation (joint 0's global rotation).
        wrist = by_name[f'{answered.prefix}{side}_wrist'].transform.rotation
        np.testing.assert_allclose(Rotation.from_quat([wrist.x, wrist.y, wrist.z, wrist.w]).as_matrix(),
                                   _f32(hand.global_orient, 9).reshape(3, 3), atol=1e-5)


def test_hand_mesh_array_survives_an_mcap_bag(answered, tmp_path):
    from rosbags.rosbag2 import Reader
    from rclpy.serialization import deserialize_message

    from hamer_ros.io.bag_io import BagWriter, read_bag

    bag = tmp_path / 'hands_bag'
    with BagWriter(bag, {'/hands/mano': 'hamer_ros/msg/HandMeshArray'}) as writer:
        writer.write('/hands/mano', answered.mano, answered.stamp_ns)
    assert any(p.suffix == '.mcap' for p in bag.iterdir())
    (record,) = read_bag(bag)
    assert record.error is None and record.log_time_ns == answered.stamp_ns
    read = record.message
    assert (read.header.stamp.sec, read.header.stamp.nanosec, read.header.frame_id) == (
        answered.header.stamp.sec, answered.header.stamp.nanosec, FRAME_ID)
    for hand_read, hand in zip(read.hands, answered.mano.hands):
        np.testing.assert_array_equal(hand_read.vertices, np.frombuffer(hand.vertices, np.float32))
        np.testing.assert_array_equal(hand_read.faces, np.frombuffer(hand.faces, np.uint32))
        assert (hand_read.track_id, hand_read.side, hand_read.box.width) == (hand.track_id, hand.side, hand.box.width)
    # And as ROS reads it: the bag's bytes decode with rclpy to the very message that came over DDS.
    with Reader(bag) as reader:
        (_, _, raw), = list(reader.messages())
    assert deserialize_message(raw, HandMeshArray) == answered.mano


@pytest.mark.parametrize('overlap', ['off', 'on'])
def test_a_burst_faster_than_the_model_is_dropped_not_queued(start, photo, overlap):
    node, probe = start({'model': 'small_random', 'diagnostics_period': 0.2, 'overlap_detection': overlap})
    probe.set_camera_info()
    # 40 frames at 200 Hz; the node needs > 25 ms a frame (MediaPipe alone). Not all at once: a best-effort
    # transport may lose samples of a burst that overflows its buffers, and this is about the node's dropping.
    burst = [2_000_000_000 + i * 5_000_000 for i in range(40)]
    for stamp_ns in burst:
        probe.publish(image_msg(photo), stamp_ns)
        time.sleep(0.005)
    probe.answer(burst[-1], node)              # the newest frame is always answered...
    answered = [_stamp(m.header) for m in probe.mano]
    assert answered == sorted(set(answered)) and set(answered) <= set(burst)
    assert len(answered) < len(burst) // 2, f'{len(answered)} of {len(burst)} frames answered: queued, not dropped'
    # ...and nothing older arrives after it.
    probe.spin_for(2.0)
    assert _stamp(probe.mano[-1].header) == burst[-1]
    assert all(len(m.hands) == 2 for m in probe.mano)
    assert probe.diagnostic_value('detection overlapped') == ('yes' if overlap == 'on' else 'no')


def test_missing_weights_give_landmarks_only(start, photo, tmp_path):
    empty = tmp_path / 'no_weights_here'
    empty.mkdir()
    node, probe = start({'model': 'hamer', 'data_dir': str(empty)})
    probe.set_camera_info()
    stamp_ns = 3_000_000_000
    header = probe.publish(image_msg(photo), stamp_ns)
    outputs = probe.answer(stamp_ns, node, outputs=('mano', 'markers', 'tf'))
    log = node.log()
    assert 'python -m hamer_ros setup-weights' in log and str(empty) in log and 'landmarks-only' in log
    # The fix names what a ROS user sets: the node parameter and the launch argument, not only a CLI flag.
    assert 'node parameter data_dir' in log and 'data_dir:=' in log

    core = _core_frame(photo, stamp_ns, None)
    mano = outputs['mano']
    assert mano.header == header and len(mano.hands) == len(core.hands) == 2
    for hand_msg, hand in zip(mano.hands, core.hands):
        assert hand_msg.source == HandMesh.SOURCE_MEDIAPIPE
        assert len(hand_msg.vertices) == len(hand_msg.faces) == len(hand_msg.hand_pose) == 0
        np.testing.assert_allclose(_f32(hand_msg.keypoints_3d, 3), hand.keypoints_camera_mediapipe, atol=1e-5)
        np.testing.assert_allclose(_f32(hand_msg.keypoints_2d, 2), hand.detection.landmarks_2d, atol=1e-3)
    assert {m.type for m in outputs['markers'].markers} == {Marker.SPHERE_LIST, Marker.LINE_LIST}
    # No orientation without HaMeR: position-only frames, named so (never a made-up orientation on ..._wrist).
    assert len(outputs['tf']) == 42
    assert all(t.child_frame_id.endswith('_position') for t in outputs['tf'])
    assert all((t.transform.rotation.w, t.transform.rotation.x) == (1.0, 0.0) for t in outputs['tf'])


def _bad_images(photo):
    """(what, message) pairs the node must refuse (each followed by a good frame in the test). All below
    512 kB: Fast DDS's default transports lose larger best-effort samples (see test_large_frames_...)."""
    good = image_msg(photo)
    cases = []

    def variant(what, **fields):
        msg = image_msg(photo)
        for key, value in fields.items():
            setattr(msg, key, value)
        cases.append((what, msg))

    variant('step shorter than a row', step=good.step - 3)
    variant('data shorter than height*step', data=array.array('B', bytes(good.data)[:-100]))
    variant('data longer than height*step', data=array.array('B', bytes(good.data) + bytes(good.step)))
    variant('zero size', width=0, height=0, step=0, data=array.array('B'))
    variant('16-bit', encoding='mono16', step=800, data=array.array('B', bytes(400 * 800)))
    variant('float with NaN', encoding='32FC1', width=300, height=300, step=1200,
            data=array.array('B', np.full((300, 300), np.nan, np.float32).tobytes()))
    variant('YUV', encoding='yuv422', step=800, data=array.array('B', bytes(400 * 800)))
    variant('Bayer', encoding='bayer_rggb8', step=400, data=array.array('B', bytes(400 * 400)))
    cases.append(('larger than max_image_pixels', image_msg(cv2.resize(photo, (420, 400)))))
    return cases


def test_bad_images_and_camera_info_are_survived(start, photo):
    node, probe = start({'model': 'small_random', 'diagnostics_period': 0.2, 'max_image_pixels': 400 * 400})
    stamp_ns = 4_000_000_000
    for count, (what, bad) in enumerate(_bad_images(photo), start=1):
        stamp_ns += 10_000_000
        probe.publish(bad, stamp_ns)
        probe.spin_until(lambda: probe.diagnostic_value('bad images') == str(count),
                         what=f'the node to count the bad image ({what})', node=node)
        stamp_ns += 10_000_000
        probe.publish(image_msg(photo), stamp_ns)
        mano = probe.answer(stamp_ns, node)['mano']
        assert len(mano.hands) == 2, f'after the bad image ({what})'
    log = node.log()
    for words in ('shorter than one row', 'truncated', '16-bit', 'floating-point', 'YUV', 'Bayer',
                  'max_image_pixels', 'zero size'):
        assert words in log, f'no warning saying {words!r}'

    # A flood of one kind of problem whose text changes every frame (truncated by different amounts): throttled
    # by kind (one line per 5 s at most, whatever the text), not one line per frame.
    bad_before = int(probe.diagnostic_value('bad images'))
    log_before, flood_start = len(node.log()), time.monotonic()
    for cut in range(1, 21):
        bad = image_msg(photo)
        bad.data = array.array('B', bytes(bad.data)[:-cut * 7])
        stamp_ns += 10_000_000
        probe.publish(bad, stamp_ns)
        probe.spin_until(lambda: int(probe.diagnostic_value('bad images')) == bad_before + cut,
                         what='the truncated image counted', node=node)
    flood_seconds = time.monotonic() - flood_start
    truncated_lines = [line for line in node.log()[log_before:].splitlines() if 'truncated' in line]
    assert len(truncated_lines) <= 1 + int(flood_seconds / 5.0), '\n'.join(truncated_lines)

    # CameraInfo: usable, then zero K, NaN K, finite but absurd K, then for another resolution: only the first
    # is used. Each problem is warned about once (CameraInfo comes at 10 Hz), with readable numbers.
    absurd_cx = K[:2] + (1e30,) + K[3:]
    tiny_focal = (1e-30, 0.0, K[2], 0.0, 1e-30) + K[5:]
    beyond_float32 = K[:5] + (1e39,) + K[6:]
    for k, width, used in ((K, 400, True), ((0.0,) * 9, 400, False), ((float('nan'),) + K[1:], 400, False),
                           (absurd_cx, 400, False), (tiny_focal, 400, False), (beyond_float32, 400, False),
                           (K, 640, False)):
        probe.set_camera_info(k, width=width, height=400)
        probe.spin_for(1.0)         # one CameraInfo warning per second at most
        for _ in range(2):
            stamp_ns += 10_000_000
            probe.publish(image_msg(photo), stamp_ns)
            mano = probe.answer(stamp_ns, node)['mano']
            assert mano.intrinsics_from_camera_info is used, k
            assert abs(mano.cx) < 400 and mano.fx > 100, 'the default camera, not the absurd K'
    log = node.log()
    assert 'unusable K' in log and 'ignoring CameraInfo for 640x400 images' in log
    assert log.count('principal point cx=1e+30 lies far outside the image (0 to 400 px') == 1, log
    assert log.count('fx=1e-30 px gives a horizontal field of view of 180 degrees') == 1, log
    assert log.count('K [520, 0, 198, 0, 515, 1e+39, 0, 0, 1] has values that are not finite') == 1, log
    assert 'np.float64' not in log

    # The camera restarts: its stamps start again from a smaller value. Tracking restarts, frames are answered.
    probe.publish(image_msg(photo), 1_000_000)
    assert len(probe.answer(1_000_000, node)['mano'].hands) == 2
    assert 'image stamps went backwards: starting tracking afresh' in node.log()

    # Two cameras on one topic (two clocks, alternating): said once, not one tracking restart per frame.
    for index in range(8):
        stamp = (2_000_000 if index % 2 == 0 else 900_000_000_000) + index * 33_000_000
        probe.publish(image_msg(photo), stamp)
        assert len(probe.answer(stamp, node)['mano'].hands) == 2
    log = node.log()
    assert log.count('image stamps went backwards: starting tracking afresh') <= 2, log
    assert log.count('are two cameras publishing on this topic?') == 1, log
    probe.spin_until(lambda: (probe.diagnostic_value('image stamps') or '').startswith('going back and forth'),
                     what='the mixed stamps in the diagnostics', node=node)


def test_compressed_transport_survives_corrupt_bytes(start, photo):
    node, probe = start({'model': 'small_random', 'image_transport': 'compressed', 'diagnostics_period': 0.2},
                        compressed=True)
    ok, jpeg = cv2.imencode('.jpg', photo, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    corrupt = CompressedImage(format='jpeg', data=array.array('B', jpeg.tobytes()[:50] + bytes(1000)))
    probe.publish(corrupt, 5_000_000_000)
    probe.spin_until(lambda: probe.diagnostic_value('bad images') == '1', what='the corrupt frame counted',
                     node=node)
    probe.publish(CompressedImage(format='jpeg', data=array.array('B', jpeg.tobytes())), 5_100_000_000)
    mano = probe.answer(5_100_000_000, node)['mano']
    assert len(mano.hands) == 2 and (mano.image_width, mano.image_height) == (400, 400)
    assert 'could not be decoded' in node.log()

    # Decompression bombs: a 1-bit PNG of 112 kB declaring 30000 x 30000 pixels (2.7 GB once decoded to BGR;
    # small enough for the default DDS transports), and a 1 kB JPEG declaring the same. Refused from their
    # headers: the node's memory stays where it was and the next good frame is answered.
    from test_image_header import jpeg_declaring, png_of_zeros

    peak_before = _peak_rss_mb(node)
    for index, bomb in enumerate((png_of_zeros(30000, 30000, bit_depth=1), jpeg_declaring(30000, 30000)), start=2):
        probe.publish(CompressedImage(format='png' if index == 2 else 'jpeg', data=array.array('B', bomb)),
                      5_100_000_000 + index * 100_000_000)
        probe.spin_until(lambda: probe.diagnostic_value('bad images') == str(index), what='the bomb refused',
                         node=node)
        stamp_ns = 5_150_000_000 + index * 100_000_000
        probe.publish(CompressedImage(format='jpeg', data=array.array('B', jpeg.tobytes())), stamp_ns)
        assert len(probe.answer(stamp_ns, node)['mano'].hands) == 2
    assert node.log().count('image 30000x30000 has 900.0 Mpx, more than the limit') >= 1
    assert _peak_rss_mb(node) - peak_before < 100, 'the peak memory grew: a bomb was decoded'


def _peak_rss_mb(node: NodeProcess) -> float:
    """The node process's peak resident memory so far (MB), from /proc."""
    for line in Path(f'/proc/{node.process.pid}/status').read_text().splitlines():
        if line.startswith('VmHWM:'):
            return int(line.split()[1]) / 1024.0
    raise AssertionError('no VmHWM')


def _set_parameter(probe, node_name: str, name: str, value) -> tuple:
    client = probe.node.create_client(SetParameters, f'{node_name}/set_parameters')
    probe.spin_until(lambda: client.service_is_ready(), what='the parameter service')
    if isinstance(value, bool):
        pv = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
    elif isinstance(value, str):
        pv = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
    elif isinstance(value, int):
        pv = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
    elif isinstance(value, float):
        pv = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
    else:
        pv = ParameterValue(type=ParameterType.PARAMETER_DOUBLE_ARRAY, double_array_value=list(value))
    future = client.call_async(SetParameters.Request(parameters=[ParameterMsg(name=name, value=pv)]))
    probe.spin_until(future.done, what=f'setting {name}')
    result = future.result().results[0]
    probe.node.destroy_client(client)
    return result.successful, result.reason


def test_rectified_images_use_p_and_raw_ones_k_with_a_distortion_warning(start, photo):
    """A plumb_bob CameraInfo (K, D of the raw image; P of the rectified one): P by default (image_rectified),
    K after `image_rectified: false`, with a warning that D is ignored."""
    node, probe = start({'model': 'small_random'})
    node_name = f'/{node.namespace}/hamer_node'
    probe.set_camera_info()
    probe.camera_info.distortion_model = 'plumb_bob'
    probe.camera_info.d = [-0.28, 0.07, 0.0004, -0.0002, 0.0]
    probe.camera_info.p = [470.0, 0.0, 201.0, 0.0, 0.0, 468.0, 199.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    for _ in range(5):           # the node gets this one before the image
        probe.executor.spin_once(timeout_sec=0.1)
    stamp_ns = 7_000_000_000
    probe.publish(image_msg(photo), stamp_ns)
    mano = probe.answer(stamp_ns, node)['mano']
    assert (mano.fx, mano.fy, mano.cx, mano.cy) == (470.0, 468.0, 201.0, 199.0)
    assert 'lens distortion' not in node.log()
    assert _set_parameter(probe, node_name, 'image_rectified', False) == (True, '')
    stamp_ns += 10_000_000
    probe.publish(image_msg(photo), stamp_ns)
    mano = probe.answer(stamp_ns, node)['mano']
    assert (mano.fx, mano.fy, mano.cx, mano.cy) == (K[0], K[4], K[2], K[5])
    probe.spin_until(lambda: 'lens distortion D=' in node.log(), what='the distortion warning', node=node)


def test_parameters_change_safely_at_run_time(start, photo):
    node, probe = start({'model': 'small_random'})
    node_name = f'/{node.namespace}/hamer_node'
    assert _set_parameter(probe, node_name, 'device', 'cuda')[0] is False            # read-only
    ok, reason = _set_parameter(probe, node_name, 'markers.color_left', [2.0, 0.0, 0.0])
    assert not ok and 'three numbers in [0, 1]' in reason
    assert _set_parameter(probe, node_name, 'publish.markers', False) == (True, '')
    # Switching markers off clears them in RViz (DELETEALL), and frames are then answered without markers.
    probe.spin_until(lambda: any(m.markers and m.markers[0].action == Marker.DELETEALL for m in probe.markers),
                     what='DELETEALL', node=node)
    probe.markers.clear()
    # The overlay (off by default) is switched on: the image with the meshes drawn, with the input header.
    assert _set_parameter(probe, node_name, 'publish.overlay', True) == (True, '')
    overlays = []
    probe.node.create_subscription(Image, 'hands/overlay', overlays.append, 10)
    probe.spin_for(1.0)
    header = probe.publish(image_msg(photo), 6_000_000_000)
    assert len(probe.answer(6_000_000_000, node)['mano'].hands) == 2
    probe.spin_until(lambda: overlays, what='hands/overlay', node=node)
    assert probe.markers == []
    overlay = overlays[-1]
    assert overlay.header == header and (overlay.width, overlay.height, overlay.encoding) == (400, 400, 'bgr8')
    drawn = np.frombuffer(overlay.data, np.uint8).reshape(400, 400, 3)
    assert np.count_nonzero(np.any(drawn != photo, axis=2)) > 100      # something was drawn on it


def _range_ends(param):
    """(values inside the declared range, values just outside it) of a writable parameter (a row of the
    parameter table)."""
    if param.choices:
        return list(param.choices), ['not-one-of-them']
    if isinstance(param.default, bool):
        return [False, True], []
    if isinstance(param.default, list):          # RGB colours in [0, 1]
        return [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], [[-0.01, 0.0, 0.0], [1.0, 1.01, 1.0]]
    if param.low is not None and isinstance(param.default, int):
        return [param.low, param.high], [param.low - 1, param.high + 1]
    if param.low is not None:
        low, high = float(param.low), float(param.high)
        outside = [low - (high - low) / 100, high + (high - low) / 100]
        return [low, high], outside + ([0.0] if low > 0.0 else [])      # 0.0: where MediaPipe aborted
    return [], []


def test_every_writable_parameter_at_both_ends_of_its_range_while_frames_flow(start, photo):
    """Each writable parameter set to both ends of its declared range (accepted; two frames processed after
    each, so MediaPipe's video mode tracks with the new thresholds) and just outside (refused), then back to its
    default: the node survives all of it and still answers. detector.min_tracking_confidence = 0.0, once inside
    the declared range, aborted the process in MediaPipe."""
    from hamer_ros.ros.parameters import PARAMETERS

    node, probe = start({'model': 'small_random', 'diagnostics_period': 0.2})
    node_name = f'/{node.namespace}/hamer_node'
    probe.set_camera_info()
    stamp_ns, frames = 7_000_000_000, 0

    def frames_handled():
        processed, bad = probe.diagnostic_value('frames processed'), probe.diagnostic_value('bad images')
        return int(processed or 0) + int(bad or 0)

    writable = [param for param in PARAMETERS
                if not param.read_only and param.name != 'frame_prefix']      # TF names: the prefix's own tests
    for param in writable:
        name, default = param.name, param.default
        inside, outside = _range_ends(param)
        assert inside, name
        for value in outside:
            ok, reason = _set_parameter(probe, node_name, name, value)
            assert not ok, f'{name} = {value} accepted, outside its declared range'
        for value in inside:
            assert _set_parameter(probe, node_name, name, value) == (True, ''), f'{name} = {value}'
            for _ in range(2):
                stamp_ns += 33_000_000
                probe.publish(image_msg(photo), stamp_ns)
                frames += 1
                probe.spin_until(lambda: frames_handled() >= frames, what=f'a frame with {name} = {value}',
                                 node=node)
        assert _set_parameter(probe, node_name, name, default) == (True, '')
    stamp_ns += 33_000_000
    probe.publish(image_msg(photo), stamp_ns)
    assert len(probe.answer(stamp_ns, node)['mano'].hands) == 2
    assert node.process.poll() is None


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_an_idle_node_stops_within_two_seconds(start, sig):
    node, probe = start({'model': 'small_random', 'diagnostics_period': 0.2})
    probe.spin_until(lambda: probe.diagnostic_value('detector') == 'ok', what='the node to be ready', node=node)
    code, seconds = node.stop(sig)
    assert code == 0 and seconds < 2.0, f'exit code {code} after {seconds:.2f} s:\n{node.log()}'


@pytest.mark.fixture_weights
@pytest.mark.slow
def test_sigterm_mid_inference_exits_within_two_seconds(start, photo, fixture_data_dir):
    node, probe = start({'model': 'hamer', 'data_dir': str(fixture_data_dir), 'diagnostics_period': 0.2,
                         'threads': 2})
    probe.spin_until(lambda: probe.diagnostic_value('model state') == 'hamer', what='the ViT-H to load', node=node)
    probe.publish(image_msg(photo), 7_000_000_000)
    # MediaPipe takes ~0.1 s; the full-size ViT-H then needs ~0.75 s per hand on this CPU (two hands: ~1.5 s,
    # measured 1.4 s on an idle machine), so 0.6 s after publishing the node is inside the forward pass.
    probe.spin_for(0.6)
    assert probe.mano == [], 'the frame was answered before the signal: not mid-inference'
    code, seconds = node.stop(signal.SIGTERM)
    assert code == 0 and seconds < 2.0, f'exit code {code} after {seconds:.2f} s:\n{node.log()}'


# A camera of the test's own in another process: publishes one VGA frame (0.9 MB) twice a second.
VGA_CAMERA = """
import array, sys, time
import numpy as np, rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
image = np.load(sys.argv[2])
rclpy.init()
node = rclpy.create_node('vga_camera', namespace=sys.argv[1])
publisher = node.create_publisher(Image, 'image', QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
msg = Image(height=480, width=640, encoding='bgr8', step=1920, data=array.array('B', image.tobytes()))
msg.header.frame_id = 'vga_optical'
msg.header.stamp.sec = 8
while rclpy.ok():
    publisher.publish(msg)
    rclpy.spin_once(node, timeout_sec=0.5)
"""


def _vga(photo):
    canvas = np.zeros((480, 640, 3), np.uint8)
    canvas[40:440, 120:520] = photo
    return canvas


def test_large_frames_arrive_with_the_shipped_fast_dds_profile(start, ros, photo, tmp_path):
    """A best-effort VGA camera and the node, both with config/fastdds_large_images.xml (README, "Images over 0.5 MB")."""
    profile = {'FASTDDS_DEFAULT_PROFILES_FILE': str(ROOT / 'config' / 'fastdds_large_images.xml')}
    node, probe = start({'model': 'small_random'}, env=profile)
    frame = tmp_path / 'vga.npy'
    np.save(frame, _vga(photo))
    camera = subprocess.Popen([sys.executable, '-c', VGA_CAMERA, f'/{node.namespace}',
                               str(frame)], env=dict(os.environ, ROS_DOMAIN_ID=str(ros.domain), **profile))
    try:
        mano = probe.answer(8_000_000_000, node)['mano']
    finally:
        camera.send_signal(signal.SIGINT)
        camera.wait(10)
    assert (mano.image_width, mano.image_height, mano.header.frame_id) == (640, 480, 'vga_optical')
    assert len(mano.hands) == 2


def test_large_frames_arrive_through_a_reliable_qos_override(start, photo):
    """Default transports: a reliable camera and the node's image input made reliable by a QoS override."""
    def overrides(namespace):
        return {'model': 'small_random',
                'qos_overrides': {f'/{namespace}/image': {'subscription': {'reliability': 'reliable'}}}}
    node, probe = start(overrides)
    stamp_ns = 9_000_000_000
    probe.publish(image_msg(_vga(photo)), stamp_ns)
    mano = probe.answer(stamp_ns, node)['mano']
    assert (mano.image_width, mano.image_height) == (640, 480) and len(mano.hands) == 2


@pytest.mark.parametrize('overrides,message', [
    ({'model': 'huge'}, 'model must be one of hamer, small_random'),
    ({'detector.num_hands': 40}, 'detector.num_hands'),
    ({'markers.color_left': [0.5, 0.5]}, 'markers.color_left must be three numbers in [0, 1]'),
])
def test_invalid_parameters_stop_the_node_with_a_clear_message(ros, tmp_path, overrides, message):
    node = NodeProcess(ros, tmp_path, _unique('hamer_bad_params'), overrides)
    try:
        code = node.process.wait(60)
    except subprocess.TimeoutExpired:
        node.stop()
        pytest.fail(f'hamer_node kept running with {overrides}:\n{node.log()}')
    assert code == 2 and message in node.log() and 'Traceback' not in node.log(), node.log()


def test_without_litert_the_node_warns_and_finds_hands_with_the_palm_detector(start, photo, tmp_path):
    # A package of that name on the node's path whose import fails: LiteRT "not installed" for this node only.
    hidden = tmp_path / 'no_litert' / 'ai_edge_litert'
    hidden.mkdir(parents=True)
    (hidden / '__init__.py').write_text("raise ImportError('ai_edge_litert hidden by the test')\n")
    env = {'PYTHONPATH': os.pathsep.join(filter(None, [str(hidden.parent), os.environ.get('PYTHONPATH')]))}
    node, probe = start({'model': 'small_random', 'diagnostics_period': 0.2}, env=env)
    probe.spin_until(lambda: probe.diagnostic_value('detector') == 'ok', what='the node to be ready', node=node)
    probe.set_camera_info()
    stamp_ns = 1_700_000_200_000_000_000
    probe.publish(image_msg(photo), stamp_ns)
    hands = probe.answer(stamp_ns, node)['mano'].hands
    assert sorted(hand.side for hand in hands) == [HandMesh.SIDE_LEFT, HandMesh.SIDE_RIGHT]
    assert {hand.stage for hand in hands} == {HandMesh.STAGE_PALM}
    assert 'LiteRT (the ai-edge-litert package) is not installed' in node.log()


def _change_state(probe, node_name: str, transition: str, between=lambda: None) -> bool:
    """Asks the lifecycle node for a transition (configure, activate, deactivate, cleanup) through its
    change_state service, calling `between()` while it waits; True when it succeeded."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    client = probe.node.create_client(ChangeState, f'{node_name}/change_state')
    probe.spin_until(lambda: client.service_is_ready(), what='the change_state service')
    ids = {'configure': Transition.TRANSITION_CONFIGURE, 'activate': Transition.TRANSITION_ACTIVATE,
           'deactivate': Transition.TRANSITION_DEACTIVATE, 'cleanup': Transition.TRANSITION_CLEANUP}
    future = client.call_async(ChangeState.Request(transition=Transition(id=ids[transition])))

    def done():
        between()
        return future.done()

    probe.spin_until(done, what=f'the {transition} transition')
    probe.node.destroy_client(client)
    return future.result().success


@pytest.mark.fixture_weights
@pytest.mark.slow
def test_weights_installed_while_running_are_loaded_by_a_lifecycle_reload_with_images_flowing(
        start, photo, tmp_path, fixture_data_dir):
    """Landmarks-only, a camera at ~20 Hz, weights installed: the node does not look at its data folder while
    frames flow (no polling); deactivate -> cleanup -> configure -> activate, with the camera still running,
    loads them and the next frames get HaMeR meshes."""
    data_dir = tmp_path / '_DATA'
    data_dir.mkdir()
    node, probe = start({'model': 'hamer', 'data_dir': str(data_dir), 'diagnostics_period': 0.2, 'threads': 2})
    node_name = f'/{node.namespace}/hamer_node'
    probe.spin_until(lambda: probe.diagnostic_value('model state') == 'landmarks_only', what='landmarks-only',
                     node=node)
    camera = {'stamp_ns': 20_000_000_000, 'last': 0.0}

    def flowing():
        if time.monotonic() - camera['last'] >= 0.05:
            camera['stamp_ns'] += 50_000_000
            camera['last'] = time.monotonic()
            probe.publish(image_msg(photo), camera['stamp_ns'])

    processed = int(probe.diagnostic_value('frames processed'))
    probe.spin_until(lambda: flowing() or int(probe.diagnostic_value('frames processed')) > processed + 3,
                     what='frames to flow', node=node)
    for source in fixture_data_dir.rglob('*'):       # "install" the seed-1 fixture weights (as links)
        if source.is_file():
            target = data_dir / source.relative_to(fixture_data_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(source)
    until = time.monotonic() + 2.0
    probe.spin_until(lambda: flowing() or time.monotonic() > until, what='two seconds of frames', node=node)
    assert probe.diagnostic_value('model state') == 'landmarks_only'        # nothing reloads behind its back
    for transition in ('deactivate', 'cleanup', 'configure', 'activate'):
        assert _change_state(probe, node_name, transition, between=flowing), transition
    probe.spin_until(lambda: flowing() or (probe.diagnostic_value('model state') == 'hamer'
                                           and probe.diagnostic_value('lifecycle state') == 'active'),
                     what='the weights to load', node=node)
    probe.wait_for_node(node)
    probe.publish(image_msg(photo), 90_000_000_000)
    mano = probe.answer(90_000_000_000, node)['mano']
    assert [h.source for h in mano.hands] == [HandMesh.SOURCE_HAMER] * 2
    assert all(len(h.vertices) == 778 * 3 for h in mano.hands)
    assert node.process.poll() is None


def test_without_autostart_the_node_waits_unconfigured_until_driven(start, photo):
    """autostart false (as the launch file starts it): unconfigured, no image is read, /diagnostics says so; then
    configure and activate over the lifecycle services and it answers; deactivate stops the answers again."""
    node, probe = start({'model': 'small_random', 'diagnostics_period': 0.2, 'autostart': False})
    node_name = f'/{node.namespace}/hamer_node'
    probe.spin_until(lambda: probe.diagnostic_value('lifecycle state') == 'unconfigured', what='unconfigured',
                     node=node)
    assert probe.diagnostic_value('model state') == 'unconfigured'
    assert 'loading the models' not in node.log()
    assert _change_state(probe, node_name, 'configure')
    probe.spin_until(lambda: probe.diagnostic_value('lifecycle state') == 'inactive', what='inactive', node=node)
    assert probe.diagnostic_value('model state') == 'hamer'
    assert _change_state(probe, node_name, 'activate')
    probe.wait_for_node(node)
    probe.publish(image_msg(photo), 5_000_000_000)
    assert len(probe.answer(5_000_000_000, node)['mano'].hands) == 2
    # The diagnostics come every 0.2 s: wait until they count that frame, or the count below is an older one.
    probe.spin_until(lambda: probe.diagnostic_value('frames processed') == '1', what='the frame counted', node=node)
    assert _change_state(probe, node_name, 'deactivate')
    processed = probe.diagnostic_value('frames processed')
    probe.publish(image_msg(photo), 6_000_000_000)
    until = time.monotonic() + 1.5
    probe.spin_until(lambda: time.monotonic() > until, what='a while', node=node)
    assert probe.diagnostic_value('frames processed') == processed
    assert probe.diagnostic_value('lifecycle state') == 'inactive'

"""The node's failure modes are loud, and a user's mistakes in frames and names do not reach TF consumers.

Real hamer_node processes over real DDS (helpers of test_node_dds), except the pause test, which drives the node's
own `_while_paused` (FrameProcessor's) with a real OverlappedPipeline whose model is held inside a forward pass.
"""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy', reason='needs the colcon-built environment: . scripts/env.sh')

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from visualization_msgs.msg import Marker  # noqa: E402

from hamer_ros.ros.frame_processor import FrameProcessor  # noqa: E402
from hamer_ros.overlap import OverlappedPipeline  # noqa: E402
from hamer_ros.pipeline import HandPipeline  # noqa: E402

from node_fakes import FakeDetector, fake_detection, fake_reconstruction  # noqa: E402
from test_node_dds import (CONFIG, FRAME_ID, NodeProcess, Probe, _executable, _set_parameter,  # noqa: E402,F401
                           _stamp, _unique, image_msg, photo, ros, start)

pytestmark = [pytest.mark.ros]


# ------------------------------------------------------------------------------------ the pause, in-process

class _HeldModel:
    """A model whose forward pass lasts until `release` is set; counts the passes running at once."""

    faces = np.zeros((1, 3), np.int64)

    def __init__(self):
        self.release, self.entered = threading.Event(), threading.Event()
        self.running = self.most_at_once = 0
        self.lock = threading.Lock()
        self.released_at = None

    def default_intrinsics(self, width, height):
        from hamer_ros.types import CameraIntrinsics
        return CameraIntrinsics.hamer_default(width, height)

    def predict(self, image_bgr, detections, intrinsics=None):
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        self.entered.set()
        self.release.wait()
        with self.lock:
            self.running -= 1
        return [fake_reconstruction(np.random.default_rng(0), d.side == 'right') for d in detections]


def test_a_change_waits_for_the_frame_inside_the_model_however_long_it_takes():
    """`_while_paused` (new detector, reloaded weights, reset) must never leave a model thread running beside a
    new runner's: it waits past its report period until the frame in the network is done."""
    model = _HeldModel()
    pipeline = HandPipeline(FakeDetector([fake_detection('right')]), None, model)
    warnings, runners, changed_at = [], [], []

    def make_runner(p):
        runner = OverlappedPipeline(p, lambda result: None)
        runners.append(runner)
        return runner

    node = SimpleNamespace(_overlapped=make_runner(pipeline), _closing=threading.Event(), PAUSE_REPORT_S=0.2,
                           _count=lambda name, amount=1: None, _make_overlapped=make_runner,
                           _warn=lambda text, period: warnings.append(text))
    node._overlapped.submit(np.zeros((64, 64, 3), np.uint8), 1)
    assert model.entered.wait(10)
    pause = threading.Thread(target=FrameProcessor._while_paused,
                             args=(node, pipeline, lambda p: changed_at.append(time.monotonic())))
    pause.start()
    time.sleep(11.0)         # longer than any fixed wait: the change must still be waiting
    assert changed_at == [], 'the pipeline was changed while a frame was inside the model'
    model.released_at = time.monotonic()
    model.release.set()
    pause.join(10)
    assert not pause.is_alive() and changed_at and changed_at[0] >= model.released_at
    assert model.most_at_once == 1 and len(runners) == 2
    assert any('waiting for the frame inside HaMeR' in text for text in warnings)
    runners[-1].close()


def test_a_pause_during_shutdown_changes_nothing():
    model = _HeldModel()
    pipeline = HandPipeline(FakeDetector([fake_detection('left')]), None, model)
    runners = []
    node = SimpleNamespace(_closing=threading.Event(), PAUSE_REPORT_S=0.2, _count=lambda name, amount=1: None,
                           _make_overlapped=lambda p: runners.append(OverlappedPipeline(p, lambda r: None)),
                           _warn=lambda text, period: None)
    node._overlapped = OverlappedPipeline(pipeline, lambda result: None)
    node._overlapped.submit(np.zeros((64, 64, 3), np.uint8), 1)
    assert model.entered.wait(10)
    changes = []
    pause = threading.Thread(target=FrameProcessor._while_paused, args=(node, pipeline, changes.append))
    pause.start()
    node._closing.set()
    pause.join(5)
    model.release.set()
    assert not pause.is_alive() and changes == [] and runners == []


# ------------------------------------------------------------------------------------------- over DDS

def _status(probe):
    return probe.diagnostics[-1] if probe.diagnostics else None


@pytest.mark.mediapipe
def test_a_missing_hand_model_is_an_error_with_the_fix_then_picked_up(start, photo, tmp_path):
    """No MediaPipe bundle in the cache: the node fetches nothing, says ERROR with the fix, keeps trying (back-off)
    and starts processing once the model is provisioned."""
    from hamer_ros.detection import default_model_path

    bundle = default_model_path()          # this test session's provisioned bundle
    if not bundle.is_file():
        pytest.skip(f'{bundle} missing: run python -m hamer_ros check --provision')
    cache = tmp_path / 'empty_cache'
    started = time.monotonic()
    # PIP_NO_INDEX: should anything still try to fetch, it fails at once instead of waiting on the network.
    node, probe = start({'model': 'small_random', 'diagnostics_period': 0.2},
                        env={'HAMER_ROS_CACHE_DIR': str(cache), 'PIP_NO_INDEX': '1'})
    probe.spin_until(lambda: _status(probe) is not None and _status(probe).level == DiagnosticStatus.ERROR,
                     what='the ERROR diagnostic', node=node)
    status = _status(probe)
    assert 'hand detector unavailable' in status.message
    assert 'python -m hamer_ros check --provision' in status.message and 'next try in' in status.message
    assert time.monotonic() - started < 60
    assert not (cache / 'mediapipe').exists() or not any((cache / 'mediapipe').glob('*.whl')), 'something fetched'
    assert 'detector.model_path' in node.log()

    (cache / 'mediapipe').mkdir(parents=True, exist_ok=True)
    shutil.copy(bundle, cache / 'mediapipe' / bundle.name)
    from hamer_ros.detection.search_models import search_models_dir
    if search_models_dir().is_dir():        # the hand search's models, provisioned beside the bundle
        shutil.copytree(search_models_dir(), cache / 'mediapipe' / search_models_dir().name)
    probe.spin_until(lambda: probe.diagnostic_value('detector') == 'ok', timeout=90, what='the detector to start',
                     node=node)
    assert 'trying to start the hand detector again' in node.log()
    probe.publish(image_msg(photo), 11_000_000_000)
    assert len(probe.answer(11_000_000_000, node)['mano'].hands) == 2


# hamer_node whose processing thread fails between frames (a defect no input can provoke on purpose): the failure
# is raised on the processing thread, where a real one would be.
FAILING_NODE = """
import sys
from hamer_ros.ros import frame_processor, node

def broken(self):
    raise RuntimeError('simulated defect in the processing thread')

frame_processor.FrameProcessor.between_frames = broken
sys.exit(node.main(sys.argv))
"""


def test_a_dead_processing_thread_ends_the_node_with_status_1(ros, tmp_path):
    import os

    log_path = tmp_path / 'failing.log'
    with open(log_path, 'wb') as log:
        process = subprocess.Popen(
            [sys.executable, '-c', FAILING_NODE, '--ros-args', '--params-file', str(CONFIG), '-p',
             'model:=small_random', '-r', f'__ns:=/{_unique("hamer_failing")}'],
            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, ROS_DOMAIN_ID=str(ros.domain),
                                                           PYTHONUNBUFFERED='1'))
    try:
        code = process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(f'the node kept running without its processing thread:\n{log_path.read_text()}')
    text = log_path.read_text()
    assert code == 1, text
    assert 'processing thread stopped: RuntimeError: simulated defect in the processing thread' in text
    assert 'exiting with status 1' in text


# hamer_node whose executor meets the context's shutdown at the worst moment: the shutdown (as a second SIGINT's
# would) lands after the executor's check of the context and before it creates its wait set, so the real rclpy raises
# its RCLError "the given context is not valid" (the race CI once hit under load). Or, with `crash`, the spin fails
# with an error while the context is still valid.
RACING_NODE = """
import sys
import rclpy
from rclpy.executors import SingleThreadedExecutor
from hamer_ros.ros import node

CRASH = sys.argv.pop(1) == 'crash'

def spin(self):
    self.spin_once(timeout_sec=0.5)         # the node is up and running
    if CRASH:
        raise RuntimeError('simulated defect in the executor')
    self._context.shutdown()                 # the executor does not look again before its wait set
    while True:
        self.spin_once(timeout_sec=0.5)

SingleThreadedExecutor.spin = spin
sys.exit(node.main(sys.argv))
"""


@pytest.mark.parametrize('crash', [False, True], ids=['shutdown-race', 'crash'])
def test_a_shutdown_racing_the_executor_still_exits_in_order(ros, tmp_path, crash):
    """The shutdown race ends the node as a stop signal does (status 0, no traceback); any other error in the spin
    is said with its traceback and ends it with status 1, after the same orderly stop (no abort of the process)."""
    import os

    log_path = tmp_path / 'racing.log'
    with open(log_path, 'wb') as log:
        process = subprocess.Popen(
            [sys.executable, '-c', RACING_NODE, 'crash' if crash else 'race', '--ros-args', '--params-file',
             str(CONFIG), '-p', 'model:=small_random', '-r', f'__ns:=/{_unique("hamer_racing")}'],
            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, ROS_DOMAIN_ID=str(ros.domain),
                                                           PYTHONUNBUFFERED='1'))
    try:
        code = process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(f'the node did not stop:\n{log_path.read_text()}')
    text = log_path.read_text()
    assert 'active: listening to' in text, text        # it was running when the race came
    if crash:
        assert code == 1, text
        assert 'Traceback' in text and 'RuntimeError: simulated defect in the executor' in text
    else:
        assert code == 0, text
        assert 'Traceback' not in text and 'RCLError' not in text, text


@pytest.mark.mediapipe
@pytest.mark.fixture_weights
@pytest.mark.slow
@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_more_signals_during_shutdown_are_absorbed(start, photo, fixture_data_dir, sig):
    """As launch does with a process group (it forwards a second SIGINT): signals keep coming while the node waits
    (up to 1 s) for the frame inside the full-size ViT-H; it still exits 0, without a traceback."""
    node, probe = start({'model': 'hamer', 'data_dir': str(fixture_data_dir), 'diagnostics_period': 0.2,
                         'threads': 2})
    probe.spin_until(lambda: probe.diagnostic_value('model state') == 'hamer', what='the ViT-H to load', node=node)
    probe.publish(image_msg(photo), 12_000_000_000)
    probe.spin_for(0.6)          # inside the forward pass (two hands: ~1.4 s on this CPU, see test_node_dds)
    started = time.monotonic()
    node.process.send_signal(sig)
    while node.process.poll() is None and time.monotonic() - started < 15:
        time.sleep(0.005)
        node.process.send_signal(sig)
    code = node.process.wait(15)
    log = node.log()
    assert code == 0 and 'Traceback' not in log and 'KeyboardInterrupt' not in log, f'exit code {code}:\n{log}'


@pytest.mark.mediapipe
def test_markers_switched_off_while_frames_flow_end_with_the_deleteall(start, photo):
    """Each time publish.markers goes off, the DELETEALL is the last marker message: no ADD after it."""
    node, probe = start({'model': 'small_random'})
    node_name = f'/{node.namespace}/hamer_node'
    probe.set_camera_info()
    stamp = [13_000_000_000]

    def send_frame():
        stamp[0] += 1_000_000
        probe.publish(image_msg(photo), stamp[0])
    probe.node.create_timer(0.03, send_frame)             # ~30 Hz: the node always has a frame going
    late_adds = []
    for toggle in range(30):
        probe.spin_until(lambda: any(m.markers and m.markers[0].action == Marker.ADD for m in probe.markers),
                         what='markers while on', node=node)
        assert _set_parameter(probe, node_name, 'publish.markers', False) == (True, '')
        probe.spin_until(lambda: any(m.markers and m.markers[0].action == Marker.DELETEALL for m in probe.markers),
                         what='DELETEALL', node=node)
        probe.spin_for(0.3)
        delete_at = next(i for i, m in enumerate(probe.markers) if m.markers[0].action == Marker.DELETEALL)
        late_adds += [toggle for m in probe.markers[delete_at + 1:] if m.markers[0].action == Marker.ADD]
        probe.markers.clear()
        assert _set_parameter(probe, node_name, 'publish.markers', True) == (True, '')
    assert late_adds == [], f'ADD markers arrived after the DELETEALL in toggles {late_adds}'


@pytest.mark.mediapipe
def test_frame_ids_tf2_refuses_are_fixed_or_not_used(start, photo):
    node, probe = start({'model': 'small_random'})
    node_name = f'/{node.namespace}/hamer_node'
    probe.set_camera_info()
    # A leading slash, in the prefix and in the image's frame_id: both dropped, with a warning.
    assert _set_parameter(probe, node_name, 'frame_prefix', '/' + probe.prefix) == (True, '')
    msg = image_msg(photo)
    msg.header.frame_id = '/' + FRAME_ID
    msg.header.stamp.sec = 14
    probe.image_pub.publish(msg)
    stamp_ns = 14_000_000_000
    outputs = probe.answer(stamp_ns, node, outputs=('mano', 'markers', 'tf'))
    assert outputs['mano'].header.frame_id == FRAME_ID
    assert {m.header.frame_id for m in outputs['markers'].markers} == {FRAME_ID}
    assert {t.header.frame_id for t in outputs['tf']} == {FRAME_ID} and len(outputs['tf']) == 42
    assert all(t.child_frame_id.startswith(probe.prefix) for t in outputs['tf'])
    log = node.log()
    assert f"frame_prefix '/{probe.prefix}' starts with '/'" in log and f"'/{FRAME_ID}'" in log
    import importlib.util
    if importlib.util.find_spec('tf2_ros') is None:     # this environment: /tf published directly, and said so
        assert 'tf2_ros is not importable' in log and 'tf2_ros_py' in log

    # No frame_id: the meshes still go out, no TF frame and no marker without a parent frame.
    msg.header.frame_id, msg.header.stamp.sec = '', 15
    probe.image_pub.publish(msg)
    assert len(probe.answer(15_000_000_000, node)['mano'].hands) == 2
    probe.spin_for(1.0)
    assert not [t for t in probe.tf if _stamp(t.header) == 15_000_000_000]
    assert not [m for m in probe.markers if m.markers and _stamp(m.markers[0].header) == 15_000_000_000]
    assert 'frame ids may not be empty' in node.log()

    ok, reason = _set_parameter(probe, node_name, 'frame_prefix', '')
    assert not ok and 'clash with a robot' in reason
    ok, reason = _set_parameter(probe, node_name, 'frame_prefix', '//')
    assert not ok


# hamer_node whose configure fails (a defect no parameter can provoke on purpose: weights that cannot be loaded
# give landmarks-only, a detector that cannot start is retried).
FAILING_CONFIGURE = """
import sys
from hamer_ros.ros import frame_processor, node

def broken(self):
    raise RuntimeError('simulated defect while loading')

frame_processor.FrameProcessor.configure = broken
sys.exit(node.main(sys.argv))
"""


def test_a_failing_configure_leaves_the_node_unconfigured_with_the_reason(ros, tmp_path):
    import os

    namespace = _unique('hamer_unconfigured')
    probe = Probe(ros, namespace, f'{namespace}_')
    log_path = tmp_path / 'unconfigured.log'
    with open(log_path, 'wb') as log:
        process = subprocess.Popen(
            [sys.executable, '-c', FAILING_CONFIGURE, '--ros-args', '--params-file', str(CONFIG), '-p',
             'model:=small_random', '-p', 'diagnostics_period:=0.2', '-r', f'__ns:=/{namespace}'],
            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, ROS_DOMAIN_ID=str(ros.domain),
                                                           PYTHONUNBUFFERED='1'))
    try:
        probe.spin_until(lambda: _status(probe) is not None and _status(probe).level == DiagnosticStatus.ERROR,
                         what='the ERROR diagnostic')
        status = _status(probe)
        assert status.message == 'configure failed: RuntimeError: simulated defect while loading'
        assert probe.diagnostic_value('lifecycle state') == 'unconfigured'
        assert process.poll() is None, 'the node must stay up (unconfigured) and say why'
        assert probe.image_pub.get_subscription_count() == 0
    finally:
        probe.close()
        process.send_signal(signal.SIGINT)
        code = process.wait(10)
    text = log_path.read_text()
    assert code == 0, text
    assert 'configure failed: RuntimeError: simulated defect while loading. The node stays unconfigured' in text

"""Hand boxes from another detector, over real DDS: the real hamer_node process reads hamer_ros/HandBoxArray on
hands/boxes_in, published by this test process (the other detector), and runs HaMeR on those boxes.

The photo is the bus photo with both hands of one man (400x400); MediaPipe's own boxes there are about
left (180, 110)-(221, 146) and right (201, 252)-(221, 289). The node runs the small random HaMeR; what it
computes is compared with the plain-Python core run on the same boxes.
"""
from __future__ import annotations

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy', reason='needs the colcon-built environment: . scripts/env.sh')

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import RegionOfInterest  # noqa: E402

from hamer_ros.msg import HandBox, HandBoxArray, HandMesh  # noqa: E402
from test_node_dds import (FRAME_ID, K, _f32, _stamp, image_msg, photo, ros, start)  # noqa: E402,F401

pytestmark = [pytest.mark.ros, pytest.mark.mediapipe]


def _box(x, y, w, h, side=HandBox.SIDE_RIGHT, side_confidence=0.9, score=0.8) -> HandBox:
    return HandBox(box=RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h), side=side,
                   side_confidence=side_confidence, score=score)


class BoxDetector:
    """The other detector: publishes HandBoxArray into the node's namespace from the test's probe node."""

    def __init__(self, probe):
        self.probe = probe
        self.publisher = probe.node.create_publisher(HandBoxArray, 'hands/boxes_in',
                                                     QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        probe.spin_until(lambda: self.publisher.get_subscription_count() > 0, what='the node to read hands/boxes_in')
        probe.spin_for(0.5)

    def publish(self, stamp_ns: int, *boxes: HandBox) -> HandBoxArray:
        msg = HandBoxArray(boxes=list(boxes))
        msg.header.frame_id = FRAME_ID
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        self.publisher.publish(msg)
        self.probe.executor.spin_once(timeout_sec=0.01)
        return msg


def _roi(hand: HandMesh):
    return (hand.box.x_offset, hand.box.y_offset, hand.box.width, hand.box.height)


def _core_frame(image, stamp_ns, boxes_msg):
    """What the plain-Python core computes when HaMeR runs on these boxes alone (fresh tracker, like the node)."""
    from hamer_ros.detection.external_boxes import detections_from_boxes_msg
    from hamer_ros.hamer.model import HamerModel
    from hamer_ros.pipeline import HandPipeline
    from hamer_ros.detection.tracking import HandTracker
    from hamer_ros.types import CameraIntrinsics

    detections, problems = detections_from_boxes_msg(boxes_msg, image.shape[1], image.shape[0])
    assert problems == []
    intrinsics = CameraIntrinsics(K[0], K[4], K[2], K[5])
    return HandPipeline(None, HandTracker(), HamerModel.small_random(seed=0)).process(
        image, stamp_ns, intrinsics, detections=detections)


def test_boxes_from_another_process_are_the_boxes_hamer_runs_on(start, photo):
    # A long timeout: between frames this test computes the core's meshes, which takes seconds on a busy machine.
    node, probe = start({'model': 'small_random', 'external_boxes.mode': 'only', 'external_boxes.wait': 3.0,
                         'external_boxes.timeout': 60.0})
    probe.set_camera_info()
    boxes = BoxDetector(probe)

    # Boxes first, then their image: a box around the left hand (not MediaPipe's: wider) and one of unknown side
    # around the right hand.
    stamp_ns = 1_700_000_500_000_000_000
    sent = boxes.publish(stamp_ns, _box(172, 104, 56, 48, HandBox.SIDE_LEFT, 0.85, 0.75),
                         _box(196, 246, 30, 48, HandBox.SIDE_UNKNOWN, 0.0, 0.6))
    header = probe.publish(image_msg(photo), stamp_ns)
    mano = probe.answer(stamp_ns, node)['mano']
    assert mano.header == header
    assert [_roi(h) for h in mano.hands] == [(172, 104, 56, 48), (196, 246, 30, 48)]
    assert [h.stage for h in mano.hands] == [HandMesh.STAGE_EXTERNAL] * 2
    assert [h.side for h in mano.hands] == [HandMesh.SIDE_LEFT, HandMesh.SIDE_RIGHT]      # unknown: provisional
    np.testing.assert_allclose([h.side_confidence for h in mano.hands], [0.85, 0.5], atol=1e-6)
    np.testing.assert_allclose([h.detection_score for h in mano.hands], [0.75, 0.6], atol=1e-6)
    # HaMeR ran on exactly these boxes: the meshes equal the core's for them (its crop is made from the box).
    core = _core_frame(photo, stamp_ns, sent)
    assert len(core.hands) == 2
    for hand_msg, hand in zip(mano.hands, core.hands):
        assert hand_msg.source == HandMesh.SOURCE_HAMER and hand_msg.track_id == hand.detection.track_id
        np.testing.assert_allclose(_f32(hand_msg.vertices, 3), hand.reconstruction.vertices_camera, atol=2e-5)
        np.testing.assert_allclose(_f32(hand_msg.keypoints_2d, 2), hand.reconstruction.keypoints_2d, atol=1e-2)
    np.testing.assert_allclose([h.reconstruction.box_center for h in core.hands], [[200, 128], [211, 270]])

    # The image first, its boxes 0.3 s later (a detector answers after the image); boxes of a later stamp are
    # there too: the image takes the ones of its own stamp.
    stamp_ns += 100_000_000
    probe.publish(image_msg(photo), stamp_ns)
    probe.spin_for(0.3)
    boxes.publish(stamp_ns + 100_000_000, _box(0, 0, 40, 40))
    boxes.publish(stamp_ns, _box(190, 250, 40, 45, HandBox.SIDE_RIGHT, 0.95, 0.9))
    mano = probe.answer(stamp_ns, node)['mano']
    assert [_roi(h) for h in mano.hands] == [(190, 250, 40, 45)]
    assert (mano.hands[0].side, mano.hands[0].stage) == (HandMesh.SIDE_RIGHT, HandMesh.STAGE_EXTERNAL)
    probe.spin_until(lambda: probe.diagnostic_value('detector') == 'not used (external_boxes.mode only)',
                     what='the detector reported as not used', node=node)


def test_both_mode_merges_external_boxes_with_the_own_search(start, photo):
    node, probe = start({'model': 'small_random', 'external_boxes.mode': 'both', 'external_boxes.wait': 3.0,
                         'external_boxes.timeout': 60.0})
    probe.set_camera_info()
    boxes = BoxDetector(probe)
    stamp_ns = 1_700_000_600_000_000_000
    # The left hand again (score 1.0: above MediaPipe's, so this box wins), and a "hand" MediaPipe cannot see.
    boxes.publish(stamp_ns, _box(176, 106, 48, 44, HandBox.SIDE_UNKNOWN, 0.0, 1.0),
                  _box(20, 330, 50, 50, HandBox.SIDE_LEFT, 0.9, 0.4))
    probe.publish(image_msg(photo), stamp_ns)
    mano = probe.answer(stamp_ns, node)['mano']
    by_stage = sorted((h.stage, _roi(h), h.side) for h in mano.hands)
    assert len(mano.hands) == 3, by_stage                            # not 4: the left hand is there once
    (palm_stage, palm_roi, palm_side), extra, external_left = by_stage
    # The own search's hand: the palm stage or the body stage (the man's wrist) may find it first.
    assert palm_stage in (HandMesh.STAGE_PALM, HandMesh.STAGE_BODY) and palm_side == HandMesh.SIDE_RIGHT
    assert 195 <= palm_roi[0] <= 205 and 245 <= palm_roi[1] <= 258     # MediaPipe's right hand
    # Our box, with MediaPipe's (sure) side for it.
    assert external_left == (HandMesh.STAGE_EXTERNAL, (176, 106, 48, 44), HandMesh.SIDE_LEFT)
    assert extra == (HandMesh.STAGE_EXTERNAL, (20, 330, 50, 50), HandMesh.SIDE_LEFT)
    assert len({h.track_id for h in mano.hands}) == 3


def test_boxes_of_another_stamp_are_not_used_and_say_why(start, photo):
    node, probe = start({'model': 'small_random', 'external_boxes.mode': 'only', 'external_boxes.wait': 0.3,
                         'external_boxes.stamp_tolerance': 0.01, 'diagnostics_period': 0.2})
    probe.set_camera_info()
    boxes = BoxDetector(probe)
    stamp_ns = 1_700_000_700_000_000_000
    boxes.publish(stamp_ns + 50_000_000, _box(172, 104, 56, 48))          # 50 ms off: beyond the 10 ms allowed
    probe.publish(image_msg(photo), stamp_ns)
    probe.spin_until(lambda: probe.diagnostic_value('images without matching boxes') == '1',
                     what='the image counted as without boxes', node=node)
    assert 'nearest boxes: 1700000700.050000000 s, 50.0 ms away' in node.log()
    assert 'Image skipped (external_boxes.mode only)' in node.log()
    probe.spin_for(0.5)
    assert not [m for m in probe.mano if _stamp(m.header) == stamp_ns], 'the image was published without its boxes'

    # Within the tolerance (5 ms off) the boxes are used.
    stamp_ns += 1_000_000_000
    boxes.publish(stamp_ns + 5_000_000, _box(172, 104, 56, 48))
    probe.publish(image_msg(photo), stamp_ns)
    assert [_roi(h) for h in probe.answer(stamp_ns, node)['mano'].hands] == [(172, 104, 56, 48)]
    assert probe.diagnostic_value('images without matching boxes') == '1'


def test_a_silent_box_topic_is_reported_in_diagnostics(start, photo):
    node, probe = start({'model': 'small_random', 'external_boxes.mode': 'only', 'external_boxes.timeout': 1.0,
                         'diagnostics_period': 0.2})
    topic = f'/{node.namespace}/hands/boxes_in'

    def latest():
        return probe.diagnostics[-1] if probe.diagnostics else None

    probe.spin_until(lambda: latest() is not None and latest().message.startswith(f'no hand boxes on {topic}'),
                     what='the timeout in /diagnostics', node=node)
    assert latest().level == DiagnosticStatus.WARN
    assert f'no hand boxes on {topic} since the start (external_boxes.timeout 1.0 s)' in node.log()
    # An empty HandBoxArray (the detector is alive, it found no hand) ends it...
    boxes = BoxDetector(probe)
    boxes.publish(1_000_000_000)
    probe.spin_until(lambda: probe.diagnostic_value('box messages received') == '1', what='the message counted',
                     node=node)
    probe.spin_for(0.3)
    assert not latest().message.startswith('no hand boxes')
    # ...until the detector is silent again for the timeout.
    probe.spin_until(lambda: latest().message.startswith(f'no hand boxes on {topic} for'),
                     what='the timeout again', node=node)

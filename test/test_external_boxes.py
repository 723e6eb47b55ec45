"""Hand boxes from another detector, the plain-Python core (hamer_ros.detection.external_boxes): HandBoxArray ->
detections,
pairing with images by stamp, merging with the own search, and the pipeline running HaMeR on the given boxes.
Messages are the rosbags stand-ins here (no rclpy needed); test_node_external_boxes.py runs the node over DDS."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from hamer_ros.io import bag_io
from hamer_ros.detection.external_boxes import (SIDE_LEFT, SIDE_RIGHT, SIDE_UNKNOWN, UNKNOWN_SIDE_SCORE, BoxBuffer,
                                      detection_from_box, detections_from_boxes_msg, merge_detections,
                                      mismatch_text)
from hamer_ros.pipeline import HandPipeline
from hamer_ros.types import STAGE_EXTERNAL, STAGE_PALM, CameraIntrinsics, HandDetection

from node_fakes import FakeDetector, FakeModel, fake_reconstruction

HandBox = bag_io.stand_in('hamer_ros/msg/HandBox')
HandBoxArray = bag_io.stand_in('hamer_ros/msg/HandBoxArray')
RegionOfInterest = bag_io.stand_in('sensor_msgs/msg/RegionOfInterest')


def hand_box(x, y, w, h, side=SIDE_RIGHT, side_confidence=0.9, score=0.8):
    return HandBox(box=RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h), side=side,
                   side_confidence=side_confidence, score=score)


def box_array(stamp_ns, *boxes, frame_id='cam'):
    msg = HandBoxArray(boxes=list(boxes))
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id = frame_id
    return msg


def own(box, side='right', score=0.9, side_score=0.95):
    return HandDetection(box_xyxy=np.asarray(box, float), side=side, score=score, side_score=side_score)


# ------------------------------------------------------------------------------------------ messages

def test_message_constants_are_the_ones_the_core_uses():
    assert (HandBox.SIDE_LEFT, HandBox.SIDE_RIGHT, HandBox.SIDE_UNKNOWN) == (SIDE_LEFT, SIDE_RIGHT, SIDE_UNKNOWN)
    HandMesh = bag_io.stand_in('hamer_ros/msg/HandMesh')
    assert (HandMesh.SIDE_LEFT, HandMesh.SIDE_RIGHT) == (SIDE_LEFT, SIDE_RIGHT)      # same side codes
    assert (HandMesh.STAGE_PALM, HandMesh.STAGE_EXTERNAL) == (0, 4)


def test_message_classes_offer_the_box_messages_and_a_bag_keeps_them(tmp_path):
    from hamer_ros.io import message_classes

    assert message_classes.HandBox.SIDE_UNKNOWN == SIDE_UNKNOWN and len(message_classes.HandBoxArray().boxes) == 0
    msg = box_array(1_700_000_000_123_456_789, hand_box(10, 20, 30, 40, SIDE_UNKNOWN, 0.0, 0.25))
    bag = tmp_path / 'boxes_bag'
    with bag_io.BagWriter(bag, {'/hands/boxes_in': 'hamer_ros/msg/HandBoxArray'}) as writer:
        writer.write('/hands/boxes_in', msg, 5)
    (record,) = bag_io.read_bag(bag)
    assert record.error is None
    read = record.message
    assert (read.header.stamp.sec, read.header.stamp.nanosec, read.header.frame_id) == (1_700_000_000, 123_456_789,
                                                                                        'cam')
    (box,) = read.boxes
    assert (box.box.x_offset, box.box.y_offset, box.box.width, box.box.height) == (10, 20, 30, 40)
    assert (box.side, box.score) == (SIDE_UNKNOWN, np.float32(0.25))


# ----------------------------------------------------------------------------------- box -> detection

def test_a_box_becomes_the_detection_hamer_crops_and_comes_back_unchanged():
    from hamer_ros.hamer.preprocess import crop_box
    from hamer_ros.ros.ros_messages import box_roi

    detection = detection_from_box(hand_box(101, 52, 79, 108, SIDE_LEFT, 0.7, 0.85), 400, 300)
    np.testing.assert_array_equal(detection.box_xyxy, [101, 52, 180, 160])
    assert (detection.side, detection.side_score, detection.stage) == ('left', pytest.approx(0.7), STAGE_EXTERNAL)
    assert detection.score == pytest.approx(0.85) and detection.landmarks_2d is None
    # HaMeR's crop: centred on the box, side = 2 x the longer edge (the official 2.0 rescale; 108 px tall here).
    centre, side = crop_box(detection.box_xyxy)
    np.testing.assert_allclose(centre, [140.5, 106.0])
    assert side == pytest.approx(216.0)
    roi = box_roi(detection.box_xyxy, 400, 300)                 # what HandMesh.box will say
    assert (roi.x_offset, roi.y_offset, roi.width, roi.height) == (101, 52, 79, 108)


def test_a_box_past_the_border_is_clipped_and_bad_boxes_are_refused_with_reasons():
    clipped = detection_from_box(hand_box(350, 250, 100, 100), 400, 300)
    np.testing.assert_array_equal(clipped.box_xyxy, [350, 250, 400, 300])
    msg = box_array(1, hand_box(0, 0, 0, 0), hand_box(400, 10, 5, 5), hand_box(10, 10, 5, 5, score=1.5),
                    hand_box(10, 10, 5, 5, side=7), hand_box(10, 10, 5, 5, side_confidence=float('nan')),
                    hand_box(20, 30, 40, 50))
    detections, problems = detections_from_boxes_msg(msg, 400, 300)
    assert len(detections) == 1 and detections[0].box_xyxy.tolist() == [20, 30, 60, 80]
    assert len(problems) == 5
    for index, words in enumerate(['zero width or height', 'outside the 400x300 image', 'score 1.5 is not in [0, 1]',
                                   'side 7 is none of', 'side_confidence nan']):
        assert problems[index].startswith(f'box {index}: ') and words in problems[index], problems[index]


def test_an_unknown_side_is_a_provisional_right_hand():
    detection = detection_from_box(hand_box(1, 1, 10, 10, SIDE_UNKNOWN, side_confidence=0.99), 100, 100)
    assert (detection.side, detection.side_score) == ('right', UNKNOWN_SIDE_SCORE)


def test_the_tracker_keeps_a_tracks_side_against_an_unknown_side():
    from hamer_ros.detection.tracking import HandTracker

    tracker = HandTracker()
    (first,) = tracker.update([own((10, 10, 60, 60), side='left', side_score=0.95)], 0.0)
    unknown = detection_from_box(hand_box(12, 10, 50, 50, SIDE_UNKNOWN), 400, 300)
    for k in range(1, 6):
        (later,) = tracker.update([unknown], k * 0.1)
        assert (later.track_id, later.side) == (first.track_id, 'left')


# ------------------------------------------------------------------------------------------------ merge

def test_merging_keeps_one_box_per_hand_the_higher_score_and_the_surer_side():
    mine = [own((100, 100, 200, 200), side='left', score=0.9, side_score=0.97),
            own((300, 100, 380, 190), side='right', score=0.95)]
    given = [HandDetection(box_xyxy=np.array([105, 102, 203, 198.0]), side='right', side_score=0.5, score=0.99,
                           stage=STAGE_EXTERNAL),                     # the same left hand, better box, no side
             HandDetection(box_xyxy=np.array([302, 98, 379, 192.0]), side='right', side_score=0.9, score=0.5,
                           stage=STAGE_EXTERNAL),                     # the same right hand, worse box
             HandDetection(box_xyxy=np.array([10, 10, 40, 40.0]), side='left', side_score=0.8, score=0.3,
                           stage=STAGE_EXTERNAL)]                     # a hand the own search missed
    merged = merge_detections(mine, given, 0.5)
    assert [(d.stage, d.box_xyxy.tolist(), d.side) for d in merged] == [
        (STAGE_PALM, [300, 100, 380, 190], 'right'),
        (STAGE_EXTERNAL, [105, 102, 203, 198], 'left'),      # its box, the own search's surer side
        (STAGE_EXTERNAL, [10, 10, 40, 40], 'left')]
    assert merged[1].side_score == pytest.approx(0.97) and merged[1].score == pytest.approx(0.99)
    # The inputs are untouched, and an equal score keeps the external box.
    assert given[0].side == 'right' and mine[0].stage == STAGE_PALM
    tie = merge_detections([own((0, 0, 10, 10), score=0.5)],
                           [HandDetection(np.array([0, 0, 10, 10.5]), 'right', score=0.5, stage=STAGE_EXTERNAL)])
    assert [d.stage for d in tie] == [STAGE_EXTERNAL]
    # Below the overlap threshold both stay.
    assert len(merge_detections(mine[:1], given[:1], iou_threshold=0.95)) == 2


def test_the_pipeline_runs_the_model_on_the_given_boxes_alone_or_merged():
    image = np.zeros((300, 400, 3), np.uint8)
    intrinsics = CameraIntrinsics(500.0, 500.0, 200.0, 150.0)
    rng = np.random.default_rng(0)
    model = FakeModel({i: fake_reconstruction(rng, True) for i in range(3)})
    detector = FakeDetector([own((100, 100, 200, 200), score=0.9)])
    pipeline = HandPipeline(detector, None, model)
    given, _ = detections_from_boxes_msg(box_array(5, hand_box(102, 101, 100, 100, score=0.99),
                                                   hand_box(300, 20, 50, 60, score=0.7)), 400, 300)

    frame = pipeline.process(image, 5, intrinsics, detections=given)       # mode only: no detector call
    assert detector.timestamps_ms == []
    assert [h.detection.box_xyxy.tolist() for h in frame.hands] == [[102, 101, 202, 201], [300, 20, 350, 80]]
    assert all(h.detection.stage == STAGE_EXTERNAL for h in frame.hands)

    frame = pipeline.process(image, 6_000_000, intrinsics, added_detections=given, merge_iou=0.5)   # mode both
    assert detector.timestamps_ms == [6]
    assert [(h.detection.stage, h.detection.box_xyxy.tolist()) for h in frame.hands] == [
        (STAGE_EXTERNAL, [102, 101, 202, 201]), (STAGE_EXTERNAL, [300, 20, 350, 80])]
    assert len(model.calls[-1][1]) == 2      # HaMeR got two hands, not three


# --------------------------------------------------------------------------------------- stamp pairing

def test_boxes_pair_with_the_image_of_equal_stamp_or_the_nearest_within_the_tolerance():
    buffer = BoxBuffer(tolerance_ns=0)
    for stamp in (1_000_000_000, 1_033_000_000, 1_066_000_000):
        buffer.add(box_array(stamp, hand_box(stamp // 10_000_000, 0, 5, 5)))
    found = buffer.match(1_033_000_000)
    assert found.stamp_ns == 1_033_000_000 and found.message.boxes[0].box.x_offset == 103
    missed = buffer.match(1_040_000_000)
    assert missed.message is None and missed.nearest_ns == 1_033_000_000
    assert 'nearest boxes: 1.033000000 s, 7.0 ms away' in mismatch_text(1_040_000_000, missed, 0)
    buffer.tolerance_ns = 10_000_000
    assert buffer.match(1_040_000_000).stamp_ns == 1_033_000_000
    assert buffer.match(1_058_000_000).stamp_ns == 1_066_000_000         # the nearer one
    assert buffer.match(1_100_000_000).message is None
    assert 'no hand boxes received yet' in mismatch_text(5, BoxBuffer().match(5), 0)


def test_the_buffer_holds_the_newest_messages_only():
    buffer = BoxBuffer(capacity=3)
    for k in range(5):
        buffer.add(box_array(k, hand_box(k, 0, 5, 5)))
    assert [buffer.match(k).message is not None for k in range(5)] == [False, False, True, True, True]
    assert buffer.received == 5


def test_an_image_waits_for_boxes_that_come_after_it():
    buffer = BoxBuffer()
    threading.Timer(0.2, buffer.add, args=(box_array(42, hand_box(1, 2, 3, 4)),)).start()
    start = time.monotonic()
    found = buffer.wait_for_match(42, timeout_s=5.0)
    assert found.message is not None and found.message.boxes[0].box.height == 4
    assert time.monotonic() - start < 4.0        # woken by the message, not by the timeout
    assert buffer.wait_for_match(43, timeout_s=0.05).message is None
    # Closing (the node stops) ends a wait at once.
    threading.Timer(0.2, buffer.close).start()
    start = time.monotonic()
    assert buffer.wait_for_match(44, timeout_s=30.0).message is None
    assert time.monotonic() - start < 10.0


def test_the_timeout_counts_from_the_start_then_from_the_last_message():
    now = [100.0]
    buffer = BoxBuffer(clock=lambda: now[0])
    now[0] = 101.5
    assert not buffer.timed_out(2.0) and buffer.seconds_silent() == pytest.approx(1.5)
    now[0] = 102.5
    assert buffer.timed_out(2.0)
    buffer.add(box_array(1))                   # an empty HandBoxArray counts: the detector is alive
    assert not buffer.timed_out(2.0)
    now[0] = 104.0
    assert buffer.timed_out(1.0) and not buffer.timed_out(2.0)


def test_the_mesh_message_says_which_stage_found_the_hand():
    from hamer_ros.io.message_classes import HandMesh, Header
    from hamer_ros.ros.ros_messages import hand_mesh
    from hamer_ros.types import FrameResult, HandResult

    rng = np.random.default_rng(1)
    frame = FrameResult(width=400, height=300, intrinsics=CameraIntrinsics(500.0, 500.0, 200.0, 150.0))
    given = detection_from_box(hand_box(101, 52, 79, 108, SIDE_LEFT, 0.7, 0.85), 400, 300)
    faces = {'left': np.zeros((2, 3), np.uint32), 'right': np.zeros((2, 3), np.uint32)}
    msgs = [hand_mesh(HandResult(detection, fake_reconstruction(rng, detection.is_right)), Header(), frame, faces)
            for detection in (given, own((10, 10, 50, 60)))]
    assert [m.stage for m in msgs] == [HandMesh.STAGE_EXTERNAL, HandMesh.STAGE_PALM]
    assert (msgs[0].box.x_offset, msgs[0].box.y_offset, msgs[0].box.width, msgs[0].box.height) == (101, 52, 79, 108)
    assert msgs[0].detection_score == pytest.approx(0.85) and msgs[0].side == HandMesh.SIDE_LEFT


def test_hands_of_a_boxes_file_are_marked_as_given_from_elsewhere(tmp_path):
    from hamer_ros.detection import boxes_for_frame, load_boxes_file

    path = tmp_path / 'boxes.json'
    path.write_text('[{"box_xyxy": [10, 20, 50, 70], "side": "left", "score": 0.7}]')
    (hand,) = boxes_for_frame(load_boxes_file(path), 'any.png')
    assert (hand.stage, hand.side, hand.box_xyxy.tolist()) == (STAGE_EXTERNAL, 'left', [10, 20, 50, 70])

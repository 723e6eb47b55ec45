"""HandDetector on real photographs (the catalogue in hamer_ros/provisioning/sample_data.py): sides, tight boxes, landmarks, negatives, mirrored
streams, colour order, video mode with its timestamps, and a shifted sequence through the tracker."""
import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

from hamer_ros.detection import HandDetector, ensure_hand_landmarker_model
from hamer_ros.detection.tracking import HandTracker

pytestmark = pytest.mark.mediapipe

# Boxes MediaPipe Tasks 1.2.2 gave on these crops (hamer_ros/provisioning/sample_data.py), pixels of the crop.
RECORDED_BOXES = {
    'bus_man_left': {'left': [39, 40, 79, 75]},
    'bus_man_right': {'right': [42, 34, 63, 71]},
    'bus_man_both': {'left': [180, 109, 220, 145], 'right': [200, 251, 220, 288]},
}
NEGATIVES = ['negative_astronaut', 'negative_camera', 'negative_coffee', 'negative_chelsea', 'negative_rocket']


@pytest.fixture(scope='module')
def model_path():
    return ensure_hand_landmarker_model()


@pytest.fixture(scope='module')
def detector(model_path):
    with HandDetector(model_path=model_path) as hand_detector:
        yield hand_detector


def _read(sample_photo, photo_id):
    image = cv2.imread(str(sample_photo(photo_id)))
    assert image is not None
    return image


def _by_side(hands):
    sides = [hand.side for hand in hands]
    assert len(set(sides)) == len(sides), f'two hands with one side: {sides}'
    return {hand.side: hand for hand in hands}


@pytest.mark.parametrize('photo_id', sorted(RECORDED_BOXES))
def test_bus_man_hands_have_the_right_sides_and_tight_boxes(detector, sample_photo, photo_id):
    image = _read(sample_photo, photo_id)
    hands = _by_side(detector.detect(image))
    assert sorted(hands) == sorted(RECORDED_BOXES[photo_id])
    for side, recorded in RECORDED_BOXES[photo_id].items():
        hand = hands[side]
        np.testing.assert_allclose(hand.box_xyxy, recorded, atol=2.0)
        assert hand.score > 0.9 and hand.side_score > 0.9
        assert hand.track_id == -1
        # Tight: the box is exactly the extent of the 21 landmarks (all inside these crops), no HaMeR expansion.
        assert hand.landmarks_2d.shape == (21, 2) and hand.landmarks_world.shape == (21, 3)
        np.testing.assert_allclose(hand.box_xyxy[:2], hand.landmarks_2d.min(axis=0))
        np.testing.assert_allclose(hand.box_xyxy[2:], hand.landmarks_2d.max(axis=0))
        # World landmarks are metric and hand-sized: wrist to middle fingertip 5-25 cm.
        span = np.linalg.norm(hand.landmarks_world[12] - hand.landmarks_world[0])
        assert 0.05 < span < 0.25, span


@pytest.mark.parametrize('photo_id', NEGATIVES)
def test_photos_without_hands_give_none(detector, sample_photo, photo_id):
    assert detector.detect(_read(sample_photo, photo_id)) == []


def test_obama_partial_face_gives_one_hand(detector, sample_photo):
    image = _read(sample_photo, 'obama_partial_face')
    hands = detector.detect(image)
    assert len(hands) == 1      # its side is unstable (hamer_ros/provisioning/sample_data.py): not asserted
    np.testing.assert_allclose(hands[0].box_xyxy, [160, 775, 310, 913], atol=3.0)


def test_box_is_clipped_to_the_image(detector, sample_photo):
    # Cut the crop through the left hand: its landmarks run past the edge, the box must stop at it.
    image = np.ascontiguousarray(_read(sample_photo, 'bus_man_left')[:, 55:])
    hands = detector.detect(image)
    assert len(hands) == 1
    hand = hands[0]
    assert hand.landmarks_2d[:, 0].min() < 0.0
    assert hand.box_xyxy[0] == 0.0
    assert 0.0 <= hand.box_xyxy[2] <= image.shape[1] and 0.0 <= hand.box_xyxy[3] <= image.shape[0]


@pytest.fixture(scope='module')
def selfie_detector(model_path):
    with HandDetector(model_path=model_path, mirrored=True) as hand_detector:
        yield hand_detector


def test_mirrored_flag_swaps_the_sides(detector, selfie_detector, sample_photo):
    image = _read(sample_photo, 'bus_man_both')
    plain = _by_side(detector.detect(image))
    swapped = _by_side(selfie_detector.detect(image))
    assert sorted(plain) == sorted(swapped) == ['left', 'right']
    for side, hand in plain.items():
        other = 'left' if side == 'right' else 'right'
        np.testing.assert_array_equal(swapped[other].box_xyxy, hand.box_xyxy)
        assert swapped[other].side_score == hand.side_score


@pytest.mark.parametrize('photo_id', ['bus_man_left', 'bus_man_right'])
def test_mirrored_image_read_as_mirrored_gives_the_true_side(selfie_detector, sample_photo, photo_id):
    image = _read(sample_photo, photo_id)
    hands = selfie_detector.detect(np.ascontiguousarray(image[:, ::-1]))
    [(true_side, recorded_box)] = RECORDED_BOXES[photo_id].items()
    assert [hand.side for hand in hands] == [true_side]
    width = image.shape[1]
    unmirrored_box = [width - hands[0].box_xyxy[2], hands[0].box_xyxy[1], width - hands[0].box_xyxy[0],
                      hands[0].box_xyxy[3]]
    np.testing.assert_allclose(unmirrored_box, recorded_box, atol=3.0)


def test_rgb_input_flag_and_grey_images(model_path, detector, sample_photo):
    image = _read(sample_photo, 'bus_man_both')
    from_bgr = detector.detect(image)
    with HandDetector(model_path=model_path, rgb_input=True) as rgb_detector:
        from_rgb = rgb_detector.detect(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    assert [hand.side for hand in from_rgb] == [hand.side for hand in from_bgr]
    for a, b in zip(from_rgb, from_bgr):
        np.testing.assert_array_equal(a.landmarks_2d, b.landmarks_2d)
    grey = detector.detect(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    assert len(grey) >= 1


def test_the_detectors_rgb_input_is_the_image_with_its_channels_in_rgb_order():
    from hamer_ros.detection.hand_detector import detector_input_rgb

    rng = np.random.default_rng(3)
    bgr = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    for image in (bgr, bgr[::2, 1::3], np.asfortranarray(bgr)):        # contiguous, strided and column-major
        rgb = detector_input_rgb(image)
        assert rgb.flags.c_contiguous and rgb.dtype == np.uint8
        np.testing.assert_array_equal(rgb, image[:, :, ::-1])
        np.testing.assert_array_equal(detector_input_rgb(image, rgb_input=True), image)
    grey = bgr[:, :, 1]
    np.testing.assert_array_equal(detector_input_rgb(grey), np.repeat(grey[:, :, None], 3, axis=2))
    np.testing.assert_array_equal(detector_input_rgb(grey[::3, ::2]), np.repeat(grey[::3, ::2, None], 3, axis=2))
    for bad in (bgr.astype(np.float32), bgr[:, :, :2]):
        with pytest.raises(ValueError):
            detector_input_rgb(bad)
    for empty in (bgr[:0], bgr[:, :0], grey[:0]):
        with pytest.raises(ValueError, match=r'the image is empty \(\d+x\d+ px\)'):
            detector_input_rgb(empty)


def test_bad_input_and_settings_are_clear_errors(model_path, detector):
    with pytest.raises(ValueError, match='must be uint8'):
        detector.detect(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match=r'HxWx3'):
        detector.detect(np.zeros((64, 64, 4), np.uint8))
    with pytest.raises(ValueError, match='running_mode'):
        HandDetector(model_path=model_path, running_mode='stream')
    with pytest.raises(ValueError, match='num_hands'):
        HandDetector(model_path=model_path, num_hands=0)
    with pytest.raises(ValueError, match=r"min_tracking_confidence must lie in \[0.01, 1\]"):
        HandDetector(model_path=model_path, min_tracking_confidence=1.5)
    with pytest.raises(ValueError, match=r"min_tracking_confidence must lie in \[0.01, 1\] \(what MediaPipe accepts"):
        HandDetector(model_path=model_path, min_tracking_confidence=0.0)     # MediaPipe would abort the process
    closed = HandDetector(model_path=model_path)
    closed.close()
    with pytest.raises(RuntimeError, match='closed'):
        closed.detect(np.zeros((64, 64, 3), np.uint8))


def test_reset_forgets_tracked_hands_without_building_a_new_graph(model_path, sample_photo):
    """A stream restart (stamps going backwards) resets the detector. It must start afresh exactly like a new
    detector, but on the same MediaPipe graph: a new graph per restart kept memory in the process (issue 13.5;
    benchmarks/bench_restarts.py prints the RSS curve)."""
    both = _read(sample_photo, 'bus_man_both')
    moved = np.roll(both, 120, axis=1)          # the hands are no longer where the old stream left them
    with HandDetector(model_path=model_path, running_mode='video', redetect_lost_hands=False) as fresh:
        expected = fresh.detect(moved, timestamp_ms=0.0)
    assert expected, 'the shifted photo still shows a hand'
    with HandDetector(model_path=model_path, running_mode='video', redetect_lost_hands=False) as detector:
        for index in range(3):
            assert len(detector.detect(both, timestamp_ms=1000.0 + 33.0 * index)) == 2
        graph = detector._landmarker
        # Without a reset, MediaPipe keeps following the old regions and misses the moved hand.
        with HandDetector(model_path=model_path, running_mode='video', redetect_lost_hands=False) as stale:
            for index in range(3):
                stale.detect(both, timestamp_ms=1000.0 + 33.0 * index)
            assert len(stale.detect(moved, timestamp_ms=2000.0)) < len(expected)
        detector.reset()
        assert detector._landmarker is graph
        after = detector.detect(moved, timestamp_ms=0.0)           # the new stream's stamps start over
        assert len(after) == len(expected)
        for got, want in zip(after, expected):
            assert got.side == want.side
            np.testing.assert_allclose(got.landmarks_2d, want.landmarks_2d, atol=1e-3)
        assert len(detector.detect(moved, timestamp_ms=33.0)) == len(expected)


def test_video_mode_survives_equal_and_decreasing_stamps(model_path, sample_photo):
    image = _read(sample_photo, 'bus_man_both')
    with HandDetector(model_path=model_path, running_mode='video') as video_detector:
        counts = [len(video_detector.detect(image, timestamp_ms=stamp)) for stamp in (1000.0, 1000.0, 1000.4, 990.0)]
        assert counts == [2, 2, 2, 2]
        # After reset() the stream may start over at an earlier time.
        video_detector.reset()
        assert len(video_detector.detect(image, timestamp_ms=0.0)) == 2
    # What the guard protects against: MediaPipe itself refuses a repeated stamp.
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision
    options = vision.HandLandmarkerOptions(base_options=BaseOptions(model_asset_path=str(model_path)),
                                           running_mode=vision.RunningMode.VIDEO)
    rgb = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image[:, :, ::-1]))
    with vision.HandLandmarker.create_from_options(options) as raw:
        raw.detect_for_video(rgb, 1000)
        with pytest.raises(ValueError, match='monotonically increasing'):
            raw.detect_for_video(rgb, 1000)


def _shifted_sequence(sample_photo, frames=20):
    """640x480 frames: the bus man's hands (1.5x) moving right and down over a real background."""
    hands = _read(sample_photo, 'bus_man_both')[60:340, 100:320]
    hands = cv2.resize(hands, None, fx=1.5, fy=1.5, interpolation=cv2.INTER_LINEAR)
    background = cv2.resize(_read(sample_photo, 'negative_coffee'), (640, 480))
    height, width = hands.shape[:2]
    for index in range(frames):
        x, y = 20 + 7 * index, 10 + index
        frame = background.copy()
        frame[y:y + height, x:x + width] = hands
        yield index, frame, np.array([x, y, x, y], float)


def test_video_sequence_keeps_ids_and_sides_through_the_tracker(model_path, sample_photo):
    tracker = HandTracker()
    seen = {}
    with HandDetector(model_path=model_path, running_mode='video') as video_detector:
        for index, frame, offset in _shifted_sequence(sample_photo):
            stamp_s = index / 30.0
            hands = video_detector.detect(frame, timestamp_ms=stamp_s * 1000.0)
            assert len(hands) == 2, f'frame {index}: {len(hands)} hands'
            if index == 7:      # one bad label: MediaPipe's side flips for a frame
                hands[0].side = 'left' if hands[0].side == 'right' else 'right'
            for hand in tracker.update(hands, stamp_s):
                # In the moving frame the hands stay put: the upper one is the left hand (hamer_ros/provisioning/sample_data.py).
                local_box = hand.box_xyxy - offset
                expected_side = 'left' if local_box[1] < 150 else 'right'
                assert hand.side == expected_side, f'frame {index}: {hand.side} at {local_box}'
                assert seen.setdefault(expected_side, hand.track_id) == hand.track_id, f'frame {index}: new id'
    assert sorted(seen.values()) == [0, 1]


def _demo_sequence_module():
    """scripts/demo_sequence.py, whose `make_sequence` made the sequence where video mode lost hands."""
    path = Path(__file__).resolve().parents[1] / 'scripts' / 'demo_sequence.py'
    spec = importlib.util.spec_from_file_location('demo_sequence', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def panned_sequence(sample_photo):
    """10 frames 640x480: the bus_man_both photo panned and zoomed over one cycle (the demo's motion in a third of
    its frames): the hands move by up to about their own size per frame. Both hands are in every frame, the left
    one above the right one (hamer_ros/provisioning/sample_data.py), so the truth is 2 hands per frame with sides by height."""
    return _demo_sequence_module().make_sequence(_read(sample_photo, 'bus_man_both'), count=10)


def _detect_sequence(detector, frames):
    return [detector.detect(frame, timestamp_ms=index * 33.0) for index, frame in enumerate(frames)]


def test_video_mode_redetects_hands_that_tracking_lost_under_large_motion(model_path, panned_sequence):
    with HandDetector(model_path=model_path, running_mode='video', redetect_lost_hands=False) as plain:
        plain_counts = [len(hands) for hands in _detect_sequence(plain, panned_sequence)]
    # The reported problem, as MediaPipe 1.2.2 gives it: tracking (palm detector skipped) loses both hands on
    # every other frame, and the frame after, tracking nothing, finds them again.
    assert plain_counts == [2, 0] * 5
    with HandDetector(model_path=model_path, running_mode='image') as image_detector:
        image_hands = _detect_sequence(image_detector, panned_sequence)
    with HandDetector(model_path=model_path, running_mode='video') as video_detector:
        video_hands = _detect_sequence(video_detector, panned_sequence)
        # Only the frames tracking lost went through the image-mode landmarker.
        assert video_detector.redetected_frames == 5
    assert [len(hands) for hands in video_hands] == [2] * 10
    for index, (found, expected) in enumerate(zip(video_hands, image_hands)):
        # Every frame equals image mode's: the re-detected ones are its result, the others ran its palm detector.
        assert [hand.side for hand in found] == [hand.side for hand in expected], f'frame {index}'
        for a, b in zip(found, expected):
            np.testing.assert_allclose(a.landmarks_2d, b.landmarks_2d, atol=1e-3, err_msg=f'frame {index}')


def test_redetection_runs_only_when_tracking_loses_hands(model_path, sample_photo):
    frames = [frame for _, frame, _ in _shifted_sequence(sample_photo, frames=8)]
    background = cv2.resize(_read(sample_photo, 'negative_coffee'), (640, 480))
    with HandDetector(model_path=model_path, running_mode='video') as video_detector:
        # Slow motion: tracking holds, nothing runs twice.
        assert [len(hands) for hands in _detect_sequence(video_detector, frames)] == [2] * 8
        assert video_detector.redetected_frames == 0
        # The hands leave: one re-detection confirms it, later empty frames run the video graph only.
        for index in range(8, 12):
            assert video_detector.detect(background, timestamp_ms=index * 33.0) == []
        assert video_detector.redetected_frames == 1


def test_tracker_keeps_ids_and_sides_through_the_large_motion_sequence(model_path, panned_sequence):
    # The right hand is seen edge-on (box ~22x44 px) and its first step is 1.09 box diagonals, before the tracker
    # knows its velocity: beyond the default gate of 1.0, so this stream needs max_center_distance=1.5.
    tracker = HandTracker(max_center_distance=1.5)
    ids = {'left': set(), 'right': set()}
    with HandDetector(model_path=model_path, running_mode='video') as video_detector:
        for index, frame in enumerate(panned_sequence):
            hands = tracker.update(video_detector.detect(frame, timestamp_ms=index * 33.0), index / 30.0)
            assert len(hands) == 2, f'frame {index}'
            upper, lower = sorted(hands, key=lambda hand: hand.box_xyxy[1])
            ids['left'].add(upper.track_id)
            ids['right'].add(lower.track_id)
            # Frame 0 labels the right hand 'left' with 0.56 (unsure): provisional until frame 1's sure 'right'.
            if index > 0:
                assert (upper.side, lower.side) == ('left', 'right'), f'frame {index}'
    assert ids == {'left': {0}, 'right': {1}}

"""HandTracker alone, on synthetic detections: ids follow boxes, sides resist bad frames, tracks age out."""
import numpy as np
import pytest

from hamer_ros.detection.tracking import HandTracker, box_iou
from hamer_ros.types import HandDetection


def hand(x, y, side, side_score=0.95, size=40.0):
    return HandDetection(box_xyxy=[x, y, x + size, y + size], side=side, side_score=side_score, score=0.9)


def two_hands(step, flip_left=False):
    """A left hand moving right and a right hand moving left, 100 px apart vertically."""
    left = hand(100 + 5 * step, 100, 'right' if flip_left else 'left')
    right = hand(300 - 5 * step, 200, 'right')
    return [left, right]


def test_box_iou_against_hand_computed_values():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], float)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]], float)
    np.testing.assert_allclose(box_iou(a, b), [[50 / 150, 0, 1], [50 / 150, 0, 1]])


def test_ids_are_stable_and_one_flipped_label_does_not_change_the_side():
    tracker = HandTracker()
    for step in range(12):
        out = tracker.update(two_hands(step, flip_left=(step == 5)), step / 30.0)
        assert [(h.track_id, h.side) for h in out] == [(0, 'left'), (1, 'right')], f'step {step}'
        if step == 5:
            # The overridden label's confidence is the complement of the detector's.
            assert out[0].side_score == pytest.approx(0.05)
    assert tracker.num_tracks == 2


def test_ids_follow_the_boxes_not_the_list_order():
    tracker = HandTracker()
    first = tracker.update(two_hands(0), 0.0)
    second = tracker.update(list(reversed(two_hands(1))), 1 / 30)
    assert [h.track_id for h in first] == [0, 1]
    assert [h.track_id for h in second] == [1, 0]
    np.testing.assert_array_equal(second[1].box_xyxy, two_hands(1)[0].box_xyxy)


def test_assignment_is_global_not_greedy():
    # A's nearest track is 1, but giving it track 1 would leave B (too far from track 0) unmatched: the
    # assignment keeps both tracks alive instead (A -> 0, B -> 1).
    tracker = HandTracker()
    tracker.update([hand(0, 0, 'left'), hand(60, 0, 'right')], 0.0)
    a, b = hand(50, 0, 'left'), hand(80, 0, 'right')
    out = tracker.update([a, b], 0.1)
    assert [h.track_id for h in out] == [0, 1]
    assert tracker.num_tracks == 2


def test_consistent_contrary_labels_flip_the_side_after_the_set_number_of_frames():
    tracker = HandTracker(flip_after_frames=3)
    sides = [tracker.update([hand(100 + 2 * step, 100, 'left' if step == 0 else 'right')], step / 30)[0].side
             for step in range(6)]
    # A wrong first label is corrected on the third contrary frame.
    assert sides == ['left', 'left', 'left', 'right', 'right', 'right']


def test_an_agreeing_frame_restarts_the_contrary_count():
    tracker = HandTracker(flip_after_frames=3)
    labels = ['left', 'right', 'right', 'left', 'right', 'right', 'left']
    sides = [tracker.update([hand(100, 100, label)], step / 30)[0].side for step, label in enumerate(labels)]
    assert sides == ['left'] * len(labels)


def test_unsure_contrary_labels_neither_flip_nor_break_the_run():
    tracker = HandTracker(flip_after_frames=2, min_flip_score=0.6)
    stream = [('left', 0.95), ('right', 0.55), ('right', 0.55), ('right', 0.55),   # unsure: ignored
              ('right', 0.9), ('right', 0.52), ('right', 0.9)]                       # sure, unsure, sure: flips
    sides = [tracker.update([hand(100, 100, side, score)], step / 30)[0].side
             for step, (side, score) in enumerate(stream)]
    assert sides == ['left'] * 6 + ['right']


def test_a_far_detection_starts_a_new_track():
    tracker = HandTracker()
    tracker.update([hand(0, 0, 'left')], 0.0)
    out = tracker.update([hand(300, 300, 'left')], 0.033)
    assert out[0].track_id == 1
    assert tracker.num_tracks == 2


def test_fast_motion_without_overlap_is_matched_by_centre_distance():
    tracker = HandTracker(min_iou=0.1, max_center_distance=1.0)
    tracker.update([hand(0, 0, 'left')], 0.0)
    # Moved by 50 px (no overlap with a 40 px box; 0.88 box diagonals): still the same hand.
    assert tracker.update([hand(50, 0, 'left')], 0.033)[0].track_id == 0
    assert tracker.update([hand(200, 0, 'left')], 0.066)[0].track_id == 1


def test_steady_motion_beyond_the_gate_is_followed_by_the_velocity_prediction():
    tracker = HandTracker(max_center_distance=1.0)
    tracker.update([hand(0, 0, 'left')], 0.0)
    # 40 px first (0.71 box diagonals: inside the gate), then 80 px per frame: 1.41 diagonals from the last box,
    # but where the constant-velocity prediction puts the hand (within 40 px of it).
    xs = [40, 120, 200, 280]
    assert [tracker.update([hand(x, 0, 'left')], (k + 1) / 30)[0].track_id for k, x in enumerate(xs)] == [0] * 4
    # A skipped frame (the stamp says 2 frame times): the prediction moves twice as far.
    assert tracker.update([hand(440, 0, 'left')], 6 / 30)[0].track_id == 0
    # A hand that stops is still matched where it was last seen.
    assert tracker.update([hand(445, 0, 'left')], 7 / 30)[0].track_id == 0
    # Without stamps the prediction counts frames.
    frames_only = HandTracker(max_center_distance=1.0)
    assert [frames_only.update([hand(x, 0, 'left')])[0].track_id for x in [0] + xs] == [0] * 5
    assert frames_only.num_tracks == 1


def test_a_live_track_keeps_its_hand_from_a_lost_track_at_the_same_place():
    tracker = HandTracker()
    tracker.update([hand(10, 0, 'left'), hand(135, 0, 'right')], 0.0)       # ids 0 and 1
    tracker.update([hand(90, 0, 'right')], 1 / 30)                           # track 0 is lost from here on
    tracker.update([hand(45, 0, 'right')], 2 / 30)
    # Hand 1 slows down and arrives where track 0 was last seen: that lost track fits the box better (cost 0),
    # but track 1 was seen in the last frame and is matched first.
    assert tracker.update([hand(10, 0, 'right')], 3 / 30)[0].track_id == 1


def test_a_lost_track_takes_back_its_hand_but_not_a_box_beside_it():
    # A 40 px box (56.6 px diagonal) seen still, then missed: a box 40 px beside it (0.71 diagonals, no overlap) is
    # inside the gate of a track seen in the last frame, but not of a lost one (LOST_DISTANCE_SHARE). The hand
    # itself, back where it was, is.
    from hamer_ros.detection.tracking import LOST_DISTANCE_SHARE

    assert 40 / np.hypot(40, 40) > LOST_DISTANCE_SHARE
    live = HandTracker()
    live.update([hand(100, 100, 'left')], 0.0)
    assert live.update([hand(100, 140, 'left')], 1 / 30)[0].track_id == 0
    lost = HandTracker()
    lost.update([hand(100, 100, 'left')], 0.0)
    lost.update([], 1 / 30)
    beside = lost.update([hand(100, 140, 'left')], 2 / 30)[0]       # something else, where the hand was hidden
    assert beside.track_id == 1
    back = lost.update([hand(100, 140, 'left'), hand(102, 101, 'left')], 3 / 30)
    assert [h.track_id for h in back] == [1, 0]


def test_an_unsure_first_side_is_replaced_by_the_first_sure_label():
    tracker = HandTracker(flip_after_frames=3, min_flip_score=0.6)
    stream = [('left', 0.55), ('left', 0.52), ('right', 0.8),      # unsure start, then sure: right at once
              ('left', 0.9), ('left', 0.9), ('left', 0.9)]         # from a sure side on: the usual 3 frames
    sides = [tracker.update([hand(100, 100, side, score)], step / 30)[0].side
             for step, (side, score) in enumerate(stream)]
    assert sides == ['left', 'left', 'right', 'right', 'right', 'left']


def test_lost_tracks_are_dropped_after_max_missed_frames():
    tracker = HandTracker(max_missed_frames=2, max_age_s=None)
    tracker.update([hand(100, 100, 'left')])
    for _ in range(2):
        tracker.update([])
    assert tracker.update([hand(100, 100, 'left')])[0].track_id == 0     # missed 2 frames: kept
    for _ in range(3):
        tracker.update([])
    assert tracker.update([hand(100, 100, 'left')])[0].track_id == 1     # missed 3: a new track


def test_tracks_unseen_for_longer_than_max_age_are_dropped():
    tracker = HandTracker(max_missed_frames=100, max_age_s=0.5)
    tracker.update([hand(100, 100, 'left')], 10.0)
    assert tracker.update([hand(100, 100, 'left')], 10.4)[0].track_id == 0
    tracker.update([], 10.6)
    assert tracker.update([hand(100, 100, 'left')], 11.0)[0].track_id == 1      # 0.6 s unseen


def test_reset_forgets_tracks_and_restarts_ids():
    tracker = HandTracker()
    tracker.update(two_hands(0), 0.0)
    tracker.reset()
    assert tracker.num_tracks == 0
    assert [h.track_id for h in tracker.update([hand(0, 0, 'right')], 0.0)] == [0]


def test_inputs_are_not_modified():
    tracker = HandTracker()
    tracker.update([hand(0, 0, 'left')], 0.0)
    detection = hand(2, 0, 'right')
    out = tracker.update([detection], 0.033)[0]
    assert (detection.side, detection.track_id, out.side, out.track_id) == ('right', -1, 'left', 0)


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match='flip_after_frames'):
        HandTracker(flip_after_frames=0)
    with pytest.raises(ValueError, match='max_age_s'):
        HandTracker(max_age_s=0)


def test_default_age_outlives_the_gap_between_slow_processed_frames():
    """The full model on a CPU answers one frame every ~1.5 s: tracks (and their side hysteresis) must survive it."""
    tracker = HandTracker()
    box = [100.0, 100.0, 160.0, 170.0]
    ids = []
    for step, side in enumerate(('right', 'left', 'right', 'right')):      # one contrary label on the way
        (hand,) = tracker.update([HandDetection(box, side, side_score=0.95)], stamp_s=1.6 * step)
        ids.append(hand.track_id)
        assert hand.side == 'right'
    assert len(set(ids)) == 1
    (hand,) = tracker.update([HandDetection(box, 'right', side_score=0.95)], stamp_s=1.6 * 3 + 3.5)
    assert hand.track_id == ids[0], 'a hand seen in the last processed frame keeps its id, however long ago'
    tracker.update([], stamp_s=1.6 * 3 + 3.6)             # then missed in a processed frame...
    (hand,) = tracker.update([HandDetection(box, 'right', side_score=0.95)], stamp_s=1.6 * 3 + 7.2)
    assert hand.track_id != ids[0], '...and unseen for longer than max_age_s: a new track'


def test_slow_processing_keeps_ids_when_frames_come_further_apart_than_max_age():
    """The full model on a CPU: 2.5-3 s between processed frames, above max_age_s 3 s at times; two hands seen in
    every processed frame keep their ids (before: a new id nearly every frame)."""
    tracker = HandTracker()
    rng = np.random.default_rng(4)
    stamp, ids = 0.0, set()
    for step in range(26):
        stamp += rng.uniform(2.5, 3.6)
        hands = tracker.update(two_hands(step), stamp_s=stamp)
        ids.update(h.track_id for h in hands)
    assert ids == {0, 1}

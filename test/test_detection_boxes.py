"""Boxes from elsewhere: detections_from_boxes, the boxes-file JSON format and its errors."""
import json

import numpy as np
import pytest

from hamer_ros.detection import (boxes_for_frame, detection_from_json, detection_to_json, detections_from_boxes,
                                 load_boxes_file)
from hamer_ros.types import HandDetection


def test_detections_from_boxes_with_names_bools_and_scores():
    hands = detections_from_boxes([[10, 20, 50, 70], [100, 100, 140, 160]], ['left', True], scores=[0.5, 0.8])
    assert [(h.side, h.score, h.side_score, h.track_id) for h in hands] == [('left', 0.5, 1.0, -1),
                                                                            ('right', 0.8, 1.0, -1)]
    np.testing.assert_array_equal(hands[1].box_xyxy, [100, 100, 140, 160])
    assert hands[0].landmarks_2d is None
    assert detections_from_boxes(np.zeros((0, 4)), []) == []
    assert detections_from_boxes([], []) == []


@pytest.mark.parametrize('boxes, sides, scores, message', [
    ([[0, 0, 10]], ['left'], None, r'\(N, 4\)'),
    ([[0, 0, 10, 10]], ['left', 'right'], None, '1 boxes but 2 sides'),
    ([[0, 0, 10, 10]], ['left'], [0.5, 0.5], '1 boxes but 2 scores'),
    ([[0, 0, 10, 10]], ['up'], None, "side must be 'left', 'right' or a bool"),
    ([[10, 0, 5, 10]], ['left'], None, 'x1 > x0'),
    ([[0, 0, np.nan, 10]], ['left'], None, 'finite'),
])
def test_bad_boxes_are_clear_errors(boxes, sides, scores, message):
    with pytest.raises(ValueError, match=message):
        detections_from_boxes(boxes, sides, scores)


def test_json_round_trip_keeps_every_field():
    rng = np.random.default_rng(0)
    original = HandDetection(box_xyxy=[1.5, 2.5, 30.25, 40.0], side='right', side_score=0.75, score=0.5,
                             landmarks_2d=rng.random((21, 2)), landmarks_world=rng.random((21, 3)), track_id=3)
    entry = json.loads(json.dumps(detection_to_json(original)))
    assert set(entry) == {'box_xyxy', 'side', 'side_score', 'score', 'landmarks_2d', 'landmarks_world', 'track_id',
                          'stage'}
    back = detection_from_json(entry)
    for key in ('box_xyxy', 'landmarks_2d', 'landmarks_world'):
        np.testing.assert_array_equal(getattr(back, key), getattr(original, key))
    assert (back.side, back.side_score, back.score, back.track_id, back.stage) == ('right', 0.75, 0.5, 3, 'palm')
    external = detection_from_json(detection_to_json(HandDetection([0, 0, 1, 1], 'left', stage='external')))
    assert external.stage == 'external'
    with pytest.raises(ValueError, match="stage must be one of palm, body, tracked, external, got 'dream'"):
        detection_from_json(dict(entry, stage='dream'))
    untracked = detection_to_json(HandDetection(box_xyxy=[0, 0, 1, 1], side='left'))
    assert 'track_id' not in untracked and untracked['landmarks_2d'] is None


def test_boxes_file_as_a_plain_list_applies_to_every_frame(tmp_path):
    path = tmp_path / 'boxes.json'
    path.write_text(json.dumps([{'box_xyxy': [10, 10, 50, 60], 'side': 'left', 'score': 0.7},
                                {'box_xyxy': [60, 10, 90, 60], 'side': 'right'}]))
    table = load_boxes_file(path)
    for key in ('image.png', 0, 41):
        hands = boxes_for_frame(table, key)
        assert [(h.side, h.score) for h in hands] == [('left', 0.7), ('right', 1.0)]


def test_boxes_file_per_frame_with_wildcard(tmp_path):
    path = tmp_path / 'boxes.json'
    path.write_text(json.dumps({
        'frame_000.png': [{'box_xyxy': [0, 0, 10, 10], 'side': 'left'}],
        '17': [{'box_xyxy': [5, 5, 25, 25], 'side': 'right', 'score': 0.4}],
        '18': [],
    }))
    table = load_boxes_file(path)
    assert [h.side for h in boxes_for_frame(table, '/data/run/frame_000.png')] == ['left']   # by base name
    assert [h.score for h in boxes_for_frame(table, 17)] == [0.4]
    assert boxes_for_frame(table, 18) == []
    assert boxes_for_frame(table, 'other.png') == []          # not listed, no "*": no hands
    table['*'] = detections_from_boxes([[1, 1, 9, 9]], ['right'])
    assert [h.side for h in boxes_for_frame(table, 'other.png')] == ['right']


@pytest.mark.parametrize('content, message', [
    ('{not json', 'is not valid JSON'),
    ('"a string"', 'must hold a list of hands or an object'),
    ('{"1": {"box_xyxy": [0, 0, 1, 1]}}', "frame '1': expected a list of hands"),
    ('[{"box_xyxy": [0, 0, 1, 1]}]', r'hand 0: each hand needs "box_xyxy".*"side"'),
    ('[{"box_xyxy": [0, 0, 1], "side": "left"}]', 'box_xyxy must be four numbers'),
    ('[{"box_xyxy": ["a", 0, 1, 1], "side": "left"}]', 'box_xyxy must be four numbers'),
    ('[{"box_xyxy": [0, 0, 1, 1], "side": "Left"}]', 'side must be "left" or "right"'),
    ('[{"box_xyxy": [0, 0, 1, 1], "side": "left", "landmarks_2d": [[0, 0]]}]', 'landmarks_2d must be 21x2'),
])
def test_bad_boxes_files_name_the_file_and_the_problem(tmp_path, content, message):
    path = tmp_path / 'boxes.json'
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        load_boxes_file(path)
    assert str(path) in str(info.value)


def test_missing_boxes_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='boxes file .* does not exist'):
        load_boxes_file(tmp_path / 'none.json')

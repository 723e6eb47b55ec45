"""`python -m hamer_ros detect`: the JSON it writes reads back with the agreed keys and values."""
import json
import subprocess
import sys

import numpy as np
import pytest

from hamer_ros.cli import main
from hamer_ros.detection import boxes_for_frame, ensure_hand_landmarker_model, load_boxes_file

pytestmark = pytest.mark.mediapipe

KEYS = {'box_xyxy', 'side', 'side_score', 'score', 'stage', 'landmarks_2d', 'landmarks_world'}


@pytest.fixture(scope='module', autouse=True)
def provisioned_model():
    return ensure_hand_landmarker_model()


def test_detect_command_writes_both_bus_man_hands(tmp_path, sample_photo):
    out = tmp_path / 'hands.json'
    result = subprocess.run([sys.executable, '-m', 'hamer_ros', 'detect', '--image', str(sample_photo('bus_man_both')),
                             '--out', str(out)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert '2 hand(s)' in result.stdout
    hands = json.loads(out.read_text())
    assert isinstance(hands, list) and len(hands) == 2
    by_side = {hand['side']: hand for hand in hands}
    assert sorted(by_side) == ['left', 'right']
    for hand in hands:
        assert set(hand) == KEYS and hand['stage'] in ('body', 'palm')   # the man's body is found too
        assert np.asarray(hand['landmarks_2d']).shape == (21, 2)
        assert np.asarray(hand['landmarks_world']).shape == (21, 3)
        # score: the hand landmark model's presence (the search's threshold is 0.5); side_score: its confidence
        assert 0.5 <= hand['score'] <= 1.0 and 0.5 < hand['side_score'] <= 1.0
        landmarks = np.asarray(hand['landmarks_2d'])
        np.testing.assert_allclose(hand['box_xyxy'], [*landmarks.min(axis=0), *landmarks.max(axis=0)])
    # Recorded boxes (hamer_ros/provisioning/sample_data.py): the left hand above the right one. The default is the multi-stage search,
    # whose own regions put the landmarks within 5 px of the Tasks detector's; --palm-only is the Tasks detector.
    np.testing.assert_allclose(by_side['left']['box_xyxy'], [180, 109, 220, 145], atol=5.0)
    np.testing.assert_allclose(by_side['right']['box_xyxy'], [200, 251, 220, 288], atol=5.0)
    assert {hand['stage'] for hand in hands} <= {'body', 'palm'}
    palm_only = tmp_path / 'palm_only.json'
    assert subprocess.run([sys.executable, '-m', 'hamer_ros', 'detect', '--image', str(sample_photo('bus_man_both')),
                           '--palm-only', '--out', str(palm_only)], timeout=120).returncode == 0
    by_side = {hand['side']: hand for hand in json.loads(palm_only.read_text())}
    np.testing.assert_allclose(by_side['left']['box_xyxy'], [180, 109, 220, 145], atol=2.0)
    np.testing.assert_allclose(by_side['right']['box_xyxy'], [200, 251, 220, 288], atol=2.0)
    assert by_side['left']['stage'] == by_side['right']['stage'] == 'palm'
    # The output is a valid boxes file for commands that take boxes.
    reread = boxes_for_frame(load_boxes_file(out), 'bus_man_both.png')
    assert [h.side for h in reread] == [h['side'] for h in hands]


def test_detect_mirrored_and_model_options(tmp_path, sample_photo, provisioned_model):
    image = str(sample_photo('bus_man_left'))
    out = tmp_path / 'selfie.json'
    assert main(['detect', '--image', image, '--mirrored', '--model', str(provisioned_model), '--out', str(out)]) == 0
    [hand] = json.loads(out.read_text())
    assert hand['side'] == 'right'     # the subject's left hand, read as a mirrored stream


def test_detect_negative_writes_an_empty_list(tmp_path, sample_photo):
    out = tmp_path / 'none.json'
    assert main(['detect', '--image', str(sample_photo('negative_chelsea')), '--out', str(out)]) == 0
    assert json.loads(out.read_text()) == []


def test_detect_errors_are_clear_and_exit_2(tmp_path, sample_photo, capsys):
    out = tmp_path / 'x.json'
    assert main(['detect', '--image', str(tmp_path / 'missing.png'), '--out', str(out)]) == 2
    assert 'missing.png does not exist' in capsys.readouterr().err
    not_an_image = tmp_path / 'notes.txt'
    not_an_image.write_text('hello')
    assert main(['detect', '--image', str(not_an_image), '--out', str(out)]) == 2
    assert 'notes.txt as an image (corrupt, or a format OpenCV does not read)' in capsys.readouterr().err
    assert main(['detect', '--image', str(sample_photo('bus_man_left')), '--model', str(not_an_image),
                 '--out', str(out)]) == 2
    assert 'is not a readable zip bundle' in capsys.readouterr().err
    assert not out.exists()

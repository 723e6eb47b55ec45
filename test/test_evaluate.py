"""`evaluate`: the benchmarks' metrics on hand-computed cases, the dataset readers on their published layouts, and
the whole command on real InterHand2.6M images with their 3D ground truth (test/data/interhand2.6m_sample)."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hamer_ros.cli.evaluate import landmarks_in_region, match_hands, summarise_records
from hamer_ros.evaluation import datasets, metrics

ROOT = Path(__file__).resolve().parents[1]
INTERHAND = ROOT / 'test' / 'data' / 'interhand2.6m_sample'


def _hand_points(seed=0, n=21):
    rng = np.random.default_rng(seed)
    return np.array([0.0, 0.0, 0.5]) + 0.04 * rng.standard_normal((n, 3))


# ------------------------------------------------------------------------------------------------ metrics

def test_identity_gives_zero_errors_and_full_f_scores():
    joints, vertices = _hand_points(1), _hand_points(2, 778)
    errors = metrics.hand_errors(joints, joints, pred_vertices=vertices, gt_vertices=vertices)
    for name in ('mpjpe', 'mpjpe_cam', 'pa_mpjpe', 'mpvpe_cam', 'pa_mpvpe'):
        assert errors[name] == pytest.approx(0.0, abs=1e-9), name
    assert errors['f@5mm'] == 1.0 and errors['f@15mm'] == 1.0


def test_similarity_transform_recovers_a_known_similarity():
    source = _hand_points(3)
    rotation = Rotation.from_rotvec([0.3, -1.1, 0.7]).as_matrix()
    target = 1.37 * source @ rotation.T + np.array([0.1, -0.2, 0.9])
    found = metrics.similarity_transform(source, target)
    assert found.scale == pytest.approx(1.37, rel=1e-12)
    np.testing.assert_allclose(found.rotation, rotation, atol=1e-12)
    np.testing.assert_allclose(found.translation, [0.1, -0.2, 0.9], atol=1e-12)
    # So a prediction off by a similarity only has no PA error, but a metric error.
    errors = metrics.hand_errors(target, source)
    assert errors['pa_mpjpe'] == pytest.approx(0.0, abs=1e-9)
    assert errors['mpjpe_cam'] > 100.0


def test_constant_offset_counts_in_the_camera_frame_only():
    joints = _hand_points(4)
    errors = metrics.hand_errors(joints + np.array([0.003, -0.004, 0.0]), joints)
    assert errors['mpjpe_cam'] == pytest.approx(5.0, abs=1e-9)      # 3-4-5 mm
    assert errors['mpjpe'] == pytest.approx(0.0, abs=1e-9)
    assert errors['pa_mpjpe'] == pytest.approx(0.0, abs=1e-9)


def test_known_root_relative_error_and_invalid_joints_are_left_out():
    truth = _hand_points(5)
    prediction = truth.copy()
    prediction[7] += [0.0, 0.0, 0.021]          # one joint 21 mm off: root-relative MPJPE 1 mm over 21 joints
    assert metrics.hand_errors(prediction, truth)['mpjpe'] == pytest.approx(1.0, abs=1e-9)
    valid = np.ones(21, bool)
    valid[7] = False
    errors = metrics.hand_errors(prediction, truth, valid)
    assert errors['mpjpe'] == pytest.approx(0.0, abs=1e-9) and errors['pa_mpjpe'] == pytest.approx(0.0, abs=1e-9)


def test_reflection_only_when_asked():
    source = _hand_points(6)
    mirrored = source * np.array([-1.0, 1.0, 1.0])
    proper = metrics.similarity_transform(source, mirrored)
    assert np.linalg.det(proper.rotation) == pytest.approx(1.0)
    assert metrics.mean_distance(proper.apply(source), mirrored) > 1e-3
    reflecting = metrics.similarity_transform(source, mirrored, allow_reflection=True)
    assert np.linalg.det(reflecting.rotation) == pytest.approx(-1.0)
    np.testing.assert_allclose(reflecting.apply(source), mirrored, atol=1e-12)


def test_alignment_equals_freihands_documented_procedure():
    """FreiHAND's eval.py: centre both, divide each by its Frobenius norm, scipy's orthogonal_procrustes, then
    undo the target's normalisation. Our similarity with reflections allowed is that same least-squares map."""
    from scipy.linalg import orthogonal_procrustes

    rng = np.random.default_rng(7)
    for _ in range(20):
        truth = _hand_points(int(rng.integers(1000)))
        prediction = 0.8 * truth @ Rotation.random(random_state=rng).as_matrix().T + 0.01 * rng.standard_normal((21, 3))
        t_c, p_c = truth - truth.mean(0), prediction - prediction.mean(0)
        t_n, p_n = np.linalg.norm(t_c), np.linalg.norm(p_c)
        rotation, scale = orthogonal_procrustes(t_c / t_n, p_c / p_n)
        documented = (p_c / p_n) @ rotation.T * scale * t_n + truth.mean(0)
        np.testing.assert_allclose(metrics.similarity_align(prediction, truth, allow_reflection=True), documented,
                                   atol=1e-9)


def test_f_score_of_known_distances():
    far_apart = np.arange(10)[:, None] * np.array([1.0, 0.0, 0.0])        # nearest neighbours are the pairs
    moved = far_apart.copy()
    moved[:5, 1] += 0.004                                                   # half 4 mm away
    moved[5:, 1] += 0.010                                                   # half 10 mm away
    assert metrics.f_score(moved, far_apart, 0.005) == (0.5, 0.5, 0.5)
    assert metrics.f_score(moved, far_apart, 0.015) == (1.0, 1.0, 1.0)
    # Two extra predicted points far from everything: precision 10/12, recall 1 -> F = 2PR/(P+R) = 10/11.
    extra = np.vstack([far_apart, [[0.5, 3.0, 0.0], [0.5, -3.0, 0.0]]])
    f, precision, recall = metrics.f_score(extra, far_apart, 0.005)
    assert (precision, recall) == (pytest.approx(10 / 12), 1.0)
    assert f == pytest.approx(10 / 11)
    assert metrics.f_score(np.zeros((0, 3)), far_apart, 0.005) == (0.0, 0.0, 0.0)


def test_summary_and_matching():
    assert match_hands([[0, 0, 10, 10], [20, 20, 30, 30]], [[21, 21, 31, 31], [100, 100, 110, 110],
                                                            [1, 1, 10, 10]]) == {0: 2, 1: 0}
    records = [{'status': 'ok', 'seconds': 0.5, 'hands': [
        {'side': 'left', 'found': True, 'side_found': 'left', 'errors': {'pa_mpjpe': 4.0}},
        {'side': 'right', 'found': False}]},
        {'status': 'ok', 'seconds': 1.5, 'hands': [
            {'side': 'right', 'found': True, 'side_found': 'left', 'errors': {'pa_mpjpe': 8.0}}]}]
    summary = summarise_records(records, 2.0)
    assert summary['recall'] == pytest.approx(2 / 3) and summary['side_accuracy'] == 0.5
    assert summary['metrics']['pa_mpjpe'] == {'mean': 6.0, 'median': 6.0, 'count': 2}
    assert summary['ms_per_image'] == pytest.approx(1000.0)


# ------------------------------------------------------------------------------------------------ readers

def test_interhand_sample_in_the_camera_frame():
    """Real InterHand2.6M ground truth: 4 images, 6 hands; the joints projected through the camera land inside
    the dataset's own 2D hand boxes, at about 1 m, with human bone lengths (a wrong world->camera transform, unit
    or joint order fails these)."""
    dataset = datasets.open_dataset('interhand', INTERHAND)
    annotation = json.loads((INTERHAND / 'annotations/test/InterHand2.6M_test_data.json').read_text())
    boxes = {a['image_id']: a['bbox'] for a in annotation['annotations']}
    samples = list(dataset)
    assert [len(s.hands) for s in samples] == [2, 2, 1, 1]
    for sample, image in zip(samples, annotation['images']):
        assert sample.image_path.exists()
        x, y, w, h = boxes[image['id']]
        for hand in sample.hands:
            x0, y0, x1, y1 = hand.box_xyxy
            assert x <= x0 and y <= y0 and x1 <= x + w and y1 <= y + h, (sample.key, hand.side)
            assert 0.9 < hand.joints[0, 2] < 1.3
            assert 0.07 < np.linalg.norm(hand.joints[9] - hand.joints[0]) < 0.10     # wrist - middle MCP
            assert 0.02 < np.linalg.norm(hand.joints[1] - hand.joints[0]) < 0.05     # wrist - thumb CMC
            for base in (5, 9, 13, 17):                                               # finger MCPs
                assert 0.05 < np.linalg.norm(hand.joints[base] - hand.joints[0]) < 0.11
                phalanges = np.linalg.norm(np.diff(hand.joints[base:base + 4], axis=0), axis=1)
                assert np.all((0.01 < phalanges) & (phalanges < 0.06)), phalanges


def _write_ho3d(root: Path, joints_openpose: np.ndarray, K: np.ndarray, image: np.ndarray, meta_pickle=None):
    (root / 'evaluation/SEQ1/rgb').mkdir(parents=True)
    (root / 'evaluation/SEQ1/meta').mkdir(parents=True)
    (root / 'evaluation.txt').write_text('SEQ1/0000\n')
    mano_order = np.empty_like(joints_openpose)
    mano_order[datasets.HO3D_TO_OPENPOSE] = joints_openpose
    flip = np.array([1.0, -1.0, -1.0])
    (root / 'evaluation_xyz.json').write_text(json.dumps([(mano_order * flip).tolist()]))
    (root / 'evaluation_verts.json').write_text(json.dumps([(_hand_points(9, 778) * flip).tolist()]))
    cv2.imwrite(str(root / 'evaluation/SEQ1/rgb/0000.jpg'), image)
    payload = meta_pickle if meta_pickle is not None else pickle.dumps({'camMat': K, 'handBoundingBox': None})
    (root / 'evaluation/SEQ1/meta/0000.pkl').write_bytes(payload)


def test_ho3d_layout_axes_and_joint_order(tmp_path):
    joints = _hand_points(8)
    K = np.array([[600.0, 0, 320], [0, 600.0, 240], [0, 0, 1]])
    _write_ho3d(tmp_path, joints, K, np.zeros((480, 640, 3), np.uint8))
    sample = datasets.open_dataset('ho3d', tmp_path).sample(0)
    np.testing.assert_allclose(sample.hands[0].joints, joints, atol=1e-12)
    np.testing.assert_allclose(sample.hands[0].vertices, _hand_points(9, 778), atol=1e-12)
    np.testing.assert_array_equal(sample.camera_matrix, K)
    assert sample.image_path.name == '0000.jpg' and sample.hands[0].side == 'right'


def test_ho3d_meta_pickle_runs_no_code(tmp_path):
    marker = tmp_path / 'pwned'

    class Payload:
        def __reduce__(self):
            return (subprocess.call, (['touch', str(marker)],))

    _write_ho3d(tmp_path / 'ho3d', _hand_points(8), np.eye(3), np.zeros((8, 8, 3), np.uint8),
                pickle.dumps({'camMat': Payload()}))
    with pytest.raises(datasets.DatasetError, match='refused global subprocess.call'):
        datasets.open_dataset('ho3d', tmp_path / 'ho3d').sample(0)
    assert not marker.exists()


def test_freihand_layout(tmp_path):
    joints = _hand_points(10)
    K = np.array([[500.0, 0, 112], [0, 500.0, 112], [0, 0, 1]])
    (tmp_path / 'training/rgb').mkdir(parents=True)
    for name in ('00000000.jpg', '00000001.jpg', '00000002.jpg'):          # 3 images, annotations for 2
        cv2.imwrite(str(tmp_path / 'training/rgb' / name), np.zeros((224, 224, 3), np.uint8))
    (tmp_path / 'training_K.json').write_text(json.dumps([K.tolist(), np.eye(3).tolist()]))
    (tmp_path / 'training_xyz.json').write_text(json.dumps([joints.tolist(), (joints + 1).tolist()]))
    with pytest.raises(datasets.DatasetError, match='evaluation_K.json not found'):
        datasets.open_dataset('freihand', tmp_path)
    dataset = datasets.open_dataset('freihand', tmp_path, 'training')
    assert len(dataset) == 3
    third = dataset.sample(2)                     # image 2 -> annotation 2 mod 2 = 0
    np.testing.assert_array_equal(third.hands[0].joints, joints)
    np.testing.assert_array_equal(third.camera_matrix, K)
    assert third.hands[0].vertices is None


# ------------------------------------------------------------------------------------------------ command

def _evaluate(*args):
    return subprocess.run([sys.executable, '-m', 'hamer_ros', 'evaluate', *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT)


def _records(out: Path):
    return {p.stem: json.loads(p.read_text()) for p in sorted((out / 'samples').glob('*.json'))}


def test_landmarks_only_on_real_interhand_images(tmp_path):
    """MediaPipe's world landmarks placed by PnP against real 3D ground truth: the figures docs/accuracy.md
    records. The errors in each record are recomputed here from the record's own joints."""
    out = tmp_path / 'lm'
    done = _evaluate('--dataset', 'interhand', '--root', INTERHAND, '--landmarks-only', '--out', out, '--quiet')
    assert done.returncode == 0, done.stderr
    print(done.stdout)
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['images'] == 4 and summary['hands'] == 6 and summary['failed_images'] == 0
    assert summary['found'] >= 3, summary
    assert summary['side_accuracy'] == 1.0            # --boxes gt gives the side
    # Real hands, a real camera: the landmark model's hand shape is good to a few centimetres at most.
    assert 5.0 < summary['metrics']['pa_mpjpe']['mean'] < 30.0, summary['metrics']
    for record in _records(out).values():
        for hand in record['hands']:
            if hand['found']:
                again = metrics.hand_errors(np.array(hand['joints']), np.array(hand['joints_true']),
                                            np.array(hand['valid']))
                assert again == pytest.approx(hand['errors'])

    # Interrupted after two images, then resumed: the same records as the uninterrupted run.
    part = tmp_path / 'part'
    assert _evaluate('--dataset', 'interhand', '--root', INTERHAND, '--landmarks-only', '--out', part,
                     '--quiet', '--limit', '2').returncode == 0
    first = _records(part)
    (part / 'samples' / sorted(first)[0]).with_suffix('.json').write_text('{}')      # a damaged record
    assert _evaluate('--dataset', 'interhand', '--root', INTERHAND, '--landmarks-only', '--out', part,
                     '--quiet', '--resume').returncode == 0
    whole, resumed = _records(out), _records(part)
    assert set(whole) == set(resumed)
    for key in whole:
        for a, b in zip(whole[key]['hands'], resumed[key]['hands']):
            assert a['found'] == b['found'] and a.get('errors') == pytest.approx(b.get('errors')), key
    refused = _evaluate('--dataset', 'interhand', '--root', INTERHAND, '--landmarks-only', '--out', part,
                        '--quiet', '--resume', '--boxes', 'detected')
    assert refused.returncode != 0 and 'other boxes' in refused.stderr


def test_region_detection_maps_back_to_the_image():
    """--landmarks-only --boxes gt: MediaPipe runs on a region around the true box; what it finds comes back in
    full-image pixels (the hand's landmarks inside the true box)."""
    from hamer_ros.detection import HandDetector

    sample = datasets.open_dataset('interhand', INTERHAND).sample(3)        # one right hand, thumbs up
    image = cv2.imread(str(sample.image_path))
    truth = sample.hands[0]
    with HandDetector(running_mode='image', num_hands=2) as detector:
        found = landmarks_in_region(detector, image, truth.box_xyxy, 'right')
    assert found is not None
    x0, y0, x1, y1 = truth.box_xyxy
    inside = ((found.landmarks_2d[:, 0] > x0 - 15) & (found.landmarks_2d[:, 0] < x1 + 15)
              & (found.landmarks_2d[:, 1] > y0 - 15) & (found.landmarks_2d[:, 1] < y1 + 15))
    assert inside.mean() > 0.9


def test_hamer_with_fixture_weights_runs_the_same_path(tmp_path, fixture_data_dir):
    """The fixture weights are random, so the numbers mean nothing; what is proven is the path: HaMeR gets the
    true box, vertices reach PA-MPVPE and the F-scores (a FreiHAND-layout copy of a real image with made-up
    ground truth), records and summary agree."""
    root = tmp_path / 'frei'
    (root / 'evaluation/rgb').mkdir(parents=True)
    sample = datasets.open_dataset('interhand', INTERHAND).sample(3)
    cv2.imwrite(str(root / 'evaluation/rgb/00000000.jpg'), cv2.imread(str(sample.image_path)))
    (root / 'evaluation_K.json').write_text(json.dumps([sample.camera_matrix.tolist()]))
    (root / 'evaluation_xyz.json').write_text(json.dumps([sample.hands[0].joints.tolist()]))
    gt_vertices = sample.hands[0].joints.mean(0) + 0.03 * np.random.default_rng(0).standard_normal((778, 3))
    (root / 'evaluation_verts.json').write_text(json.dumps([gt_vertices.tolist()]))
    out = tmp_path / 'out'
    done = _evaluate('--dataset', 'freihand', '--root', root, '--data-dir', fixture_data_dir, '--out', out,
                     '--quiet')
    assert done.returncode == 0, done.stderr
    hand = _records(out)['00000000']['hands'][0]
    assert hand['found'] and hand['box_used'] == pytest.approx(hand['box_true'])
    assert set(hand['errors']) == {'mpjpe', 'mpjpe_cam', 'pa_mpjpe', 'mpvpe_cam', 'pa_mpvpe', 'f@5mm', 'f@15mm'}
    again = metrics.hand_errors(np.array(hand['joints']), sample.hands[0].joints, None,
                                np.array(hand['vertices']), gt_vertices)
    assert again == pytest.approx(hand['errors'])
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['metrics']['pa_mpvpe']['mean'] == pytest.approx(hand['errors']['pa_mpvpe'])

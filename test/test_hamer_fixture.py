"""The real-size network against the official code's outputs (public_crop_case.npz, seed-1 fixture weights),
at the tolerances of test/data/README.md. Each test runs one full ViT-H forward pass."""

import numpy as np
import pytest

from hamer_ros.hamer.model import HamerModel
from hamer_ros.types import HandDetection
from reference_case import TOLERANCES

pytestmark = pytest.mark.fixture_weights

M = np.diag([-1.0, 1.0, 1.0]).astype(np.float32)


@pytest.fixture(scope='module')
def tolerances():
    return TOLERANCES


@pytest.fixture(scope='module')
def fixture_model(fixture_data_dir):
    return HamerModel.load(fixture_data_dir, device='cpu')


def assert_matches(name, mine, reference, tolerances, scale=1.0):
    atol, rtol = (t * scale for t in tolerances[name])
    mine = np.asarray(mine, dtype=np.float64)
    assert mine.shape == reference.shape, name
    np.testing.assert_allclose(mine, reference, atol=atol, rtol=rtol, err_msg=name)


def official_full_camera(public_case):
    """cam_crop_to_full and the full-image projection of the official demo (docs/model.md §5), written out here."""
    f32 = np.float32
    s, tx, ty = public_case['pred_cam'][0]
    (cx, cy), size = public_case['box_center'][0], public_case['box_size'][0]
    width, height = public_case['img_size_wh'][0]
    focal = f32(5000) / f32(256) * max(width, height)
    bs = size * s + f32(1e-9)
    cam_t = np.array([2 * (cx - width / 2) / bs + tx, 2 * (cy - height / 2) / bs + ty, 2 * focal / bs], f32)
    points = public_case['pred_keypoints_3d'][0] + cam_t
    keypoints_2d = focal * points[:, :2] / points[:, 2:] + np.array([width / 2, height / 2], f32)
    return cam_t, keypoints_2d, focal


def test_network_and_intermediate_tensors_match_the_official_code(fixture_model, public_case, tolerances):
    outputs = fixture_model.forward_crops(public_case['img'], debug=True)
    compared = [name for name in tolerances if name in outputs]
    assert len(compared) == 14   # all output keys and all six debug_* tensors
    for name in compared:
        assert_matches(name, outputs[name], public_case[name], tolerances)
    np.testing.assert_array_equal(outputs['focal_length'], public_case['focal_length'])


def test_left_hand_on_the_full_image_with_blur_matches_the_official_code(fixture_model, public_case, tolerances):
    """The public scene mirrored, its box mirrored, as a left hand: the crop is the official one (blur branch,
    box_size 640.00006 > 563.2) and the outputs are the official ones un-mirrored (docs/model.md §7)."""
    image_bgr = np.ascontiguousarray(public_case['source_image_rgb'][:, ::-1, ::-1])
    width = image_bgr.shape[1]
    x1, y1, x2, y2 = public_case['box_xyxy'][0]
    result = fixture_model.predict_batch(image_bgr, [HandDetection([width - 1 - x2, y1, width - 1 - x1, y2], 'left')])
    assert_matches('img', result.crops, public_case['img'], tolerances)
    (hand,) = result.hands
    assert not hand.is_right and hand.box_size == pytest.approx(640.00006, abs=1e-4)
    assert_matches('pred_cam', hand.pred_cam[None], public_case['pred_cam'], tolerances)
    assert_matches('betas', hand.betas[None], public_case['betas'], tolerances)
    assert_matches('global_orient', hand.global_orient[None, None], M @ public_case['global_orient'] @ M, tolerances)
    assert_matches('hand_pose', hand.hand_pose[None], M @ public_case['hand_pose'] @ M, tolerances)
    assert_matches('pred_vertices', hand.vertices[None], public_case['pred_vertices'] * M.diagonal(), tolerances)
    assert_matches('pred_keypoints_3d', hand.keypoints_3d[None], public_case['pred_keypoints_3d'] * M.diagonal(),
                   tolerances)
    # In the mirrored scene the official right-hand placement is mirrored about the image centre, minus the
    # one-pixel offset of the pixel mirror (x -> W-1-x): tx_left = -tx_right - 2/bs.
    cam_t, keypoints_2d, focal = official_full_camera(public_case)
    bs = public_case['box_size'][0] * public_case['pred_cam'][0, 0] + 1e-9
    expected_cam_t = cam_t * M.diagonal() - np.array([2 / bs, 0, 0])
    assert_matches('pred_cam_t', hand.cam_t[None], expected_cam_t[None], tolerances)
    np.testing.assert_allclose(hand.focal_length, [focal, focal])
    depth = public_case['pred_keypoints_3d'][0, :, 2] + cam_t[2]
    expected_u = width - keypoints_2d[:, 0] - cam_t[2] / depth
    np.testing.assert_allclose(hand.keypoints_2d[:, 0], expected_u, atol=2e-3)
    np.testing.assert_allclose(hand.keypoints_2d[:, 1], keypoints_2d[:, 1], atol=2e-3)

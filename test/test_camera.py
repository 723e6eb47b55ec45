"""Camera: the official full-image translation, and real intrinsics placing the hand where the crop saw it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hamer_ros.hamer.camera import cam_crop_to_full, project_points
from hamer_ros.types import CameraIntrinsics

MIRROR_X = np.array([-1.0, 1.0, 1.0])


def official_cam_crop_to_full(pred_cam, box_center, box_size, img_size_wh):
    """docs/model.md §5.3 as the official demo evaluates it: torch float32, focal 5000/256 * max(W, H), centre at W/2, H/2."""
    cam, center = torch.from_numpy(pred_cam), torch.from_numpy(box_center)
    size, img_size = torch.from_numpy(box_size), torch.from_numpy(img_size_wh)
    focal = 5000 / 256 * img_size.max()
    bs = size * cam[:, 0] + 1e-9
    tz = 2 * focal / bs
    tx = (2 * (center[:, 0] - img_size[:, 0] / 2.) / bs) + cam[:, 1]
    ty = (2 * (center[:, 1] - img_size[:, 1] / 2.) / bs) + cam[:, 2]
    return torch.stack([tx, ty, tz], dim=-1).numpy()


def crop_to_image(points_2d_crop, center, size, is_right=True):
    """Normalised crop coordinates -> image pixels through the box (docs/model.md §5, last note)."""
    x_sign = 1.0 if is_right else -1.0
    return np.stack([center[0] + x_sign * points_2d_crop[..., 0] * size,
                     center[1] + points_2d_crop[..., 1] * size], axis=-1)


def test_default_camera_reproduces_the_official_numbers(public_case):
    width, height = public_case['img_size_wh'][0]
    intrinsics = CameraIntrinsics.hamer_default(int(width), int(height))
    cam_t = cam_crop_to_full(public_case['pred_cam'], public_case['box_center'], public_case['box_size'], intrinsics)
    expected = official_cam_crop_to_full(public_case['pred_cam'], public_case['box_center'],
                                         public_case['box_size'], public_case['img_size_wh'])
    assert cam_t.dtype == np.float32 and cam_t.shape == (1, 3)
    np.testing.assert_array_equal(cam_t, expected)
    # The crop camera's depth 2*5000/(256 s) scales to the full image by focal ratio over crop size.
    crop_tz = public_case['pred_cam_t'][0, 2]
    np.testing.assert_allclose(cam_t[0, 2], crop_tz * (intrinsics.fx / 5000) * (256 / public_case['box_size'][0]),
                               rtol=1e-6)


def test_default_camera_projects_keypoints_onto_the_crop_prediction(public_case):
    width, height = public_case['img_size_wh'][0]
    intrinsics = CameraIntrinsics.hamer_default(int(width), int(height))
    center, size = public_case['box_center'][0], public_case['box_size'][0]
    cam_t = cam_crop_to_full(public_case['pred_cam'], center[None], [size], intrinsics)[0]
    pixels = project_points(public_case['pred_keypoints_3d'][0] + cam_t, intrinsics)
    from_crop = crop_to_image(public_case['pred_keypoints_2d'][0], center, size)
    # Not the same number by construction (perspective in a different camera), a fraction of a pixel (docs/model.md §5).
    error = np.linalg.norm(pixels - from_crop, axis=-1)
    assert error.max() < 0.3, error.max()


def _planar_hand(public_case):
    """The fixture's keypoints flattened onto the hand's own depth plane (Z = 0): for these, the crop's weak
    perspective is exact, so a correct placement must reproduce the crop prediction to rounding."""
    points = public_case['pred_keypoints_3d'][0].astype(np.float64).copy()
    points[:, 2] = 0.0
    return points


def _weak_perspective_pixels(points, pred_cam, center, size, is_right=True):
    s, tx, ty = pred_cam
    crop = np.stack([s * (points[:, 0] + tx) / 2, s * (points[:, 1] + ty) / 2], axis=-1)
    return crop_to_image(crop, center, size, is_right)


INTRINSICS = [CameraIntrinsics(900.0, 900.0, 301.7, 255.2),      # typical webcam, off-centre principal point
              CameraIntrinsics(615.3, 615.3, 330.0, 238.5),
              CameraIntrinsics(12500.0, 12500.0, 100.0, 400.0)]


@pytest.mark.parametrize('intrinsics', INTRINSICS, ids=lambda k: f'f{k.fx:g}_c{k.cx:g}_{k.cy:g}')
@pytest.mark.parametrize('is_right', [True, False], ids=['right', 'left'])
def test_real_intrinsics_place_the_hand_where_the_crop_saw_it(public_case, intrinsics, is_right):
    pred_cam = public_case['pred_cam'][0].astype(np.float64)
    center, size = public_case['box_center'][0], public_case['box_size'][0]
    hand = _planar_hand(public_case)   # (the network's frame: mirrored for a left hand)
    expected = _weak_perspective_pixels(hand, pred_cam, center, size, is_right)
    # Left hands: tx negated before cam_crop_to_full and the points mirrored back (docs/model.md §7).
    cam_input = pred_cam * (1.0 if is_right else np.array([1.0, -1.0, 1.0]))
    cam_t = cam_crop_to_full(cam_input[None], center[None], [size], intrinsics)[0].astype(np.float64)
    points = hand * (1.0 if is_right else MIRROR_X)
    pixels = project_points(points + cam_t, intrinsics)
    np.testing.assert_allclose(pixels, expected, rtol=0, atol=2e-3)


def test_principal_point_moves_the_translation_not_the_pixels(public_case):
    pred_cam, center, size = public_case['pred_cam'], public_case['box_center'], public_case['box_size']
    base = CameraIntrinsics(900.0, 900.0, 320.0, 240.0)
    shifted = CameraIntrinsics(900.0, 900.0, 320.0 + 37.5, 240.0 - 12.25)
    t_base = cam_crop_to_full(pred_cam, center, size, base)[0].astype(np.float64)
    t_shift = cam_crop_to_full(pred_cam, center, size, shifted)[0].astype(np.float64)
    # A principal point further right means the box is further left of the optical axis: x - 37.5 px at depth tz.
    assert t_shift[2] == t_base[2]
    np.testing.assert_allclose(t_shift[0] - t_base[0], -37.5 * t_base[2] / 900.0, rtol=1e-5)
    np.testing.assert_allclose(t_shift[1] - t_base[1], 12.25 * t_base[2] / 900.0, rtol=1e-5)
    hand = _planar_hand(public_case)
    np.testing.assert_allclose(project_points(hand + t_shift, shifted), project_points(hand + t_base, base),
                               rtol=0, atol=1e-3)


def test_focal_length_sets_the_depth(public_case):
    pred_cam, center, size = public_case['pred_cam'], public_case['box_center'], public_case['box_size']
    near = cam_crop_to_full(pred_cam, center, size, CameraIntrinsics(600.0, 600.0, 320.0, 240.0))[0]
    far = cam_crop_to_full(pred_cam, center, size, CameraIntrinsics(1800.0, 1800.0, 320.0, 240.0))[0]
    # The same pixel size needs 3x the distance; the sideways offset in metres stays (pixels * tz / f).
    np.testing.assert_allclose(far[2] / near[2], 3.0, rtol=1e-6)
    np.testing.assert_allclose(far[:2], near[:2], rtol=1e-6)
    np.testing.assert_allclose(near[2], 2 * 600.0 / (size[0] * pred_cam[0, 0]), rtol=1e-6)


def test_non_square_pixels_keep_the_hand_origin_and_area(public_case):
    pred_cam = public_case['pred_cam'][0].astype(np.float64)
    center, size = public_case['box_center'][0], public_case['box_size'][0]
    intrinsics = CameraIntrinsics(880.0, 960.0, 310.0, 250.0)
    cam_t = cam_crop_to_full(pred_cam[None], center[None], [size], intrinsics)[0].astype(np.float64)
    origin = project_points(cam_t, intrinsics)
    np.testing.assert_allclose(origin, _weak_perspective_pixels(np.zeros((1, 3)), pred_cam, center, size)[0],
                               rtol=0, atol=1e-3)
    # Pixels per metre across the hand, per axis: their product is the square crop's (area kept).
    per_metre = np.array([intrinsics.fx, intrinsics.fy]) / cam_t[2]
    np.testing.assert_allclose(np.prod(per_metre), (size * pred_cam[0] / 2) ** 2, rtol=1e-5)


def test_project_points_is_a_pinhole():
    intrinsics = CameraIntrinsics(500.0, 520.0, 320.0, 240.0)
    points = np.array([[[0.0, 0.0, 2.0], [0.1, -0.2, 1.0]]], dtype=np.float32)
    pixels = project_points(points, intrinsics)
    assert pixels.shape == (1, 2, 2) and pixels.dtype == np.float32
    np.testing.assert_allclose(pixels[0], [[320.0, 240.0], [370.0, 136.0]], rtol=1e-6)
    with pytest.raises(ValueError, match=r'\(\.\.\., 3\)'):
        project_points(np.zeros((4, 2)), intrinsics)
    with pytest.raises(ValueError, match='focal lengths must be positive'):
        project_points(points, CameraIntrinsics(0.0, 520.0, 320.0, 240.0))


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match='number of hands'):
        cam_crop_to_full(np.ones((2, 3)), np.ones((1, 2)), np.ones(2), CameraIntrinsics.hamer_default(640, 480))

"""Hands placed in a real camera: a known MANO hand across a 640x480 image, a perfect network's output for its crop,
and the chain from crop geometry to the camera frame (docs/geometry.md). No weights needed: the MANO model is
built by the test (`synthetic_mano`, fixed seed; a hand-sized random template), the pose and shape are set here.

The perfect network output for a crop is built independently of the code under test: the hand's rotation as seen
by a camera looking along the ray through the crop centre (scipy's smallest rotation between the two vectors), and
the crop camera (s, tx, ty) that reproduces the hand's projection there (the virtual camera's focal from the area
scale of the real projection at the crop centre, measured by finite differences).
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from hamer_ros.ros.camera_info import camera_info_intrinsics, ignored_distortion
from hamer_ros.hamer import mano as mano_lib
from hamer_ros.hamer.camera import crop_to_camera_perspective, project_points, ray_rotations
from hamer_ros.hamer.model import hands_in_camera, synthetic_mano
from hamer_ros.hamer.preprocess import crop_boxes

# A real 640x480 calibration (an Intel RealSense D435 colour stream; plumb_bob, its D is all zeros on rectified
# output). Off-axis angle at the image corner: atan(sqrt(320^2 + 240^2) / 616) = 33 deg.
CAMERA_INFO = SimpleNamespace(
    width=640, height=480, distortion_model='plumb_bob', d=[0.0] * 5,
    k=[615.96, 0.0, 319.44, 0.0, 616.13, 243.72, 0.0, 0.0, 1.0],
    p=[615.96, 0.0, 319.44, 0.0, 0.0, 616.13, 243.72, 0.0, 0.0, 0.0, 1.0, 0.0])

# Where the hand's joint centroid is placed: (name, pixel u, v) x depth in metres.
PLACES = [('centre', 320, 240), ('left edge', 40, 240), ('right edge', 600, 240), ('top edge', 320, 30),
          ('bottom edge', 320, 450), ('top-left corner', 40, 30), ('top-right corner', 600, 30),
          ('bottom-left corner', 40, 450), ('bottom-right corner', 600, 450)]
DEPTHS = (0.4, 1.0, 2.0)
JOINT_TOLERANCE_MM = 1.0
ORIENTATION_TOLERANCE_DEG = 0.5


def intrinsics():
    camera, problem = camera_info_intrinsics(CAMERA_INFO, 640, 480, rectified=True)
    assert problem is None
    return camera


@pytest.fixture(scope='module')
def mano():
    return mano_lib.ManoLayer(synthetic_mano(seed=1))


def known_hand():
    """The test's hand: wrist orientation, finger pose (15 small bends) and shape, fixed."""
    rng = np.random.default_rng(12)
    orient = Rotation.from_rotvec([0.4, -2.2, 0.5]).as_matrix()
    pose = Rotation.from_rotvec(rng.normal(scale=0.3, size=(15, 3))).as_matrix()
    betas = rng.normal(scale=0.8, size=10)
    return orient, pose, betas


def run_mano(mano, orient, pose, betas):
    with torch.no_grad():
        out = mano(torch.tensor(orient[None], dtype=torch.float32), torch.tensor(pose[None], dtype=torch.float32),
                   torch.tensor(betas[None], dtype=torch.float32))
    return {name: value[0].double().numpy() for name, value in out.items()}


def pixel_ray(camera, u, v):
    return np.array([(u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy, 1.0])


def area_focal(camera, ray_rotation, step=1e-5):
    """The virtual camera's focal that keeps areas at its image centre: sqrt(det) of the Jacobian of the real
    projection with respect to the virtual camera's normalised image coordinates, by central differences."""
    def project(x, y):
        return project_points(ray_rotation @ np.array([x, y, 1.0]), camera)
    jacobian = np.stack([(project(step, 0) - project(-step, 0)) / (2 * step),
                         (project(0, step) - project(0, -step)) / (2 * step)], axis=1)
    return np.sqrt(np.linalg.det(jacobian))


def place(mano, camera, u, v, depth):
    """The true hand (camera frame) with its joint centroid on pixel (u, v) at `depth`, its detector box, crop, and
    what a perfect network returns for that crop (HamerCore's output names, batch of one)."""
    orient, pose, betas = known_hand()
    true = run_mano(mano, orient, pose, betas)
    translation = depth * pixel_ray(camera, u, v) - true['keypoints_3d'].mean(axis=0)
    joints = true['keypoints_3d'] + translation
    pixels = project_points(joints, camera)
    box = np.concatenate([pixels.min(axis=0), pixels.max(axis=0)])
    centers, sizes = crop_boxes(box[None])
    # The virtual camera: same optical centre, looking along the ray through the crop centre.
    ray = pixel_ray(camera, *centers[0].astype(np.float64))
    view, _ = Rotation.align_vectors([ray / np.linalg.norm(ray)], [[0.0, 0.0, 1.0]])
    view = view.as_matrix()
    seen = run_mano(mano, view.T @ orient, pose, betas)
    # Hand-centred prediction + t_v in the virtual camera = the true hand seen from there.
    t_virtual = (view.T @ joints.T).T[0] - seen['keypoints_3d'][0]
    focal = area_focal(camera, view)
    pred_cam = np.array([2 * focal / (sizes[0] * t_virtual[2]), t_virtual[0], t_virtual[1]])
    raw = {'pred_cam': pred_cam[None], 'global_orient': (view.T @ orient)[None, None], 'hand_pose': pose[None],
           'betas': betas[None], 'pred_vertices': seen['vertices'][None],
           'pred_keypoints_3d': seen['keypoints_3d'][None],
           'joint_rotations': seen['joint_rotations'][None]}
    raw = {name: value.astype(np.float32) for name, value in raw.items()}
    return SimpleNamespace(joints=joints, vertices=true['vertices'] + translation, orient=orient, pixels=pixels,
                           raw=raw, centers=centers, sizes=sizes)


def errors(hand, truth):
    """(worst joint error mm, wrist orientation error deg) of a placed hand against the truth."""
    joint_mm = 1e3 * np.linalg.norm(hand.keypoints_camera.astype(np.float64) - truth.joints, axis=-1).max()
    relative = hand.global_orient.astype(np.float64).T @ truth.orient
    angle_deg = np.degrees(np.linalg.norm(Rotation.from_matrix(relative).as_rotvec()))
    return joint_mm, angle_deg


def test_perfect_crop_output_gives_the_hand_back_everywhere_in_a_real_camera(mano):
    camera = intrinsics()
    rows, bad, old_bad_at_edges = [], [], []
    for name, u, v in PLACES:
        for depth in DEPTHS:
            truth = place(mano, camera, u, v, depth)
            args = (truth.raw, truth.centers, truth.sizes, np.array([True]), camera)
            corrected = errors(hands_in_camera(*args, perspective_correction=True)[0], truth)
            official = errors(hands_in_camera(*args, perspective_correction=False)[0], truth)
            rows.append(f'{name:>19} {depth:.1f} m: corrected {corrected[0]:8.4f} mm {corrected[1]:7.4f} deg | '
                        f'official {official[0]:8.2f} mm {official[1]:6.2f} deg')
            if corrected[0] > JOINT_TOLERANCE_MM or corrected[1] > ORIENTATION_TOLERANCE_DEG:
                bad.append(name)
            if name != 'centre' and (official[0] > JOINT_TOLERANCE_MM or official[1] > ORIENTATION_TOLERANCE_DEG):
                old_bad_at_edges.append(name)
    table = '\n'.join(rows)
    print(table)
    assert not bad, (f'joints beyond {JOINT_TOLERANCE_MM} mm or wrist orientation beyond '
                     f'{ORIENTATION_TOLERANCE_DEG} deg at {sorted(set(bad))}; worst joint error and wrist '
                     f'orientation error per position:\n{table}')
    # The official placement (translation only) is what the correction fixes: it misses at every edge.
    assert set(old_bad_at_edges) == {name for name, _, _ in PLACES if name != 'centre'}, table


def test_corrected_joints_reproject_onto_the_crops_keypoints(mano):
    """Item 1's check: the crop's 2D keypoints (where the joints are in the crop, mapped through the box to the full
    image, i.e. their projection) against the reprojection of the camera-frame joints, both placements."""
    camera = intrinsics()
    rows, worse = [], []
    for name, u, v in PLACES:
        truth = place(mano, camera, u, v, 0.6)
        args = (truth.raw, truth.centers, truth.sizes, np.array([True]), camera)
        pixel_errors = {}
        for mode in (True, False):
            hand = hands_in_camera(*args, perspective_correction=mode)[0]
            reprojected = project_points(hand.keypoints_camera.astype(np.float64), camera)
            np.testing.assert_allclose(hand.keypoints_2d, reprojected, atol=1e-2)
            pixel_errors[mode] = np.linalg.norm(reprojected - truth.pixels, axis=-1).mean()
        rows.append(f'{name:>19}: mean reprojection error corrected {pixel_errors[True]:.4f} px, '
                    f'official {pixel_errors[False]:.2f} px')
        if not pixel_errors[True] < 0.05 or (name != 'centre' and not pixel_errors[True] < pixel_errors[False]):
            worse.append(name)
    table = '\n'.join(rows)
    print(table)
    assert not worse, f'reprojection not better with the correction at {worse}:\n{table}'


def test_left_hands_are_placed_as_the_mirror_of_right_hands(mano):
    """A left hand is the mirror image (x -> -x about the optical axis' plane x = 0) of a right hand: with the
    principal point on the mirror line, its perspective-correct placement is the mirrored right placement."""
    camera = intrinsics()
    camera = type(camera)(camera.fx, camera.fy, 320.0, camera.cy)
    truth = place(mano, camera, 560, 60, 0.7)
    right = hands_in_camera(truth.raw, truth.centers, truth.sizes, np.array([True]), camera, True)[0]
    # The left hand's crop is the mirrored right crop: centre u -> 640 - u; the network sees the same right hand.
    mirrored_centers = truth.centers * np.array([-1, 1], np.float32) + np.array([640, 0], np.float32)
    left = hands_in_camera(truth.raw, mirrored_centers, truth.sizes, np.array([False]), camera, True)[0]
    mirror = np.diag([-1.0, 1.0, 1.0])
    np.testing.assert_allclose(left.keypoints_camera, right.keypoints_camera @ mirror, atol=1e-5)
    np.testing.assert_allclose(left.global_orient, mirror @ right.global_orient @ mirror, atol=1e-5)


def test_ray_rotation_takes_the_optical_axis_to_the_pixel_ray():
    camera = intrinsics()
    centers = np.array([[0.0, 0.0], [639.0, 479.0], [319.44, 243.72], [100.0, 400.0]])
    rotations = ray_rotations(centers, camera)
    np.testing.assert_allclose(rotations @ rotations.transpose(0, 2, 1), np.broadcast_to(np.eye(3), (4, 3, 3)),
                               atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(rotations), 1.0, atol=1e-12)
    np.testing.assert_allclose(project_points(rotations[:, :, 2], camera), centers, atol=1e-9)
    np.testing.assert_allclose(rotations[2], np.eye(3), atol=1e-12)
    # The smallest such rotation: its axis is perpendicular to the optical axis (no roll about it).
    axes = Rotation.from_matrix(rotations[[0, 1, 3]]).as_rotvec()
    np.testing.assert_allclose(axes[:, 2], 0.0, atol=1e-12)
    # On the axis the perspective placement is the official one.
    rotation, translation = crop_to_camera_perspective([[0.9, 0.01, -0.02]], [[319.44, 243.72]], [200.0], camera)
    focal = np.sqrt(camera.fx * camera.fy)
    np.testing.assert_allclose(translation[0], [0.01, -0.02, 2 * focal / (200.0 * 0.9)], rtol=1e-9)


def test_plumb_bob_camera_info_uses_p_for_rectified_images_and_k_for_raw_ones():
    """A distorted camera: K, D describe the raw image, P the rectified one (different focal and centre)."""
    info = SimpleNamespace(width=640, height=480, distortion_model='plumb_bob',
                           d=[-0.28, 0.07, 0.0004, -0.0002, 0.0],
                           k=[455.3, 0.0, 322.1, 0.0, 456.0, 247.9, 0.0, 0.0, 1.0],
                           p=[371.2, 0.0, 318.5, 0.0, 0.0, 405.8, 251.3, 0.0, 0.0, 0.0, 1.0, 0.0])
    rect, problem = camera_info_intrinsics(info, 640, 480, rectified=True)
    assert problem is None and (rect.fx, rect.fy, rect.cx, rect.cy) == (371.2, 405.8, 318.5, 251.3)
    raw, problem = camera_info_intrinsics(info, 640, 480, rectified=False)
    assert problem is None and (raw.fx, raw.fy, raw.cx, raw.cy) == (455.3, 456.0, 322.1, 247.9)
    assert ignored_distortion(info, rectified=False) and not ignored_distortion(info, rectified=True)
    # P not filled in (all zeros): K is the best there is.
    unfilled = SimpleNamespace(**{**vars(info), 'p': [0.0] * 12})
    assert camera_info_intrinsics(unfilled, 640, 480, rectified=True)[0] == raw
    assert not ignored_distortion(SimpleNamespace(d=[0.0] * 5), rectified=False)

"""HamerModel.predict on full images with the small random model: left hands, boxes leaving the image,
batching, intrinsics, argument checks. (Reference numbers with the real-size network: test_hamer_fixture.py.)"""
import numpy as np
import pytest
import torch

from hamer_ros.hamer.camera import project_points, ray_rotations
from hamer_ros.hamer.mano import mirror_rotations
from hamer_ros.hamer.model import HamerModel
from hamer_ros.types import CameraIntrinsics, HandDetection

H, W = 360, 480
FIELDS = ('pred_cam', 'global_orient', 'hand_pose', 'betas', 'vertices', 'keypoints_3d', 'cam_t', 'keypoints_2d',
          'joint_rotations', 'box_center', 'box_size', 'focal_length')


@pytest.fixture(scope='module')
def model():
    return HamerModel.small_random(seed=5)


@pytest.fixture(scope='module')
def image():
    """A textured synthetic image (smooth colour waves + noise), uint8 BGR."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:H, 0:W]
    waves = [np.sin(x / 17.0 + c) * np.cos(y / 23.0 - c) for c in (0.0, 1.0, 2.0)]
    noise = rng.normal(0, 20, size=(H, W, 3))
    return np.clip(127 + 90 * np.stack(waves, axis=-1) + noise, 0, 255).astype(np.uint8)


def test_left_hand_is_the_mirrored_right_hand(model, image):
    box = np.array([100.0, 80.0, 190.0, 230.0])
    left = model.predict_batch(image, [HandDetection(box, 'left')])
    flipped_box = np.array([W - 1 - box[2], box[1], W - 1 - box[0], box[3]])
    right = model.predict_batch(np.ascontiguousarray(image[:, ::-1]), [HandDetection(flipped_box, 'right')])
    # The network saw the same crop, so the raw outputs agree; only the conversion to the image differs.
    np.testing.assert_array_equal(left.crops, right.crops)
    (hand_l,), (hand_r,) = left.hands, right.hands
    assert not hand_l.is_right and hand_r.is_right
    np.testing.assert_array_equal(hand_l.pred_cam, hand_r.pred_cam)
    mirror = np.array([-1.0, 1.0, 1.0], dtype=np.float32)
    np.testing.assert_array_equal(hand_l.vertices, hand_r.vertices * mirror)
    np.testing.assert_array_equal(hand_l.keypoints_3d, hand_r.keypoints_3d * mirror)
    for name in ('global_orient', 'hand_pose', 'joint_rotations'):
        np.testing.assert_array_equal(getattr(hand_l, name), mirror_rotations(getattr(hand_r, name)))
        assert np.allclose(np.linalg.det(getattr(hand_l, name)), 1.0, atol=1e-5)
    # Translation: the official pixel mirror is x -> W-1-x while the camera mirrors about cx = W/2, so the
    # two placements differ by one pixel: tx_L + tx_R = -2/bs, u_L + u_R = W - tz/(Z + tz) (docs/model.md §5, §7).
    bs = hand_r.box_size * hand_r.pred_cam[0] + 1e-9
    np.testing.assert_allclose(hand_l.cam_t[0] + hand_r.cam_t[0], -2 / bs, atol=1e-6)
    np.testing.assert_allclose(hand_l.cam_t[1:], hand_r.cam_t[1:], atol=1e-6)
    depth = hand_r.keypoints_3d[:, 2] + hand_r.cam_t[2]
    np.testing.assert_allclose(hand_l.keypoints_2d[:, 0] + hand_r.keypoints_2d[:, 0], W - hand_r.cam_t[2] / depth,
                               atol=1e-3)
    np.testing.assert_allclose(hand_l.keypoints_2d[:, 1], hand_r.keypoints_2d[:, 1], atol=1e-3)
    # The unmirrored box centre is reported.
    np.testing.assert_array_equal(hand_l.box_center, [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


def test_batch_equals_one_hand_at_a_time(model, image):
    detections = [HandDetection([100, 80, 190, 230], 'left'), HandDetection([250, 40, 330, 150], 'right'),
                  HandDetection([60, 20, 400, 300], 'right')]   # crop 906 px: the anti-aliasing blur branch
    batch = model.predict(image, detections)
    assert [h.is_right for h in batch] == [False, True, True]
    assert batch[2].box_size > 563.2
    for detection, together in zip(detections, batch):
        (alone,) = model.predict(image, [detection])
        for name in FIELDS:
            np.testing.assert_allclose(getattr(together, name), getattr(alone, name), atol=2e-5, rtol=1e-5,
                                       err_msg=name)


def test_box_leaving_the_image_sees_black_outside(model, image):
    """A crop past the image border = the same crop of the image padded with black (cv2 constant border)."""
    pad = 60
    padded = np.zeros((H + 2 * pad, W + 2 * pad, 3), np.uint8)
    padded[pad:-pad, pad:-pad] = image
    box = np.array([-30.0, 250.0, 70.0, 390.0])   # leaves the image on the left and at the bottom
    camera = CameraIntrinsics(500.0, 520.0, 250.0, 170.0)
    camera_padded = CameraIntrinsics(500.0, 520.0, 250.0 + pad, 170.0 + pad)
    inside = model.predict_batch(image, [HandDetection(box, 'right')], camera)
    outside = model.predict_batch(padded, [HandDetection(box + pad, 'right')], camera_padded)
    black = (0.0 - 255 * np.array([0.485, 0.456, 0.406])) / (255 * np.array([0.229, 0.224, 0.225]))
    corner = inside.crops[0, :, -5:, :5].reshape(3, -1)
    np.testing.assert_allclose(corner, np.repeat(black[:, None], corner.shape[1], 1), atol=1e-6)
    np.testing.assert_allclose(inside.crops, outside.crops, atol=1e-6)
    (a,), (b,) = inside.hands, outside.hands
    for name in ('pred_cam', 'vertices', 'keypoints_3d', 'cam_t', 'global_orient'):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), atol=1e-5, err_msg=name)
    np.testing.assert_allclose(a.keypoints_2d + pad, b.keypoints_2d, atol=1e-3)
    assert np.all(np.isfinite(a.vertices)) and a.keypoints_2d[:, 0].min() < 70


@pytest.fixture
def placement(model):
    """Sets the model's perspective_correction for one test (the model is shared by the module)."""
    def set_mode(mode):
        model.perspective_correction = mode
    yield set_mode
    model.perspective_correction = 'auto'


@pytest.mark.parametrize('side', ['right', 'left'])
def test_intrinsics_place_the_hand_where_the_crop_saw_it(model, image, side, placement):
    """Official placement: with any camera, the hand's origin projects onto the pixel the weak-perspective crop
    camera put it at: box centre + box_size * s * (±tx, ty) / 2 (docs/model.md §5; `camera.cam_crop_to_full`)."""
    placement('off')
    box = np.array([250.0, 40.0, 330.0, 150.0])
    cameras = [None, CameraIntrinsics(610.0, 590.0, 230.0, 190.0), CameraIntrinsics(1500.0, 1500.0, 240.0, 180.0)]
    hands = [model.predict(image, [HandDetection(box, side)], camera)[0] for camera in cameras]
    used = [model.default_intrinsics(W, H)] + cameras[1:]
    assert used[0] == CameraIntrinsics.hamer_default(W, H)
    for hand, camera in zip(hands, used):
        s, tx, ty = hand.pred_cam
        tx = tx if side == 'right' else -tx
        expected_origin = hand.box_center + hand.box_size * s * np.array([tx, ty]) / 2
        np.testing.assert_allclose(project_points(hand.cam_t, camera), expected_origin, atol=1e-3)
        np.testing.assert_allclose(hand.keypoints_2d, project_points(hand.keypoints_3d + hand.cam_t, camera),
                                   atol=1e-4)
        np.testing.assert_array_equal(hand.focal_length, np.float32([camera.fx, camera.fy]))
        np.testing.assert_array_equal(hand.vertices, hands[0].vertices)   # the camera does not change the hand
    assert len({tuple(np.round(h.cam_t, 4)) for h in hands}) == 3


@pytest.mark.parametrize('side', ['right', 'left'])
def test_perspective_correction_rotates_the_prediction_towards_the_crop(model, image, side, placement):
    """'on': the official placement's hand turned about the camera's optical centre by the rotation taking the
    optical axis to the crop centre's ray; 'auto' does that for CameraInfo intrinsics only."""
    box = np.array([20.0, 30.0, 100.0, 140.0])           # top-left: ~28 deg off axis with fx ~600 px
    camera = CameraIntrinsics(610.0, 590.0, 230.0, 190.0)
    placed = {}
    for mode in ('off', 'on', 'auto'):
        placement(mode)
        placed[mode] = model.predict(image, [HandDetection(box, side)], camera)[0]
    off, on = placed['off'], placed['on']
    ray = ray_rotations(on.box_center[None], camera)[0]
    assert np.degrees(np.arccos(ray[2, 2])) > 15
    np.testing.assert_allclose(on.vertices, off.vertices @ ray.T, atol=1e-5)
    np.testing.assert_allclose(on.global_orient, ray @ off.global_orient, atol=1e-5)
    np.testing.assert_allclose(on.joint_rotations, ray @ off.joint_rotations, atol=1e-5)
    np.testing.assert_array_equal(on.hand_pose, off.hand_pose)
    np.testing.assert_allclose(on.keypoints_2d, project_points(on.keypoints_3d + on.cam_t, camera), atol=1e-3)
    # The hand stays where the crop saw it, to first order: its origin within 2 % of the crop side.
    s, tx, ty = on.pred_cam
    tx = tx if side == 'right' else -tx
    expected_origin = on.box_center + on.box_size * s * np.array([tx, ty]) / 2
    assert np.linalg.norm(project_points(on.cam_t, camera) - expected_origin) < 0.02 * on.box_size
    np.testing.assert_array_equal(placed['auto'].vertices, on.vertices)
    # HaMeR's default camera (no CameraInfo): 'auto' keeps the official output.
    default = model.predict(image, [HandDetection(box, side)])[0]
    placement('off')
    np.testing.assert_array_equal(default.vertices, model.predict(image, [HandDetection(box, side)])[0].vertices)
    with pytest.raises(ValueError, match='perspective_correction must be one of auto, on, off'):
        model.perspective_correction = 'yes'


def test_raw_outputs_follow_the_official_crop_camera(model, image):
    raw = model.forward_crops(model.predict_batch(image, [HandDetection([250, 40, 330, 150], 'right')]).crops)
    s = raw['pred_cam'][:, 0]
    np.testing.assert_allclose(raw['pred_cam_t'][:, 2], 2 * 5000 / (256 * s + 1e-9), rtol=1e-6)
    np.testing.assert_array_equal(raw['pred_cam_t'][:, :2], raw['pred_cam'][:, 1:])
    points = raw['pred_keypoints_3d'] + raw['pred_cam_t'][:, None]
    np.testing.assert_allclose(raw['pred_keypoints_2d'], 5000 / 256 * points[..., :2] / points[..., 2:], atol=1e-6)
    assert raw['global_orient'].shape == (1, 1, 3, 3) and raw['joint_rotations'].shape == (1, 16, 3, 3)
    np.testing.assert_array_equal(raw['joint_rotations'][:, 0], raw['global_orient'][:, 0])


def test_no_hands_and_bad_arguments(model, image):
    assert model.predict(image, []) == []
    assert model.faces.shape == (1538, 3) and model.faces.dtype == np.int64
    assert 'small random HaMeR' in model.describe() and 'cpu' in model.describe()
    with pytest.raises(ValueError, match=r'expected crops \(N, 3, 256, 256\) with N >= 1, got \(2, 3, 224, 224\)'):
        model.forward_crops(np.zeros((2, 3, 224, 224), np.float32))
    with pytest.raises(ValueError, match=r"precision 'fp16' is for CUDA devices; on cpu use fp32"):
        HamerModel.small_random(device='cpu', precision='fp16')
    with pytest.raises(ValueError, match=r"precision must be one of \['bf16', 'fp16', 'fp32', 'int8'\], got 'fp64'"):
        HamerModel.small_random(precision='fp64')
    with pytest.raises(ValueError, match=r'threads must be >= 1'):
        HamerModel.small_random(threads=0)
    with pytest.raises(ValueError, match=r"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got 'meta'"):
        HamerModel.small_random(device='meta')
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match=r'CUDA is not available'):
            HamerModel.small_random(device='cuda')
        assert HamerModel.small_random(device='auto').device.type == 'cpu'


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('precision', ['fp32', 'fp16', 'bf16'])
def test_cuda_matches_cpu(image, precision):
    cpu = HamerModel.small_random(seed=5)
    gpu = HamerModel.small_random(seed=5, device='cuda', precision=precision)
    detections = [HandDetection([100, 80, 190, 230], 'left'), HandDetection([250, 40, 330, 150], 'right')]
    tolerance = 1e-4 if precision == 'fp32' else 5e-2
    for a, b in zip(cpu.predict(image, detections), gpu.predict(image, detections)):
        np.testing.assert_allclose(a.vertices, b.vertices, atol=tolerance * 0.1)
        np.testing.assert_allclose(a.global_orient, b.global_orient, atol=tolerance)

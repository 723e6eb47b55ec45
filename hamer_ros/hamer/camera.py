"""From HaMeR's crop camera to a real camera: the hand's translation, its rotation, and pinhole projection.

HaMeR predicts a weak-perspective camera ``pred_cam = (s, tx, ty)`` for the 256x256 crop (docs/model.md §5): seen through
the crop, a hand-centred point (X, Y) at depth ~0 lands at the normalised crop position ``s*(X + tx)/2``
(crop units: the crop side is 1), i.e. at the image pixel ``box_center + box_size * s * (X + tx) / 2``.

`cam_crop_to_full` places the hand in front of a pinhole camera (fx, fy, cx, cy) so that the same happens in the
full image: the projection of the hand's origin lands on that pixel and one metre across the hand spans
``box_size * s / 2`` pixels. With ``bs = box_size * s`` and ``f = sqrt(fx * fy)``::

    tz = 2 f / bs
    tx_cam = (f / fx) * (2 (box_cx - cx) / bs + tx)
    ty_cam = (f / fy) * (2 (box_cy - cy) / bs + ty)

Check: ``fx * tx_cam / tz + cx = box_cx + bs * tx / 2``. With square pixels (fx = fy = f) the ratios are 1 and
this is the official ``cam_crop_to_full`` (hamer/utils/renderer.py; docs/model.md §5.3) with the principal point in place
of the image centre; with `CameraIntrinsics.hamer_default` it reproduces the official numbers exactly (same
float32 operations). With non-square pixels a square crop cannot match both axes at one depth; the geometric-mean
focal keeps the hand's area, and the hand's origin still projects exactly onto the box position.

`cam_crop_to_full` is the official placement: it moves the hand sideways but keeps the rotation the network
predicted, as if every crop looked straight down the optical axis. That is nearly true with HaMeR's own camera
(focal ~12,500 px for 640x480: a crop at the image edge is ~1.5 deg off axis) and wrong with a real one (fx ~600 px:
~28 deg). `crop_to_camera_perspective` is the perspective-correct placement (docs/geometry.md derives it):

- the network saw the hand through a *virtual camera* with the real camera's optical centre, looking along the
  ray ``d = normalize(K^-1 (u_c, v_c, 1))`` through the crop centre (u_c, v_c); its rotation is the smallest one
  taking the optical axis z to d (`ray_rotations`);
- in that camera the crop centre lies on the axis, so the crop's weak-perspective camera gives the hand's
  translation directly: ``t_v = (tx, ty, 2 f_v / (box_size s))``; the virtual focal ``f_v`` is the real image's
  local scale at the crop centre, ``sqrt(fx fy / d_z^3)`` (the area scale of the projection there:
  `virtual_focal_lengths`), which is ``sqrt(fx fy)`` on the axis;
- every camera-frame point is ``R_c (p + t_v)``: the prediction is rotated about the camera's optical centre,
  so hand-centred points become ``R_c p``, the translation ``R_c t_v`` and every global rotation ``R_c R``
  (relative joint rotations, `hand_pose`, are unchanged).

On the optical axis (d = z) both placements agree; with HaMeR's default camera they differ by < 2 deg.
"""
from __future__ import annotations

import numpy as np

from hamer_ros.types import CameraIntrinsics


def _crop_inputs(pred_cam, centers, sizes, dtype):
    """(pred_cam (N, 3), centers (N, 2), sizes (N,)) as `dtype` arrays, checked to describe the same N hands."""
    pred_cam = np.asarray(pred_cam, dtype=dtype).reshape(-1, 3)
    centers = np.asarray(centers, dtype=dtype).reshape(-1, 2)
    sizes = np.asarray(sizes, dtype=dtype).reshape(-1)
    if not len(pred_cam) == len(centers) == len(sizes):
        raise ValueError(f'pred_cam, centers and sizes disagree on the number of hands: '
                         f'{len(pred_cam)}, {len(centers)}, {len(sizes)}')
    return pred_cam, centers, sizes


def cam_crop_to_full(pred_cam, centers, sizes, intrinsics: CameraIntrinsics) -> np.ndarray:
    """Camera-frame translation (N, 3) float32 of each hand: camera-frame points = hand points + cam_t.

    pred_cam: (N, 3) raw network (s, tx, ty) with tx already negated for left hands (docs/model.md §5.3, §7);
    centers: (N, 2) unmirrored crop centres and sizes: (N,) crop sides, pixels, as `make_crops` returns them.
    """
    pred_cam, centers, sizes = _crop_inputs(pred_cam, centers, sizes, np.float32)
    fx, fy = _focal_lengths(intrinsics)
    # Geometric-mean focal, written with ratios so that fx == fy gives exactly 1 (and the official numbers).
    ratio_x = np.float32(np.sqrt(fy / fx))
    ratio_y = np.float32(np.sqrt(fx / fy))
    focal = np.float32(fx) * ratio_x
    scale, tx, ty = pred_cam[:, 0], pred_cam[:, 1], pred_cam[:, 2]
    # Same float32 operations and order as the official code (the 1e-9 keeps s = 0 finite).
    bs = sizes * scale + 1e-9
    tz = 2 * focal / bs
    tx_full = ((2 * (centers[:, 0] - np.float32(intrinsics.cx)) / bs) + tx) * ratio_x
    ty_full = ((2 * (centers[:, 1] - np.float32(intrinsics.cy)) / bs) + ty) * ratio_y
    return np.stack([tx_full, ty_full, tz], axis=-1).astype(np.float32)


def ray_rotations(centers, intrinsics: CameraIntrinsics) -> np.ndarray:
    """(N, 3, 3) float64: for each crop centre (N, 2) px, the smallest rotation taking the optical axis (0, 0, 1)
    to the unit ray ``d`` through that pixel, i.e. the virtual camera's orientation in the camera frame.

    Rodrigues' formula about the axis ``k = z x d = (-d_y, d_x, 0)`` (|k| = sin theta, d_z = cos theta) reduces to
    ``R = I + [k]x + [k]x^2 / (1 + d_z)``, exact and finite for every ray in front of the camera (d_z > 0)."""
    fx, fy = _focal_lengths(intrinsics)
    centers = np.asarray(centers, dtype=np.float64).reshape(-1, 2)
    rays = np.stack([(centers[:, 0] - intrinsics.cx) / fx, (centers[:, 1] - intrinsics.cy) / fy,
                     np.ones(len(centers))], axis=-1)
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    kx, ky, dz = -rays[:, 1], rays[:, 0], rays[:, 2]
    zeros = np.zeros_like(dz)
    cross = np.stack([np.stack([zeros, zeros, ky], -1), np.stack([zeros, zeros, -kx], -1),
                      np.stack([-ky, kx, zeros], -1)], axis=-2)
    return np.eye(3) + cross + cross @ cross / (1.0 + dz)[:, None, None]


def virtual_focal_lengths(centers, intrinsics: CameraIntrinsics) -> np.ndarray:
    """(N,) float64 px: the focal of the virtual camera looking through each crop centre, chosen so that a small
    patch there has the same area in its image as in the real image: ``sqrt(fx fy / d_z^3)``.

    The real image plane is tilted by theta (cos theta = d_z) against the virtual one: at the crop centre it is
    stretched by 1/cos^2 theta along the ray's direction in the image and by 1/cos theta across it (determinant
    of the projection's Jacobian), which a square crop with one weak-perspective scale sees as its area
    (docs/geometry.md)."""
    fx, fy = _focal_lengths(intrinsics)
    dz = ray_rotations(centers, intrinsics)[:, 2, 2]
    return np.sqrt(fx * fy / dz ** 3)


def crop_to_camera_perspective(pred_cam, centers, sizes, intrinsics: CameraIntrinsics):
    """Perspective-correct placement (module docstring): (rotations (N, 3, 3) R_c, translations (N, 3) R_c t_v),
    float64. Camera-frame points are ``points @ R_c.T + translation`` for hand-centred points of the crop
    prediction; global rotations become ``R_c @ R``. Same inputs as `cam_crop_to_full`."""
    pred_cam, centers, sizes = _crop_inputs(pred_cam, centers, sizes, np.float64)
    rotations = ray_rotations(centers, intrinsics)
    focal = virtual_focal_lengths(centers, intrinsics)
    scale, tx, ty = pred_cam[:, 0], pred_cam[:, 1], pred_cam[:, 2]
    t_virtual = np.stack([tx, ty, 2 * focal / (sizes * scale + 1e-9)], axis=-1)
    return rotations, np.einsum('nij,nj->ni', rotations, t_virtual)


def project_points(points_cam, intrinsics: CameraIntrinsics) -> np.ndarray:
    """Pinhole projection of camera-frame points (..., 3) to pixels (..., 2); keeps the input's float dtype.
    Points must lie in front of the camera (z > 0)."""
    points = np.asarray(points_cam)
    if not np.issubdtype(points.dtype, np.floating):
        points = points.astype(np.float64)
    if points.shape[-1] != 3:
        raise ValueError(f'expected points (..., 3), got shape {points.shape}')
    fx, fy = _focal_lengths(intrinsics)
    # Divide first, then apply K, as HaMeR's perspective_projection does (geometry.py L64-102).
    x = points[..., 0] / points[..., 2]
    y = points[..., 1] / points[..., 2]
    dtype = points.dtype.type
    return np.stack([dtype(fx) * x + dtype(intrinsics.cx), dtype(fy) * y + dtype(intrinsics.cy)], axis=-1)


def _focal_lengths(intrinsics: CameraIntrinsics):
    fx, fy = float(intrinsics.fx), float(intrinsics.fy)
    if not (np.isfinite(fx) and np.isfinite(fy) and fx > 0 and fy > 0):
        raise ValueError(f'camera focal lengths must be positive, got fx={fx}, fy={fy}; check the CameraInfo K matrix')
    return fx, fy

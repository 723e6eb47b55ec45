"""CameraInfo → intrinsics, with the reason when a CameraInfo cannot be used (duck-typed: rclpy's
sensor_msgs/CameraInfo and the rosbags stand-in both work; no rclpy import). Shared by the node and the
offline tools.

Which matrix (sensor_msgs/CameraInfo's own definition, REP-104 / image_pipeline): K and D describe the raw
(distorted) image; P's left 3x3 block is the camera matrix of the *rectified* image that image_proc publishes as
`image_rect` (distortion removed, D no longer applies). So a node fed `image_rect` must use P, and one fed
`image_raw` uses K and would need D to undistort. HaMeR places hands with a distortion-free pinhole, so the node
works on rectified images by default (`rectified=True`: P); with raw images (`rectified=False`: K) a non-zero D is
ignored, which `ignored_distortion` reports so the caller can warn.

K is checked against the image it comes with, because finite but absurd values otherwise go straight into the
published meshes (cx = 1e30 put a hand 1.9e28 m to the side; fx = fy = 1e-30 put it at z = 0): the focal lengths
must be positive and give a field of view between MIN_FOV_DEG and MAX_FOV_DEG (a pinhole's field of view along an
axis of N pixels is 2 atan(N / 2f)), the principal point must lie within the image or less than half its size
outside it, and every value must be finite in float32 (the messages carry float32 geometry).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from hamer_ros.types import CameraIntrinsics

INVALID_K = 'invalid K'
SIZE_MISMATCH = 'size mismatch'
BAD_DISTORTION = 'bad distortion'

MIN_FOV_DEG = 1.0       # a 1000 mm lens on a full-frame sensor still sees 2 degrees
MAX_FOV_DEG = 175.0     # a pinhole K cannot describe 180 degrees; fisheye calibrations give well under this
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class CameraInfoProblem:
    """Why a CameraInfo is ignored (kind INVALID_K or SIZE_MISMATCH) or used with a caveat (BAD_DISTORTION), in
    words with readable numbers."""
    kind: str
    text: str


def _number(value: float) -> str:
    return f'{float(value):.6g}'


def _numbers(values: Sequence[float]) -> str:
    return '[' + ', '.join(_number(v) for v in values) + ']'


def _k_problem(k: np.ndarray, width: int, height: int) -> Optional[str]:
    """Why K cannot describe a width x height image (None when it can)."""
    if k.shape != (9,):
        return f'K has {k.size} values, needs 9'
    if not np.all(np.isfinite(k)) or np.any(np.abs(k) > _FLOAT32_MAX):
        return f'K {_numbers(k)} has values that are not finite (NaN, inf, or beyond float32)'
    fx, cx, fy, cy = k[0], k[2], k[4], k[5]
    if fx <= 0 or fy <= 0:
        return f'focal lengths fx={_number(fx)}, fy={_number(fy)} must be positive'
    for axis, focal, size in (('horizontal', fx, width), ('vertical', fy, height)):
        fov = math.degrees(2.0 * math.atan(size / (2.0 * focal)))
        if not MIN_FOV_DEG <= fov <= MAX_FOV_DEG:
            name = 'fx' if axis == 'horizontal' else 'fy'
            return (f'{name}={_number(focal)} px gives a {axis} field of view of {fov:.3g} degrees over '
                    f'{size} px (plausible: {MIN_FOV_DEG:g} to {MAX_FOV_DEG:g})')
    for name, centre, size in (('cx', cx, width), ('cy', cy, height)):
        if not -0.5 * size <= centre <= 1.5 * size:
            return (f'principal point {name}={_number(centre)} lies far outside the image (0 to {size} px; '
                    f'accepted: -{size / 2:g} to {1.5 * size:g})')
    return None


def camera_info_intrinsics(info, width: int, height: int, rectified: bool = False
                           ) -> Tuple[Optional[CameraIntrinsics], Optional[CameraInfoProblem]]:
    """Intrinsics for a width x height image, and the problem found (None when there is none).

    rectified: the image is rectified (`image_rect`): the camera matrix is P[:3, :3] (K when P is all zeros, i.e.
    not filled in); else K (the raw image's camera; its distortion D is not applied, see `ignored_distortion`).

    (None, problem of kind INVALID_K) when K is not usable for this image (module docstring); (None, problem of
    kind SIZE_MISMATCH) when the CameraInfo is for another image size (0x0 means "not given" and matches any
    image); (intrinsics, problem of kind BAD_DISTORTION) when K is fine but D has NaN/inf values (D is not used
    here: the image is taken as undistorted, but such a calibration is broken)."""
    k = np.asarray(info.k, dtype=np.float64).reshape(-1)
    if rectified:
        p = np.asarray(getattr(info, 'p', ()), dtype=np.float64).reshape(-1)
        if p.shape == (12,) and np.any(p != 0):
            k = p.reshape(3, 4)[:, :3].reshape(-1)
    info_size = (int(info.width), int(info.height))
    if info_size not in ((0, 0), (width, height)):
        return None, CameraInfoProblem(
            SIZE_MISMATCH, f'ignoring CameraInfo for {info_size[0]}x{info_size[1]} images: the image is '
                           f'{width}x{height}. Is camera_info remapped to the same camera (and resolution)?')
    problem = _k_problem(k, width, height)
    if problem is not None:
        return None, CameraInfoProblem(
            INVALID_K, f'ignoring CameraInfo with an unusable K for the {width}x{height} image: {problem}. Using the '
                       f'default camera; calibrate the camera (camera_calibration) or fix the driver\'s CameraInfo')
    intrinsics = CameraIntrinsics(float(k[0]), float(k[4]), float(k[2]), float(k[5]), from_camera_info=True)
    d = np.asarray(getattr(info, 'd', ()), dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(d)):
        model = str(getattr(info, 'distortion_model', ''))
        return intrinsics, CameraInfoProblem(
            BAD_DISTORTION, f'CameraInfo distortion D {_numbers(d)} (model {model!r}) has NaN/inf values: the '
                            f'calibration is broken. K is used and the image is taken as undistorted (this node '
                            f'does not undistort); recalibrate the camera (camera_calibration)')
    return intrinsics, None


def ignored_distortion(info, rectified: bool) -> bool:
    """True when the image is raw (not rectified) and the CameraInfo has a non-zero distortion D, which the pinhole
    placement ignores: points away from the image centre are then misplaced by the lens distortion."""
    d = np.asarray(getattr(info, 'd', ()), dtype=np.float64).reshape(-1)
    return not rectified and bool(np.any(d[np.isfinite(d)] != 0))

"""CameraInfo → intrinsics, with the reason when a CameraInfo cannot be used (duck-typed: rclpy's
sensor_msgs/CameraInfo and the rosbags stand-in both work; no rclpy import). Shared by the node and the
offline tools.

Which matrix (sensor_msgs/CameraInfo's own definition, REP-104 / image_pipeline): K and D describe the raw
(distorted) image; P's left 3x3 block is the camera matrix of the *rectified* image that image_proc publishes as
`image_rect` (distortion removed, D no longer applies). So a node fed `image_rect` must use P, and one fed
`image_raw` uses K and would need D to undistort. HaMeR places hands with a distortion-free pinhole, so the node
works on rectified images by default (`rectified=True`: P); with raw images (`rectified=False`: K) a non-zero D is
ignored, which `ignored_distortion` reports so the caller can warn.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from hamer_ros.types import CameraIntrinsics

INVALID_K = 'invalid K'
SIZE_MISMATCH = 'size mismatch'


def camera_info_intrinsics(info, width: int, height: int,
                           rectified: bool = False) -> Tuple[Optional[CameraIntrinsics], Optional[str]]:
    """(intrinsics, None), or (None, INVALID_K | SIZE_MISMATCH) when the camera matrix is not finite with
    fx, fy > 0, or the CameraInfo is for another image size (a size of 0x0 means "not given" and matches any image).

    rectified: the image is rectified (`image_rect`): the camera matrix is P[:3, :3] (K when P is all zeros, i.e.
    not filled in); else K (the raw image's camera; its distortion D is not applied)."""
    k = np.asarray(info.k, dtype=np.float64).reshape(-1)
    if rectified:
        p = np.asarray(getattr(info, 'p', ()), dtype=np.float64).reshape(-1)
        if p.shape == (12,) and np.any(p != 0):
            k = p.reshape(3, 4)[:, :3].reshape(-1)
    if k.shape != (9,) or not np.all(np.isfinite(k)) or k[0] <= 0 or k[4] <= 0:
        return None, INVALID_K
    if (int(info.width), int(info.height)) not in ((0, 0), (width, height)):
        return None, SIZE_MISMATCH
    return CameraIntrinsics(float(k[0]), float(k[4]), float(k[2]), float(k[5]), from_camera_info=True), None


def ignored_distortion(info, rectified: bool) -> bool:
    """True when the image is raw (not rectified) and the CameraInfo has a non-zero distortion D, which the pinhole
    placement ignores: points away from the image centre are then misplaced by the lens distortion."""
    d = np.asarray(getattr(info, 'd', ()), dtype=np.float64).reshape(-1)
    return not rectified and bool(np.any(d[np.isfinite(d)] != 0))

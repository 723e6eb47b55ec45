"""Result types shared by the core, the node and the offline tools (numpy only, no torch, no rclpy).

Conventions (REP-103): metres and radians; the camera optical frame has x right, y down, z forward;
image pixels have u right, v down
with pixel centres at integer coordinates (OpenCV). Sides are the subject's own hands: 'left' / 'right'.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

SIDES = ('left', 'right')
# Which search found a hand (HandDetection.stage; HandMesh.stage has the matching codes): the palm detector, a
# person's wrist (body-guided), last frame's hand re-checked in place (tracked), or a box from another detector.
STAGE_PALM = 'palm'
STAGE_BODY = 'body'
STAGE_TRACKED = 'tracked'
STAGE_EXTERNAL = 'external'
STAGES = (STAGE_PALM, STAGE_BODY, STAGE_TRACKED, STAGE_EXTERNAL)


@dataclass
class CameraIntrinsics:
    """Pinhole intrinsics in pixels."""
    fx: float
    fy: float
    cx: float
    cy: float
    from_camera_info: bool = True

    @classmethod
    def hamer_default(cls, width: int, height: int) -> 'CameraIntrinsics':
        """HaMeR's demo camera: focal 5000/256 * max(W, H), principal point at the image centre."""
        f = 5000.0 / 256.0 * max(width, height)
        return cls(f, f, width / 2.0, height / 2.0, from_camera_info=False)

    def matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])


@dataclass
class HandDetection:
    """One hand found by the detector (or given by the caller) in one image."""
    box_xyxy: np.ndarray                 # (4,) tight box, image pixels
    side: str                            # 'left' | 'right', the subject's own hand
    side_score: float = 1.0              # confidence of `side`, [0, 1]
    score: float = 1.0                   # detection score, [0, 1]
    landmarks_2d: Optional[np.ndarray] = None     # (21, 2) MediaPipe image landmarks, pixels
    landmarks_world: Optional[np.ndarray] = None  # (21, 3) MediaPipe world landmarks, m, hand-centred
    track_id: int = -1                   # stable id across frames (-1: untracked)
    stage: str = STAGE_PALM              # which search found it: one of STAGES

    def __post_init__(self):
        if self.side not in SIDES:
            raise ValueError(f"side must be 'left' or 'right', got {self.side!r}")
        if self.stage not in STAGES:
            raise ValueError(f'stage must be one of {STAGES}, got {self.stage!r}')
        self.box_xyxy = np.asarray(self.box_xyxy, dtype=np.float64).reshape(4)

    @property
    def is_right(self) -> bool:
        return self.side == 'right'


@dataclass
class HandReconstruction:
    """HaMeR's output for one hand, already un-mirrored for left hands (see hamer_ros.hamer)."""
    is_right: bool
    pred_cam: np.ndarray          # (3,) raw network (s, tx, ty), in the (mirrored-if-left) crop frame
    global_orient: np.ndarray     # (3, 3) wrist rotation, camera frame (left hands: M R M)
    hand_pose: np.ndarray         # (15, 3, 3) finger rotations relative to parents, MANO order
    betas: np.ndarray             # (10,)
    vertices: np.ndarray          # (778, 3) m, hand-centred, camera axes
    keypoints_3d: np.ndarray      # (21, 3) m, OpenPose order, hand-centred, camera axes
    cam_t: np.ndarray             # (3,) m: camera-frame points = vertices + cam_t
    keypoints_2d: np.ndarray      # (21, 2) image pixels
    joint_rotations: np.ndarray   # (16, 3, 3) global rotation of each MANO joint (forward kinematics)
    box_center: np.ndarray        # (2,) crop centre, pixels (unflipped)
    box_size: float               # crop side, pixels
    focal_length: np.ndarray      # (2,) fx, fy used for cam_t

    @property
    def global_orient_axis_angle(self) -> np.ndarray:
        """(3,) rad: `global_orient` as an axis-angle vector (direction = axis, norm = angle)."""
        return _axis_angle(self.global_orient)

    @property
    def hand_pose_axis_angle(self) -> np.ndarray:
        """(15, 3) rad: `hand_pose` as axis-angle vectors, MANO joint order."""
        return _axis_angle(self.hand_pose)

    @property
    def vertices_camera(self) -> np.ndarray:
        return self.vertices + self.cam_t

    @property
    def keypoints_camera(self) -> np.ndarray:
        return self.keypoints_3d + self.cam_t


def _axis_angle(rotations: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation   # scipy is heavy to import: only when asked

    rotations = np.asarray(rotations, dtype=np.float64)
    return Rotation.from_matrix(rotations.reshape(-1, 3, 3)).as_rotvec().reshape(rotations.shape[:-2] + (3,))


@dataclass
class HandResult:
    """Everything known about one hand of one frame: the detection plus, when HaMeR ran, the mesh."""
    detection: HandDetection
    reconstruction: Optional[HandReconstruction] = None
    # Landmarks-only mode (no HaMeR weights): MediaPipe world landmarks placed in the camera frame.
    keypoints_camera_mediapipe: Optional[np.ndarray] = None   # (21, 3) m
    # ... and where the PnP fit put MediaPipe's world origin (the hand's centre) in the camera frame.
    translation_mediapipe: Optional[np.ndarray] = None        # (3,) m


@dataclass
class FrameResult:
    """All hands of one frame; `error` says why a frame produced nothing (None when it was processed)."""
    width: int
    height: int
    intrinsics: CameraIntrinsics
    hands: List[HandResult] = field(default_factory=list)
    stamp_ns: int = 0
    error: Optional[str] = None
    # Hands found but not published, one reason each (e.g. NaN in the network's output).
    dropped: List[str] = field(default_factory=list)

"""TF frames, one per joint per hand, as plain functions (no node, no rclpy).

Frame names: `<prefix><side>_<joint>`, e.g. `hand_right_wrist`, `hand_left_index_tip`, with the 21 joint
names of `hamer_ros.hamer.mano.OPENPOSE_JOINT_NAMES` (wrist; thumb_cmc/mcp/ip/tip; index, middle, ring,
pinky _mcp/pip/dip/tip). When two hands of one frame share a side (two people, or a side label the tracker
could not settle) both carry their track id: `hand_right_3_wrist`, `hand_right_5_wrist`.

Every frame is a child of the image's optical frame (`header.frame_id`), stamped with the image stamp.
tf2 refuses frame ids that are empty or start with '/' (geometry2, tf2/src/buffer_core.cpp: validateFrameId,
"frame_ids cannot be empty" / "cannot start with a '/'"): `frame_id_for_tf` and `frame_prefix_for_tf` say what
to use instead, and why.
Position: the joint in the camera frame. Orientation: the global rotation of the MANO joint that moves the
keypoint (`OPENPOSE_TO_MANO_JOINT`; a fingertip takes its last joint's), from MANO's forward kinematics.
Left hands use the un-mirrored rotations the model returns (M R M, SPEC §7), so a left hand's frames are
the mirror image of the matching right hand's, still right-handed rotations. In landmarks-only mode there is
no rotation: identity orientation (axes of the camera).
"""
from __future__ import annotations

from collections import Counter
from typing import List, Optional, Tuple

import numpy as np
from scipy.spatial.transform import Rotation

from hamer_ros.hamer.mano import OPENPOSE_JOINT_NAMES, OPENPOSE_TO_MANO_JOINT
# ROS-generated class, or a rosbags stand-in without ROS (offline bag writing): see message_classes.
from hamer_ros.message_classes import TransformStamped
from hamer_ros.pipeline import hand_keypoints_camera
from hamer_ros.types import FrameResult

_IDENTITY_QUATERNION = (0.0, 0.0, 0.0, 1.0)


def frame_id_for_tf(frame_id: str) -> Tuple[Optional[str], Optional[str]]:
    """The name tf2 accepts for an image's `frame_id` (leading slashes removed), or None when there is none
    (empty); and the problem to report, None when `frame_id` is fine as it is."""
    name = frame_id.lstrip('/')
    if not name:
        return None, (f'images arrive with frame_id {frame_id!r}, which tf2 refuses (frame ids may not be empty): '
                      'TF frames and markers of the hands need the camera\'s optical frame, so only hands/mano '
                      'is published. Set the camera driver\'s frame_id (e.g. camera_color_optical_frame)')
    if name != frame_id:
        return name, (f'images arrive with frame_id {frame_id!r}; tf2 refuses frame ids that start with \'/\': '
                      f'publishing with {name!r} instead. Drop the leading slash in the camera driver\'s frame_id')
    return frame_id, None


def frame_prefix_for_tf(prefix: str) -> Tuple[Optional[str], Optional[str]]:
    """The frame-name prefix to use for `prefix` (leading slashes removed), or None when it is refused; and the
    problem to report (None when `prefix` is fine as it is)."""
    name = prefix.lstrip('/')
    if not name:
        return None, (f'frame_prefix {prefix!r} is refused: the hand frames would be plain right_wrist, '
                      'left_index_tip, ... and clash with a robot\'s own frames of those names; use e.g. hand_')
    if name != prefix:
        return name, (f'frame_prefix {prefix!r} starts with \'/\', which tf2 refuses in frame ids: using {name!r}')
    return prefix, None


def hand_frame_prefixes(frame: FrameResult, prefix: str = 'hand_') -> List[str]:
    """The frame-name stem of each hand of `frame`, e.g. 'hand_right_' (or 'hand_right_3_' when shared)."""
    side_counts = Counter(hand.detection.side for hand in frame.hands)
    stems = []
    for index, hand in enumerate(frame.hands):
        side = hand.detection.side
        if side_counts[side] > 1:
            track = hand.detection.track_id if hand.detection.track_id >= 0 else index
            stems.append(f'{prefix}{side}_{track}_')
        else:
            stems.append(f'{prefix}{side}_')
    return stems


def joint_quaternions(joint_rotations: np.ndarray) -> np.ndarray:
    """(21, 4) x, y, z, w of each OpenPose joint's frame from the (16, 3, 3) MANO joint rotations."""
    rotations = np.asarray(joint_rotations, np.float64)[list(OPENPOSE_TO_MANO_JOINT)]
    return Rotation.from_matrix(rotations).as_quat()


def hand_transforms(frame: FrameResult, header, prefix: str = 'hand_') -> List[TransformStamped]:
    """All joint frames of all hands of `frame`, stamped with `header` (the image header)."""
    transforms = []
    for hand, stem in zip(frame.hands, hand_frame_prefixes(frame, prefix)):
        positions = hand_keypoints_camera(hand).tolist()
        if hand.reconstruction is not None:
            quaternions = joint_quaternions(hand.reconstruction.joint_rotations).tolist()
        else:
            quaternions = [_IDENTITY_QUATERNION] * len(OPENPOSE_JOINT_NAMES)
        for name, (x, y, z), (qx, qy, qz, qw) in zip(OPENPOSE_JOINT_NAMES, positions, quaternions):
            transform = TransformStamped(header=header, child_frame_id=stem + name)
            translation, rotation = transform.transform.translation, transform.transform.rotation
            translation.x, translation.y, translation.z = x, y, z
            rotation.x, rotation.y, rotation.z, rotation.w = qx, qy, qz, qw
            transforms.append(transform)
    return transforms

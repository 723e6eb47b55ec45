"""TF frames of the hands, as plain functions and a small naming class (no node, no rclpy).

Names: `<prefix><stem><joint>`, e.g. `hand_right_wrist`, `cam1/hand_left_index_tip`, with the 21 joint names of
`hamer_ros.hamer.mano.OPENPOSE_JOINT_NAMES` (wrist; thumb_cmc/mcp/ip/tip; index, middle, ring, pinky
_mcp/pip/dip/tip). `HandFrameNames` gives every hand a stem that stays the same for as long as its track lives:

- a new track takes `<side>_` (`hand_right_`) when no live track of that side holds it, else `<side>_<track id>_`
  (`hand_right_7_`): one hand per side keeps the plain name, a second hand of that side gets a numbered one;
- a hand keeps its stem while its track is seen again within `hold_frames` frames (the tracker's
  max_missed_frames: a hand hidden for a moment comes back under the same name); after that the stem is
  free for the next new track;
- a track whose side the tracker changed is named afresh (the side is part of the name);
- untracked hands (tracking disabled) are named by side in detection order, `<side>_` then `<side>_<index>_`;
  such names are only as stable as the detection order.

Every frame is a child of the image's optical frame (`header.frame_id`), stamped with the image stamp.
tf2 refuses frame ids that are empty or start with '/' (geometry2, tf2/src/buffer_core.cpp: validateFrameId,
"frame_ids cannot be empty" / "cannot start with a '/'"): `frame_id_for_tf` and `frame_prefix_for_tf` say what
to use instead, and why.
Position: the joint in the camera frame. Orientation (HaMeR hands): the global rotation of the MANO joint that
moves the keypoint (`OPENPOSE_TO_MANO_JOINT`; a fingertip takes its last joint's), from MANO's forward
kinematics, i.e. the joint's axes in the camera frame. At the wrist of a right hand: +x points from the wrist
towards the fingers (the middle finger's knuckle), +y out of the palm, +z towards the thumb side; finger joint
frames are the wrist frame turned with their bones (parallel to it in MANO's rest pose). Left hands use the
un-mirrored rotations the model returns (M R M, M = diag(-1, 1, 1)), still right-handed: +x towards the wrist
(away from the fingers), +y out of the palm, +z towards the thumb side. docs/geometry.md has the details.

Landmarks-only hands (no HaMeR weights) have no orientation: their frames are named `<stem><joint>_position`
and carry the camera's orientation (identity), so a consumer asking for `hand_right_wrist`'s orientation never
gets a made-up one.

`frames='wrist'` publishes the wrist frame only (busy scenes).
"""
from __future__ import annotations

from collections import Counter
from typing import Dict, List, Optional, Tuple

import numpy as np
from scipy.spatial.transform import Rotation

from hamer_ros.hamer.mano import OPENPOSE_JOINT_NAMES, OPENPOSE_TO_MANO_JOINT
# ROS-generated class, or a rosbags stand-in without ROS (offline bag writing): see message_classes.
from hamer_ros.io.message_classes import TransformStamped
from hamer_ros.pipeline import hand_keypoints_camera
from hamer_ros.types import FrameResult

TF_FRAME_SETS = ('joints', 'wrist')
POSITION_ONLY_SUFFIX = '_position'
_IDENTITY_QUATERNION = (0.0, 0.0, 0.0, 1.0)


def resolve_frame_prefix(template: str, namespace: str) -> str:
    """The frame-name prefix from the `frame_prefix` parameter: `{namespace}` becomes the node's namespace without
    its leading slash plus a slash (`/cam1` -> `cam1/`; nothing in the root namespace), so two nodes in different
    namespaces (two cameras) never publish the same frame names."""
    namespace = namespace.strip('/')
    return template.replace('{namespace}', f'{namespace}/' if namespace else '')


class HandFrameNames:
    """Frame-name stems (`right_`, `right_7_`) that stay with a hand's track (module docstring)."""

    def __init__(self, hold_frames: int = 5):
        if hold_frames < 0:
            raise ValueError(f'hold_frames must be 0 or more, got {hold_frames}')
        self.hold_frames = int(hold_frames)
        self.reset()

    def reset(self) -> None:
        """A new stream (the tracker was reset and starts its ids again): forget every name."""
        self._stems: Dict[Tuple[int, str], str] = {}       # (track id, side) -> stem
        self._last_seen: Dict[Tuple[int, str], int] = {}
        self._frame = 0

    def stems(self, frame: FrameResult) -> List[str]:
        """The stem of each hand of `frame` (same order); call once per processed frame, in order."""
        self._frame += 1
        self._forget_stale()
        stems: List[str] = []
        untracked = Counter()
        for index, hand in enumerate(frame.hands):
            side, track = hand.detection.side, hand.detection.track_id
            if track < 0:
                stems.append(f'{side}_' if untracked[side] == 0 else f'{side}_{index}_')
                untracked[side] += 1
                continue
            key = (track, side)
            if key not in self._stems:
                plain = f'{side}_'
                self._stems[key] = plain if plain not in self._stems.values() else f'{side}_{track}_'
            self._last_seen[key] = self._frame
            stems.append(self._stems[key])
        return stems

    def _forget_stale(self) -> None:
        for key, seen in list(self._last_seen.items()):
            if self._frame - seen > self.hold_frames + 1:
                del self._stems[key], self._last_seen[key]


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


def joint_quaternions(joint_rotations: np.ndarray) -> np.ndarray:
    """(21, 4) x, y, z, w of each OpenPose joint's frame from the (16, 3, 3) MANO joint rotations."""
    rotations = np.asarray(joint_rotations, np.float64)[list(OPENPOSE_TO_MANO_JOINT)]
    return Rotation.from_matrix(rotations).as_quat()


def hand_transforms(frame: FrameResult, header, prefix: str = 'hand_', stems: Optional[List[str]] = None,
                    frames: str = 'joints') -> List[TransformStamped]:
    """The frames of all hands of `frame`, stamped with `header` (the image header).

    stems: each hand's stem from `HandFrameNames.stems` (stable across frames); None: this frame's names alone
    (a fresh `HandFrameNames`: the first hand of a side takes the plain name).
    frames: 'joints' (21 per hand) or 'wrist' (one per hand)."""
    if frames not in TF_FRAME_SETS:
        raise ValueError(f'frames must be one of {", ".join(TF_FRAME_SETS)}, got {frames!r}')
    if stems is None:
        stems = HandFrameNames().stems(frame)
    count = len(OPENPOSE_JOINT_NAMES) if frames == 'joints' else 1
    transforms = []
    for hand, stem in zip(frame.hands, stems):
        positions = hand_keypoints_camera(hand)[:count].tolist()
        if hand.reconstruction is not None:
            quaternions, suffix = joint_quaternions(hand.reconstruction.joint_rotations)[:count].tolist(), ''
        else:
            quaternions, suffix = [_IDENTITY_QUATERNION] * count, POSITION_ONLY_SUFFIX
        for name, (x, y, z), (qx, qy, qz, qw) in zip(OPENPOSE_JOINT_NAMES, positions, quaternions):
            transform = TransformStamped(header=header, child_frame_id=f'{prefix}{stem}{name}{suffix}')
            translation, rotation = transform.transform.translation, transform.transform.rotation
            translation.x, translation.y, translation.z = x, y, z
            rotation.x, rotation.y, rotation.z, rotation.w = qx, qy, qz, qw
            transforms.append(transform)
    return transforms


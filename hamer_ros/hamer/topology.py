"""The hand's topology as numbers: joint names and trees, fingertip vertices, wrist-closing faces.

Numpy only (no torch), so that message, marker, TF and drawing code can use it without loading the model.
`hamer_ros.hamer.mano` builds on it and re-exports every name.
"""
from __future__ import annotations

import numpy as np

NUM_VERTICES = 778
NUM_FACES = 1538
NUM_JOINTS = 16
NUM_BETAS = 10
NUM_POSE_BASIS = 9 * (NUM_JOINTS - 1)   # 135: (R - I) of the 15 finger joints

# MANO joint order (docs/model.md §3-4): wrist, then index, middle, pinky, ring, thumb, three joints each.
MANO_JOINT_NAMES = (
    'wrist',
    'index_mcp', 'index_pip', 'index_dip',
    'middle_mcp', 'middle_pip', 'middle_dip',
    'pinky_mcp', 'pinky_pip', 'pinky_dip',
    'ring_mcp', 'ring_pip', 'ring_dip',
    'thumb_cmc', 'thumb_mcp', 'thumb_ip',
)
MANO_PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)

# Fingertip vertices (thumb, index, middle, ring, pinky), smplx ``vertex_ids['mano']`` (docs/model.md §4).
FINGERTIP_VERTEX_IDS = (744, 320, 443, 554, 671)
# HaMeR's ``joint_map``: picks OpenPose order out of [16 MANO joints, 5 fingertip vertices] (docs/model.md §4).
JOINT_MAP = (0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20)

# OpenPose hand order (docs/model.md §4): wrist, then thumb, index, middle, ring, pinky from the palm to the tip.
OPENPOSE_JOINT_NAMES = (
    'wrist',
    'thumb_cmc', 'thumb_mcp', 'thumb_ip', 'thumb_tip',
    'index_mcp', 'index_pip', 'index_dip', 'index_tip',
    'middle_mcp', 'middle_pip', 'middle_dip', 'middle_tip',
    'ring_mcp', 'ring_pip', 'ring_dip', 'ring_tip',
    'pinky_mcp', 'pinky_pip', 'pinky_dip', 'pinky_tip',
)
OPENPOSE_PARENTS = (-1, 0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 0, 13, 14, 15, 0, 17, 18, 19)


def _openpose_to_mano_joint() -> tuple:
    mano_joint = []
    for openpose_index, source in enumerate(JOINT_MAP):
        # A tip is a vertex, not a joint: it moves with its parent joint's frame.
        mano_joint.append(source if source < NUM_JOINTS else mano_joint[OPENPOSE_PARENTS[openpose_index]])
    return tuple(mano_joint)


# The MANO joint whose rotation frames each OpenPose keypoint (for TF frames).
OPENPOSE_TO_MANO_JOINT = _openpose_to_mano_joint()

# MANO is open at the wrist: a rim of 16 vertices. The official renderer closes it with a strip of 14
# triangles zig-zagging between the two halves of the rim (docs/model.md §4 last bullet; hamer/utils/renderer.py
# L150-164). The rim vertices of the real MANO topology, each half walked in the same direction:
_WRIST_RIM_HALF_A = (92, 38, 122, 118, 117, 119, 120, 108)
_WRIST_RIM_HALF_B = (234, 239, 279, 215, 214, 121, 78, 79)


def _wrist_cap_faces() -> np.ndarray:
    a, b = _WRIST_RIM_HALF_A, _WRIST_RIM_HALF_B
    faces = []
    for k in range(len(a) - 1):
        faces.append((a[k], a[k + 1], b[k]))
        faces.append((b[k], a[k + 1], b[k + 1]))
    return np.array(faces, dtype=np.int64)


WRIST_CAP_FACES = _wrist_cap_faces()   # (14, 3), right-hand winding


def closed_faces(faces: np.ndarray) -> np.ndarray:
    """The MANO faces plus the 14 triangles that close the wrist, as the official renderer draws them."""
    faces = np.asarray(faces, dtype=np.int64)
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.max(initial=-1) >= NUM_VERTICES:
        raise ValueError(f'expected MANO faces (F, 3) indexing {NUM_VERTICES} vertices, got shape {faces.shape}')
    return np.concatenate([faces, WRIST_CAP_FACES], axis=0)


def faces_for_side(faces: np.ndarray, is_right: bool) -> np.ndarray:
    """Left hands are mirrored right-hand meshes, so their triangles turn the other way (docs/model.md §4, §7)."""
    faces = np.asarray(faces)
    return faces if is_right else faces[:, [0, 2, 1]]


def faces_by_side(faces: np.ndarray, closed_wrist: bool = True) -> dict:
    """{'right': ..., 'left': ...}: MANO's right-hand faces (closed at the wrist unless told otherwise), wound
    outwards for each side (docs/model.md §4, §7)."""
    base = closed_faces(faces) if closed_wrist else np.asarray(faces)
    return {'right': faces_for_side(base, True), 'left': np.ascontiguousarray(faces_for_side(base, False))}

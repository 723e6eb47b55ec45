"""Crops and deviation measures shared by bench_hamer.py and study_int8.py (how far a precision moves HaMeR's
outputs from our fp32 on the same crops).

Crops: the public fixture crop (the official code's input, ``public_crop_case.npz``) and real-photo hand crops
made by `HamerModel`'s own cropping from the project's sample photos (``hamer_ros.provisioning.sample_data``) with the hand
boxes MediaPipe Tasks 1.2.2 found there (recorded with the photos; no detector runs here): bus_man_both (left and
right hand, 40 x 36 and 20 x 37 px boxes) and obama_partial_face (right hand, 150 x 138 px).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# photo id -> [(box x0, y0, x1, y1 in the photo as sample_data gives it, side)]
REAL_PHOTO_HANDS = {
    'bus_man_both': [((180, 109, 220, 145), 'left'), ((200, 251, 220, 288), 'right')],
    'obama_partial_face': [((160, 775, 310, 913), 'right')],
}

# name -> (output keys, scale): max |difference| over the keys, times scale.
MEASURES = {
    'vertices (mm)': (('pred_vertices',), 1e3),
    'keypoints 3D (mm)': (('pred_keypoints_3d',), 1e3),
    'rotation entries': (('global_orient', 'hand_pose'), 1.0),
    '2D keypoints (px of the 256-px crop)': (('pred_keypoints_2d',), 256.0),   # normalized crop units x 256
}


def reference_file(given: Optional[Path] = None) -> Path:
    """public_crop_case.npz: `given`, else the repository's test data (test/data/README.md says where it came from)."""
    return given if given is not None else ROOT / 'test' / 'data' / 'public_crop_case.npz'


def evaluation_crops(model, reference: Optional[Path] = None) -> Tuple[Dict[str, np.ndarray], List[str]]:
    """{'public fixture crop': (1,3,256,256), 'real-photo crops': (N,3,256,256)} (missing sets are left out) and
    the reasons any set is missing."""
    from hamer_ros.provisioning import sample_data
    from hamer_ros.types import HandDetection
    import cv2

    sets, missing = {}, []
    path = reference_file(reference)
    if path.is_file():
        sets['public fixture crop'] = np.load(path)['img'].astype(np.float32)
    else:
        missing.append(f'public fixture crop: {path} not found (or give --reference)')
    crops = []
    for photo_id, hands in REAL_PHOTO_HANDS.items():
        try:
            image = cv2.imread(str(sample_data.fetch(photo_id)))
        except RuntimeError as exc:
            missing.append(f'real photo {photo_id}: {exc}')
            continue
        detections = [HandDetection(list(box), side) for box, side in hands]
        crops.append(model.predict_batch(image, detections).crops)
    if crops:
        sets['real-photo crops'] = np.concatenate(crops)
    return sets, missing


def deviation(outputs: Dict[str, np.ndarray], reference: Dict[str, np.ndarray]) -> Dict[str, float]:
    """`MEASURES` of outputs against reference (max over all crops), plus the largest relative depth change."""
    result = {name: scale * max(float(np.abs(np.asarray(outputs[k], np.float64) - reference[k]).max()) for k in keys)
              for name, (keys, scale) in MEASURES.items()}
    depth = np.asarray(reference['pred_cam_t'], np.float64)[:, 2]
    result['depth (%)'] = 100 * float(np.abs(outputs['pred_cam_t'][:, 2] - depth).max() / np.abs(depth).min())
    return result

"""The hand benchmarks' metrics, written from their published definitions.

Definitions (the facts relied on):
- Procrustes alignment ("PA-"): the prediction is mapped onto the ground truth by the similarity transform
  (scale, rotation, translation) that minimises the summed squared distance — Umeyama, "Least-squares estimation
  of transformation parameters between two point patterns", TPAMI 1991. FreiHAND's evaluation script
  (lmb-freiburg/freihand, `eval.py`, `align_w_scale`) solves it with scipy's `orthogonal_procrustes` on centred,
  norm-scaled points, which does not exclude reflections; HO3D's evaluation reuses that script.
  `similarity_align(..., allow_reflection=True)` is that definition; the default (False) keeps a proper rotation,
  as HMR-style evaluations do (Kanazawa et al. 2018, `compute_similarity_transform`). The two agree whenever the
  best orthogonal map is a rotation, which holds for any hand-shaped prediction.
- MPJPE / MPVPE: mean Euclidean distance between corresponding joints / vertices (mm in reports).
- F-score at a distance d (Knapitsch et al., "Tanks and Temples", SIGGRAPH 2017, as FreiHAND uses it, on the
  aligned vertices): precision = share of predicted points whose nearest ground-truth point is closer than d,
  recall = share of ground-truth points whose nearest predicted point is closer than d, F = 2PR / (P + R)
  (0 when both are 0). FreiHAND and HaMeR report F@5 mm and F@15 mm.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np


@dataclass
class Similarity:
    """x -> scale * rotation @ x + translation."""
    scale: float
    rotation: np.ndarray      # (3, 3)
    translation: np.ndarray   # (3,)

    def apply(self, points: np.ndarray) -> np.ndarray:
        return self.scale * np.asarray(points, np.float64) @ self.rotation.T + self.translation


def similarity_transform(source: np.ndarray, target: np.ndarray, allow_reflection: bool = False) -> Similarity:
    """The least-squares similarity taking `source` (N, 3) onto `target` (N, 3) (Umeyama 1991)."""
    source = np.asarray(source, np.float64).reshape(-1, 3)
    target = np.asarray(target, np.float64).reshape(-1, 3)
    if len(source) != len(target) or len(source) < 3:
        raise ValueError(f'similarity_transform needs two sets of >= 3 corresponding points, '
                         f'got {len(source)} and {len(target)}')
    mu_s, mu_t = source.mean(0), target.mean(0)
    s, t = source - mu_s, target - mu_t
    variance = float(np.sum(s * s))
    if variance <= 0.0:
        raise ValueError('similarity_transform: the source points all coincide')
    u, sigma, vt = np.linalg.svd(t.T @ s)          # cross-covariance, target x source
    signs = np.ones(3)
    if not allow_reflection and np.linalg.det(u @ vt) < 0:
        signs[-1] = -1.0
    rotation = (u * signs) @ vt
    scale = float(np.sum(sigma * signs) / variance)
    return Similarity(scale, rotation, mu_t - scale * rotation @ mu_s)


def similarity_align(prediction: np.ndarray, target: np.ndarray, allow_reflection: bool = False) -> np.ndarray:
    """`prediction` moved onto `target` by their least-squares similarity."""
    return similarity_transform(prediction, target, allow_reflection).apply(prediction)


def mean_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Euclidean distance between corresponding rows of `a` and `b` (same unit as the inputs)."""
    return float(np.mean(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64), axis=-1)))


def f_score(prediction: np.ndarray, target: np.ndarray, threshold: float) -> Tuple[float, float, float]:
    """(F, precision, recall) of two point sets at distance `threshold` (strictly closer counts)."""
    from scipy.spatial import cKDTree

    prediction = np.asarray(prediction, np.float64).reshape(-1, 3)
    target = np.asarray(target, np.float64).reshape(-1, 3)
    if len(prediction) == 0 or len(target) == 0:
        return 0.0, 0.0, 0.0
    to_target = cKDTree(target).query(prediction)[0]
    to_prediction = cKDTree(prediction).query(target)[0]
    precision = float(np.mean(to_target < threshold))
    recall = float(np.mean(to_prediction < threshold))
    f = 2.0 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return f, precision, recall


F_THRESHOLDS_M = (0.005, 0.015)   # F@5 mm and F@15 mm


def hand_errors(pred_joints: np.ndarray, gt_joints: np.ndarray, valid: Optional[np.ndarray] = None,
                pred_vertices: Optional[np.ndarray] = None, gt_vertices: Optional[np.ndarray] = None,
                root: int = 0, allow_reflection: bool = False) -> Dict[str, float]:
    """Every metric of one hand, in millimetres (F-scores as fractions). Joints (21, 3) and vertices (778, 3)
    in metres, both in the same camera frame and joint order; `valid` (21,) masks joints without ground truth.

    mpjpe_cam: camera-frame (metric, absolute) joint error; mpjpe: root-relative (both translated so their
    `root` joint is at the origin; needs a valid root); pa_mpjpe: after Procrustes alignment on the valid
    joints. With vertices: mpvpe_cam, pa_mpvpe, f@5mm, f@15mm (on the PA-aligned vertices)."""
    pred = np.asarray(pred_joints, np.float64).reshape(-1, 3)
    gt = np.asarray(gt_joints, np.float64).reshape(-1, 3)
    mask = np.ones(len(gt), bool) if valid is None else np.asarray(valid, bool).reshape(-1)
    if pred.shape != gt.shape or mask.shape != (len(gt),):
        raise ValueError(f'joint shapes differ: prediction {pred.shape}, ground truth {gt.shape}, '
                         f'valid {mask.shape}')
    errors = {'mpjpe_cam': 1000.0 * mean_distance(pred[mask], gt[mask]),
              'pa_mpjpe': 1000.0 * mean_distance(similarity_align(pred[mask], gt[mask], allow_reflection),
                                                 gt[mask])}
    if mask[root]:
        errors['mpjpe'] = 1000.0 * mean_distance(pred[mask] - pred[root], gt[mask] - gt[root])
    if pred_vertices is not None and gt_vertices is not None:
        pv = np.asarray(pred_vertices, np.float64).reshape(-1, 3)
        gv = np.asarray(gt_vertices, np.float64).reshape(-1, 3)
        aligned = similarity_align(pv, gv, allow_reflection)
        errors['mpvpe_cam'] = 1000.0 * mean_distance(pv, gv)
        errors['pa_mpvpe'] = 1000.0 * mean_distance(aligned, gv)
        for threshold in F_THRESHOLDS_M:
            errors[f'f@{round(threshold * 1000)}mm'] = f_score(aligned, gv, threshold)[0]
    return errors


def summarise(per_hand: Iterable[Dict[str, float]]) -> Dict[str, Dict[str, float]]:
    """Mean, median and count of every metric over the hands that have it."""
    table: Dict[str, List[float]] = {}
    for errors in per_hand:
        for name, value in errors.items():
            table.setdefault(name, []).append(float(value))
    return {name: {'mean': float(np.mean(values)), 'median': float(np.median(values)), 'count': len(values)}
            for name, values in sorted(table.items())}

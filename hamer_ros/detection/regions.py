"""Geometry of MediaPipe's detection graphs, written from the facts of its graph files (google/mediapipe,
`mediapipe/modules/...`): SSD anchors and box decoding, weighted NMS, rotated square regions and the crops cut
from them. Plain numpy + OpenCV; every coordinate is in image pixels (x right, y down), angles in radians,
positive = clockwise on screen (MediaPipe's `NormalizedRect.rotation`).

Facts used (file names in google/mediapipe):
* SSD anchors (`calculators/tflite/ssd_anchors_calculator.cc` options in `modules/palm_detection/
  palm_detection_cpu.pbtxt`, `modules/pose_detection/pose_detection_cpu.pbtxt`): consecutive layers with the same
  stride share one feature map; each layer puts 2 anchors (aspect 1.0 and the interpolated scale) on every cell;
  anchor centre ((x + 0.5) / cells, (y + 0.5) / cells); `fixed_anchor_size` makes every anchor 1 x 1.
* Box decoding (`TensorsToDetectionsCalculator` options there): `reverse_output_order` = x, y, w, h; centre and
  keypoints = anchor centre + raw / input size; scores = sigmoid(clip(raw, +-100)).
* NMS: `WEIGHTED`, IoU 0.3: the best box absorbs the boxes overlapping it, coordinates averaged by score.
* Regions (`calculators/util/alignment_points_to_rects_calculator.cc`, `rect_transformation_calculator.cc`):
  centre = start point, side = 2 x |scale point - start point|, rotation = target - atan2(-(dy), dx); the
  transformation shifts the centre along the rotated axes by shift x side, scales, and makes the region square
  on its long side.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np


@dataclass
class Region:
    """A square region of the image, rotated by `angle` about its centre."""
    cx: float
    cy: float
    size: float
    angle: float = 0.0

    def rotation(self) -> np.ndarray:
        c, s = math.cos(self.angle), math.sin(self.angle)
        return np.array([[c, -s], [s, c]])

    def transformed(self, scale: float = 1.0, shift_x: float = 0.0, shift_y: float = 0.0) -> 'Region':
        """MediaPipe's RectTransformation on a square region (shift in units of the side, along its axes)."""
        dx, dy = self.rotation() @ np.array([shift_x * self.size, shift_y * self.size])
        return Region(self.cx + dx, self.cy + dy, self.size * scale, self.angle)

    def box(self) -> np.ndarray:
        """Axis-aligned x0, y0, x1, y1 around the rotated square."""
        half = 0.5 * self.size * (abs(math.cos(self.angle)) + abs(math.sin(self.angle)))
        return np.array([self.cx - half, self.cy - half, self.cx + half, self.cy + half])


def normalize_angle(angle: float) -> float:
    return angle - 2.0 * math.pi * math.floor((angle + math.pi) / (2.0 * math.pi))


def aligned_region(center: Sequence[float], scale_point: Sequence[float], target_angle: float) -> Region:
    """AlignmentPointsRectsCalculator: centre at `center`, side 2 x |scale_point - center|, rotated so that the
    vector center -> scale_point points at `target_angle` (radians, counter-clockwise from +x, y up)."""
    dx, dy = scale_point[0] - center[0], scale_point[1] - center[1]
    return Region(float(center[0]), float(center[1]), 2.0 * math.hypot(dx, dy),
                  normalize_angle(target_angle - math.atan2(-dy, dx)))


def rotation_towards(start: Sequence[float], end: Sequence[float], target_angle: float = math.pi / 2) -> float:
    return normalize_angle(target_angle - math.atan2(-(end[1] - start[1]), end[0] - start[0]))


def crop_matrix(region: Region, out_size: int) -> np.ndarray:
    """2x3 affine from crop pixels (0..out_size) to image pixels."""
    scale = region.size / out_size
    rot = region.rotation() * scale
    offset = np.array([region.cx, region.cy]) - rot @ np.array([out_size / 2.0, out_size / 2.0])
    return np.hstack([rot, offset[:, None]])


def crop(image_rgb: np.ndarray, region: Region, out_size: int, value_range: Tuple[float, float] = (0.0, 1.0)
         ) -> Tuple[np.ndarray, np.ndarray]:
    """The (1, S, S, 3) float32 model input cut from `region` (zero outside the image), scaled to
    `value_range`, and the crop -> image affine."""
    matrix = crop_matrix(region, out_size)
    patch = cv2.warpAffine(image_rgb, matrix, (out_size, out_size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    lo, hi = value_range
    tensor = patch.astype(np.float32) * np.float32((hi - lo) / 255.0) + np.float32(lo)
    return tensor[None], matrix


def to_image(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(N, 2) crop pixels -> image pixels."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return points @ matrix[:, :2].T + matrix[:, 2]


def letterbox_region(x0: float, y0: float, x1: float, y1: float) -> Region:
    """The square region (no rotation) that holds the rectangle, padded on its short side (keep_aspect_ratio)."""
    return Region(0.5 * (x0 + x1), 0.5 * (y0 + y1), float(max(x1 - x0, y1 - y0)), 0.0)


def ssd_anchors(input_size: int, strides: Sequence[int], anchors_per_layer: int = 2) -> np.ndarray:
    """(N, 2) anchor centres in [0, 1] (SsdAnchorsCalculator with fixed_anchor_size, aspect ratio 1.0)."""
    centres = []
    layer = 0
    while layer < len(strides):
        same = layer
        while same < len(strides) and strides[same] == strides[layer]:
            same += 1
        cells = int(math.ceil(input_size / strides[layer]))
        per_cell = anchors_per_layer * (same - layer)
        ys, xs = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing='ij')
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(grid, per_cell, axis=0))
        layer = same
    return np.concatenate(centres, axis=0)


@dataclass
class SsdDetection:
    score: float
    box: np.ndarray          # x0, y0, x1, y1 (the caller's units)
    keypoints: np.ndarray    # (K, 2)


def decode_ssd(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray, input_size: int,
               num_keypoints: int, min_score: float) -> List[SsdDetection]:
    """Detections in crop pixels (0..input_size) above `min_score` (TensorsToDetectionsCalculator)."""
    scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores.reshape(-1).astype(np.float64), -100.0, 100.0)))
    keep = np.nonzero(scores >= min_score)[0]
    out = []
    for i in keep:
        raw = raw_boxes[i]
        ax, ay = anchors[i] * input_size
        cx, cy, w, h = ax + raw[0], ay + raw[1], raw[2], raw[3]
        keypoints = raw[4:4 + 2 * num_keypoints].reshape(num_keypoints, 2) + (ax, ay)
        out.append(SsdDetection(float(scores[i]), np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]),
                                keypoints))
    return out


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def weighted_nms(detections: List[SsdDetection], iou_threshold: float = 0.3,
                 max_detections: Optional[int] = None) -> List[SsdDetection]:
    """MediaPipe's WEIGHTED non-maximum suppression: the best box absorbs every box overlapping it by more than
    `iou_threshold` (itself always, even a degenerate one), coordinates averaged by score; at most
    `max_detections` per detector run, best first (MediaPipe's NonMaxSuppressionCalculator option
    max_num_detections; the search passes num_hands or max_people). Vectorised: a score threshold of 0 keeps
    thousands of anchors, many of them degenerate boxes."""
    if not detections:
        return []
    order = np.argsort([-d.score for d in detections], kind='stable')
    boxes = np.stack([detections[i].box for i in order]).astype(np.float64)
    scores = np.array([detections[i].score for i in order])
    keypoints = np.stack([detections[i].keypoints for i in order]).astype(np.float64)
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    remaining = np.arange(len(order))
    out = []
    while remaining.size and (max_detections is None or len(out) < max_detections):
        best = remaining[0]
        ix = np.clip(np.minimum(boxes[remaining, 2], boxes[best, 2]) - np.maximum(boxes[remaining, 0], boxes[best, 0]),
                     0, None)
        iy = np.clip(np.minimum(boxes[remaining, 3], boxes[best, 3]) - np.maximum(boxes[remaining, 1], boxes[best, 1]),
                     0, None)
        union = areas[remaining] + areas[best] - ix * iy
        iou = np.divide(ix * iy, union, out=np.zeros_like(union), where=union > 0)
        in_cluster = iou > iou_threshold
        in_cluster[0] = True
        cluster = remaining[in_cluster]
        weights = scores[cluster]
        out.append(SsdDetection(float(scores[best]), (boxes[cluster] * weights[:, None]).sum(0) / weights.sum(),
                                (keypoints[cluster] * weights[:, None, None]).sum(0) / weights.sum()))
        remaining = remaining[~in_cluster]
    return out

"""Track ids and stable sides for hands across the frames of a stream.

Why: MediaPipe's side label can flip for a frame on an unusual pose (shared docs/mediapipe.md notes, "Handedness"),
and a flipped side makes HaMeR reconstruct from a mirrored crop, so one bad frame would swap the mesh. The tracker
matches each frame's detections to the live tracks and keeps each track's side until the contrary evidence is
consistent.

Matching: one-to-one assignment (Hungarian, scipy's `linear_sum_assignment`) minimising
`(1 - IoU) + centre distance / track box diagonal` over the pairs that pass the gate `IoU >= min_iou` or
`centre distance <= max_center_distance * track box diagonal`. Each track is compared at two places, its last box
and that box moved on at the last velocity of its centre (constant-velocity prediction, elapsed time from the stamps, or
in frames without them), and the better of the two counts: a hand moving steadily by about its own size per frame
(fast motion, or a slow node that drops frames) stays matched, and one that stops is still found where it was.
Tracks are matched in order of frames missed (a matching cascade): those seen in the last frame first, so a track
lost a while ago cannot take a hand from a live one that moved to where the lost one was. A lost track (missed in
the last processed frame) has a narrower distance gate, LOST_DISTANCE_SHARE of `max_center_distance`: the wide gate
is there for the motion between two sightings, which the prediction already carries, and a hidden hand comes back
where it was; a box beside it is more likely something else (a forearm the palm detector took for a hand while the
hand was hidden took that hand's id, and the hand came back under a new one). Sides play no part in the matching
(they are what the tracker is there to correct).

Parameters: `HandTracker`'s arguments; the node's `tracking.*` parameters set them (their defaults, ranges and
meanings: the parameter table in hamer_ros/ros/parameters.py, printed in the README). `min_iou` and
`max_center_distance` are the gate above; a track's side changes only after `flip_after_frames` consecutive
contrary frames whose side_score is at least `min_flip_score` (less confident ones neither count nor break the
run); a track not matched for more than `max_missed_frames` frames in a row is dropped, or, with stamps, one
unseen longer than `max_age_s` *and* missed in a processed frame (None: frames only).

Age counts processed frames as well as time: a track matched in the last frame the tracker saw lives on
however long ago that frame was. On a slow device (the full model on a CPU answers every 2.5-3 s while frames in
between are dropped) time alone would expire every track between two processed frames and renumber the
hands each time; a hand that is really gone is still dropped after max_age_s once a processed frame missed it.

A new track takes its first detection's side. If that label was unsure (side_score below min_flip_score: a hand
seen edge-on, small in the image) the side is provisional and the track's first sure label replaces it at once;
from a sure label on, changing the side takes flip_after_frames sure contrary frames.

A track's reported `side_score` is the probability of its side: the detection's own score when they agree, and
`1 - side_score` (the two-class complement) when the detection said the other side.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import List, Optional

import numpy as np
from scipy.optimize import linear_sum_assignment

from hamer_ros.types import HandDetection

# Cost of a pair the gate rejects: larger than any admissible cost, so the assignment never prefers it.
_REJECTED = 1e6
# A lost track's distance gate, as a share of max_center_distance (module docstring).
LOST_DISTANCE_SHARE = 0.5


@dataclass
class _Track:
    track_id: int
    box: np.ndarray
    side: str
    side_is_sure: bool
    last_stamp_s: Optional[float]
    missed_frames: int = 0
    contrary_frames: int = 0
    # Motion of the box centre per unit of `elapsed` (seconds with stamps, frames without), last two sightings.
    velocity: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(2))

    def elapsed(self, stamp_s: Optional[float]) -> float:
        """Time since this track was last seen: seconds when both stamps are known, else frames."""
        if stamp_s is not None and self.last_stamp_s is not None:
            return stamp_s - self.last_stamp_s
        return float(self.missed_frames + 1)


class HandTracker:
    """Gives each hand a track id that survives across frames and a side that one bad frame cannot flip."""

    def __init__(self, min_iou: float = 0.1, max_center_distance: float = 1.0, flip_after_frames: int = 3,
                 min_flip_score: float = 0.6, max_missed_frames: int = 30, max_age_s: Optional[float] = 3.0):
        if flip_after_frames < 1:
            raise ValueError(f'flip_after_frames must be at least 1, got {flip_after_frames}')
        if max_missed_frames < 0:
            raise ValueError(f'max_missed_frames must be 0 or more, got {max_missed_frames}')
        if max_age_s is not None and max_age_s <= 0:
            raise ValueError(f'max_age_s must be positive (or None), got {max_age_s}')
        self.min_iou = float(min_iou)
        self.max_center_distance = float(max_center_distance)
        self.flip_after_frames = int(flip_after_frames)
        self.min_flip_score = float(min_flip_score)
        self.max_missed_frames = int(max_missed_frames)
        self.max_age_s = max_age_s
        self.reset()

    def reset(self) -> None:
        """Forget every track (a new stream); ids start again from 0."""
        self._tracks: List[_Track] = []
        self._next_id = 0

    @property
    def num_tracks(self) -> int:
        return len(self._tracks)

    def update(self, detections: List[HandDetection], stamp_s: Optional[float] = None) -> List[HandDetection]:
        """Copies of `detections` (same order) with `track_id` set and `side`/`side_score` stabilised.

        stamp_s: the frame's stamp in seconds (the image header's); frames must come in order. Without stamps,
        tracks age by frames only.
        """
        self._drop_stale(stamp_s)
        matches = self._match(detections, stamp_s)
        matched_tracks = set()
        results = []
        for det_index, detection in enumerate(detections):
            track = matches.get(det_index)
            box = detection.box_xyxy
            if track is None:
                track = _Track(self._next_id, box.copy(), detection.side,
                               detection.side_score >= self.min_flip_score, stamp_s)
                self._next_id += 1
                self._tracks.append(track)
            else:
                self._vote_side(track, detection)
                elapsed = track.elapsed(stamp_s)
                motion = _centres(box[None])[0] - _centres(track.box[None])[0]
                track.velocity = motion / elapsed if elapsed > 0 else np.zeros(2)
                track.box = box.copy()
                track.last_stamp_s = stamp_s if stamp_s is not None else track.last_stamp_s
                track.missed_frames = 0
            matched_tracks.add(track.track_id)
            side_score = detection.side_score if detection.side == track.side else 1.0 - detection.side_score
            results.append(dataclasses.replace(detection, track_id=track.track_id, side=track.side,
                                               side_score=side_score))
        for track in self._tracks:
            if track.track_id not in matched_tracks:
                track.missed_frames += 1
        return results

    def _vote_side(self, track: _Track, detection: HandDetection) -> None:
        if not track.side_is_sure and detection.side_score >= self.min_flip_score:
            track.side, track.side_is_sure, track.contrary_frames = detection.side, True, 0
        elif detection.side == track.side:
            track.contrary_frames = 0
        elif detection.side_score >= self.min_flip_score:
            track.contrary_frames += 1
            if track.contrary_frames >= self.flip_after_frames:
                track.side = detection.side
                track.contrary_frames = 0

    def _drop_stale(self, stamp_s: Optional[float]) -> None:
        def alive(track: _Track) -> bool:
            if track.missed_frames > self.max_missed_frames:
                return False
            if (self.max_age_s is not None and stamp_s is not None and track.last_stamp_s is not None
                    and track.missed_frames > 0):       # seen in the last processed frame: alive at any age
                return stamp_s - track.last_stamp_s <= self.max_age_s
            return True
        self._tracks = [track for track in self._tracks if alive(track)]

    def _match(self, detections: List[HandDetection], stamp_s: Optional[float]) -> dict:
        """{detection index: track}: the admissible minimum-cost assignment, tracks seen most recently first."""
        det_boxes = np.array([detection.box_xyxy for detection in detections]).reshape(-1, 4)
        matches, free = {}, list(range(len(detections)))
        # Matching cascade (as in DeepSORT): a track lost a few frames ago must not take a hand from one that was
        # seen in the last frame just because the hand is now where the lost one was.
        for missed in sorted({track.missed_frames for track in self._tracks}):
            tracks = [track for track in self._tracks if track.missed_frames == missed]
            if not free:
                break
            cost = self._cost(tracks, det_boxes[free], stamp_s)
            rows, cols = linear_sum_assignment(cost)
            taken = {free[c]: tracks[r] for r, c in zip(rows, cols) if cost[r, c] < _REJECTED}
            matches.update(taken)
            free = [index for index in free if index not in taken]
        return matches

    def _cost(self, tracks: List[_Track], det_boxes: np.ndarray, stamp_s: Optional[float]) -> np.ndarray:
        """(tracks, detections) matching cost, _REJECTED where the gate fails (module docstring)."""
        last_boxes = np.stack([track.box for track in tracks])
        # The prediction moves the last box without resizing it; its diagonal scales the distances at both places.
        predicted_boxes = np.stack([track.box + np.tile(track.velocity * track.elapsed(stamp_s), 2)
                                    for track in tracks])
        diagonal = np.hypot(last_boxes[:, 2] - last_boxes[:, 0], last_boxes[:, 3] - last_boxes[:, 1])
        gate = np.array([self.max_center_distance * (LOST_DISTANCE_SHARE if track.missed_frames else 1.0)
                         for track in tracks])[:, None]
        cost = np.full((len(tracks), len(det_boxes)), _REJECTED)
        for track_boxes in (last_boxes, predicted_boxes):
            iou = box_iou(track_boxes, det_boxes)
            distance = np.linalg.norm(_centres(track_boxes)[:, None] - _centres(det_boxes)[None], axis=2)
            relative_distance = distance / np.maximum(diagonal, 1e-9)[:, None]
            admissible = (iou >= self.min_iou) | (relative_distance <= gate)
            cost = np.where(admissible, np.minimum(cost, (1.0 - iou) + relative_distance), cost)
        return cost


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) intersection over union of (N, 4) and (M, 4) x0, y0, x1, y1 boxes."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    intersection = np.prod(np.clip(hi - lo, 0.0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - intersection
    return intersection / np.maximum(union, 1e-12)


def _centres(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, :2] + boxes[:, 2:]) / 2.0

"""Hand boxes from another detector (the node's input `hands/boxes_in`, message hamer_ros/HandBoxArray).

Plain Python (no rclpy): the node only subscribes and calls these.

- `detections_from_boxes_msg`: one HandBoxArray -> `HandDetection`s for an image of known size, with a reason
  for every box refused. A box's RegionOfInterest is read with the convention of `ros_messages.box_roi` (the
  HandMesh box): x_offset, y_offset, x_offset + width, y_offset + height are the box's edges in pixels, so a box
  sent in comes back unchanged in HandMesh.box. HaMeR's square crop around it (x2 expansion) is made later, by
  `hamer.preprocess.crop_box`, exactly as for the node's own boxes.
- `BoxBuffer`: the recent HandBoxArray messages by stamp, for pairing each image with the boxes found in it
  (equal stamps, or the nearest within a tolerance), waiting a bounded time for boxes that come after their
  image, and telling when none arrive any more (timeout).
- `merge_detections`: the node's own hands and the external ones without duplicates (greedy non-maximum
  suppression across both lists).

Sides: HandBox.side may be SIDE_UNKNOWN. HaMeR needs a side (it mirrors left hands), so such a box becomes a
right hand with side_score 0.5, the two-class "no idea": the tracker treats a label below its min_flip_score
(default 0.6) as unsure, so an existing track keeps its side and a new track takes the first sure label it sees;
in `merge_detections` a more confident label of an overlapping hand replaces it.
"""
from __future__ import annotations

import dataclasses
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from hamer_ros.detection.tracking import box_iou
from hamer_ros.types import STAGE_EXTERNAL, HandDetection

# external_boxes.mode: ignore = the node's own search only (the topic is not read); only = external boxes only
# (MediaPipe is not run); both = the own search and the external boxes, merged by `merge_detections`.
MODES = ('ignore', 'only', 'both')

# HandBox.side codes (the message's constants; test_external_boxes checks they agree).
SIDE_LEFT, SIDE_RIGHT, SIDE_UNKNOWN = 0, 1, 2
# What an unknown side becomes (module docstring).
UNKNOWN_SIDE_GUESS = 'right'
UNKNOWN_SIDE_SCORE = 0.5
# Boxes of the own search and external ones overlapping at least this much are one hand (external_boxes.merge_iou).
DEFAULT_MERGE_IOU = 0.5


def stamp_ns(stamp) -> int:
    """Nanoseconds of a builtin_interfaces/Time (ROS message or stand-in)."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def detection_from_box(box_msg, width: int, height: int) -> HandDetection:
    """One HandBox (ROS message or stand-in) as a HandDetection in a `width` x `height` image; ValueError says
    why a box is refused."""
    roi = box_msg.box
    x0, y0 = int(roi.x_offset), int(roi.y_offset)
    box_w, box_h = int(roi.width), int(roi.height)
    if box_w < 1 or box_h < 1:
        raise ValueError(f'box {_roi_text(roi)} has zero width or height (an all-zero RegionOfInterest means '
                         'the full image in sensor_msgs; a hand box needs width and height >= 1 px)')
    if x0 >= width or y0 >= height:
        raise ValueError(f'box {_roi_text(roi)} lies outside the {width}x{height} image')
    box = np.array([x0, y0, min(x0 + box_w, width), min(y0 + box_h, height)], dtype=np.float64)
    score = float(box_msg.score)
    if not (math.isfinite(score) and 0.0 <= score <= 1.0):
        raise ValueError(f'box {_roi_text(roi)}: score {score} is not in [0, 1]')
    side_code = int(box_msg.side)
    if side_code == SIDE_UNKNOWN:
        side, side_score = UNKNOWN_SIDE_GUESS, UNKNOWN_SIDE_SCORE
    elif side_code in (SIDE_LEFT, SIDE_RIGHT):
        side, side_score = ('left', 'right')[side_code], float(box_msg.side_confidence)
        if not (math.isfinite(side_score) and 0.0 <= side_score <= 1.0):
            raise ValueError(f'box {_roi_text(roi)}: side_confidence {side_score} is not in [0, 1]')
    else:
        raise ValueError(f'box {_roi_text(roi)}: side {side_code} is none of SIDE_LEFT (0), SIDE_RIGHT (1), '
                         'SIDE_UNKNOWN (2)')
    return HandDetection(box_xyxy=box, side=side, side_score=side_score, score=score, stage=STAGE_EXTERNAL)


def detections_from_boxes_msg(msg, width: int, height: int) -> Tuple[List[HandDetection], List[str]]:
    """The hands of one HandBoxArray in a `width` x `height` image, and one reason per box refused."""
    detections, problems = [], []
    for index, box_msg in enumerate(msg.boxes):
        try:
            detections.append(detection_from_box(box_msg, width, height))
        except ValueError as exc:
            problems.append(f'box {index}: {exc}')
    return detections, problems


def merge_detections(own: Sequence[HandDetection], external: Sequence[HandDetection],
                     iou_threshold: float = DEFAULT_MERGE_IOU) -> List[HandDetection]:
    """The hands of both lists without duplicates.

    Greedy non-maximum suppression over both lists together: hands are taken by falling `score` (an external box
    before an own one at equal score), and a hand whose box overlaps an already kept one with IoU >= `iou_threshold`
    is dropped as the same hand; the kept hand takes its side label when that label is the more confident one
    (higher side_score), so one hand has one side. The kept hands come back in input order (own first)."""
    candidates = list(own) + list(external)
    if not candidates:
        return []
    boxes = np.array([d.box_xyxy for d in candidates], dtype=np.float64).reshape(-1, 4)
    overlap = box_iou(boxes, boxes)
    # Sort key: score descending; external (index >= len(own)) first on ties; then input order.
    order = sorted(range(len(candidates)), key=lambda i: (-candidates[i].score, i < len(own), i))
    kept: List[int] = []
    side_of = {}
    for i in order:
        duplicate_of = next((k for k in kept if overlap[i, k] >= iou_threshold), None)
        if duplicate_of is None:
            kept.append(i)
            side_of[i] = (candidates[i].side, candidates[i].side_score)
        elif candidates[i].side_score > side_of[duplicate_of][1]:
            side_of[duplicate_of] = (candidates[i].side, candidates[i].side_score)
    return [dataclasses.replace(candidates[i], side=side_of[i][0], side_score=side_of[i][1]) for i in sorted(kept)]


@dataclass
class BoxMatch:
    """The HandBoxArray paired with an image, or why none was."""
    message: Any = None                 # the HandBoxArray (None: no match)
    stamp_ns: Optional[int] = None      # its stamp
    nearest_ns: Optional[int] = None    # no match: the stamp of the nearest message held (None: none held)


class BoxBuffer:
    """The last `capacity` HandBoxArray messages by stamp, for pairing with images. Thread-safe: the executor
    adds, the worker matches. A message is kept after a match (an image processed again matches it again).

    tolerance_ns: largest |box stamp - image stamp| that still pairs (0: equal stamps only).
    clock: seconds, monotonic (for the timeout); replaceable in tests.
    """

    def __init__(self, tolerance_ns: int = 0, capacity: int = 64, clock=time.monotonic):
        if capacity < 1:
            raise ValueError(f'capacity must be at least 1, got {capacity}')
        self.tolerance_ns = int(tolerance_ns)
        self.capacity = int(capacity)
        self._clock = clock
        self._condition = threading.Condition()
        self._messages: List[Tuple[int, Any]] = []       # (stamp ns, message), in arrival order
        self.received = 0
        self._closed = False
        self.started_s = clock()
        self.last_received_s: Optional[float] = None

    def add(self, message) -> None:
        """Keeps a HandBoxArray (the oldest one goes when `capacity` are held) and wakes `wait_for_match`."""
        with self._condition:
            self._messages.append((stamp_ns(message.header.stamp), message))
            del self._messages[:-self.capacity]
            self.received += 1
            self.last_received_s = self._clock()
            self._condition.notify_all()

    def match(self, image_stamp_ns: int) -> BoxMatch:
        """The message whose stamp is nearest to `image_stamp_ns` if within the tolerance (the newest of equals)."""
        with self._condition:
            return self._match(int(image_stamp_ns))

    def wait_for_match(self, image_stamp_ns: int, timeout_s: float) -> BoxMatch:
        """`match`, waiting up to `timeout_s` seconds for the message to arrive when it is not held yet."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._condition:
            while True:
                found = self._match(int(image_stamp_ns))
                left = deadline - time.monotonic()
                if found.message is not None or left <= 0 or self._closed:
                    return found
                self._condition.wait(left)

    def close(self) -> None:
        """Ends every `wait_for_match` now and makes later ones return at once (the node is stopping)."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    def _match(self, image_stamp_ns: int) -> BoxMatch:
        best = None
        for stamp, message in self._messages:
            distance = abs(stamp - image_stamp_ns)
            if best is None or distance <= best[0]:
                best = (distance, stamp, message)
        if best is None:
            return BoxMatch()
        if best[0] <= self.tolerance_ns:
            return BoxMatch(message=best[2], stamp_ns=best[1])
        return BoxMatch(nearest_ns=best[1])

    def seconds_silent(self) -> float:
        """Seconds since the last message (since this buffer was made when none came yet)."""
        last = self.last_received_s if self.last_received_s is not None else self.started_s
        return self._clock() - last

    def timed_out(self, timeout_s: float) -> bool:
        """No message for more than `timeout_s` seconds (counted from the buffer's creation before the first)."""
        return self.seconds_silent() > timeout_s


def mismatch_text(image_stamp_ns: int, found: BoxMatch, tolerance_ns: int) -> str:
    """Why an image found no boxes, for the node's warning."""
    image_s = _seconds_text(image_stamp_ns)
    if found.nearest_ns is None:
        return f'no hand boxes received yet for the image stamped {image_s} s'
    return (f'no hand boxes stamped within {tolerance_ns * 1e-9:g} s of the image stamped {image_s} s '
            f'(nearest boxes: {_seconds_text(found.nearest_ns)} s, '
            f'{abs(found.nearest_ns - image_stamp_ns) * 1e-6:.1f} ms away). Copy the image header into '
            'HandBoxArray.header, or raise external_boxes.stamp_tolerance')


def _seconds_text(nanoseconds: int) -> str:
    """A stamp in seconds with all nine decimals, exact (a float64 has no nanoseconds left at 1.7e9 s)."""
    sign = '-' if nanoseconds < 0 else ''
    seconds, rest = divmod(abs(int(nanoseconds)), 1_000_000_000)
    return f'{sign}{seconds}.{rest:09d}'


def _roi_text(roi) -> str:
    return f'(x_offset {roi.x_offset}, y_offset {roi.y_offset}, width {roi.width}, height {roi.height})'

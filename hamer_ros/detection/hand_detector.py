"""Hands in one image with MediaPipe's Tasks `HandLandmarker`: tight boxes, sides and the 21 landmarks.

Conventions (shared docs/mediapipe.md notes, "Handedness"): the Tasks label is the subject's own hand for a normal,
non-mirrored camera; a horizontally mirrored (selfie) stream inverts it, which `mirrored=True` undoes. The label is
read from `category_name`, never from `index` (the numbering differs between MediaPipe APIs).

The box is the tight box of the 21 image landmarks. HaMeR's ×2 expansion happens in exactly one place,
`hamer_ros.hamer.preprocess.crop_box`, so the detector box stays tight here.
"""
from __future__ import annotations

import dataclasses
import time
from typing import List, Optional

import numpy as np

from hamer_ros.detection.model import ensure_hand_landmarker_model
from hamer_ros.types import HandDetection

RUNNING_MODES = ('image', 'video')

# The thresholds MediaPipe accepts, both ends included (mediapipe 0.10.21, each end tried in image and video mode
# on a photo with two hands). min_tracking_confidence becomes the hand association calculator's
# min_similarity_threshold, which must be above 0: at 0.0 the video graph aborts the process on its second frame
# ("Check failed: options_.min_similarity_threshold() > 0.0", hand_association_calculator.cc, SIGABRT). 0.01 is the
# lowest value offered here; a threshold that low already keeps every tracked hand.
CONFIDENCE_RANGES = {
    'min_detection_confidence': (0.0, 1.0),
    'min_presence_confidence': (0.0, 1.0),
    'min_tracking_confidence': (0.01, 1.0),
}


def box_from_landmarks(landmarks_px: np.ndarray, width: int, height: int) -> np.ndarray:
    """Tight (x0, y0, x1, y1) box around (N, 2) pixel points, clipped to the image ([0, W] x [0, H])."""
    x0, y0 = landmarks_px.min(axis=0)
    x1, y1 = landmarks_px.max(axis=0)
    return np.clip(np.array([x0, y0, x1, y1], dtype=np.float64), 0.0, [width, height, width, height])


def flip_side(side: str) -> str:
    return 'left' if side == 'right' else 'right'


class HandDetector:
    """MediaPipe Tasks `HandLandmarker` turned into `HandDetection`s.

    running_mode: 'image' (every frame on its own) or 'video' (MediaPipe tracks hands between frames, which skips
        the palm detector while a hand is followed and is faster; frames must come in order).
    num_hands: most hands reported per frame (MediaPipe's own default is 1).
    min_detection_confidence / min_presence_confidence / min_tracking_confidence: MediaPipe's thresholds for the
        palm detector, the landmark model's hand presence, and keeping a hand tracked in video mode.
    mirrored: the images are horizontally mirrored (selfie view): sides are swapped back to the subject's own.
    rgb_input: images are RGB rather than OpenCV's BGR.
    model_path: a `hand_landmarker.task`; None builds/uses the project's own (see detection.model).
    provision_model: with model_path None, build the project's own bundle when it is missing (may fetch a
        registry package); False raises detection.model.ModelNotProvisioned instead (the node).
    redetect_lost_hands: video mode only: re-run palm detection on a frame where MediaPipe's tracking lost hands
        (below). False gives MediaPipe's video mode as it is.

    Lost hands in video mode. MediaPipe's video graph skips the palm detector whenever the previous frame gave
    `num_hands` hands, and only re-runs the landmark model inside each hand's region from the previous frame
    (MediaPipe's hand_landmarker_graph.cc: the hand detector is disallowed while the previous rects reach
    num_hands; with fewer, its palm boxes are merged with the previous rects, which win where they overlap). A
    hand that moved by about its own size between frames is no longer in that region, and the landmark model
    reports no hand there. With two hands and large motion this dropped every hand on every other frame (the
    next frame, tracking nothing, ran the palm detector again); test_detection.py reproduces it on a real photo
    panned across the frame. So a video frame that returns fewer hands than this detector reported for the
    previous frame goes through a second landmarker in IMAGE mode (created on first need), whose palm detector
    finds the hands where they are now; its result is used when it has more hands. Not when the video
    landmarker tracked nothing before: it then ran exactly the image-mode detection itself.
    When tracking holds nothing else runs, so video mode keeps its speed; a frame that lost hands costs the video
    call plus an image-mode call (benchmarks/bench_detection.py, "large motion" rows). `redetected_frames` counts
    the frames that took the second run.

    `score` of a detection: the Tasks API reports no palm or presence score, only hands that passed both
    thresholds and the handedness classifier's confidence; that confidence is the best score it gives, so it is
    used for both `score` and `side_score`.
    """

    def __init__(self, model_path=None, running_mode: str = 'image', num_hands: int = 2,
                 min_detection_confidence: float = 0.5, min_presence_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5, mirrored: bool = False, rgb_input: bool = False,
                 redetect_lost_hands: bool = True, provision_model: bool = True):
        if running_mode not in RUNNING_MODES:
            raise ValueError(f"running_mode must be one of {RUNNING_MODES}, got {running_mode!r}")
        if int(num_hands) < 1:
            raise ValueError(f'num_hands must be at least 1, got {num_hands}')
        for name, value in (('min_detection_confidence', min_detection_confidence),
                            ('min_presence_confidence', min_presence_confidence),
                            ('min_tracking_confidence', min_tracking_confidence)):
            low, high = CONFIDENCE_RANGES[name]
            if not low <= value <= high:
                raise ValueError(f'{name} must lie in [{low:g}, {high:g}] (what MediaPipe accepts), got {value}')
        # Imported here: mediapipe takes about a second to import and most users of hamer_ros need it only here.
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision

        self._mp = mp
        self.model_path = ensure_hand_landmarker_model(model_path, provision=provision_model)
        self.running_mode = running_mode
        self.mirrored = bool(mirrored)
        self.rgb_input = bool(rgb_input)
        self.num_hands = int(num_hands)
        self.redetect_lost_hands = bool(redetect_lost_hands) and running_mode == 'video'
        self._options = vision.HandLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(self.model_path)),
            running_mode=vision.RunningMode.VIDEO if running_mode == 'video' else vision.RunningMode.IMAGE,
            num_hands=self.num_hands,
            min_hand_detection_confidence=float(min_detection_confidence),
            min_hand_presence_confidence=float(min_presence_confidence),
            min_tracking_confidence=float(min_tracking_confidence))
        self._vision = vision
        self._landmarker = self._vision.HandLandmarker.create_from_options(self._options)
        self._image_landmarker = None       # the re-detection landmarker of video mode, made on first need
        self.redetected_frames = 0
        self._last_timestamp_ms: Optional[int] = None      # the last stamp given to MediaPipe
        self._timestamp_offset_ms = 0                       # added to the stream's stamps (see reset)
        self._stream_restarted = False
        self._hands_before = 0          # hands reported for the previous frame
        self._video_hands_before = 0    # ...and the video landmarker's own share (what it tracks now)

    def reset(self) -> None:
        """Start afresh (a new stream): forget the hands MediaPipe's video mode tracks, and let the stamps start over.

        The MediaPipe graph is kept: building a new one for each restart cost memory that stayed with the
        process (a node fed stamps going backwards grew by hundreds of MB; benchmarks/bench_restarts.py). Instead:
        - tracking: MediaPipe's video graph only remembers the hand regions of the previous frame (the landmark
          model re-runs there while they cover num_hands; class docstring). One blank frame, where no hand can be
          found, empties them, so the next frame starts with palm detection like a new graph's first frame.
        - stamps: MediaPipe needs strictly increasing stamps for the graph's lifetime; the new stream's stamps are
          shifted to continue 1 ms after the last one given, keeping their spacing.
        """
        if self._landmarker is None:
            raise RuntimeError('this HandDetector was closed; create a new one')
        if self.running_mode == 'video' and self._last_timestamp_ms is not None:
            blank = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.zeros((64, 64, 3), np.uint8))
            self._last_timestamp_ms += 1
            self._landmarker.detect_for_video(blank, self._last_timestamp_ms)
        self._stream_restarted = True
        self._hands_before = 0
        self._video_hands_before = 0

    def close(self) -> None:
        # Unclosed landmarkers make mediapipe 1.2.2 print a TypeError at interpreter exit (docs/mediapipe.md).
        for landmarker in (self._landmarker, self._image_landmarker):
            if landmarker is not None:
                landmarker.close()
        self._landmarker = self._image_landmarker = None

    def __enter__(self) -> 'HandDetector':
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def detect(self, image: np.ndarray, timestamp_ms: Optional[float] = None) -> List[HandDetection]:
        """Hands in `image` (uint8 HxWx3, BGR unless `rgb_input`; HxW grey also accepted).

        timestamp_ms: the image's stamp in milliseconds, used in video mode (ignored in image mode; None there
            means "now"). MediaPipe needs strictly increasing integer stamps: an equal or earlier stamp (two frames
            within a millisecond, a repeated header) is moved to 1 ms after the previous one. Call `reset()` when
            a stream starts over (a bag played again), so that old frames do not steer the tracking.
        """
        if self._landmarker is None:
            raise RuntimeError('this HandDetector was closed; create a new one')
        rgb = self._to_rgb(image)
        mp_image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=rgb)
        if self.running_mode == 'video':
            result = self._landmarker.detect_for_video(mp_image, self._next_timestamp(timestamp_ms))
            result = self._redetect_if_tracking_lost(result, mp_image)
        else:
            result = self._landmarker.detect(mp_image)
        height, width = rgb.shape[:2]
        return [self._to_detection(handedness, landmarks, world, width, height)
                for handedness, landmarks, world in zip(result.handedness, result.hand_landmarks,
                                                        result.hand_world_landmarks)]

    def _redetect_if_tracking_lost(self, video_result, mp_image):
        """The image-mode result for a frame where tracking lost hands, else `video_result` (class docstring)."""
        found, tracked = len(video_result.hand_landmarks), self._video_hands_before
        self._video_hands_before = found
        if not self.redetect_lost_hands or found >= self._hands_before or tracked == 0:
            self._hands_before = found
            return video_result
        if self._image_landmarker is None:
            options = dataclasses.replace(self._options, running_mode=self._vision.RunningMode.IMAGE)
            self._image_landmarker = self._vision.HandLandmarker.create_from_options(options)
        self.redetected_frames += 1
        image_result = self._image_landmarker.detect(mp_image)
        best = image_result if len(image_result.hand_landmarks) > found else video_result
        self._hands_before = len(best.hand_landmarks)
        return best

    def _next_timestamp(self, timestamp_ms: Optional[float]) -> int:
        stamp = int(timestamp_ms) if timestamp_ms is not None else int(time.monotonic() * 1000.0)
        if self._stream_restarted:
            self._stream_restarted = False
            if self._last_timestamp_ms is not None:
                self._timestamp_offset_ms = self._last_timestamp_ms + 1 - stamp
        stamp += self._timestamp_offset_ms
        if self._last_timestamp_ms is not None and stamp <= self._last_timestamp_ms:
            stamp = self._last_timestamp_ms + 1
        self._last_timestamp_ms = stamp
        return stamp

    def _to_rgb(self, image: np.ndarray) -> np.ndarray:
        return detector_input_rgb(image, self.rgb_input)

    def _to_detection(self, handedness, landmarks, world, width: int, height: int) -> HandDetection:
        best = max(handedness, key=lambda category: category.score)
        side = best.category_name.lower()
        if self.mirrored:
            side = flip_side(side)
        # MediaPipe's normalised coordinates scaled by the image size give pixels.
        landmarks_2d = np.array([(p.x * width, p.y * height) for p in landmarks], dtype=np.float64)
        landmarks_world = np.array([(p.x, p.y, p.z) for p in world], dtype=np.float64)
        return HandDetection(box_xyxy=box_from_landmarks(landmarks_2d, width, height), side=side,
                             side_score=float(best.score), score=float(best.score),
                             landmarks_2d=landmarks_2d, landmarks_world=landmarks_world)


def detector_input_rgb(image: np.ndarray, rgb_input: bool = False) -> np.ndarray:
    """The contiguous uint8 HxWx3 RGB image the hand models take, from BGR (or RGB when `rgb_input`) or grey."""
    import cv2

    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f'images for hand detection must be uint8, got {image.dtype}; convert them first '
                         '(e.g. cv2.convertScaleAbs)')
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f'images for hand detection must be HxWx3 (or HxW grey), got shape {image.shape}')
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f'the image is empty ({image.shape[1]}x{image.shape[0]} px): there is nothing to search')
    # cv2.cvtColor rather than a reversed numpy view made contiguous: 0.3 against 7.3 ms for a 1920x1080 frame
    # (2-core CPU), paid on every frame of the hand search
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    return np.ascontiguousarray(image) if rgb_input else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

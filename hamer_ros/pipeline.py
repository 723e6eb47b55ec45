"""One camera frame in, all its hands out: detector -> tracker -> HaMeR (all hands in one forward).

Plain Python (no rclpy): the ROS node and the offline tools drive the same `HandPipeline`.
Without HaMeR weights (`model=None`) the pipeline runs in landmarks-only mode: MediaPipe's metric world
landmarks are placed in the camera frame by a PnP fit to its 2D landmarks, so joints (and TF frames) still
exist, without a mesh.
"""
from __future__ import annotations

import time
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from hamer_ros.detection.external_boxes import DEFAULT_MERGE_IOU, merge_detections
from hamer_ros.hamer.topology import faces_by_side  # noqa: F401 (the node and offline tools import it from here)
from hamer_ros.types import CameraIntrinsics, FrameResult, HandDetection, HandReconstruction, HandResult

# Every array of a reconstruction that ends up in a message; one NaN/inf in any of them drops the hand.
_RECONSTRUCTION_ARRAYS = ('global_orient', 'hand_pose', 'betas', 'vertices', 'keypoints_3d', 'cam_t',
                          'keypoints_2d', 'joint_rotations')


class HandPipeline:
    """Runs detection, tracking and reconstruction for one frame at a time.

    detector: has `.detect(image_bgr, timestamp_ms=...) -> List[HandDetection]` (hamer_ros.detection);
        may be None when every call passes `detections`.
    tracker: has `.update(detections, stamp_s) -> List[HandDetection]` (hamer_ros.detection.tracking), or None.
    model: a `hamer_ros.hamer.model.HamerModel` (`.predict(image, detections, intrinsics)`,
        `.default_intrinsics(width, height)` for frames without intrinsics), or None for
        landmarks-only mode.
    """

    def __init__(self, detector=None, tracker=None, model=None):
        self.detector = detector
        self.tracker = tracker
        self.model = model
        self.last_timings: Dict[str, float] = {}     # seconds per stage of the last frame

    @property
    def landmarks_only(self) -> bool:
        return self.model is None

    def reset(self) -> None:
        """A new stream (camera restarted, bag played again): forget tracks and the detector's video state."""
        for part in (self.detector, self.tracker):
            if part is not None and hasattr(part, 'reset'):
                part.reset()

    def process(self, image_bgr: np.ndarray, stamp_ns: int, intrinsics: Optional[CameraIntrinsics] = None,
                detections: Optional[Sequence[HandDetection]] = None,
                added_detections: Optional[Sequence[HandDetection]] = None,
                merge_iou: float = DEFAULT_MERGE_IOU) -> FrameResult:
        """All hands of one BGR uint8 frame. `intrinsics=None` uses HaMeR's default camera (docs/model.md §5);
        `detections` given skips the detector (boxes from elsewhere; the tracker still runs);
        `added_detections` are merged with the detector's (or `detections`) without duplicates
        (`external_boxes.merge_detections` at `merge_iou`) before tracking."""
        frame, detections = self.find_hands(image_bgr, stamp_ns, intrinsics, detections, added_detections,
                                            merge_iou)
        if detections:
            self.add_hands(frame, image_bgr, detections)
        return frame

    def find_hands(self, image_bgr: np.ndarray, stamp_ns: int, intrinsics: Optional[CameraIntrinsics] = None,
                   detections: Optional[Sequence[HandDetection]] = None,
                   added_detections: Optional[Sequence[HandDetection]] = None,
                   merge_iou: float = DEFAULT_MERGE_IOU) -> Tuple[FrameResult, List[HandDetection]]:
        """The first half of `process`: detection and tracking. Returns the frame (no hands yet) and the
        tracked detections for `add_hands`."""
        height, width = image_bgr.shape[:2]
        if intrinsics is None:
            # The model's own default follows its config's FOCAL_LENGTH; without a model, HaMeR's released one.
            intrinsics = (self.model.default_intrinsics(width, height) if self.model is not None
                          else CameraIntrinsics.hamer_default(width, height))
        frame = FrameResult(width=width, height=height, intrinsics=intrinsics, stamp_ns=int(stamp_ns))
        timings = self.last_timings = {}

        start = time.perf_counter()
        if detections is None:
            if self.detector is None:
                raise ValueError('HandPipeline has no detector: pass `detections` or build it with one')
            # The detector keeps its video-mode stamps strictly increasing itself (repeated stamps).
            detections = self.detector.detect(image_bgr, timestamp_ms=int(stamp_ns) // 1_000_000)
        if added_detections is not None:
            detections = merge_detections(detections, added_detections, merge_iou)
        timings['detect'] = time.perf_counter() - start

        start = time.perf_counter()
        if self.tracker is not None:
            detections = self.tracker.update(list(detections), stamp_ns * 1e-9)
        timings['track'] = time.perf_counter() - start
        return frame, list(detections)

    def add_hands(self, frame: FrameResult, image_bgr: np.ndarray, detections: Sequence[HandDetection],
                  reconstructions: Optional[Sequence[HandReconstruction]] = None) -> FrameResult:
        """The second half of `process`: HaMeR for `detections` (or its `reconstructions` computed already,
        e.g. in a forward batched across frames), or the landmarks placement without a model; hands with
        NaN/inf are dropped with the reason."""
        start = time.perf_counter()
        if self.model is not None:
            if reconstructions is None:
                reconstructions = self.model.predict(image_bgr, detections, frame.intrinsics)
            for detection, reconstruction in zip(detections, reconstructions):
                bad = non_finite_fields(reconstruction)
                if bad:
                    frame.dropped.append(f'{_describe(detection)}: HaMeR output has NaN/inf in {", ".join(bad)}')
                else:
                    frame.hands.append(HandResult(detection, reconstruction))
            self.last_timings['model'] = time.perf_counter() - start
        else:
            for detection in detections:
                try:
                    keypoints, translation = place_world_landmarks(detection, frame.intrinsics)
                except ValueError as exc:
                    frame.dropped.append(f'{_describe(detection)}: {exc}')
                    continue
                frame.hands.append(HandResult(detection, keypoints_camera_mediapipe=keypoints,
                                              translation_mediapipe=translation))
            self.last_timings['landmarks'] = time.perf_counter() - start
        return frame


def non_finite_fields(reconstruction: HandReconstruction) -> List[str]:
    """Names of the reconstruction's arrays that hold NaN or inf (empty when all are finite)."""
    return [name for name in _RECONSTRUCTION_ARRAYS
            if not np.all(np.isfinite(np.asarray(getattr(reconstruction, name))))]


def place_world_landmarks(detection: HandDetection,
                          intrinsics: CameraIntrinsics) -> Tuple[np.ndarray, np.ndarray]:
    """MediaPipe world landmarks (m, hand-centred) moved into the camera frame.

    The rigid pose comes from cv2.solvePnP (SQPnP: global, no initial guess) between the 21 world landmarks
    and the 21 image landmarks with these intrinsics. Returns (keypoints_camera (21, 3), translation (3,)),
    translation = where the world landmarks' origin lands. Raises ValueError when the hand cannot be placed.
    """
    if detection.landmarks_world is None or detection.landmarks_2d is None:
        raise ValueError('no MediaPipe landmarks to place (landmarks-only mode needs the MediaPipe detector)')
    world = np.asarray(detection.landmarks_world, np.float64).reshape(-1, 3)
    image = np.asarray(detection.landmarks_2d, np.float64).reshape(-1, 2)
    if len(world) != len(image) or len(world) < 4:
        raise ValueError(f'landmark counts do not match ({len(world)} world, {len(image)} image)')
    if not (np.all(np.isfinite(world)) and np.all(np.isfinite(image))):
        raise ValueError('MediaPipe landmarks contain NaN/inf')
    try:
        ok, rvec, tvec = cv2.solvePnP(world, image, intrinsics.matrix(), None, flags=cv2.SOLVEPNP_SQPNP)
    except cv2.error:
        # SQPnP refuses image points spanning a tiny angle (its variance threshold on normalised points), as a
        # hand does under HaMeR's default camera (focal ~20x the image size); the iterative fit handles them.
        try:
            ok, rvec, tvec = cv2.solvePnP(world, image, intrinsics.matrix(), None, flags=cv2.SOLVEPNP_ITERATIVE)
        except cv2.error as exc:
            raise ValueError(f'the PnP fit of the MediaPipe landmarks failed: {exc}') from None
    if not ok:
        raise ValueError('the PnP fit of the MediaPipe landmarks failed')
    rotation = cv2.Rodrigues(rvec)[0]
    translation = tvec.reshape(3)
    keypoints = world @ rotation.T + translation
    if not np.all(np.isfinite(keypoints)) or np.any(keypoints[:, 2] <= 0):
        raise ValueError('the PnP fit put the hand behind the camera (landmarks inconsistent with the intrinsics)')
    return keypoints, translation


def _describe(detection: HandDetection) -> str:
    track = f' track {detection.track_id}' if detection.track_id >= 0 else ''
    return f'{detection.side} hand{track}'


def hand_keypoints_camera(hand: HandResult) -> np.ndarray:
    """The 21 OpenPose-order joints of a hand in the camera frame (m): HaMeR's, else the placed MediaPipe ones."""
    if hand.reconstruction is not None:
        return hand.reconstruction.keypoints_camera
    return np.asarray(hand.keypoints_camera_mediapipe)

"""Detection of frame N+1 overlapped with HaMeR on frame N: `HandPipeline` split over two threads.

    camera -> [slot] -> detection thread (detector + tracker) -> [slot] -> model thread (HaMeR) -> on_result

Each slot holds one item and a newer item replaces a waiting one (counted as dropped), so a slow stage never
builds a queue: latency stays bounded and every frame the model starts is the newest one detected. Frames come
out in the order they went in. Worth it where the two stages use different resources: on a GPU the model thread
mostly waits for the device (PyTorch releases the GIL there) while MediaPipe runs on the CPU. On a CPU-only
machine both stages share the cores, and next to the full ViT-H the detector's share hardly matters
(docs/performance.md).

Plain Python (no rclpy); the node or a tool feeds `submit` and handles `on_result` (called on the model thread).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from hamer_ros.pipeline import HandPipeline
from hamer_ros.types import CameraIntrinsics, FrameResult, HandDetection

log = logging.getLogger(__name__)


class LatestSlot:
    """Holds at most one item: `put` replaces a waiting item (counted in `dropped`); `take` waits for one."""

    def __init__(self):
        self._condition = threading.Condition()
        self._item = None
        self._closed = False
        self.dropped = 0

    def put(self, item) -> None:
        with self._condition:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._condition.notify()

    def take(self, timeout: Optional[float] = None):
        """The waiting item (the slot is empty again), or None after `timeout` seconds or once closed."""
        with self._condition:
            self._condition.wait_for(lambda: self._item is not None or self._closed, timeout)
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        """Wakes every `take`; they return None from now on unless an item is waiting."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()


@dataclass
class OverlapResult:
    """One frame out of `OverlappedPipeline`."""
    frame: FrameResult
    image: np.ndarray
    context: Any                   # what was given to `submit` (e.g. the message header)
    timings: Dict[str, float]      # seconds: 'detect' (detector + tracker), 'model', 'wait' (between stages)


@dataclass
class _Detected:
    frame: FrameResult
    image: np.ndarray
    detections: List[HandDetection]
    context: Any
    detect_s: float
    detected_at: float


class OverlappedPipeline:
    """Runs `pipeline.find_hands` and `pipeline.add_hands` on two threads.

    on_result(OverlapResult): called on the model thread for every frame that went through both stages.
    on_error(stage, exception, context): a stage ('detect', 'model', or 'result' for `on_result` itself) failed
        for one frame; the threads go on with the next frame (also when `on_error` itself raises: that is logged).
        Without it the failure is only counted in `errors`.
    The detector and tracker are used only by the detection thread, the model only by the model thread.
    """

    def __init__(self, pipeline: HandPipeline, on_result: Callable[[OverlapResult], None],
                 on_error: Optional[Callable[[str, BaseException, Any], None]] = None):
        self.pipeline = pipeline
        self._on_result = on_result
        self._on_error = on_error
        self._frames = LatestSlot()          # camera -> detection
        self._detected = LatestSlot()        # detection -> model
        self._stop = threading.Event()
        self.errors = {'detect': 0, 'model': 0, 'result': 0}
        self._threads = [threading.Thread(target=self._detect_loop, name='hands_detect', daemon=True),
                         threading.Thread(target=self._model_loop, name='hands_model', daemon=True)]
        for thread in self._threads:
            thread.start()

    @property
    def dropped(self) -> Dict[str, int]:
        """Frames replaced while waiting: before detection, and detected but replaced before the model."""
        return {'before_detection': self._frames.dropped, 'before_model': self._detected.dropped}

    def submit(self, image_bgr: np.ndarray, stamp_ns: int, intrinsics: Optional[CameraIntrinsics] = None,
               context: Any = None, **find_hands_options) -> None:
        """Hands a frame to the detection thread (replacing a frame still waiting there). `find_hands_options`
        (detections, added_detections, merge_iou) go to `HandPipeline.find_hands`."""
        if self._stop.is_set():
            raise RuntimeError('OverlappedPipeline is closed: create a new one')
        self._frames.put((image_bgr, int(stamp_ns), intrinsics, context, find_hands_options))

    def close(self, timeout: float = 2.0) -> bool:
        """Stops both threads; False when one is still busy (e.g. inside the network) after `timeout` s."""
        self._stop.set()
        self._frames.close()
        self._detected.close()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def __enter__(self) -> 'OverlappedPipeline':
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _report(self, stage: str, exc: BaseException, context: Any) -> None:
        self.errors[stage] += 1
        if self._on_error is None:
            return
        try:
            self._on_error(stage, exc, context)
        except Exception:    # noqa: BLE001 - raising here would end the stage's thread and every later frame
            log.exception('the on_error handler failed for a %s error (%s: %s)', stage, type(exc).__name__, exc)

    def _detect_loop(self) -> None:
        while not self._stop.is_set():
            item = self._frames.take()
            if item is None or self._stop.is_set():
                continue
            image, stamp_ns, intrinsics, context, options = item
            start = time.perf_counter()
            try:
                frame, detections = self.pipeline.find_hands(image, stamp_ns, intrinsics, **options)
            except Exception as exc:    # noqa: BLE001 - one bad frame must not stop the stream
                self._report('detect', exc, context)
                continue
            now = time.perf_counter()
            self._detected.put(_Detected(frame, image, detections, context, now - start, now))

    def _model_loop(self) -> None:
        while not self._stop.is_set():
            item = self._detected.take()
            if item is None or self._stop.is_set():
                continue
            start = time.perf_counter()
            try:
                if item.detections:
                    self.pipeline.add_hands(item.frame, item.image, item.detections)
            except Exception as exc:    # noqa: BLE001
                self._report('model', exc, item.context)
                continue
            # Timings measured here: the pipeline's own `last_timings` belongs to whichever stage ran last.
            timings = {'detect': item.detect_s, 'wait': start - item.detected_at, 'model': time.perf_counter() - start}
            try:
                self._on_result(OverlapResult(item.frame, item.image, item.context, timings))
            except Exception as exc:    # noqa: BLE001 - a failing consumer must not stop the model thread
                self._report('result', exc, item.context)

"""What the node does with a frame, without rclpy: the hand pipeline (MediaPipe/hand search, tracker, HaMeR) with
its loading and rebuilding, the conversion of each image, the overlapped runner, publishing through the callables
the node gives, the statistics and the diagnostics' content.

`hamer_ros.ros.node` is the ROS shell around it: it declares the parameters, owns the publishers and
subscriptions and drives the lifecycle; `hamer_ros.frame_worker.FrameWorker` is the thread that calls
`process_message` for the newest image and `between_frames` in between. Lifecycle: `configure` builds the pipeline
(loads the models), `start_runner`/`close_runner` bracket one activation, `release` frees the models (cleanup).

With `overlap_detection` (default: when HaMeR runs on CUDA) frames go to `hamer_ros.overlap.OverlappedPipeline`,
which detects hands in frame N+1 while HaMeR runs on frame N. Every output carries the input image's header
(stamp and optical frame).
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticStatus
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from hamer_ros.detection.external_boxes import BoxBuffer, detections_from_boxes_msg, mismatch_text
from hamer_ros.frame_worker import Counters
from hamer_ros.hamer.model import CPU_PRECISIONS, HamerModel, cpu_bf16_problem
from hamer_ros.io import bag_io
from hamer_ros.overlap import OverlappedPipeline
from hamer_ros.pipeline import HandPipeline, faces_by_side
from hamer_ros.provisioning import paths
from hamer_ros.ros import stamp_order
from hamer_ros.ros.camera_info import INVALID_K, SIZE_MISMATCH, camera_info_intrinsics, ignored_distortion
from hamer_ros.ros.image_conversion import ImageRefused, bgr_to_image_msg, compressed_msg_to_bgr, image_msg_to_bgr
from hamer_ros.ros.log_throttle import WarningThrottle
from hamer_ros.ros.markers import MarkerBuilder, MarkerStyle
from hamer_ros.ros.ros_messages import fast_markers_work, hand_mesh_array, serialize_hand_markers
from hamer_ros.ros.stamp_order import StampOrder
from hamer_ros.ros.tf_frames import HandFrameNames, frame_id_for_tf, hand_transforms
from hamer_ros.runtime_tuning import release_freed_memory
from hamer_ros.types import CameraIntrinsics

COUNTERS = ('processed', 'bad_images', 'failed', 'hands_dropped', 'hands', 'dropped_in_pipeline',
            'images_without_boxes', 'boxes_refused')


def usable_precision(precision: str, device: str, cuda_available: bool) -> Tuple[str, Optional[str]]:
    """The precision HaMeR can run with for the `device` parameter, and why `precision` was replaced (else None).

    HamerModel refuses a precision its device cannot run (int8 is PyTorch's CPU dynamic quantisation, fp16 is
    CUDA autocast, bf16 on the CPU needs native bf16 instructions); the node uses fp32 instead, so a mismatch
    costs speed, not the meshes."""
    on_cuda = device == 'cuda' or (device == 'auto' and cuda_available)
    if precision == 'int8' and on_cuda:
        where = 'device is cuda' if device == 'cuda' else 'device auto chose CUDA'
        return 'fp32', (f'precision int8 runs on the CPU only (dynamic quantisation) but {where}: using fp32. '
                        'Set device: cpu for int8, or precision fp16/bf16 for speed on CUDA')
    if precision not in CPU_PRECISIONS and not on_cuda:
        return 'fp32', (f'precision {precision} needs CUDA but HaMeR runs on the CPU (device {device}'
                        f'{", no CUDA available" if device == "auto" else ""}): using fp32. On the CPU, bf16 '
                        '(CPUs with AMX or AVX512_BF16) and int8 are the faster (inexact) choices')
    if precision == 'bf16' and not on_cuda:
        problem = cpu_bf16_problem()
        if problem:
            return 'fp32', problem
    return precision, None


def model_options(value: Callable[[str], Any], cuda_available: bool) -> Tuple[Dict[str, Any], Optional[str]]:
    """Keyword arguments of `HamerModel.load`/`small_random` from the node's parameters (`value(name)`), and the
    problem to log when the precision had to change (`usable_precision`)."""
    precision, problem = usable_precision(value('precision'), value('device'), cuda_available)
    return dict(device=value('device'), precision=precision, threads=value('threads') or None,
                allow_cpu_fallback=value('allow_cpu_fallback'), compile=value('compile')), problem


@dataclass(frozen=True)
class OutputSettings:
    """The run-time-changeable part of the parameters, swapped as a whole so the worker sees one consistent set."""
    mesh: bool
    markers: bool
    tf: bool
    overlay: bool
    frame_prefix: str       # resolved: {namespace} replaced
    tf_frames: str
    marker_style: MarkerStyle
    max_image_pixels: int


class Senders:
    """Where a processed frame goes (the node's publishers; each takes one message, `transforms` a list)."""

    def __init__(self, mesh: Callable, markers: Callable, overlay: Callable, transforms: Callable):
        self.mesh, self.markers, self.overlay, self.transforms = mesh, markers, overlay, transforms


@dataclass(frozen=True)
class Topics:
    """The resolved names of the node's inputs, for messages and diagnostics."""
    image: str
    camera_info: str
    boxes: str


class FrameProcessor:
    """The node's work on frames (module docstring). `value(name)`: a parameter's current value; `log`: a logger
    with info/warning/error/fatal (rclpy's: `warning` takes `throttle_duration_sec`); `now_ns()`: the node's clock."""

    # A detector that failed to start is tried again after 2 s, then twice as long each time, at most 60 s.
    DETECTOR_RETRY_FIRST_S, DETECTOR_RETRY_MAX_S = 2.0, 60.0
    # While a change waits for the frame inside the overlapped model thread, it says so this often (s).
    PAUSE_REPORT_S = 10.0

    def __init__(self, value: Callable[[str], Any], log, now_ns: Callable[[], int], send: Senders, topics: Topics,
                 outputs: OutputSettings):
        self._value, self._log, self._now_ns, self._send = value, log, now_ns, send
        self._image_topic, self._camera_info_topic, self._boxes_topic = topics.image, topics.camera_info, topics.boxes
        self._outputs = outputs
        self._external_mode = value('external_boxes.mode')
        self._box_buffer: Optional[BoxBuffer] = None
        self._closing = threading.Event()       # the node is shutting down: wait for nothing, publish nothing
        self._state_lock = threading.Lock()
        self._model_state, self._model_detail, self._device = 'loading', '', 'cpu'
        self._detector_error: Optional[str] = None
        self._detector_retry_s = self.DETECTOR_RETRY_FIRST_S     # back-off between attempts to start it
        self._next_detector_retry = float('inf')
        self._detector_settings_changed = False
        self.counters = Counters(COUNTERS)
        self.pipeline: Optional[HandPipeline] = None
        self._overlapped: Optional[OverlappedPipeline] = None
        self._latencies = deque(maxlen=300)          # (publish time s, stamp-to-publish latency s)
        self._last_timings: Dict[str, float] = {}
        self._camera_info: Optional[CameraInfo] = None
        self._camera_info_state = 'none received'
        self._camera_info_problem: Optional[str] = None      # the last CameraInfo problem warned about
        self._marker_builder = MarkerBuilder(outputs.marker_style)
        self._markers_lock = threading.Lock()       # the builder remembers what is shown: one user at a time
        self._last_frame_id = ''
        self._stamp_order = StampOrder()
        self._warnings = WarningThrottle()
        self._faces_cache: Tuple[Any, Any] = (None, None)      # (model, its faces by side)
        # TF names that stay with each hand's track while the tracker keeps it.
        self._frame_names = HandFrameNames(hold_frames=value('tracking.max_missed_frames'))
        self._frame_names_lock = threading.Lock()   # reset by the worker, used by whichever thread publishes
        # Checked once per process: does the one-block mesh serialization fit this middleware?
        self._fast_markers = fast_markers_work()
        if not self._fast_markers:
            log.info('mesh markers: using ordinary messages (the fast path does not fit this middleware); expect a '
                     'few ms more per hand')

    # ------------------------------------------------------------------------------------------ lifecycle

    def configure(self) -> None:
        """Loads the models (HaMeR, or landmarks-only with the reason; the hand detector, or a retry scheduled)."""
        self.pipeline = self._build_pipeline()

    def open_boxes(self) -> Optional[BoxBuffer]:
        """A fresh buffer for hands/boxes_in (None in mode ignore): the node's subscription fills it."""
        self._box_buffer = BoxBuffer() if self._external_mode != 'ignore' else None
        return self._box_buffer

    def close_boxes(self) -> None:
        if self._box_buffer is not None:
            self._box_buffer.close()        # an image waiting for its boxes stops waiting

    def start_runner(self) -> None:
        """Before the worker starts: the overlapped runner when detection should overlap HaMeR."""
        self._overlapped = self._make_overlapped(self.pipeline)

    def close_runner(self) -> bool:
        """As the worker ends: waits for the overlapped runner's frame (however long, unless shutting down: then
        0.5 s). False when a stage thread is still inside the model."""
        runner, self._overlapped = self._overlapped, None
        if runner is None:
            return True
        while not runner.close(timeout=0.5 if self._closing.is_set() else self.PAUSE_REPORT_S):
            if self._closing.is_set():
                return False
            self._warn('waiting for the frame inside HaMeR to finish before stopping', 0.0)
        self._count('dropped_in_pipeline', sum(runner.dropped.values()))
        return True

    def release(self) -> None:
        """Cleanup: closes the detector and lets go of the model (their memory goes back to the system)."""
        pipeline, self.pipeline = self.pipeline, None
        if pipeline is not None and pipeline.detector is not None:
            pipeline.detector.close()
        self._faces_cache = (None, None)
        with self._state_lock:
            self._model_state, self._model_detail, self._device = 'unconfigured', '', 'cpu'
        del pipeline
        release_freed_memory()

    def shut_down(self) -> None:
        """From now on nothing waits for the model and nothing is published."""
        self._closing.set()
        self.close_boxes()

    # ------------------------------------------------------------------------------------------ inputs

    def set_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    def set_outputs(self, outputs: OutputSettings, detector_changed: bool, now_stamp) -> None:
        """New run-time settings. Markers switched off: their DELETEALL is sent at once, under the markers lock, so
        that no ADD follows it."""
        previous, self._outputs = self._outputs, outputs
        self._marker_builder.style = outputs.marker_style
        if detector_changed and self._external_mode != 'only':
            self._detector_settings_changed = True     # the worker rebuilds the detector before its next frame
        if previous.markers and not outputs.markers:
            with self._markers_lock:
                deletion = self._marker_builder.delete_all(Header(stamp=now_stamp, frame_id=self._last_frame_id))
                self._send.markers(deletion)

    def between_frames(self) -> None:
        """On the worker, with no frame of its own in flight: a detector rebuild (new thresholds) or retry."""
        pipeline = self.pipeline
        if self._detector_settings_changed:
            self._detector_settings_changed = False
            self._while_paused(pipeline, self._replace_detector)
        elif pipeline.detector is None and time.monotonic() >= self._next_detector_retry:
            self._while_paused(pipeline, self._retry_detector)

    def process_message(self, msg) -> None:
        self._process(self.pipeline, msg)

    def describe_state(self) -> Tuple[str, str, str]:
        with self._state_lock:
            return self._model_state, self._model_detail, self._device

    def set_state(self, state: str, detail: str) -> None:
        with self._state_lock:
            self._model_state, self._model_detail = state, detail

    # ------------------------------------------------------------------------------------------ moved

    def _count(self, name: str, amount: int = 1) -> None:
        """Adds to a diagnostics counter (the worker and both threads of the overlapped runner count)."""
        self.counters.add(name, amount)

    def _warn(self, text: str, period_s: float, kind: Optional[str] = None) -> bool:
        """A warning at most once per `period_s` for each kind of problem (`kind`; None: the text itself), with
        the number held back meanwhile (log_throttle): a stream of bad frames logs once even when the text
        changes from frame to frame, a different kind of problem still logs at once (rclpy's throttling is per
        call site, and one call site reports many kinds). True when it was logged."""
        line = self._warnings.admit(text if kind is None else kind, text, period_s)
        if line is not None:
            self._log.warning(line)
        return line is not None

    def _intrinsics_for(self, width: int, height: int) -> Optional[CameraIntrinsics]:
        """Intrinsics from the latest CameraInfo, or None (the pipeline's default camera) with a warning."""
        info = self._camera_info
        if info is None:
            self._camera_info_state = 'none received'
            self._warn(f'no CameraInfo on {self._camera_info_topic}: using HaMeR\'s default camera (focal '
                       f'5000/256*max(W,H)), so hands are placed at a made-up depth. Publish the camera\'s '
                       f'CameraInfo there or remap camera_info', 10.0, kind='no camera info')
            return None
        rectified = self._value('image_rectified')
        intrinsics, problem = camera_info_intrinsics(info, width, height, rectified=rectified)
        if problem is None:
            self._camera_info_problem = None
            if ignored_distortion(info, rectified):
                self._camera_info_state = 'ok, lens distortion ignored (raw image)'
                self._warn(f'image_rectified is false and the CameraInfo has lens distortion D={list(info.d)}: it '
                           f'is ignored, so hands away from the image centre are misplaced. Feed the rectified '
                           f'image (image_proc: image_rect) with image_rectified true', 60.0,
                           kind='camera info: distortion ignored')
            else:
                self._camera_info_state = 'ok'
            return intrinsics
        self._camera_info_state = {INVALID_K: 'invalid K (ignored)', SIZE_MISMATCH: 'size mismatch (ignored)'}.get(
            problem.kind, 'used, but D has NaN/inf')
        # Once per problem (a driver repeats the same CameraInfo at its frame rate), at most once a second for one
        # kind of problem (a CameraInfo that changes every time); a problem held back is tried again next frame.
        if problem.text != self._camera_info_problem and self._warn(problem.text, 1.0,
                                                                    kind=f'camera info: {problem.kind}'):
            self._camera_info_problem = problem.text
        return intrinsics

    def _make_overlapped(self, pipeline: HandPipeline) -> Optional[OverlappedPipeline]:
        """The two-thread runner when detection should overlap HaMeR (parameter overlap_detection), else None."""
        setting = self._value('overlap_detection')
        on_cuda = pipeline.model is not None and pipeline.model.device.type == 'cuda'
        if setting == 'off' or (setting == 'auto' and not on_cuda):
            return None
        return OverlappedPipeline(pipeline, self._on_overlapped_result, self._on_frame_error)

    def _while_paused(self, pipeline: HandPipeline, change) -> None:
        """Applies `change(pipeline)` (new detector, model, reset) with no frame in flight in the overlapped
        threads, which use the detector and the model without locks."""
        if self._overlapped is not None:
            # Waits for the frame inside the network (it cannot be interrupted) however long it takes: changing
            # the pipeline or starting a second runner while a stage thread still runs would put two threads on
            # one model or detector.
            while not self._overlapped.close(timeout=self.PAUSE_REPORT_S):
                if self._closing.is_set():
                    return      # shutting down: no change, no new runner
                self._warn('waiting for the frame inside HaMeR to finish before changing the pipeline', 0.0)
            self._count('dropped_in_pipeline', sum(self._overlapped.dropped.values()))
        change(pipeline)
        self._overlapped = self._make_overlapped(pipeline)

    def _build_pipeline(self) -> HandPipeline:
        model = self._load_model()
        # external_boxes.mode only: every box comes from hands/boxes_in, MediaPipe is not needed.
        detector = self._make_detector() if self._external_mode != 'only' else None
        tracker = self._make_tracker()
        if self._external_mode == 'only' and model is None:
            self._log.error('external_boxes.mode is only but the HaMeR weights are missing: external boxes '
                            'have no MediaPipe landmarks to place, so no hand can be published until the '
                            'weights are installed (or use mode both)')
        if detector is not None or self._external_mode == 'only':
            mode = 'HaMeR meshes' if model is not None else 'landmarks only'
            self._log.info(f'ready ({mode}): processing {self._image_topic}')
        return HandPipeline(detector, tracker, model)

    def _data_dir(self) -> Path:
        value = self._value('data_dir')
        return Path(value).expanduser() if value else paths.data_dir()

    def _load_model(self):
        """HamerModel, or None (landmarks-only) with a log of what is missing and how to install it."""
        options, problem = model_options(self._value, torch.cuda.is_available())
        if problem:
            self._log.error(problem)
        data_dir = self._data_dir()
        try:
            if self._value('model') == 'small_random':
                model = HamerModel.small_random(seed=0, **options)
            else:
                model = HamerModel.load(data_dir=data_dir, **options)
            model.perspective_correction = self._value('perspective_correction')
        except Exception as exc:    # noqa: BLE001 - missing/broken weights must never take the node down
            with self._state_lock:
                self._model_state, self._model_detail = 'landmarks_only', f'{type(exc).__name__}: {exc}'
                self._device = 'cpu (MediaPipe only)'
            self._log.error(
                f'HaMeR weights not usable: {exc}\n'
                f'  looked in {data_dir} (node parameter data_dir; launch argument data_dir:=<folder>; when empty '
                f'$HAMER_ROS_DATA_DIR or ~/.local/share/hamer_ros/_DATA)\n'
                f'  install them there: python -m hamer_ros setup-weights --data-dir {data_dir}   (downloads them)\n'
                f'    or: python -m hamer_ros setup-weights --from hamer_demo_data.tar.gz --data-dir {data_dir}\n'
                f'  or point the node at a folder that has them: parameter data_dir, e.g. `ros2 launch hamer_ros '
                f'hamer.launch.py data_dir:=/path/to/_DATA`\n'
                f'  (it needs hamer_ckpts/checkpoints/hamer.ckpt, hamer_ckpts/model_config.yaml and '
                f'data/mano/MANO_RIGHT.pkl).\n'
                f'  Running landmarks-only until then (MediaPipe joints on hands/mano, TF and skeleton markers, '
                f'no mesh); to load weights installed meanwhile, take the node through deactivate, cleanup, '
                f'configure, activate (ros2 lifecycle set <node> ...; README "Lifecycle").')
            return None
        with self._state_lock:
            self._model_state, self._model_detail = 'hamer', model.describe()
            self._device = str(model.device)
        self._log.info(f'loaded {model.describe()}')
        return model

    def _retry_detector(self, pipeline: HandPipeline) -> None:
        self._log.info('trying to start the hand detector again')
        pipeline.detector = self._make_detector()
        if pipeline.detector is not None:
            self._log.info(f'hand detector started: processing {self._image_topic}')

    def _make_detector(self):
        """HandDetector, or None with the reason in the log and the diagnostics and the next attempt scheduled
        (back-off). Never provisions the MediaPipe model: that is a set-up step (no fetching while running)."""
        value = self._value
        try:
            from hamer_ros.detection import make_hand_detector

            detector = make_hand_detector(
                model_path=value('detector.model_path') or None, running_mode=value('detector.running_mode'),
                num_hands=value('detector.num_hands'), search=value('detector.search'),
                body_stage=value('detector.body_stage'), palm_min_hand_size=value('detector.palm_min_hand_size'),
                palm_tiles_per_frame=value('detector.palm_tiles_per_frame'),
                person_tiles=value('detector.person_tiles'),
                max_people=value('detector.max_people'), full_search_period=value('detector.full_search_period'),
                mirror_pass=value('detector.mirror_pass'),
                warn=self._log.warning,
                min_detection_confidence=value('detector.min_detection_confidence'),
                min_presence_confidence=value('detector.min_presence_confidence'),
                min_tracking_confidence=value('detector.min_tracking_confidence'),
                mirrored=value('mirrored'), provision_model=False)
        except Exception as exc:    # noqa: BLE001 - report and keep the node (diagnostics, parameters) alive
            retry_s = self._detector_retry_s
            self._next_detector_retry = time.monotonic() + retry_s
            self._detector_retry_s = min(retry_s * 2, self.DETECTOR_RETRY_MAX_S)
            self._detector_error = f'{type(exc).__name__}: {exc} (next try in {retry_s:.0f} s)'
            self._log.error(f'MediaPipe hand detector unavailable, no hands will be found: {exc}. '
                            f'Trying again in {retry_s:.0f} s')
            return None
        self._detector_error = None
        self._detector_retry_s, self._next_detector_retry = self.DETECTOR_RETRY_FIRST_S, float('inf')
        return detector

    def _replace_detector(self, pipeline: HandPipeline) -> None:
        old = pipeline.detector
        if old is not None:
            old.close()         # first: the old graph's memory can then serve the new one
        pipeline.detector = self._make_detector()
        # MediaPipe options are fixed when a graph is built, so new thresholds need a new graph; the old one's
        # memory goes back to the system instead of staying with the process (runtime_tuning).
        release_freed_memory()
        self._log.info('detector thresholds changed: detector rebuilt')

    def _make_tracker(self):
        if not self._value('tracking.enabled'):
            return None
        value = self._value
        try:
            from hamer_ros.detection.tracking import HandTracker
            return HandTracker(min_iou=value('tracking.min_iou'),
                               max_center_distance=value('tracking.max_center_distance'),
                               flip_after_frames=value('tracking.flip_after_frames'),
                               min_flip_score=value('tracking.min_flip_score'),
                               max_missed_frames=value('tracking.max_missed_frames'),
                               max_age_s=value('tracking.max_age_s'))
        except Exception as exc:    # noqa: BLE001 - hands are still published, without track ids
            self._log.error(f'hand tracker unavailable, publishing untracked hands: {exc}')
            return None

    def _process(self, pipeline: HandPipeline, msg) -> None:
        outputs = self._outputs
        header = msg.header
        frame_id, problem = frame_id_for_tf(header.frame_id)
        if problem:
            self._warn(problem, 10.0)
        if frame_id is not None and frame_id != header.frame_id:
            header = Header(stamp=header.stamp, frame_id=frame_id)
        try:
            if isinstance(msg, CompressedImage):
                image = compressed_msg_to_bgr(msg, outputs.max_image_pixels)
            else:
                image = image_msg_to_bgr(msg, outputs.max_image_pixels)
        except ValueError as exc:
            self._count('bad_images')
            kind = exc.kind if isinstance(exc, ImageRefused) else type(exc).__name__
            self._warn(f'skipped an image from {self._image_topic}: {exc}', 5.0, kind=f'bad image: {kind}')
            return
        if pipeline.detector is None and self._external_mode != 'only':
            self._count('failed')
            self._warn(f'frame not processed: no hand detector ({self._detector_error})', 10.0)
            return
        intrinsics = self._intrinsics_for(image.shape[1], image.shape[0])
        stamp_ns = bag_io.stamp_ns(header.stamp)
        given = self._external_hands(stamp_ns, image.shape[1], image.shape[0])
        if given is None:
            return
        self._follow_stamp_order(pipeline, stamp_ns, header.frame_id)
        self._last_frame_id = header.frame_id
        if self._overlapped is not None:
            # Detection and HaMeR run on the runner's threads; `_on_overlapped_result` publishes.
            self._overlapped.submit(image, stamp_ns, intrinsics, context=(header, pipeline), **given)
            return
        try:
            frame = pipeline.process(image, stamp_ns, intrinsics, **given)
        except Exception as exc:    # noqa: BLE001 - one bad frame must not stop the stream
            self._on_frame_error('pipeline', exc, None)
            return
        self._finish(frame, header, image, pipeline, pipeline.last_timings)

    def _follow_stamp_order(self, pipeline: HandPipeline, stamp_ns: int, frame_id: str) -> None:
        """Restarts tracking when the stream starts over; says once when stamps keep going back and forth."""
        event = self._stamp_order.update(stamp_ns, frame_id)
        if event == stamp_order.RESTART:
            # Time went backwards: the camera restarted or a bag was played again. Old tracks would mislead.
            self._log.info('image stamps went backwards: starting tracking afresh')
            self._while_paused(pipeline, HandPipeline.reset)
            with self._frame_names_lock:
                self._frame_names.reset()
        elif event == stamp_order.MIXING_STARTED:
            self._log.warning(
                f'image stamps on {self._image_topic} keep going backwards (frame ids '
                f'{", ".join(repr(i) for i in self._stamp_order.frame_ids)} so far): are two cameras publishing '
                'on this topic? Tracking is no longer restarted for each backward step (track ids will churn); '
                'give each camera its own topic and node')
        elif event == stamp_order.MIXING_ENDED:
            self._log.info(f'image stamps on {self._image_topic} are in order again')

    def _external_hands(self, stamp_ns: int, width: int, height: int) -> Optional[dict]:
        """The options of `HandPipeline.process` that bring in this image's hands from hands/boxes_in ({} in mode
        ignore), or None when the image is to be skipped (mode only, no boxes for it)."""
        if self._box_buffer is None:
            return {}
        value = self._value
        buffer = self._box_buffer
        buffer.tolerance_ns = int(round(value('external_boxes.stamp_tolerance') * 1e9))
        # Mode both does not wait while no boxes arrive (timed out): it keeps its rate with its own search.
        timed_out = self._external_mode == 'both' and buffer.timed_out(value('external_boxes.timeout'))
        wait = 0.0 if timed_out else value('external_boxes.wait')
        found = buffer.wait_for_match(stamp_ns, wait)
        if found.message is None:
            self._count('images_without_boxes')
            text = mismatch_text(stamp_ns, found, buffer.tolerance_ns)
            if self._external_mode == 'only':
                self._log.warning(f'{self._boxes_topic}: {text}. Image skipped (external_boxes.mode only)',
                                  throttle_duration_sec=5.0)
                return None
            self._log.warning(f'{self._boxes_topic}: {text}. Own search only for this image',
                              throttle_duration_sec=5.0)
            return {}
        detections, problems = detections_from_boxes_msg(found.message, width, height)
        if problems:
            self._count('boxes_refused', len(problems))
            self._log.warning(f'{self._boxes_topic}: refused ' + '; '.join(problems),
                              throttle_duration_sec=5.0)
        if self._external_mode == 'only':
            return {'detections': detections}
        return {'added_detections': detections, 'merge_iou': value('external_boxes.merge_iou')}

    def _on_overlapped_result(self, result) -> None:
        header, pipeline = result.context
        self._finish(result.frame, header, result.image, pipeline, result.timings)

    def _on_frame_error(self, stage: str, exc: BaseException, context) -> None:
        self._count('failed')
        self._warn(f'processing a frame failed ({stage}): {type(exc).__name__}: {exc}', 5.0,
                   kind=f'frame failed: {stage}: {type(exc).__name__}')

    def _finish(self, frame, header, image, pipeline: HandPipeline, timings: Dict[str, float]) -> None:
        """Publishes one processed frame and keeps the statistics."""
        outputs = self._outputs
        self._follow_model_device(pipeline)
        for reason in frame.dropped:
            self._warn(f'hand not published: {reason}', 5.0, kind='hand not published')
        self._count('hands_dropped', len(frame.dropped))
        self._count('hands', len(frame.hands))
        if self._closing.is_set():
            return
        start = time.perf_counter()
        try:
            self._publish(frame, header, image, pipeline, outputs)
        except Exception as exc:    # noqa: BLE001
            if self._closing.is_set():     # the context went down under us: shutting down
                return
            self._count('failed')
            self._warn(f'publishing a frame failed: {type(exc).__name__}: {exc}', 5.0,
                       kind=f'publishing failed: {type(exc).__name__}')
            return
        self._last_timings = dict(timings, publish=time.perf_counter() - start)
        latency = (self._now_ns() - bag_io.stamp_ns(header.stamp)) * 1e-9
        self._latencies.append((time.monotonic(), latency))
        self._count('processed')

    def _follow_model_device(self, pipeline: HandPipeline) -> None:
        """After CUDA ran out of memory the model moves itself to the CPU (allow_cpu_fallback): say so in the log
        and the diagnostics."""
        model = pipeline.model
        if model is None or str(model.device) == self._device:
            return
        with self._state_lock:
            self._device, self._model_detail = str(model.device), model.describe()
        self._log.error(f'HaMeR now runs on {model.device} (out of GPU memory; allow_cpu_fallback): '
                        'expect much lower rates. Free GPU memory and restart the node to use the GPU')

    def _publish(self, frame, header, image, pipeline: HandPipeline, outputs: OutputSettings) -> None:
        faces = self._faces(pipeline)
        if outputs.mesh:
            self._send.mesh(hand_mesh_array(frame, header, faces))
        with self._frame_names_lock:
            stems = self._frame_names.stems(frame)      # every frame: names age while their hands are away
        placeable = bool(header.frame_id)       # empty: no TF parent, no marker frame (frame_id_for_tf)
        if outputs.tf and frame.hands and placeable:
            self._send.transforms(hand_transforms(frame, header, outputs.frame_prefix, stems, outputs.tf_frames))
        if outputs.markers and placeable:
            with self._markers_lock:
                # Checked again under the lock: publish.markers switched off meanwhile has already sent (or is
                # waiting to send) its DELETEALL, and no ADD may follow it.
                markers = self._marker_builder.build(frame, header, faces) if self._outputs.markers else None
                if markers is not None and markers.message.markers:
                    self._send.markers(serialize_hand_markers(markers) if self._fast_markers
                                             else markers.filled())
        if outputs.overlay:
            overlay = self._render_overlay(image, frame, pipeline)
            if overlay is not None:
                self._send.overlay(bgr_to_image_msg(overlay, Image(), header))

    def _faces(self, pipeline: HandPipeline):
        model = pipeline.model
        if model is None:
            return None
        if self._faces_cache[0] is not model:
            self._faces_cache = (model, faces_by_side(model.faces))
        return self._faces_cache[1]

    def _render_overlay(self, image, frame, pipeline: HandPipeline):
        try:
            from hamer_ros.io.render import render_overlay
        except ImportError as exc:
            self._warn(f'hands/overlay unavailable: {exc}', 60.0, kind='overlay unavailable')
            return None
        faces = pipeline.model.faces if pipeline.model is not None else None
        return render_overlay(image, frame.hands, frame.intrinsics, faces)

    def diagnostic_status(self, slot_dropped: int) -> Tuple[int, str, Dict[str, str]]:
        """(level, message, values) of the node's DiagnosticStatus; `slot_dropped`: frames the worker's slot
        dropped."""
        now = time.monotonic()
        period = self._value('diagnostics_period')
        # One copy of the deque (the worker appends to it meanwhile), so times and latencies match.
        in_window = [(stamp, latency) for stamp, latency in list(self._latencies)
                     if now - stamp <= max(period, 1.0) * 5]
        window = [stamp for stamp, _ in in_window]
        recent = [latency for _, latency in in_window]
        rate = (len(window) - 1) / (window[-1] - window[0]) if len(window) > 1 and window[-1] > window[0] else 0.0
        with self._state_lock:
            state, detail, device = self._model_state, self._model_detail, self._device
        level, message = DiagnosticStatus.OK, 'running'
        if state == 'landmarks_only':
            level, message = DiagnosticStatus.WARN, 'HaMeR weights missing: landmarks only (no mesh)'
        elif state == 'loading':
            level, message = DiagnosticStatus.WARN, 'loading the models'
        elif state == 'failed':
            level, message = DiagnosticStatus.ERROR, 'processing thread stopped'
        boxes_silent = self._boxes_timed_out()
        if self._detector_error:
            level, message = DiagnosticStatus.ERROR, f'hand detector unavailable: {self._detector_error}'
        elif self._stamp_order.mixed:
            level = max(level, DiagnosticStatus.WARN)
            message = 'image stamps go back and forth: two cameras on one topic?'
        elif boxes_silent is not None:
            level = max(level, DiagnosticStatus.WARN)
            message = (f'no hand boxes on {self._boxes_topic} for {boxes_silent:.1f} s (external_boxes.timeout): is '
                       'the external detector running?')
        elif state in ('hamer', 'landmarks_only') and not recent:
            level = max(level, DiagnosticStatus.WARN)
            message = (f'no images processed recently: is {self._image_topic} publishing? (Fast DDS drops '
                       f'best-effort images over 0.5 MB unless given config/fastdds_large_images.xml)')
        values = {
            'rate (Hz)': f'{rate:.2f}',
            'latency p50 (ms)': f'{np.median(recent) * 1e3:.1f}' if recent else 'n/a',
            'latency max (ms)': f'{np.max(recent) * 1e3:.1f}' if recent else 'n/a',
            'frames processed': str(self.counters['processed']),
            'frames dropped (busy)': str(self._frames_dropped(slot_dropped)),
            'bad images': str(self.counters['bad_images']),
            'frames failed': str(self.counters['failed']),
            'hands published': str(self.counters['hands']),
            'hands dropped (NaN/inf)': str(self.counters['hands_dropped']),
            'device': device,
            'detection overlapped': 'yes' if self._overlapped is not None else 'no',
            'model state': state,
            'model': detail,
            'detector': self._detector_error or ('not used (external_boxes.mode only)'
                                                 if self._external_mode == 'only' else 'ok'),
            'camera info': self._camera_info_state,
            'image stamps': self._stamp_order.describe(),
            'image topic': self._image_topic,
            'external boxes': self._external_mode,
        }
        if self._box_buffer is not None:
            values.update({
                'external boxes topic': self._boxes_topic,
                'box messages received': str(self._box_buffer.received),
                'seconds since last boxes': f'{self._box_buffer.seconds_silent():.1f}',
                'images without matching boxes': str(self.counters['images_without_boxes']),
                'boxes refused': str(self.counters['boxes_refused']),
            })
        values.update({f'stage {name} (ms)': f'{seconds * 1e3:.1f}' for name, seconds in self._last_timings.items()})
        return level, message, values

    def _boxes_timed_out(self) -> Optional[float]:
        """Seconds without hand boxes when past external_boxes.timeout (with a throttled warning), else None."""
        buffer = self._box_buffer
        timeout = self._value('external_boxes.timeout')
        if buffer is None or not buffer.timed_out(timeout):
            return None
        silent = buffer.seconds_silent()
        what = 'since the start' if buffer.last_received_s is None else f'for {silent:.1f} s'
        self._log.warning(f'no hand boxes on {self._boxes_topic} {what} (external_boxes.timeout {timeout} '
                          f's): is the external detector running and publishing hamer_ros/HandBoxArray there?',
                          throttle_duration_sec=10.0)
        return silent

    def _frames_dropped(self, slot_dropped: int) -> int:
        overlapped = self._overlapped
        in_runner = sum(overlapped.dropped.values()) if overlapped is not None else 0
        return slot_dropped + self.counters['dropped_in_pipeline'] + in_runner

"""The hamer_ros node: camera images in, hand meshes, TF frames, RViz markers and diagnostics out.

A thin ROS shell around `hamer_ros.pipeline.HandPipeline`. The subscription callbacks only keep the newest
image (a single-slot buffer: frames that arrive while the model runs replace the waiting one and are counted
as dropped); one worker thread converts, runs the pipeline and publishes, so a slow model never blocks the
executor (parameters, CameraInfo, diagnostics stay responsive) and latency stays bounded at any camera rate.
With `overlap_detection` (default: when HaMeR runs on CUDA) the worker hands each frame to
`hamer_ros.overlap.OverlappedPipeline` instead, which detects hands in frame N+1 while HaMeR runs on frame N.
Every output carries the input image's header (stamp and optical frame).

Topics, parameters and frames: README.md, section "The node". Start with `ros2 launch hamer_ros hamer.launch.py`, or run
`hamer_node --ros-args --params-file config/hamer.yaml -r image:=/camera/image_raw`.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType,
                                SetParametersResult)
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from hamer_ros.detection.external_boxes import BoxBuffer, detections_from_boxes_msg, mismatch_text
from hamer_ros.hamer.model import AUTOCAST_DTYPES, HamerModel
from hamer_ros.io import bag_io
from hamer_ros.msg import HandBoxArray, HandMeshArray
from hamer_ros.overlap import LatestSlot, OverlappedPipeline
from hamer_ros.pipeline import HandPipeline, faces_by_side
from hamer_ros.provisioning import paths
from hamer_ros.ros import stamp_order
from hamer_ros.ros.camera_info import INVALID_K, SIZE_MISMATCH, camera_info_intrinsics, ignored_distortion
from hamer_ros.ros.image_conversion import (ImageRefused, bgr_to_image_msg,
                                            compressed_msg_to_bgr, image_msg_to_bgr)
from hamer_ros.ros.log_throttle import WarningThrottle
from hamer_ros.ros.markers import MarkerBuilder, MarkerStyle
from hamer_ros.ros.parameters import PARAMETERS, Param, check_value
from hamer_ros.ros.ros_messages import fast_markers_work, hand_mesh_array, serialize_hand_markers
from hamer_ros.ros.stamp_order import StampOrder
from hamer_ros.ros.tf_frames import (HandFrameNames, frame_id_for_tf, frame_prefix_for_tf,
                                     hand_transforms, resolve_frame_prefix)
from hamer_ros.runtime_tuning import release_freed_memory
from hamer_ros.types import CameraIntrinsics

# ------------------------------------------------------------------------------------------- parameters

_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
          float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING,
          list: ParameterType.PARAMETER_DOUBLE_ARRAY}


def parameter_descriptor(param: Param) -> ParameterDescriptor:
    """The rclpy descriptor of one row of the parameter table (hamer_ros.ros.parameters)."""
    descriptor = ParameterDescriptor(name=param.name, type=_TYPES[param.type], description=param.description,
                                     read_only=param.read_only)
    if param.choices:
        descriptor.additional_constraints = 'one of: ' + ', '.join(param.choices)
    if param.low is not None and param.type is int:
        descriptor.integer_range = [IntegerRange(from_value=param.low, to_value=param.high, step=1)]
    elif param.low is not None:
        descriptor.floating_point_range = [FloatingPointRange(from_value=float(param.low),
                                                              to_value=float(param.high), step=0.0)]
    return descriptor


def usable_precision(precision: str, device: str, cuda_available: bool) -> Tuple[str, Optional[str]]:
    """The precision HaMeR can run with for the `device` parameter, and why `precision` was replaced (else None).

    HamerModel refuses a precision its device cannot run (int8 is PyTorch's CPU dynamic quantisation, fp16/bf16
    are CUDA autocast); the node uses fp32 instead, so a mismatch costs speed, not the meshes."""
    on_cuda = device == 'cuda' or (device == 'auto' and cuda_available)
    if precision == 'int8' and on_cuda:
        where = 'device is cuda' if device == 'cuda' else 'device auto chose CUDA'
        return 'fp32', (f'precision int8 runs on the CPU only (dynamic quantisation) but {where}: using fp32. '
                        'Set device: cpu for int8, or precision fp16/bf16 for speed on CUDA')
    if precision in AUTOCAST_DTYPES and not on_cuda:
        return 'fp32', (f'precision {precision} needs CUDA but HaMeR runs on the CPU (device {device}'
                        f'{", no CUDA available" if device == "auto" else ""}): using fp32. On the CPU, int8 is '
                        'the faster (inexact) choice')
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


def _folder_fingerprint(folder: Path) -> tuple:
    """Names, sizes and times of the files under `folder`: changes when weights are installed there."""
    entries = []
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                stat = os.stat(os.path.join(root, name))
            except OSError:
                continue
            entries.append((os.path.join(root, name), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(entries))


# ------------------------------------------------------------------------------------------------ node

class HamerNode(Node):
    """Subscribes `image` (or `image/compressed`), `camera_info` and, with external_boxes.mode other than ignore,
    `hands/boxes_in`; publishes `hands/mano`, `hands/markers`, `hands/overlay`, `/tf` and `/diagnostics`."""

    # A detector that failed to start is tried again after 2 s, then twice as long each time, at most 60 s.
    DETECTOR_RETRY_FIRST_S, DETECTOR_RETRY_MAX_S = 2.0, 60.0
    # While a change waits for the frame inside the overlapped model thread, it says so this often (s).
    PAUSE_REPORT_S = 10.0

    def __init__(self, **kwargs):
        super().__init__('hamer_node', **kwargs)
        self._declare_parameters()
        self._outputs = self._read_output_settings()
        # The newest image waiting for the worker: a newer one replaces it (counted as dropped).
        self._slot = LatestSlot()
        self._camera_info: Optional[CameraInfo] = None
        self._stop = threading.Event()
        self._state_lock = threading.Lock()
        self._model_state = 'loading'
        self._model_detail = ''
        self._detector_error: Optional[str] = None
        self._detector_retry_s = self.DETECTOR_RETRY_FIRST_S     # back-off between attempts to start it
        self._next_detector_retry = float('inf')
        self.fatal_error: Optional[str] = None     # why the worker stopped: main() exits non-zero
        self._device = 'cpu'
        self._counters = dict(processed=0, bad_images=0, failed=0, hands_dropped=0, hands=0, dropped_in_pipeline=0,
                              images_without_boxes=0, boxes_refused=0)
        self._overlapped: Optional[OverlappedPipeline] = None
        self._latencies = deque(maxlen=300)          # (publish time s, stamp-to-publish latency s)
        self._last_timings = {}
        self._camera_info_state = 'none received'
        self._camera_info_problem: Optional[str] = None      # the last CameraInfo problem warned about
        self._marker_builder = MarkerBuilder(self._outputs.marker_style)
        self._markers_lock = threading.Lock()       # the builder remembers what is shown: one user at a time
        self._last_frame_id = ''
        self._detector_settings_changed = False
        self._weights_fingerprint: tuple = ()
        self._stamp_order = StampOrder()
        self._warnings = WarningThrottle()
        self._faces_cache: Tuple[Any, Any] = (None, None)      # (model, its faces by side)
        # TF names that stay with each hand's track while the tracker keeps it.
        self._frame_names = HandFrameNames(hold_frames=self.get_parameter('tracking.max_missed_frames').value)
        self._frame_names_lock = threading.Lock()   # reset by the worker, used by whichever thread publishes
        # Checked once per process: does the one-block mesh serialization fit this middleware?
        self._fast_markers = fast_markers_work()
        if not self._fast_markers:
            self.get_logger().info('mesh markers: using ordinary messages (the fast path does not fit this '
                                   'middleware); expect a few ms more per hand')

        self.add_on_set_parameters_callback(self._validate_parameter_change)
        self.add_post_set_parameters_callback(self._apply_parameter_change)

        depth = self.get_parameter('qos_depth').value
        reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.RELIABLE,
                              durability=DurabilityPolicy.VOLATILE)
        overridable = QoSOverridingOptions.with_default_policies()
        self._mesh_pub = self.create_publisher(HandMeshArray, 'hands/mano', reliable,
                                               qos_overriding_options=overridable)
        self._marker_pub = self.create_publisher(MarkerArray, 'hands/markers', reliable,
                                                 qos_overriding_options=overridable)
        self._overlay_pub = self.create_publisher(Image, 'hands/overlay', reliable,
                                                  qos_overriding_options=overridable)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._send_transforms = self._make_tf_sender()

        # REP-2003 sensor data: best effort, keep only the newest frame (stale frames are dropped, not queued).
        sensor = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                            durability=DurabilityPolicy.VOLATILE)
        if self.get_parameter('image_transport').value == 'compressed':
            # As image_transport: the remapped base topic plus /compressed.
            self._image_topic = self.resolve_topic_name('image') + '/compressed'
            image_type = CompressedImage
        else:
            self._image_topic = self.resolve_topic_name('image')
            image_type = Image
        self.create_subscription(image_type, self._image_topic, self._on_image, sensor,
                                 qos_overriding_options=overridable)
        self._camera_info_topic = self.resolve_topic_name('camera_info')
        self.create_subscription(CameraInfo, 'camera_info', self._on_camera_info, sensor,
                                 qos_overriding_options=overridable)
        # Hand boxes of another detector (external_boxes.mode): best effort (accepts reliable publishers too),
        # a few kept, as boxes of several images may arrive together.
        self._external_mode = self.get_parameter('external_boxes.mode').value
        self._box_buffer: Optional[BoxBuffer] = None
        self._boxes_topic = self.resolve_topic_name('hands/boxes_in')
        if self._external_mode != 'ignore':
            self._box_buffer = BoxBuffer()
            boxes_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                                   reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE)
            self.create_subscription(HandBoxArray, 'hands/boxes_in', self._box_buffer.add, boxes_qos,
                                     qos_overriding_options=overridable)

        period = self.get_parameter('diagnostics_period').value
        self.create_timer(period, self._publish_diagnostics)
        self._worker = threading.Thread(target=self._work, name='hamer_worker', daemon=True)
        self._worker.start()
        boxes = f', hand boxes on {self._boxes_topic} ({self._external_mode})' if self._box_buffer else ''
        self.get_logger().info(f'listening to {self._image_topic} ({image_type.__name__}) and '
                               f'{self._camera_info_topic}{boxes}; loading the models')

    # --------------------------------------------------------------------------------------- parameters

    def _declare_parameters(self) -> None:
        for param in PARAMETERS:
            value = self.declare_parameter(param.name, param.default, parameter_descriptor(param)).value
            problem = check_value(param.name, value)
            if problem:
                raise ValueError(f'invalid parameter: {problem}')

    def _read_output_settings(self) -> OutputSettings:
        value = lambda name: self.get_parameter(name).value  # noqa: E731
        style = MarkerStyle(color_left=tuple(value('markers.color_left')),
                            color_right=tuple(value('markers.color_right')), alpha=value('markers.alpha'),
                            joint_diameter=value('markers.joint_diameter'), bone_width=value('markers.bone_width'))
        frame_prefix, problem = frame_prefix_for_tf(value('frame_prefix'))
        if problem:
            self.get_logger().warning(problem)
        return OutputSettings(mesh=value('publish.mesh'), markers=value('publish.markers'), tf=value('publish.tf'),
                              overlay=value('publish.overlay'),
                              frame_prefix=resolve_frame_prefix(frame_prefix, self.get_namespace()),
                              tf_frames=value('publish.tf_frames'), marker_style=style,
                              max_image_pixels=value('max_image_pixels'))

    def _validate_parameter_change(self, parameters) -> SetParametersResult:
        for parameter in parameters:
            problem = check_value(parameter.name, parameter.value)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
        return SetParametersResult(successful=True)

    def _apply_parameter_change(self, parameters) -> None:
        previous = self._outputs
        self._outputs = self._read_output_settings()
        self._marker_builder.style = self._outputs.marker_style
        if previous.markers and not self._outputs.markers:
            header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self._last_frame_id)
            with self._markers_lock:
                self._marker_pub.publish(self._marker_builder.delete_all(header))
        if any(p.name.startswith('detector.') for p in parameters) and self._external_mode != 'only':
            self._detector_settings_changed = True     # the worker rebuilds the detector before its next frame

    def _count(self, name: str, amount: int = 1) -> None:
        """Adds to a diagnostics counter: the worker and both threads of the overlapped runner count, and `+=` on
        a dict item is not atomic."""
        with self._state_lock:
            self._counters[name] += amount

    def _warn(self, text: str, period_s: float, kind: Optional[str] = None) -> bool:
        """A warning at most once per `period_s` for each kind of problem (`kind`; None: the text itself), with
        the number held back meanwhile (log_throttle): a stream of bad frames logs once even when the text
        changes from frame to frame, a different kind of problem still logs at once (rclpy's throttling is per
        call site, and one call site reports many kinds). True when it was logged."""
        line = self._warnings.admit(text if kind is None else kind, text, period_s)
        if line is not None:
            self.get_logger().warning(line)
        return line is not None

    # ------------------------------------------------------------------------------------------ inputs

    def _on_image(self, msg) -> None:
        self._slot.put(msg)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    def _intrinsics_for(self, width: int, height: int) -> Optional[CameraIntrinsics]:
        """Intrinsics from the latest CameraInfo, or None (the pipeline's default camera) with a warning."""
        info = self._camera_info
        if info is None:
            self._camera_info_state = 'none received'
            self._warn(f'no CameraInfo on {self._camera_info_topic}: using HaMeR\'s default camera (focal '
                       f'5000/256*max(W,H)), so hands are placed at a made-up depth. Publish the camera\'s '
                       f'CameraInfo there or remap camera_info', 10.0, kind='no camera info')
            return None
        rectified = self.get_parameter('image_rectified').value
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

    # ------------------------------------------------------------------------------------------ worker

    def _work(self) -> None:
        pipeline = None
        try:
            pipeline = self._build_pipeline()
            self._overlapped = self._make_overlapped(pipeline)
            next_weights_check = time.monotonic() + self._weights_retry_period()
            while not self._stop.is_set():
                item = self._slot.take(timeout=0.1)
                if self._detector_settings_changed:
                    self._detector_settings_changed = False
                    self._while_paused(pipeline, self._replace_detector)
                elif pipeline.detector is None and time.monotonic() >= self._next_detector_retry:
                    self._while_paused(pipeline, self._retry_detector)
                if item is not None:
                    self._process(pipeline, item)
                elif pipeline.landmarks_only and time.monotonic() >= next_weights_check > 0:
                    next_weights_check = time.monotonic() + self._weights_retry_period()
                    # Paused only when there is something to load: pausing rebuilds the overlapped runner.
                    if _folder_fingerprint(self._data_dir()) != self._weights_fingerprint:
                        self._while_paused(pipeline, self._retry_weights)
        except Exception as exc:    # noqa: BLE001 - the worker must report, not vanish silently
            if not self._stop.is_set():
                self.fatal_error = f'{type(exc).__name__}: {exc}'
                self.get_logger().fatal(f'processing thread stopped: {self.fatal_error}. The node exits with '
                                        'status 1 (launch restarts it with respawn:=true)')
                with self._state_lock:
                    self._model_state, self._model_detail = 'failed', self.fatal_error
                # Wakes the executor in main(), which then exits non-zero: a node that no longer processes
                # anything must not look alive.
                self.context.try_shutdown()
        finally:
            idle = self._overlapped is None or self._overlapped.close(timeout=0.5)
            if idle and pipeline is not None and pipeline.detector is not None:
                pipeline.detector.close()

    def _make_overlapped(self, pipeline: HandPipeline) -> Optional[OverlappedPipeline]:
        """The two-thread runner when detection should overlap HaMeR (parameter overlap_detection), else None."""
        setting = self.get_parameter('overlap_detection').value
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
                if self._stop.is_set():
                    return      # shutting down: no change, no new runner
                self._warn('waiting for the frame inside HaMeR to finish before changing the pipeline', 0.0)
            self._count('dropped_in_pipeline', sum(self._overlapped.dropped.values()))
        change(pipeline)
        self._overlapped = self._make_overlapped(pipeline)

    def _weights_retry_period(self) -> float:
        period = self.get_parameter('weights_retry_period').value
        return period if period > 0 and self.get_parameter('model').value == 'hamer' else -1.0

    def _build_pipeline(self) -> HandPipeline:
        model = self._load_model()
        # external_boxes.mode only: every box comes from hands/boxes_in, MediaPipe is not needed.
        detector = self._make_detector() if self._external_mode != 'only' else None
        tracker = self._make_tracker()
        if self._external_mode == 'only' and model is None:
            self.get_logger().error('external_boxes.mode is only but the HaMeR weights are missing: external boxes '
                                    'have no MediaPipe landmarks to place, so no hand can be published until the '
                                    'weights are installed (or use mode both)')
        if detector is not None or self._external_mode == 'only':
            mode = 'HaMeR meshes' if model is not None else 'landmarks only'
            self.get_logger().info(f'ready ({mode}): processing {self._image_topic}')
        return HandPipeline(detector, tracker, model)

    def _data_dir(self) -> Path:
        value = self.get_parameter('data_dir').value
        return Path(value).expanduser() if value else paths.data_dir()

    def _load_model(self):
        """HamerModel, or None (landmarks-only) with a log of what is missing and how to install it."""
        options, problem = model_options(lambda name: self.get_parameter(name).value, torch.cuda.is_available())
        if problem:
            self.get_logger().error(problem)
        data_dir = self._data_dir()
        self._weights_fingerprint = _folder_fingerprint(data_dir)
        try:
            if self.get_parameter('model').value == 'small_random':
                model = HamerModel.small_random(seed=0, **options)
            else:
                model = HamerModel.load(data_dir=data_dir, **options)
            model.perspective_correction = self.get_parameter('perspective_correction').value
        except Exception as exc:    # noqa: BLE001 - missing/broken weights must never take the node down
            with self._state_lock:
                self._model_state, self._model_detail = 'landmarks_only', f'{type(exc).__name__}: {exc}'
                self._device = 'cpu (MediaPipe only)'
            self.get_logger().error(
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
                f'no mesh); installed weights are loaded without a restart (parameter weights_retry_period).')
            return None
        with self._state_lock:
            self._model_state, self._model_detail = 'hamer', model.describe()
            self._device = str(model.device)
        self.get_logger().info(f'loaded {model.describe()}')
        return model

    def _retry_weights(self, pipeline: HandPipeline) -> None:
        self.get_logger().info(f'files changed in {self._data_dir()}: trying to load the HaMeR weights again')
        pipeline.model = self._load_model()

    def _retry_detector(self, pipeline: HandPipeline) -> None:
        self.get_logger().info('trying to start the hand detector again')
        pipeline.detector = self._make_detector()
        if pipeline.detector is not None:
            self.get_logger().info(f'hand detector started: processing {self._image_topic}')

    def _make_detector(self):
        """HandDetector, or None with the reason in the log and the diagnostics and the next attempt scheduled
        (back-off). Never provisions the MediaPipe model: that is a set-up step (no fetching while running)."""
        value = lambda name: self.get_parameter(name).value  # noqa: E731
        try:
            from hamer_ros.detection import make_hand_detector

            detector = make_hand_detector(
                model_path=value('detector.model_path') or None, running_mode=value('detector.running_mode'),
                num_hands=value('detector.num_hands'), search=value('detector.search'),
                body_stage=value('detector.body_stage'), palm_tiles=value('detector.palm_tiles'),
                person_tiles=value('detector.person_tiles'),
                max_people=value('detector.max_people'), full_search_period=value('detector.full_search_period'),
                warn=self.get_logger().warning,
                min_detection_confidence=value('detector.min_detection_confidence'),
                min_presence_confidence=value('detector.min_presence_confidence'),
                min_tracking_confidence=value('detector.min_tracking_confidence'),
                mirrored=value('mirrored'), provision_model=False)
        except Exception as exc:    # noqa: BLE001 - report and keep the node (diagnostics, parameters) alive
            retry_s = self._detector_retry_s
            self._next_detector_retry = time.monotonic() + retry_s
            self._detector_retry_s = min(retry_s * 2, self.DETECTOR_RETRY_MAX_S)
            self._detector_error = f'{type(exc).__name__}: {exc} (next try in {retry_s:.0f} s)'
            self.get_logger().error(f'MediaPipe hand detector unavailable, no hands will be found: {exc}. '
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
        self.get_logger().info('detector thresholds changed: detector rebuilt')

    def _make_tracker(self):
        if not self.get_parameter('tracking.enabled').value:
            return None
        value = lambda name: self.get_parameter(name).value  # noqa: E731
        try:
            from hamer_ros.detection.tracking import HandTracker
            return HandTracker(min_iou=value('tracking.min_iou'),
                               max_center_distance=value('tracking.max_center_distance'),
                               flip_after_frames=value('tracking.flip_after_frames'),
                               min_flip_score=value('tracking.min_flip_score'),
                               max_missed_frames=value('tracking.max_missed_frames'),
                               max_age_s=value('tracking.max_age_s'))
        except Exception as exc:    # noqa: BLE001 - hands are still published, without track ids
            self.get_logger().error(f'hand tracker unavailable, publishing untracked hands: {exc}')
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
            self.get_logger().info('image stamps went backwards: starting tracking afresh')
            self._while_paused(pipeline, HandPipeline.reset)
            with self._frame_names_lock:
                self._frame_names.reset()
        elif event == stamp_order.MIXING_STARTED:
            self.get_logger().warning(
                f'image stamps on {self._image_topic} keep going backwards (frame ids '
                f'{", ".join(repr(i) for i in self._stamp_order.frame_ids)} so far): are two cameras publishing '
                'on this topic? Tracking is no longer restarted for each backward step (track ids will churn); '
                'give each camera its own topic and node')
        elif event == stamp_order.MIXING_ENDED:
            self.get_logger().info(f'image stamps on {self._image_topic} are in order again')

    def _external_hands(self, stamp_ns: int, width: int, height: int) -> Optional[dict]:
        """The options of `HandPipeline.process` that bring in this image's hands from hands/boxes_in ({} in mode
        ignore), or None when the image is to be skipped (mode only, no boxes for it)."""
        if self._box_buffer is None:
            return {}
        value = lambda name: self.get_parameter(name).value  # noqa: E731
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
                self.get_logger().warning(f'{self._boxes_topic}: {text}. Image skipped (external_boxes.mode only)',
                                          throttle_duration_sec=5.0)
                return None
            self.get_logger().warning(f'{self._boxes_topic}: {text}. Own search only for this image',
                                      throttle_duration_sec=5.0)
            return {}
        detections, problems = detections_from_boxes_msg(found.message, width, height)
        if problems:
            self._count('boxes_refused', len(problems))
            self.get_logger().warning(f'{self._boxes_topic}: refused ' + '; '.join(problems),
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
        if self._stop.is_set():
            return
        start = time.perf_counter()
        try:
            self._publish(frame, header, image, pipeline, outputs)
        except Exception as exc:    # noqa: BLE001
            if self._stop.is_set():     # the context went down under us: shutting down
                return
            self._count('failed')
            self._warn(f'publishing a frame failed: {type(exc).__name__}: {exc}', 5.0,
                       kind=f'publishing failed: {type(exc).__name__}')
            return
        self._last_timings = dict(timings, publish=time.perf_counter() - start)
        latency = (self.get_clock().now().nanoseconds - bag_io.stamp_ns(header.stamp)) * 1e-9
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
        self.get_logger().error(f'HaMeR now runs on {model.device} (out of GPU memory; allow_cpu_fallback): '
                                'expect much lower rates. Free GPU memory and restart the node to use the GPU')

    def _publish(self, frame, header, image, pipeline: HandPipeline, outputs: OutputSettings) -> None:
        faces = self._faces(pipeline)
        if outputs.mesh:
            self._mesh_pub.publish(hand_mesh_array(frame, header, faces))
        with self._frame_names_lock:
            stems = self._frame_names.stems(frame)      # every frame: names age while their hands are away
        placeable = bool(header.frame_id)       # empty: no TF parent, no marker frame (frame_id_for_tf)
        if outputs.tf and frame.hands and placeable:
            self._send_transforms(hand_transforms(frame, header, outputs.frame_prefix, stems, outputs.tf_frames))
        if outputs.markers and placeable:
            with self._markers_lock:
                # Checked again under the lock: publish.markers switched off meanwhile has already sent (or is
                # waiting to send) its DELETEALL, and no ADD may follow it.
                markers = self._marker_builder.build(frame, header, faces) if self._outputs.markers else None
                if markers is not None and markers.message.markers:
                    self._marker_pub.publish(serialize_hand_markers(markers) if self._fast_markers
                                             else markers.filled())
        if outputs.overlay:
            overlay = self._render_overlay(image, frame, pipeline)
            if overlay is not None:
                self._overlay_pub.publish(bgr_to_image_msg(overlay, Image(), header))

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

    def _make_tf_sender(self):
        """tf2_ros's broadcaster on a ROS install; without tf2_ros, the same TFMessage on /tf (the PyPI test
        environment has no tf2_ros). Said in the log: on a ROS install it means tf2_ros_py is missing."""
        try:
            from tf2_ros import TransformBroadcaster
        except ImportError as exc:
            from tf2_msgs.msg import TFMessage

            self.get_logger().warning(
                f'tf2_ros is not importable ({exc}): publishing TFMessage on /tf directly (same topic, type and '
                'QoS). On a ROS install this means the package tf2_ros_py is missing: rosdep install --from-paths '
                'src --ignore-src, or apt install ros-$ROS_DISTRO-tf2-ros-py')

            # tf2_ros's own /tf QoS: reliable, volatile, depth 100.
            publisher = self.create_publisher(TFMessage, '/tf', QoSProfile(
                depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE))
            return lambda transforms: publisher.publish(TFMessage(transforms=transforms))
        return TransformBroadcaster(self).sendTransform

    # ------------------------------------------------------------------------------------- diagnostics

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        period = self.get_parameter('diagnostics_period').value
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
            'frames processed': str(self._counters['processed']),
            'frames dropped (busy)': str(self._frames_dropped()),
            'bad images': str(self._counters['bad_images']),
            'frames failed': str(self._counters['failed']),
            'hands published': str(self._counters['hands']),
            'hands dropped (NaN/inf)': str(self._counters['hands_dropped']),
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
                'images without matching boxes': str(self._counters['images_without_boxes']),
                'boxes refused': str(self._counters['boxes_refused']),
            })
        values.update({f'stage {name} (ms)': f'{seconds * 1e3:.1f}' for name, seconds in self._last_timings.items()})
        status = DiagnosticStatus(level=level, name=f'{self.get_fully_qualified_name()}: hand meshes',
                                  message=message, hardware_id=device,
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        array_msg = DiagnosticArray(status=[status])
        array_msg.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(array_msg)

    def _boxes_timed_out(self) -> Optional[float]:
        """Seconds without hand boxes when past external_boxes.timeout (with a throttled warning), else None."""
        buffer = self._box_buffer
        timeout = self.get_parameter('external_boxes.timeout').value
        if buffer is None or not buffer.timed_out(timeout):
            return None
        silent = buffer.seconds_silent()
        what = 'since the start' if buffer.last_received_s is None else f'for {silent:.1f} s'
        self.get_logger().warning(f'no hand boxes on {self._boxes_topic} {what} (external_boxes.timeout {timeout} '
                                  f's): is the external detector running and publishing hamer_ros/HandBoxArray there?',
                                  throttle_duration_sec=10.0)
        return silent

    # ---------------------------------------------------------------------------------------- shutdown

    def _frames_dropped(self) -> int:
        overlapped = self._overlapped
        in_runner = sum(overlapped.dropped.values()) if overlapped is not None else 0
        return self._slot.dropped + self._counters['dropped_in_pipeline'] + in_runner

    def stop(self, timeout: float) -> bool:
        """Stops the worker; False when it is still busy (inside the model) after `timeout` seconds."""
        self._stop.set()
        if self._box_buffer is not None:
            self._box_buffer.close()        # an image waiting for its boxes stops waiting
        self._worker.join(timeout)
        return not self._worker.is_alive()


def main(argv=None) -> int:
    _absorb_stop_signals()
    rclpy.init(args=argv)
    try:
        node = HamerNode()
    except Exception as exc:    # noqa: BLE001 - a bad parameter file: say what is wrong, no traceback
        print(f'hamer_node: {type(exc).__name__}: {exc}', file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # From here on a second SIGINT/SIGTERM (launch forwards one to the process group, a service manager
        # may repeat its own) must not interrupt the shutdown with a KeyboardInterrupt traceback: the node is
        # stopping already, within the time below.
        _ignore_stop_signals()
        # SIGINT/SIGTERM shut the context down (rclpy's handlers); give the worker 1 s to finish its frame
        # (a forward pass cannot be interrupted: a worker still inside the network is left behind).
        finished = node.stop(timeout=1.0)
        if not finished:
            node.get_logger().info('stopping in the middle of a frame: it is not published')
        status = 0
        if node.fatal_error is not None:
            status = 1
            node.get_logger().fatal(f'exiting with status 1: the processing thread stopped ({node.fatal_error})')
        node.destroy_node()
        rclpy.try_shutdown()
    # Everything the node opened is closed now. Skip the interpreter's own teardown: with torch and MediaPipe
    # loaded it takes 1-2 s (measured), longer than the 2 s a node gets to stop, and it would wait on a worker
    # still inside the network.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _absorb_stop_signals() -> None:
    """Python-level SIGINT/SIGTERM handlers that do nothing, installed before rclpy.init. rclpy's own handlers
    (installed on top by rclpy.init) shut the context down, which ends the executor's spin, and then call the
    handler that was there before them: Python's default would raise KeyboardInterrupt wherever the main thread
    is, e.g. in the middle of the shutdown when a second signal comes."""
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda signum, frame: None)


def _ignore_stop_signals() -> None:
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)

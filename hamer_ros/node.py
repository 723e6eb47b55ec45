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
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

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

from hamer_ros import bag_io, paths
from hamer_ros.camera_info import INVALID_K, SIZE_MISMATCH, camera_info_intrinsics
from hamer_ros.hamer.model import CPU_PRECISIONS, PRECISIONS, HamerModel, cpu_bf16_problem
from hamer_ros.image_conversion import DEFAULT_MAX_PIXELS, bgr_to_image_msg, compressed_msg_to_bgr, image_msg_to_bgr
from hamer_ros.markers import MarkerBuilder, MarkerStyle
from hamer_ros.overlap import LatestSlot, OverlappedPipeline
from hamer_ros.msg import HandMeshArray
from hamer_ros.pipeline import HandPipeline, faces_by_side
from hamer_ros.ros_messages import fast_markers_work, hand_mesh_array, serialize_hand_markers
from hamer_ros.tf_frames import hand_transforms
from hamer_ros.types import CameraIntrinsics

# ------------------------------------------------------------------------------------------- parameters

_STRING_CHOICES = {
    'model': ('hamer', 'small_random'),
    'device': ('auto', 'cpu', 'cuda'),
    'precision': PRECISIONS,
    'image_transport': ('raw', 'compressed'),
    'detector.running_mode': ('video', 'image'),
    'overlap_detection': ('auto', 'on', 'off'),
}


def _float_range(low: float, high: float) -> dict:
    return {'floating_point_range': [FloatingPointRange(from_value=low, to_value=high, step=0.0)]}


def _int_range(low: int, high: int) -> dict:
    return {'integer_range': [IntegerRange(from_value=low, to_value=high, step=1)]}


# name, default, read-only, description, constraints. Read-only: fixed for the node's lifetime (they decide
# what is loaded or subscribed); the others may be changed at run time with `ros2 param set`.
PARAMETERS: List[Tuple[str, Any, bool, str, dict]] = [
    ('model', 'hamer', True, 'hamer: the HaMeR weights in data_dir. small_random: a small network with random '
     'weights and a synthetic MANO, for tests and benchmarks only (its meshes mean nothing)', {}),
    ('data_dir', '', True, 'HaMeR data folder (layout of the official _DATA: hamer_ckpts/, data/mano/); empty: '
     '$HAMER_ROS_DATA_DIR, else ~/.local/share/hamer_ros/_DATA', {}),
    ('device', 'auto', True, 'compute device for HaMeR: auto (cuda when available), cpu or cuda', {}),
    ('precision', 'fp32', True, 'HaMeR precision: fp32 (matches the official model); fp16: CUDA autocast; bf16: '
     'CUDA autocast, or on CPUs with AMX/AVX512_BF16 the network weights in bf16 (faster, not exact: vertices '
     'move by about a millimetre); int8: CPU only, dynamic quantisation (faster, not exact; opt-in). A precision '
     'the device cannot run is logged as an error and fp32 is used', {}),
    ('threads', 0, True, 'CPU threads for PyTorch; 0: its default', _int_range(0, 256)),
    ('allow_cpu_fallback', True, True, 'when CUDA runs out of memory even for one hand (after smaller batches), '
     'move HaMeR to the CPU (fp32, much slower) and go on; false: those frames fail with an error', {}),
    ('compile', False, True, 'wrap HaMeR in torch.compile (CUDA graphs on CUDA): the first frame with 1, 2, 3-4, '
     '... hands takes seconds to minutes (compilation), later ones may run faster', {}),
    ('overlap_detection', 'auto', True, 'detect hands in frame N+1 while HaMeR runs on frame N (two threads): on, '
     'off, or auto = on when HaMeR runs on CUDA (on a CPU both stages share the same cores)', {}),
    ('image_transport', 'raw', True, 'raw: sensor_msgs/Image on `image`; compressed: '
     'sensor_msgs/CompressedImage on `image` + /compressed (as image_transport names it)', {}),
    ('max_image_pixels', DEFAULT_MAX_PIXELS, False, 'larger images are refused with a warning (pixels)',
     _int_range(1, 2 ** 31 - 1)),
    ('mirrored', False, True, 'the camera image is mirrored (selfie view): the detector swaps hand sides', {}),
    ('detector.model_path', '', True, 'MediaPipe hand_landmarker.task; empty: the project\'s own, built into the '
     'cache on first use', {}),
    ('detector.running_mode', 'video', True, 'video: MediaPipe follows hands between frames (faster); image: every '
     'frame on its own', {}),
    ('detector.num_hands', 2, True, 'most hands MediaPipe reports per image', _int_range(1, 8)),
    ('detector.min_detection_confidence', 0.5, False, 'MediaPipe palm detection threshold', _float_range(0.0, 1.0)),
    ('detector.min_presence_confidence', 0.5, False, 'MediaPipe hand presence threshold', _float_range(0.0, 1.0)),
    ('detector.min_tracking_confidence', 0.5, False, 'MediaPipe landmark tracking threshold', _float_range(0.0, 1.0)),
    ('tracking.enabled', True, True, 'give hands stable track ids and stabilise their side labels', {}),
    ('tracking.min_iou', 0.1, True, 'a detection overlapping a track at least this much may continue it',
     _float_range(0.0, 1.0)),
    ('tracking.max_center_distance', 1.0, True, '...or one whose centre is at most this many track-box '
     'diagonals away', _float_range(0.0, 100.0)),
    ('tracking.flip_after_frames', 3, True, 'a track\'s side changes only after this many consecutive contrary '
     'frames', _int_range(1, 1000)),
    ('tracking.min_flip_score', 0.6, True, 'contrary side labels below this confidence are ignored',
     _float_range(0.0, 1.0)),
    ('tracking.max_missed_frames', 5, True, 'a track unseen for more frames than this is dropped',
     _int_range(0, 1000)),
    ('tracking.max_age_s', 3.0, True, '...or unseen for longer than this (s, by image stamps)',
     _float_range(0.001, 3600.0)),
    ('publish.mesh', True, False, 'publish hands/mano (HandMeshArray)', {}),
    ('publish.markers', True, False, 'publish hands/markers (RViz MarkerArray)', {}),
    ('publish.tf', True, False, 'broadcast one TF frame per joint per hand', {}),
    ('publish.overlay', False, False, 'publish hands/overlay: the image with the meshes drawn (costs CPU)', {}),
    ('frame_prefix', 'hand_', False, 'TF frame names: <frame_prefix><side>_<joint>, e.g. hand_right_wrist', {}),
    ('markers.color_left', [0.96, 0.69, 0.51], False, 'RGB in [0, 1] of left hands in RViz', {}),
    ('markers.color_right', [0.65, 0.74, 0.86], False, 'RGB in [0, 1] of right hands in RViz', {}),
    ('markers.alpha', 1.0, False, 'mesh opacity in RViz', _float_range(0.0, 1.0)),
    ('markers.joint_diameter', 0.008, False, 'joint sphere diameter (m)', _float_range(0.0, 0.1)),
    ('markers.bone_width', 0.004, False, 'skeleton line width (m)', _float_range(0.0, 0.1)),
    ('qos_depth', 5, True, 'queue depth of the reliable outputs (hands/mano, hands/markers, hands/overlay)',
     _int_range(1, 1000)),
    ('diagnostics_period', 1.0, True, 'seconds between /diagnostics messages', _float_range(0.1, 60.0)),
    ('weights_retry_period', 10.0, True, 'landmarks-only mode: seconds between checks whether the HaMeR weights '
     'appeared in data_dir (loaded without a restart); 0: never', _float_range(0.0, 3600.0)),
]

_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
          float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING,
          list: ParameterType.PARAMETER_DOUBLE_ARRAY}


def _check_value(name: str, value) -> Optional[str]:
    """Why a parameter value is invalid beyond its type and range (None when it is fine)."""
    if name in _STRING_CHOICES and value not in _STRING_CHOICES[name]:
        return f'{name} must be one of {", ".join(_STRING_CHOICES[name])}, got {value!r}'
    if name.startswith('markers.color_') and (len(value) != 3 or not all(0.0 <= v <= 1.0 for v in value)):
        return f'{name} must be three numbers in [0, 1] (RGB), got {list(value)}'
    if name == 'frame_prefix' and any(c.isspace() for c in value):
        return f'frame_prefix must not contain spaces, got {value!r}'
    return None


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
    frame_prefix: str
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
    """Subscribes `image` (or `image/compressed`) and `camera_info`; publishes `hands/mano`, `hands/markers`,
    `hands/overlay`, `/tf` and `/diagnostics`."""

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
        self._device = 'cpu'
        self._counters = dict(processed=0, bad_images=0, failed=0, hands_dropped=0, hands=0, dropped_in_pipeline=0)
        self._overlapped: Optional[OverlappedPipeline] = None
        self._latencies = deque(maxlen=300)          # (publish time s, stamp-to-publish latency s)
        self._last_timings = {}
        self._camera_info_state = 'none received'
        self._marker_builder = MarkerBuilder(self._outputs.marker_style)
        self._markers_lock = threading.Lock()       # the builder remembers what is shown: one user at a time
        self._last_frame_id = ''
        self._detector_settings_changed = False
        self._weights_fingerprint: tuple = ()
        self._last_stamp_ns = -1
        self._warned_at: Dict[str, float] = {}
        self._faces_cache: Tuple[Any, Any] = (None, None)      # (model, its faces by side)
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

        period = self.get_parameter('diagnostics_period').value
        self.create_timer(period, self._publish_diagnostics)
        self._worker = threading.Thread(target=self._work, name='hamer_worker', daemon=True)
        self._worker.start()
        self.get_logger().info(f'listening to {self._image_topic} ({image_type.__name__}) and '
                               f'{self._camera_info_topic}; loading the models')

    # --------------------------------------------------------------------------------------- parameters

    def _declare_parameters(self) -> None:
        for name, default, read_only, description, constraints in PARAMETERS:
            descriptor = ParameterDescriptor(name=name, type=_TYPES[type(default)], description=description,
                                             read_only=read_only, **constraints)
            if name in _STRING_CHOICES:
                descriptor.additional_constraints = 'one of: ' + ', '.join(_STRING_CHOICES[name])
            value = self.declare_parameter(name, default, descriptor).value
            problem = _check_value(name, value)
            if problem:
                raise ValueError(f'invalid parameter: {problem}')

    def _read_output_settings(self) -> OutputSettings:
        value = lambda name: self.get_parameter(name).value  # noqa: E731
        style = MarkerStyle(color_left=tuple(value('markers.color_left')),
                            color_right=tuple(value('markers.color_right')), alpha=value('markers.alpha'),
                            joint_diameter=value('markers.joint_diameter'), bone_width=value('markers.bone_width'))
        return OutputSettings(mesh=value('publish.mesh'), markers=value('publish.markers'), tf=value('publish.tf'),
                              overlay=value('publish.overlay'), frame_prefix=value('frame_prefix'),
                              marker_style=style, max_image_pixels=value('max_image_pixels'))

    def _validate_parameter_change(self, parameters) -> SetParametersResult:
        for parameter in parameters:
            problem = _check_value(parameter.name, parameter.value)
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
        if any(p.name.startswith('detector.') for p in parameters):
            self._detector_settings_changed = True     # the worker rebuilds the detector before its next frame

    def _count(self, name: str, amount: int = 1) -> None:
        """Adds to a diagnostics counter: the worker and both threads of the overlapped runner count, and `+=` on
        a dict item is not atomic."""
        with self._state_lock:
            self._counters[name] += amount

    def _warn(self, text: str, period_s: float) -> None:
        """A warning at most once per `period_s` for each distinct text: a stream of the same bad frame logs
        once, a different problem still logs at once (rclpy's throttling is per call site, not per text)."""
        now = time.monotonic()
        if now - self._warned_at.get(text, float('-inf')) >= period_s:
            if len(self._warned_at) > 256:      # texts with changing numbers must not grow it forever
                self._warned_at.clear()
            self._warned_at[text] = now
            self.get_logger().warning(text)

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
                       f'CameraInfo there or remap camera_info', 10.0)
            return None
        intrinsics, problem = camera_info_intrinsics(info, width, height)
        if problem == INVALID_K:
            self._camera_info_state = 'invalid K (ignored)'
            self._warn(f'ignoring CameraInfo with an unusable K {list(info.k)} (needs finite values and fx, fy > 0): '
                       f'using the default camera. Calibrate the camera (camera_calibration)', 10.0)
        elif problem == SIZE_MISMATCH:
            self._camera_info_state = 'size mismatch (ignored)'
            self._warn(f'ignoring CameraInfo for {info.width}x{info.height} images: the image is {width}x{height}. '
                       f'Is camera_info remapped to the same camera (and resolution)?', 10.0)
        else:
            self._camera_info_state = 'ok'
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
                if item is not None:
                    self._process(pipeline, item)
                elif pipeline.landmarks_only and time.monotonic() >= next_weights_check > 0:
                    next_weights_check = time.monotonic() + self._weights_retry_period()
                    # Paused only when there is something to load: pausing rebuilds the overlapped runner.
                    if _folder_fingerprint(self._data_dir()) != self._weights_fingerprint:
                        self._while_paused(pipeline, self._retry_weights)
        except Exception as exc:    # noqa: BLE001 - the worker must report, not vanish silently
            if not self._stop.is_set():
                self.get_logger().fatal(f'processing thread stopped: {type(exc).__name__}: {exc}')
                with self._state_lock:
                    self._model_state, self._model_detail = 'failed', f'{type(exc).__name__}: {exc}'
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
            self._overlapped.close(timeout=10.0)      # lets the frame inside the network finish
            self._count('dropped_in_pipeline', sum(self._overlapped.dropped.values()))
        change(pipeline)
        self._overlapped = self._make_overlapped(pipeline)

    def _weights_retry_period(self) -> float:
        period = self.get_parameter('weights_retry_period').value
        return period if period > 0 and self.get_parameter('model').value == 'hamer' else -1.0

    def _build_pipeline(self) -> HandPipeline:
        model = self._load_model()
        detector = self._make_detector()
        tracker = self._make_tracker()
        if detector is not None:
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
        except Exception as exc:    # noqa: BLE001 - missing/broken weights must never take the node down
            with self._state_lock:
                self._model_state, self._model_detail = 'landmarks_only', f'{type(exc).__name__}: {exc}'
                self._device = 'cpu (MediaPipe only)'
            self.get_logger().error(
                f'HaMeR weights not usable: {exc}\n'
                f'  data_dir: {data_dir}\n'
                f'  install them: python -m hamer_ros setup-weights --data-dir {data_dir}   (downloads them)\n'
                f'    or: python -m hamer_ros setup-weights --from hamer_demo_data.tar.gz --data-dir {data_dir}\n'
                f'  (or set the data_dir parameter to a folder with hamer_ckpts/checkpoints/hamer.ckpt,\n'
                f'   hamer_ckpts/model_config.yaml and data/mano/MANO_RIGHT.pkl).\n'
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

    def _make_detector(self):
        value = lambda name: self.get_parameter(name).value  # noqa: E731
        try:
            from hamer_ros.detection import HandDetector

            detector = HandDetector(
                model_path=value('detector.model_path') or None, running_mode=value('detector.running_mode'),
                num_hands=value('detector.num_hands'),
                min_detection_confidence=value('detector.min_detection_confidence'),
                min_presence_confidence=value('detector.min_presence_confidence'),
                min_tracking_confidence=value('detector.min_tracking_confidence'),
                mirrored=value('mirrored'))
        except Exception as exc:    # noqa: BLE001 - report and keep the node (diagnostics, parameters) alive
            self._detector_error = f'{type(exc).__name__}: {exc}'
            self.get_logger().error(f'MediaPipe hand detector unavailable, no hands will be found: {exc}')
            return None
        self._detector_error = None
        return detector

    def _replace_detector(self, pipeline: HandPipeline) -> None:
        old = pipeline.detector
        pipeline.detector = self._make_detector()
        if old is not None:
            old.close()
        self.get_logger().info('detector thresholds changed: detector rebuilt')

    def _make_tracker(self):
        if not self.get_parameter('tracking.enabled').value:
            return None
        value = lambda name: self.get_parameter(name).value  # noqa: E731
        try:
            from hamer_ros.tracking import HandTracker
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
        try:
            if isinstance(msg, CompressedImage):
                image = compressed_msg_to_bgr(msg, outputs.max_image_pixels)
            else:
                image = image_msg_to_bgr(msg, outputs.max_image_pixels)
        except ValueError as exc:
            self._count('bad_images')
            self._warn(f'skipped an image from {self._image_topic}: {exc}', 5.0)
            return
        if pipeline.detector is None:
            self._count('failed')
            return
        intrinsics = self._intrinsics_for(image.shape[1], image.shape[0])
        stamp_ns = bag_io.stamp_ns(header.stamp)
        if stamp_ns < self._last_stamp_ns:
            # Time went backwards: the camera restarted or a bag was played again. Old tracks would mislead.
            self.get_logger().info('image stamps went backwards: starting tracking afresh')
            self._while_paused(pipeline, HandPipeline.reset)
        self._last_stamp_ns = stamp_ns
        self._last_frame_id = header.frame_id
        if self._overlapped is not None:
            # Detection and HaMeR run on the runner's threads; `_on_overlapped_result` publishes.
            self._overlapped.submit(image, stamp_ns, intrinsics, context=(header, pipeline))
            return
        try:
            frame = pipeline.process(image, stamp_ns, intrinsics)
        except Exception as exc:    # noqa: BLE001 - one bad frame must not stop the stream
            self._on_frame_error('pipeline', exc, None)
            return
        self._finish(frame, header, image, pipeline, pipeline.last_timings)

    def _on_overlapped_result(self, result) -> None:
        header, pipeline = result.context
        self._finish(result.frame, header, result.image, pipeline, result.timings)

    def _on_frame_error(self, stage: str, exc: BaseException, context) -> None:
        self._count('failed')
        self._warn(f'processing a frame failed ({stage}): {type(exc).__name__}: {exc}', 5.0)

    def _finish(self, frame, header, image, pipeline: HandPipeline, timings: Dict[str, float]) -> None:
        """Publishes one processed frame and keeps the statistics."""
        outputs = self._outputs
        self._follow_model_device(pipeline)
        for reason in frame.dropped:
            self._warn(f'hand not published: {reason}', 5.0)
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
            self._warn(f'publishing a frame failed: {type(exc).__name__}: {exc}', 5.0)
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
        if outputs.tf and frame.hands:
            self._send_transforms(hand_transforms(frame, header, outputs.frame_prefix))
        if outputs.markers:
            with self._markers_lock:
                markers = self._marker_builder.build(frame, header, faces)
                if markers.message.markers:
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
            from hamer_ros.render import render_overlay
        except ImportError as exc:
            self._warn(f'hands/overlay unavailable: {exc}', 60.0)
            return None
        faces = pipeline.model.faces if pipeline.model is not None else None
        return render_overlay(image, frame.hands, frame.intrinsics, faces)

    def _make_tf_sender(self):
        """tf2_ros's broadcaster on a ROS install; without tf2_ros, the same TFMessage on /tf (ROS2_ENV.md)."""
        try:
            from tf2_ros import TransformBroadcaster
        except ImportError:
            from tf2_msgs.msg import TFMessage

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
        if self._detector_error:
            level, message = DiagnosticStatus.ERROR, 'hand detector unavailable'
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
            'detector': self._detector_error or 'ok',
            'camera info': self._camera_info_state,
            'image topic': self._image_topic,
        }
        values.update({f'stage {name} (ms)': f'{seconds * 1e3:.1f}' for name, seconds in self._last_timings.items()})
        status = DiagnosticStatus(level=level, name=f'{self.get_fully_qualified_name()}: hand meshes',
                                  message=message, hardware_id=device,
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        array_msg = DiagnosticArray(status=[status])
        array_msg.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(array_msg)

    # ---------------------------------------------------------------------------------------- shutdown

    def _frames_dropped(self) -> int:
        overlapped = self._overlapped
        in_runner = sum(overlapped.dropped.values()) if overlapped is not None else 0
        return self._slot.dropped + self._counters['dropped_in_pipeline'] + in_runner

    def stop(self, timeout: float) -> bool:
        """Stops the worker; False when it is still busy (inside the model) after `timeout` seconds."""
        self._stop.set()
        self._worker.join(timeout)
        return not self._worker.is_alive()


def main(argv=None) -> int:
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
        # SIGINT/SIGTERM shut the context down (rclpy's handlers); give the worker 1 s to finish its frame
        # (a forward pass cannot be interrupted: a worker still inside the network is left behind).
        finished = node.stop(timeout=1.0)
        if not finished:
            node.get_logger().info('stopping in the middle of a frame: it is not published')
        node.destroy_node()
        rclpy.try_shutdown()
    # Everything the node opened is closed now. Skip the interpreter's own teardown: with torch and MediaPipe
    # loaded it takes 1-2 s (measured), longer than the 2 s a node gets to stop, and it would wait on a worker
    # still inside the network.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)

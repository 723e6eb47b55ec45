"""The hamer_ros node: camera images in, hand meshes, TF frames, RViz markers and diagnostics out.

A managed (lifecycle) node, the ROS shell around `hamer_ros.ros.frame_processor.FrameProcessor` (what is done with
a frame) and `hamer_ros.frame_worker.FrameWorker` (the processing thread with its latest-frame slot):

- configure: reads the parameters, creates the (lifecycle) publishers and loads HaMeR and the hand detector.
  Missing weights give landmarks-only mode (as before); a detector that cannot start is retried with back-off;
  any other failure leaves the node unconfigured, with the reason in the log and in /diagnostics.
- activate: subscribes to the image, CameraInfo (and hand boxes) and starts the processing thread.
- deactivate: unsubscribes and stops the thread after its frame. cleanup: releases the models. shutdown.
- Reloading weights: deactivate, cleanup, configure, activate (`ros2 lifecycle set`; README, "Lifecycle").

With the parameter `autostart` (default true) the node configures and activates itself at start-up, so
`ros2 run hamer_ros hamer_node` works as a plain node; the launch file drives the transitions itself. /diagnostics
is published in every state. Topics, parameters and frames: README.md, section "The node".
"""
from __future__ import annotations

import os
import signal
import sys
import traceback
from typing import List, Optional

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType,
                                SetParametersResult)
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from visualization_msgs.msg import MarkerArray

from hamer_ros.frame_worker import FrameWorker
from hamer_ros.msg import HandBoxArray, HandMeshArray
from hamer_ros.ros.frame_processor import FrameProcessor, OutputSettings, Senders, Topics
from hamer_ros.ros.markers import MarkerStyle
from hamer_ros.ros.parameters import PARAMETERS, Param, check_value
from hamer_ros.ros.tf_frames import frame_prefix_for_tf, resolve_frame_prefix

_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
          float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING,
          list: ParameterType.PARAMETER_DOUBLE_ARRAY}
# REP-2003 sensor data: best effort, keep only the newest frame (stale frames are dropped, not queued).
_SENSOR_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                         durability=DurabilityPolicy.VOLATILE)
# Hand boxes of another detector: best effort (accepts reliable publishers too), a few kept, as boxes of several
# images may arrive together.
_BOXES_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.BEST_EFFORT,
                        durability=DurabilityPolicy.VOLATILE)
SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


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


class HamerNode(LifecycleNode):
    """Subscribes `image` (or `image/compressed`), `camera_info` and, with external_boxes.mode other than ignore,
    `hands/boxes_in`; publishes `hands/mano`, `hands/markers`, `hands/overlay`, `/tf` and `/diagnostics`."""

    def __init__(self, **kwargs):
        super().__init__('hamer_node', **kwargs)
        self._declare_parameters()
        self.fatal_error: Optional[str] = None     # why the worker stopped: main() exits non-zero
        self._processor: Optional[FrameProcessor] = None
        self._worker: Optional[FrameWorker] = None
        self._inputs: List = []                 # subscriptions while active
        self._outputs: List = []                # lifecycle publishers while configured
        self._not_configured = 'not configured yet (lifecycle transitions configure, activate)'
        self._send_transforms = None
        compressed = self._value('image_transport') == 'compressed'
        # As image_transport: the remapped base topic plus /compressed.
        self._image_type = CompressedImage if compressed else Image
        self._topics = Topics(image=self.resolve_topic_name('image') + ('/compressed' if compressed else ''),
                              camera_info=self.resolve_topic_name('camera_info'),
                              boxes=self.resolve_topic_name('hands/boxes_in'))
        self.add_on_set_parameters_callback(self._validate_parameter_change)
        self.add_post_set_parameters_callback(self._apply_parameter_change)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_timer(self._value('diagnostics_period'), self._publish_diagnostics)

    def _value(self, name: str):
        return self.get_parameter(name).value

    # ------------------------------------------------------------------------------------------ lifecycle

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self._value('qos_depth'),
                                  reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
            overridable = QoSOverridingOptions.with_default_policies()
            self._outputs = [self.create_lifecycle_publisher(kind, topic, reliable, qos_overriding_options=overridable)
                             for kind, topic in ((HandMeshArray, 'hands/mano'), (MarkerArray, 'hands/markers'),
                                                 (Image, 'hands/overlay'))]
            if self._send_transforms is None:
                self._send_transforms = self._make_tf_sender()
            mesh, markers, overlay = (publisher.publish for publisher in self._outputs)
            processor = FrameProcessor(self._value, self.get_logger(),
                                       lambda: self.get_clock().now().nanoseconds,
                                       Senders(mesh, markers, overlay, lambda t: self._send_transforms(t)),
                                       self._topics, self._read_output_settings())
            self.get_logger().info('configuring: loading the models')
            processor.configure()
        except Exception as exc:    # noqa: BLE001 - stay unconfigured and say why
            self._not_configured = f'configure failed: {type(exc).__name__}: {exc}'
            self.get_logger().error(f'{self._not_configured}. The node stays unconfigured')
            self._destroy_outputs()
            return FAILURE
        self._processor = processor
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        processor = self._processor
        overridable = QoSOverridingOptions.with_default_policies()
        self._inputs = [self.create_subscription(self._image_type, self._topics.image, self._on_image, _SENSOR_QOS,
                                                 qos_overriding_options=overridable),
                        self.create_subscription(CameraInfo, 'camera_info', processor.set_camera_info,
                                                 _SENSOR_QOS, qos_overriding_options=overridable)]
        boxes = processor.open_boxes()
        if boxes is not None:
            self._inputs.append(self.create_subscription(HandBoxArray, 'hands/boxes_in', boxes.add, _BOXES_QOS,
                                                         qos_overriding_options=overridable))
        processor.start_runner()
        self._worker = FrameWorker(processor.process_message, processor.between_frames, self._on_fatal,
                                   processor.close_runner)
        self._worker.start()
        boxes_text = f', hand boxes on {self._topics.boxes} ({self._value("external_boxes.mode")})' if boxes else ''
        self.get_logger().info(f'active: listening to {self._topics.image} ({self._image_type.__name__}) and '
                               f'{self._topics.camera_info}{boxes_text}')
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker(timeout=None)
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_cleanup(state)
        self._release()
        self._not_configured = 'cleaned up (lifecycle transitions configure, activate)'
        return result

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.stop(timeout=1.0):      # a worker still inside the model keeps what it uses
            self._release()
        self._not_configured = 'shut down'
        return SUCCESS

    def autostart(self) -> None:
        """configure, then activate when that succeeded (parameter autostart: a plain `ros2 run`)."""
        try:
            self.trigger_configure()
            if self.context.ok() and self._state_machine.current_state[1] == 'inactive':
                self.trigger_activate()
        except Exception:   # noqa: BLE001 - a SIGINT/SIGTERM during the loading shut the context down: stopping
            if self.context.ok():
                raise

    def _stop_worker(self, timeout: Optional[float]) -> bool:
        """Unsubscribes and stops the processing thread (see FrameWorker.stop)."""
        for subscription in self._inputs:
            self.destroy_subscription(subscription)
        self._inputs = []
        if self._processor is not None:
            self._processor.close_boxes()
        worker, self._worker = self._worker, None
        return worker is None or worker.stop(timeout)

    def _release(self) -> None:
        processor, self._processor = self._processor, None
        if processor is not None:
            processor.release()
        self._destroy_outputs()

    def _destroy_outputs(self) -> None:
        for publisher in self._outputs:
            self.destroy_lifecycle_publisher(publisher)
        self._outputs = []

    def stop(self, timeout: float) -> bool:
        """For the process's end: stops the worker; False when it is still busy (inside the model) after
        `timeout` seconds."""
        if self._processor is not None:
            self._processor.shut_down()
        return self._stop_worker(timeout)

    def _on_image(self, msg) -> None:
        if self._worker is not None:
            self._worker.put(msg)

    def _on_fatal(self, error: str) -> None:
        self.fatal_error = error
        self.get_logger().fatal(f'processing thread stopped: {error}. The node exits with status 1 (launch '
                                'restarts it with respawn:=true)')
        if self._processor is not None:
            self._processor.set_state('failed', error)
        # Wakes the executor in main(), which then exits non-zero: a node that no longer processes anything must
        # not look alive.
        self.context.try_shutdown()

    # --------------------------------------------------------------------------------------- parameters

    def _declare_parameters(self) -> None:
        for param in PARAMETERS:
            value = self.declare_parameter(param.name, param.default, parameter_descriptor(param)).value
            problem = check_value(param.name, value)
            if problem:
                raise ValueError(f'invalid parameter: {problem}')

    def _read_output_settings(self) -> OutputSettings:
        value = self._value
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
        if self._processor is not None:     # otherwise read at the next configure
            self._processor.set_outputs(self._read_output_settings(),
                                        any(p.name.startswith('detector.') for p in parameters),
                                        self.get_clock().now().to_msg())

    # ---------------------------------------------------------------------------------------- outputs

    def _publish_diagnostics(self) -> None:
        processor, worker = self._processor, self._worker
        if processor is None:
            level = DiagnosticStatus.ERROR if self._not_configured.startswith('configure failed') else \
                DiagnosticStatus.WARN
            message, values, device = self._not_configured, {'model state': 'unconfigured'}, ''
        else:
            level, message, values = processor.diagnostic_status(worker.dropped if worker is not None else 0)
            device = values['device']
        values['lifecycle state'] = self._state_machine.current_state[1]
        status = DiagnosticStatus(level=level, name=f'{self.get_fully_qualified_name()}: hand meshes',
                                  message=message, hardware_id=device,
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        array_msg = DiagnosticArray(status=[status])
        array_msg.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(array_msg)

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
    crashed = False
    try:
        if node.get_parameter('autostart').value:
            node.autostart()
        spin_until_shutdown(executor, node.context)
    except Exception:   # noqa: BLE001 - said with its traceback; the node still stops in order, with status 1
        traceback.print_exc()
        crashed = True
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
        status = 1 if crashed else 0
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


def spin_until_shutdown(executor, context) -> None:
    """executor.spin() until the context is shut down (by a stop signal, or by the worker's fatal error).

    rclpy ends the spin with ExternalShutdownException when it sees the shutdown while waiting. When the shutdown
    lands between the executor's check of the context and the creation of its wait set (a second SIGINT during the
    first one's shutdown, seen in CI), rclpy raises its RCLError "the given context is not valid" instead. Both mean
    the same: the node is stopping. An RCLError while the context is still valid is a real error and is raised."""
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except _rclpy.RCLError:
        if context.ok():
            raise


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

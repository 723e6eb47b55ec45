"""The launch file, the parameter file and the RViz config agree with the node.

launch and launch_ros are not on PyPI (docs/ros_environment.md), so the tests of the launch description itself are skipped
here and run on a ROS 2 install (or with their sources on PYTHONPATH); the YAML files are checked everywhere.
"""
from __future__ import annotations

import importlib.util
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = ROOT / 'launch' / 'hamer.launch.py'


def test_rviz_config_shows_markers_tf_and_overlay():
    rviz = yaml.safe_load((ROOT / 'config' / 'hamer.rviz').read_text())
    displays = {d['Class']: d for d in rviz['Visualization Manager']['Displays']}
    assert displays['rviz_default_plugins/MarkerArray']['Topic']['Value'] == '/hands/markers'
    assert set(displays['rviz_default_plugins/MarkerArray']['Namespaces']) == {'hand_mesh', 'hand_joints',
                                                                               'hand_skeleton'}
    assert displays['rviz_default_plugins/TF']['Enabled'] is True
    assert displays['rviz_default_plugins/Image']['Topic']['Value'] == '/hands/overlay'


def _load_launch_module():
    pytest.importorskip('launch_ros', reason='launch_ros is not installable from PyPI (docs/ros_environment.md): this test '
                                             'runs on a ROS 2 install')
    spec = importlib.util.spec_from_file_location('hamer_launch', LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _context(**arguments):
    """A LaunchContext with the launch file's defaults, then `arguments`, as launch configurations."""
    module = _load_launch_module()        # first: skips where launch_ros is missing
    from launch import LaunchContext
    from launch.utilities import perform_substitutions

    context = LaunchContext()
    for argument in module.generate_launch_description().get_launch_arguments():
        context.launch_configurations[argument.name] = perform_substitutions(context, argument.default_value)
    context.launch_configurations.update(arguments)
    return module, context


def test_launch_description_declares_described_arguments():
    module, context = _context()
    from launch.actions import OpaqueFunction

    description = module.generate_launch_description()
    arguments = {a.name: a for a in description.get_launch_arguments()}
    assert set(arguments) == {'namespace', 'params_file', 'image_topic', 'camera_info_topic', 'device',
                              'use_compressed', 'rviz', 'camera', 'video_device', 'data_dir', 'num_hands',
                              'precision', 'respawn', 'image_rectified', 'boxes_topic', 'autostart'}
    defaults = dict(context.launch_configurations)
    # Rectified images by default: the node takes the intrinsics from P.
    assert (defaults['image_topic'], defaults['image_rectified']) == ('/camera/image_rect', 'true')
    assert defaults['boxes_topic'] == 'hands/boxes_in'
    assert defaults['camera_info_topic'] == '/camera/camera_info'
    assert defaults['params_file'].endswith('share/hamer_ros/config/hamer.yaml')
    assert (defaults['device'], defaults['rviz'], defaults['use_compressed'], defaults['camera']) == (
        'auto', 'false', 'false', 'none')
    assert (defaults['data_dir'], defaults['num_hands'], defaults['precision'], defaults['respawn']) == (
        '', '', '', 'false')
    assert defaults['autostart'] == 'true'
    assert all(a.description for a in arguments.values())
    # The optional parts, then the node (generate_launch_description): one that fails to start stops launch
    # before the node exists.
    assert [type(e) for e in description.entities[-2:]] == [OpaqueFunction, OpaqueFunction]


def test_launch_file_uses_no_deprecated_launch_api():
    """launch warns (UserWarning) on every run for LaunchConfigurationEquals, deprecated since Iron."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        module, context = _context(camera='v4l2', rviz='true')
        module.generate_launch_description()
        module._optional_parts(context)
        module._hamer_node(context)
    assert [str(w.message) for w in caught if 'deprecat' in str(w.message).lower()] == []


def test_missing_optional_packages_are_skipped_and_present_ones_started(tmp_path, monkeypatch):
    module, context = _context(camera='v4l2', rviz='true')
    from launch_ros.actions import Node

    assert module._optional_parts(context) == []         # neither rviz2 nor v4l2_camera in this environment
    # rviz2 "installed": the ament index entry that get_package_prefix looks for.
    index = tmp_path / 'share' / 'ament_index' / 'resource_index' / 'packages'
    index.mkdir(parents=True)
    (index / 'rviz2').write_text('')
    monkeypatch.setenv('AMENT_PREFIX_PATH', f'{tmp_path}:{os.environ.get("AMENT_PREFIX_PATH", "")}')
    parts = module._optional_parts(context)
    assert [type(p) for p in parts] == [Node] and parts[0].node_package == 'rviz2'
    module, context = _context(camera='usb_cam')
    assert module._optional_parts(context) == []


def test_node_arguments_override_the_params_file_only_when_given():
    module, context = _context()
    defaults = context.launch_configurations
    assert module.node_overrides(defaults.get) == {'autostart': True, 'device': 'auto', 'image_transport': 'raw',
                                                   'image_rectified': True}
    given = dict(defaults, data_dir='/data/_DATA', num_hands='1', precision='int8', use_compressed='true')
    assert module.node_overrides(given.get) == {'autostart': True, 'device': 'auto', 'image_transport': 'compressed', 'precision': 'int8',
                                                'data_dir': '/data/_DATA', 'detector.num_hands': 1,
                                                'image_rectified': True}
    # A camera driver started by the launch file publishes raw images.
    assert module.node_overrides(dict(defaults, camera='v4l2').get)['image_rectified'] is False
    with pytest.raises(ValueError, match='num_hands:=two is not a whole number'):
        module.node_overrides(dict(defaults, num_hands='two').get)

def test_launch_starts_a_lifecycle_node_that_autostart_takes_to_active():
    """A launch_ros LifecycleNode; the autostart argument becomes the node's parameter autostart (the node then
    configures and activates itself as its process starts, also after a respawn)."""
    module, context = _context()
    from launch_ros.actions import LifecycleNode

    node, = module._hamer_node(context)
    assert isinstance(node, LifecycleNode)
    assert node.node_package == 'hamer_ros' and node.node_executable == 'hamer_node'
    assert module.node_overrides(dict(context.launch_configurations, autostart='false').get)['autostart'] is False


def _run_launch(tmp_path, domain: int, arguments: dict) -> subprocess.Popen:
    runner = tmp_path / 'run_launch.py'
    runner.write_text(
        'import sys\n'
        'from launch import LaunchDescription, LaunchService\n'
        'from launch.actions import IncludeLaunchDescription\n'
        'from launch.launch_description_sources import PythonLaunchDescriptionSource\n'
        'service = LaunchService()\n'
        'service.include_launch_description(LaunchDescription([IncludeLaunchDescription(\n'
        f'    PythonLaunchDescriptionSource({str(LAUNCH_FILE)!r}), launch_arguments={arguments!r}.items())]))\n'
        'sys.exit(service.run())\n')
    # A session of its own: at the end SIGINT goes to launch and the node it started (launch's SIGTERM path
    # leaves its processes running, by its own account).
    return subprocess.Popen([sys.executable, str(runner)], env=dict(os.environ, ROS_DOMAIN_ID=str(domain)),
                            stdout=open(tmp_path / 'launch.log', 'wb'), stderr=subprocess.STDOUT,
                            start_new_session=True)


@pytest.mark.ros
def test_rviz_and_camera_without_their_packages_leave_no_orphan(tmp_path):
    """rviz:=true camera:=v4l2 where neither is installed: launch warns and keeps running the node with the
    arguments given; Ctrl-C then ends both (before: launch gave up and left the node running on its own)."""
    _load_launch_module()
    import rclpy
    from rcl_interfaces.srv import GetParameters
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor

    domain = random.SystemRandom().randint(1, 100)
    empty = tmp_path / 'no_weights'
    empty.mkdir()
    launch = _run_launch(tmp_path, domain, {
        'namespace': 'lab2', 'rviz': 'true', 'camera': 'v4l2', 'device': 'cpu', 'data_dir': str(empty),
        'num_hands': '1', 'precision': 'int8'})
    context = Context()
    rclpy.init(context=context, domain_id=domain)
    try:
        node = rclpy.create_node('launch_probe', context=context)
        client = node.create_client(GetParameters, '/lab2/hamer_node/get_parameters')
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not client.service_is_ready() and launch.poll() is None:
            time.sleep(0.2)
        assert launch.poll() is None, f'launch gave up:\n{(tmp_path / "launch.log").read_text()}'
        future = client.call_async(GetParameters.Request(names=['data_dir', 'detector.num_hands', 'precision']))
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        executor.spin_until_future_complete(future, timeout_sec=30)
        values = future.result().values
        assert (values[0].string_value, values[1].integer_value, values[2].string_value) == (str(empty), 1, 'int8')
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
        os.killpg(launch.pid, signal.SIGINT)
        code = launch.wait(30)
    log = (tmp_path / 'launch.log').read_text()
    assert "package 'rviz2' is not installed" in log and "package 'v4l2_camera' is not installed" in log
    assert code == 0, log
    time.sleep(1.0)
    with pytest.raises(ProcessLookupError):         # nothing of the launch's session is left
        os.killpg(launch.pid, 0)


@pytest.mark.ros
def test_launch_remaps_topics_into_the_namespace(tmp_path):
    """The real launch service starts hamer_node; the graph shows the remapped, namespaced topics."""
    _load_launch_module()
    import rclpy
    from rclpy.context import Context

    domain = random.SystemRandom().randint(1, 100)
    launch = _run_launch(tmp_path, domain, {'namespace': 'lab', 'image_topic': '/test_cam/image',
                                            'camera_info_topic': '/test_cam/info', 'use_compressed': 'true',
                                            'device': 'cpu'})
    context = Context()
    rclpy.init(context=context, domain_id=domain)
    try:
        node = rclpy.create_node('launch_probe', context=context)
        expected = {'/test_cam/image/compressed', '/test_cam/info'}
        deadline = time.monotonic() + 60
        subscribed = set()
        while time.monotonic() < deadline and subscribed != expected:
            time.sleep(0.2)
            subscribed = {topic for topic in expected if any(
                (info.node_namespace, info.node_name) == ('/lab', 'hamer_node')
                for info in node.get_subscriptions_info_by_topic(topic))}
        assert subscribed == expected
        topics = dict(node.get_topic_names_and_types())
        assert topics['/lab/hands/mano'] == ['hamer_ros/msg/HandMeshArray']
        # Subscribed means active: launch took the lifecycle node through configure and activate.
        assert ('/lab/hamer_node/transition_event', ['lifecycle_msgs/msg/TransitionEvent']) in topics.items()
        assert topics['/test_cam/image/compressed'] == ['sensor_msgs/msg/CompressedImage']
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
        os.killpg(launch.pid, signal.SIGINT)
        launch.wait(30)

"""The launch file, the parameter file and the RViz config agree with the node.

launch and launch_ros are not on PyPI (ROS2_ENV.md), so the tests of the launch description itself are skipped
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


def _flatten(tree: dict, prefix: str = '') -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f'{prefix}{key}.'))
        else:
            flat[f'{prefix}{key}'] = value
    return flat


def test_config_lists_every_parameter_with_its_default():
    pytest.importorskip('rclpy', reason='the node module needs the colcon-built environment: . scripts/env.sh')
    from hamer_ros.node import PARAMETERS

    config = yaml.safe_load((ROOT / 'config' / 'hamer.yaml').read_text())
    values = _flatten(config['/**']['ros__parameters'])
    defaults = {name: default for name, default, _, _, _ in PARAMETERS}
    assert values == defaults
    for name, _, _, description, _ in PARAMETERS:
        assert len(description) > 15, f'{name} needs a description'


def test_docs_describe_every_parameter():
    pytest.importorskip('rclpy', reason='the node module needs the colcon-built environment: . scripts/env.sh')
    from hamer_ros.node import PARAMETERS

    docs = (ROOT / 'README.md').read_text()
    missing = [name for name, *_ in PARAMETERS if f'| `{name}` |' not in docs]
    assert missing == []


def test_rviz_config_shows_markers_tf_and_overlay():
    rviz = yaml.safe_load((ROOT / 'config' / 'hamer.rviz').read_text())
    displays = {d['Class']: d for d in rviz['Visualization Manager']['Displays']}
    assert displays['rviz_default_plugins/MarkerArray']['Topic']['Value'] == '/hands/markers'
    assert set(displays['rviz_default_plugins/MarkerArray']['Namespaces']) == {'hand_mesh', 'hand_joints',
                                                                               'hand_skeleton'}
    assert displays['rviz_default_plugins/TF']['Enabled'] is True
    assert displays['rviz_default_plugins/Image']['Topic']['Value'] == '/hands/overlay'


def _load_launch_module():
    pytest.importorskip('launch_ros', reason='launch_ros is not installable from PyPI (ROS2_ENV.md): this test '
                                             'runs on a ROS 2 install')
    spec = importlib.util.spec_from_file_location('hamer_launch', LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launch_description_declares_described_arguments():
    module = _load_launch_module()
    from launch import LaunchContext
    from launch.utilities import perform_substitutions
    from launch_ros.actions import Node

    description = module.generate_launch_description()
    context = LaunchContext()
    arguments = {a.name: a for a in description.get_launch_arguments()}
    assert set(arguments) == {'namespace', 'params_file', 'image_topic', 'camera_info_topic', 'device',
                              'use_compressed', 'rviz', 'camera', 'video_device', 'image_rectified',
                              'boxes_topic'}
    defaults = {name: perform_substitutions(context, a.default_value) for name, a in arguments.items()}
    # Rectified images by default: the node takes the intrinsics from P.
    assert (defaults['image_topic'], defaults['image_rectified']) == ('/camera/image_rect', 'true')
    assert defaults['camera_info_topic'] == '/camera/camera_info'
    assert defaults['boxes_topic'] == 'hands/boxes_in'
    assert defaults['params_file'].endswith('share/hamer_ros/config/hamer.yaml')
    assert (defaults['device'], defaults['rviz'], defaults['use_compressed'], defaults['camera']) == (
        'auto', 'false', 'false', 'none')
    assert all(a.description for a in arguments.values())
    nodes = [e for e in description.entities if isinstance(e, Node)]
    assert sorted(n.node_package for n in nodes) == ['hamer_ros', 'rviz2', 'usb_cam', 'v4l2_camera']


@pytest.mark.ros
def test_launch_remaps_topics_into_the_namespace(tmp_path):
    """The real launch service starts hamer_node; the graph shows the remapped, namespaced topics."""
    _load_launch_module()
    import rclpy
    from rclpy.context import Context

    domain = random.SystemRandom().randint(1, 100)
    runner = tmp_path / 'run_launch.py'
    runner.write_text(
        'import sys\n'
        'from launch import LaunchDescription, LaunchService\n'
        'from launch.actions import IncludeLaunchDescription\n'
        'from launch.launch_description_sources import PythonLaunchDescriptionSource\n'
        'service = LaunchService()\n'
        'service.include_launch_description(LaunchDescription([IncludeLaunchDescription(\n'
        f'    PythonLaunchDescriptionSource({str(LAUNCH_FILE)!r}), launch_arguments={{\n'
        "        'namespace': 'lab', 'image_topic': '/test_cam/image', 'camera_info_topic': '/test_cam/info',\n"
        "        'use_compressed': 'true', 'device': 'cpu'}.items())]))\n"
        'sys.exit(service.run())\n')
    # A session of its own: at the end SIGINT goes to launch and the node it started (launch's SIGTERM path
    # leaves its processes running, by its own account).
    launch = subprocess.Popen([sys.executable, str(runner)], env=dict(os.environ, ROS_DOMAIN_ID=str(domain)),
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
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
        assert topics['/test_cam/image/compressed'] == ['sensor_msgs/msg/CompressedImage']
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
        os.killpg(launch.pid, signal.SIGINT)
        launch.wait(30)

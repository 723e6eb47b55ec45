"""package.xml declares what a rosdep user needs, and nothing that breaks an install.

Read with the standard XML parser; the modules the package imports are collected from its sources, so a new
import of a ROS package without its declaration fails here.
"""
from __future__ import annotations

import ast
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Python module -> the rosdep key that provides it (where the names differ, and the non-ROS ones).
ROSDEP_KEYS = {'tf2_ros': 'tf2_ros_py', 'numpy': 'python3-numpy', 'scipy': 'python3-scipy', 'yaml': 'python3-yaml',
               'tqdm': 'python3-tqdm'}
# Not in rosdep: requirements.txt installs them with pip (module -> pip name); torch is installed first by hand
# (the build for the machine), onnx/onnxruntime only for the optional export-onnx command.
PIP_NAMES = {'cv2': 'opencv-python-headless', 'smplx': 'smplx', 'mediapipe': 'mediapipe', 'rosbags': 'rosbags',
             'ai_edge_litert': 'ai-edge-litert'}
BY_HAND = {'torch', 'onnx', 'onnxruntime'}

def _manifest():
    root = ElementTree.parse(ROOT / 'package.xml').getroot()
    return {tag: [element.text for element in root.findall(tag)]
            for tag in ('depend', 'build_depend', 'exec_depend', 'test_depend', 'buildtool_depend')}


def _imported_modules():
    modules = set()
    for path in list((ROOT / 'hamer_ros').rglob('*.py')) + [ROOT / 'launch' / 'hamer.launch.py']:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split('.')[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split('.')[0])
    return modules - set(sys.stdlib_module_names) - {'hamer_ros', '__future__'}


def test_run_time_packages_are_exec_depends_with_the_right_keys():
    manifest = _manifest()
    at_run_time = set(manifest['depend']) | set(manifest['exec_depend'])
    for key in ('tf2_ros_py', 'tf2_msgs', 'rclpy', 'rcl_interfaces', 'ament_index_python', 'python3-tqdm',
                'diagnostic_msgs', 'visualization_msgs', 'launch', 'launch_ros'):
        assert key in at_run_time, f'{key} is not declared'
    # The Python module tf2_ros is in tf2_ros_py; tf2_ros is the C++ library (nothing of it is used).
    assert 'tf2_ros' not in at_run_time
    # Only the interface dependencies of msg/ are needed to build: everything else is exec_depend.
    assert set(manifest['depend']) == {'builtin_interfaces', 'std_msgs', 'geometry_msgs', 'sensor_msgs'}


def test_no_cv_bridge_and_no_second_opencv():
    everything = {key for keys in _manifest().values() for key in keys}
    assert 'cv_bridge' not in everything, 'the node converts images itself (hamer_ros.ros.image_conversion)'
    assert 'python3-opencv' not in everything, 'OpenCV comes from pip (requirements.txt): two cv2 would clash'
    assert not any('cv_bridge' in line for path in (ROOT / 'hamer_ros').rglob('*.py')
                   for line in path.read_text().splitlines() if line.lstrip().startswith(('import', 'from')))


def test_every_imported_module_is_declared_or_pip_installed():
    manifest = _manifest()
    declared = set(manifest['depend']) | set(manifest['exec_depend'])
    requirements = {line.split('#')[0].split('=')[0].split('>')[0].split('<')[0].strip().lower()
                    for line in (ROOT / 'requirements.txt').read_text().splitlines()
                    if line.split('#')[0].strip()}
    missing = [module for module in sorted(_imported_modules())
               if ROSDEP_KEYS.get(module, module) not in declared and module not in BY_HAND
               and PIP_NAMES.get(module) not in requirements]
    assert missing == [], f'imported but declared nowhere (package.xml or requirements.txt): {missing}'
